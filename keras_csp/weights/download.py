"""Fetch a registered weights file into the cache: resumable, verified, written atomically.

The file grows as ``<cache>/<filename>.part`` (a later call resumes it with an HTTP Range
request) and is renamed to ``<cache>/<filename>`` only after its size and checksum pass, so a
file at the final path is always a verified one. ``KERAS_CSP_WEIGHTS_MIRROR`` replaces the
scheme and host of every address (a proxy or an internal mirror keeping the same paths).
"""

import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import keras_csp.weights.registry as registry  # noqa: PLR0402  (the module, not the package: no import cycle)

MIRROR_ENV = "KERAS_CSP_WEIGHTS_MIRROR"
HOME_ENV = "KERAS_CSP_HOME"
CHUNK = 1 << 20


class WeightsDownloadError(OSError):
    """A weights file could not be fetched or did not verify; the message says what to do."""


class WeightsNotFoundError(WeightsDownloadError, FileNotFoundError):
    """The file is not in the cache and has no address to fetch it from."""


def cache_dir():
    """Folder holding downloaded weights: ``$KERAS_CSP_HOME`` or ``~/.keras/keras_csp``."""
    return os.environ.get(HOME_ENV, os.path.join(os.path.expanduser("~"), ".keras", "keras_csp"))


def cached_path(entry):
    """Where ``entry``'s verified file lives (or will) in the cache."""
    return os.path.join(cache_dir(), registry.get(entry).filename)


def addresses(entry):
    """The entry's URLs, each rewritten to ``$KERAS_CSP_WEIGHTS_MIRROR`` when it is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return tuple(entry.urls)
    base = mirror.rstrip("/")
    return tuple(base + urllib.parse.urlsplit(url).path for url in entry.urls)


def file_checksum(path, algorithm):
    """Hex digest of ``path`` by ``algorithm`` (one of ``registry.CHECKSUM_ALGORITHMS``)."""
    if algorithm == "git-blob-sha1":
        digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    elif algorithm in ("sha1", "sha256"):
        digest = hashlib.new(algorithm)
    else:
        raise ValueError(f"Unknown checksum algorithm {algorithm!r}; known: {registry.CHECKSUM_ALGORITHMS}.")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path, entry):
    """Check ``path`` against ``entry``'s size and checksum; returns a one-line verdict or
    raises :class:`WeightsDownloadError` saying expected vs got."""
    entry = registry.get(entry)
    size = os.path.getsize(path)
    if entry.size is not None and size != entry.size:
        raise WeightsDownloadError(
            f"{path}: {size:,} bytes, expected {entry.size:,} for weights {entry.name!r}.")
    if entry.checksum is None:
        return f"{path}: {size:,} bytes; no published checksum for {entry.name!r} ({entry.checksum_note})"
    algorithm, expected = entry.checksum
    got = file_checksum(path, algorithm)
    if got not in expected:
        raise WeightsDownloadError(
            f"{path}: {algorithm} mismatch for weights {entry.name!r}: expected "
            f"{' or '.join(expected)}, got {got}.")
    return f"{path}: {algorithm} {got} matches {entry.name!r}"


def _manual_hint(entry, path):
    where = (f"download {entry.urls[0]}" if entry.urls else
             f"download {entry.filename} (see {registry.MANUAL_DOWNLOAD_PAGE})")
    return (f"To place it by hand: {where}, save it as {path} (or set {HOME_ENV} to the folder "
            f"holding it, or pass the file's path as `weights=`); `keras-csp weights verify "
            f"{path} --name {entry.name}` checks it.")


def fetch(name, progress=True, timeout=60.0):
    """Path of the verified file of weights ``name`` (a registry name or entry), downloading
    it into the cache when it is not there yet. Offline, refused, truncated or mismatched:
    a :class:`WeightsDownloadError` naming the URL, the cache path and the manual route."""
    entry = registry.get(name)
    path = cached_path(entry)
    if os.path.exists(path):
        verify(path, entry)  # a file placed by hand must be the right one too
        return path
    if not entry.urls:
        raise WeightsNotFoundError(
            f"Weights {entry.name!r} ({entry.filename}) are not in {cache_dir()} and have no "
            f"direct download address ({entry.checksum_note}). {_manual_hint(entry, path)}")
    os.makedirs(cache_dir(), exist_ok=True)
    errors = []
    for url in addresses(entry):
        try:
            _download(url, path + ".part", entry, progress, timeout)
        except WeightsDownloadError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, socket.timeout) as err:
            errors.append(f"{url}: {_describe(err)}")
            continue
        try:
            verify(path + ".part", entry)
        except WeightsDownloadError as err:
            os.remove(path + ".part")
            raise WeightsDownloadError(f"{err} The download was deleted. {_manual_hint(entry, path)}") from None
        os.replace(path + ".part", path)
        return path
    partial = path + ".part"
    kept = (f" The partial file {partial} ({os.path.getsize(partial):,} bytes) is kept; the next "
            f"call resumes it." if os.path.exists(partial) else "")
    raise WeightsDownloadError(
        f"Could not download weights {entry.name!r}: {'; '.join(errors)}.{kept} "
        f"{_manual_hint(entry, path)}")


def _describe(err):
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"unreachable ({err.reason}; offline?)"
    if isinstance(err, http.client.IncompleteRead):
        return f"the server closed the connection after {len(err.partial):,} more bytes (transfer cut)"
    return f"{type(err).__name__}: {err}"


def _download(url, part, entry, progress, timeout):
    """Append ``url``'s bytes to ``part``, resuming from its current size when the server
    honours Range; raises on a cut transfer, keeping what arrived."""
    start = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "keras_csp"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if start and response.status != 206:
            start = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else entry.size
        if total is not None and entry.size is not None and total != entry.size:
            raise WeightsDownloadError(
                f"{url} serves {total:,} bytes, but weights {entry.name!r} are {entry.size:,} "
                f"bytes; nothing was kept. {_manual_hint(entry, cached_path(entry))}")
        bar = _Progress(entry.filename, total, start) if progress else None
        with open(part, "ab" if start else "wb") as out:
            done = start
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if bar:
                    bar.update(done)
        if bar:
            bar.close(done)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


class _Progress:
    """A one-line progress bar on stderr (redrawn at most 10 times a second)."""

    def __init__(self, label, total, start):
        self.label, self.total, self.start, self.last = label, total, start, 0.0
        self.began = time.monotonic()
        if start:
            print(f"Resuming {label} at {start:,} bytes", file=sys.stderr)

    def update(self, done, force=False):
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        rate = (done - self.start) / max(now - self.began, 1e-6) / 1e6
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(30 * frac)
            text = f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}% {done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
        else:
            text = f"\r{self.label} {done / 1e6:.1f} MB {rate:.1f} MB/s"
        print(text, end="", file=sys.stderr, flush=True)

    def close(self, done):
        self.update(done, force=True)
        print(file=sys.stderr)
