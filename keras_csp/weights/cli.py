"""``keras-csp weights list | fetch NAME | verify FILE``: the weights registry from the shell."""

import os

from keras_csp import weights


def add_weights_parser(subparsers):
    parser = subparsers.add_parser("weights", help="list, fetch and verify published weights")
    sub = parser.add_subparsers(dest="weights_command", required=True)
    listing = sub.add_parser("list", help="registered weights: model, source, checksum, cached or not")
    listing.add_argument("--model", help="only the weights of this model")
    listing.set_defaults(func=_list)
    fetch = sub.add_parser("fetch", help="download NAME into the cache (resumable) and verify it")
    fetch.add_argument("name")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_fetch)
    verify = sub.add_parser("verify", help="check FILE's size and checksum against its registry entry")
    verify.add_argument("file")
    verify.add_argument("--name", help="registry entry (default: the entry whose file name matches)")
    verify.set_defaults(func=_verify)


def _list(args):
    rows = [("name", "model", "alias", "checksum", "cached", "source")]
    for name in weights.names(args.model):
        entry = weights.get(name)
        checksum = f"{entry.checksum[0]} {entry.checksum[1][0][:10]}..." if entry.checksum else "none"
        cached = "yes" if os.path.exists(weights.cached_path(entry)) else "no"
        rows.append((name, entry.model, entry.alias or "-", checksum, cached,
                     entry.urls[0] if entry.urls else f"by hand: {entry.source}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[5])
    print(f"cache: {weights.cache_dir()}")
    return 0


def _fetch(args):
    print(weights.fetch(args.name, progress=not args.quiet))
    return 0


def _verify(args):
    if not os.path.exists(args.file):
        raise FileNotFoundError(f"{args.file} does not exist.")
    if args.name:
        entries = [weights.get(args.name)]
    else:
        base = os.path.basename(args.file)
        entries = [weights.get(n) for n in weights.names() if weights.get(n).filename == base]
        if not entries:
            raise ValueError(f"No registered weights have the file name {base!r}; pass --name NAME "
                             f"(registered: {', '.join(weights.names())}).")
    failures = []
    for entry in entries:
        try:
            print(weights.verify(args.file, entry))
            return 0
        except weights.WeightsDownloadError as err:
            failures.append(str(err))
    raise weights.WeightsDownloadError(" | ".join(failures))
