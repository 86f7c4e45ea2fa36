"""The weights registry end to end, offline: seeded Darknet weights served from a loopback
HTTP server, registered with their computed checksum, fetched by name into the cache and
loaded by the builder, equal to ``darknet.load`` of the same cfg and file; every failure
(wrong checksum, cut transfer, server gone, offline) is a clear error and leaves no file at
the cache path."""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

import keras_csp
from keras_csp import darknet, weights


class _Server:
    """A loopback HTTP server for one folder, with Range support and switchable faults:
    ``cut_after`` sends that many bytes of a file (announcing the full length) and closes."""

    def __init__(self, folder):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                path = os.path.join(folder, self.path.lstrip("/").split("/")[-1])
                if not os.path.isfile(path):
                    self.send_error(404, "Not Found")
                    return
                data = open(path, "rb").read()
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start, status = int(wanted.split("=")[1].split("-")[0]), 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[:server.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.requests, self.cut_after, self.ranges = [], None, True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("KERAS_CSP_HOME", str(home))
    monkeypatch.delenv("KERAS_CSP_WEIGHTS_MIRROR", raising=False)
    return home


@pytest.fixture()
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    server = _Server(str(folder))
    yield server, folder
    server.close()


@pytest.fixture()
def entries():
    added = []
    yield added
    for name in added:
        weights.unregister(name)


def _seeded(shared_dir, cfg, out):
    subprocess.run([sys.executable, str(shared_dir / "darknet/make_weights.py"), str(cfg), str(out),
                    "--seed", "0"], check=True, capture_output=True)
    return out


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _cache_files(home):
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def test_fetch_by_name_loads_darknets_outputs(shared_dir, cache, served, entries):
    """A builder's weights="name" downloads, verifies and loads the file: the backbone gives
    exactly darknet.load(cfg, file)'s output on the same input."""
    server, folder = served
    cfg = shared_dir / "darknet/cfg/reference-repo/csmobilenet-v2.cfg"
    path = _seeded(shared_dir, cfg, folder / "csmobilenet-v2_seeded.weights")
    entries.append("test-csmobilenet-v2")
    weights.register("test-csmobilenet-v2", url=server.url(path.name), sha256=_sha256(path),
                     model="CSPMobileNetV2", size=path.stat().st_size)
    model = keras_csp.CSPMobileNetV2(weights="test-csmobilenet-v2", input_shape=(128, 128, 3))
    assert _cache_files(cache) == [path.name]
    reference = darknet.load(str(cfg), str(path), input_size=(128, 128))
    image = np.random.default_rng(1).random((1, 128, 128, 3), dtype=np.float32)
    got = np.asarray(model(image, training=False)).reshape(-1)
    want = np.asarray(reference(image, training=False)).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # A second build reads the verified cache, without a request.
    before = len(server.requests)
    keras_csp.CSPMobileNetV2(weights="test-csmobilenet-v2", input_shape=(128, 128, 3))
    assert len(server.requests) == before


def _blob(tmp_path, size=3 << 20):
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "served" / "blob.weights"
    path.write_bytes(data)
    return path, data


def test_wrong_checksum_deletes_the_download(tmp_path, cache, served, entries):
    server, _ = served
    path, _ = _blob(tmp_path)
    entries.append("test-blob")
    weights.register("test-blob", url=server.url(path.name), sha256="0" * 64, model="CSPMobileNetV2")
    with pytest.raises(weights.WeightsDownloadError, match=f"sha256 mismatch.*expected {'0' * 64}, got {_sha256(path)}"):
        weights.fetch("test-blob", progress=False)
    assert _cache_files(cache) == []


def test_cut_transfer_keeps_only_a_resumable_part(tmp_path, cache, served, entries):
    """The server closes after 1 MB: a clear error, nothing at the cache path, and the next
    call resumes from the cut with a Range request and ends with the verified file."""
    server, _ = served
    path, data = _blob(tmp_path)
    entries.append("test-blob")
    weights.register("test-blob", url=server.url(path.name), sha256=_sha256(path), model="CSPMobileNetV2")
    server.cut_after = 1 << 20
    with pytest.raises(weights.WeightsDownloadError, match="transfer cut.*kept; the next call resumes it"):
        weights.fetch("test-blob", progress=False)
    assert _cache_files(cache) == ["blob.weights.part"]
    assert (cache / "blob.weights.part").stat().st_size == 1 << 20
    server.cut_after = None
    final = weights.fetch("test-blob", progress=False)
    assert server.requests[-1][1] == f"bytes={1 << 20}-"
    assert open(final, "rb").read() == data
    assert _cache_files(cache) == ["blob.weights"]


def test_server_without_range_restarts(tmp_path, cache, served, entries):
    server, _ = served
    path, data = _blob(tmp_path)
    entries.append("test-blob")
    weights.register("test-blob", url=server.url(path.name), sha256=_sha256(path), model="CSPMobileNetV2")
    server.cut_after = 1 << 20
    with pytest.raises(weights.WeightsDownloadError):
        weights.fetch("test-blob", progress=False)
    server.cut_after, server.ranges = None, False
    assert open(weights.fetch("test-blob", progress=False), "rb").read() == data


def test_wrong_size_is_refused_before_download(tmp_path, cache, served, entries):
    server, _ = served
    path, _ = _blob(tmp_path)
    entries.append("test-blob")
    weights.register("test-blob", url=server.url(path.name), sha256=_sha256(path), model="CSPMobileNetV2",
                     size=123)
    with pytest.raises(weights.WeightsDownloadError, match="serves 3,145,728 bytes.*are 123 bytes"):
        weights.fetch("test-blob", progress=False)
    assert _cache_files(cache) == []


def test_server_gone_and_offline_fail_clearly(tmp_path, cache, served, entries):
    server, _ = served
    path, _ = _blob(tmp_path)
    url = server.url(path.name)
    server.close()  # nothing listens on that port any more
    entries.append("test-blob")
    weights.register("test-blob", url=url, sha256=_sha256(path), model="CSPMobileNetV2")
    with pytest.raises(weights.WeightsDownloadError) as err:
        weights.fetch("test-blob", progress=False)
    message = str(err.value)
    assert url in message and str(cache / "blob.weights") in message and "place it by hand" in message
    assert _cache_files(cache) == []
    # A host that does not resolve (what offline looks like): the same kind of message.
    entries.append("test-offline")
    weights.register("test-offline", url="http://weights.invalid/x.weights", model="CSPMobileNetV2")
    with pytest.raises(weights.WeightsDownloadError, match=r"weights.invalid/x.weights: unreachable .*offline"):
        weights.fetch("test-offline", progress=False)


def test_404_names_the_status(tmp_path, cache, served, entries):
    server, _ = served
    entries.append("test-missing")
    weights.register("test-missing", url=server.url("missing.weights"), model="CSPMobileNetV2")
    with pytest.raises(weights.WeightsDownloadError, match="HTTP 404"):
        weights.fetch("test-missing", progress=False)


def test_mirror_replaces_the_origin(tmp_path, cache, served, entries, monkeypatch):
    """KERAS_CSP_WEIGHTS_MIRROR keeps the path and replaces scheme and host."""
    server, _ = served
    path, data = _blob(tmp_path)
    entries.append("test-mirrored")
    weights.register("test-mirrored", url="https://github.com/some/repo/files/blob.weights",
                     sha256=_sha256(path), model="CSPMobileNetV2")
    monkeypatch.setenv("KERAS_CSP_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.port}/")
    assert open(weights.fetch("test-mirrored", progress=False), "rb").read() == data
    assert server.requests[-1][0] == "/some/repo/files/blob.weights"


def test_hand_placed_file_is_verified(tmp_path, cache, entries):
    entries.append("test-hand")
    weights.register("test-hand", url="http://weights.invalid/hand.weights", sha256="f" * 64,
                     model="CSPMobileNetV2")
    cache.mkdir()
    (cache / "hand.weights").write_bytes(b"not the file")
    with pytest.raises(weights.WeightsDownloadError, match="sha256 mismatch"):
        weights.fetch("test-hand", progress=False)


def test_git_blob_checksum_is_gits_object_id(tmp_path):
    """git-blob-sha1 equals `git hash-object` of the file (how the reference repo pins its weights)."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"\x00\x01darknet" * 1000)
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert weights.file_checksum(str(path), "git-blob-sha1") == git.stdout.strip()


def test_registry_entries_and_errors():
    tiny = weights.find("YOLOv4-tiny", "coco")
    assert tiny.checksum[0] == "sha1" and "d110379b7b86899226b591ad4affc7115f707157" in tiny.checksum[1]
    assert tiny.urls[0].endswith("/darknet_yolo_v4_pre/yolov4-tiny.weights")
    assert len(tiny.classes) == 80 and tiny.classes[0] == "person"
    assert weights.find("YOLOv4", "coco").checksum == ("sha1", ("0143deb6c46fcc7f74dd35bf3c14edc3784e99ee",))
    assert weights.find("YOLOv4-tiny", "conv.29").darknet_layers == 29
    assert weights.find("CSPDarknet53", "imagenet", activation="mish").filename == "csdarknet53-omega_final.weights"
    assert weights.find("CSPDarknet53", "imagenet", activation="leaky").filename == "csdarknet53_final.weights"
    with pytest.raises(ValueError, match="already registered"):
        weights.register("yolov4-coco", url="http://x/y.weights", model="YOLOv4")
    with pytest.raises(ValueError, match="give one checksum"):
        weights.register("x", url="http://x/y", model="YOLOv4", sha1="a", sha256="b")
    with pytest.raises(ValueError, match="Available for CSPDarknet53: .*imagenet"):
        weights.resolve("coco", "CSPDarknet53")


def test_registry_sizes_follow_the_cfgs(shared_dir):
    """The sizes in the registry are Darknet's header plus 4 bytes a float of the cfg."""
    from keras_csp.darknet.spec import infer_network
    from keras_csp.darknet.weights import param_layers_from_network

    for name, cfg in (("yolov4-coco", "yolov4.cfg"), ("yolov4-tiny-coco", "yolov4-tiny.cfg")):
        network = infer_network(str(shared_dir / "darknet/cfg/darknet-repo" / cfg))
        floats = sum(layer.count() for layer in param_layers_from_network(network))
        assert weights.get(name).size == 20 + 4 * floats


def test_weights_cli(tmp_path, cache, served, entries, capsys):
    from keras_csp.cli import main

    server, _ = served
    path, _ = _blob(tmp_path)
    main(["weights", "list"])
    out = capsys.readouterr().out
    assert "yolov4-tiny-coco" in out and "d110379b7b" in out and str(cache) in out
    # fetch through the CLI needs a registered name: register one on loopback.
    entries.append("test-cli")
    weights.register("test-cli", url=server.url(path.name), sha256=_sha256(path), model="CSPMobileNetV2")
    assert main(["weights", "fetch", "test-cli", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "blob.weights")
    assert main(["weights", "verify", str(cache / "blob.weights")]) == 0
    assert "matches 'test-cli'" in capsys.readouterr().out
    # A file that is not the entry's: one line naming expected vs got, exit code 2.
    assert main(["weights", "verify", str(path), "--name", "yolov4-coco"]) == 2
    assert "3,145,728 bytes, expected 257,717,640 for weights 'yolov4-coco'" in capsys.readouterr().err
