"""fetch: source order, verification, atomic output, downloads with retries, the stage's exit codes.

No network: the URL source is a local http.server on 127.0.0.1.
"""

import functools
import http.server
import json
import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import (
    TRAIN_IMAGES,
    TRAIN_LABELS,
    params_with,
    section,
    write_params,
    write_tiny_idx_dataset,
)

from cnnpipe.config import FetchParams
from cnnpipe.data.raw.fetch import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    fetch_dataset,
)
from cnnpipe.data.raw.idx import encode_idx, write_idx
from cnnpipe.errors import DataError
from cnnpipe.io import sha256_bytes, sha256_file

REPO = Path(__file__).resolve().parents[2]
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
NOWHERE = "/nonexistent/fashion-mnist"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy from the environment must not intercept requests to the test server.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def _params(local=None, system=None, url=None, retries=0) -> FetchParams:
    return section(
        "fetch",
        local_dir=None if local is None else str(local),
        system_dir=None if system is None else str(system),
        url=url, timeout_s=5.0, retries=retries,
    )


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.server.failures_left > 0:
            self.server.failures_left -= 1
            self.send_error(500, "flaky")
            return
        super().do_GET()


@pytest.fixture
def serve():
    """Start a server for a directory: ``serve(dir, failures=n)`` -> (base_url, server)."""
    servers = []

    def start(directory: Path, failures: int = 0):
        server = http.server.HTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        server.requests, server.failures_left = [], failures
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- source order


def test_local_dir_wins_over_system_dir(tmp_path):
    tiny = write_tiny_idx_dataset(tmp_path / "local", 20, 10)
    write_tiny_idx_dataset(tmp_path / "system", 20, 10, gz=True)
    info = fetch_dataset(_params(tmp_path / "local", tmp_path / "system"), tmp_path / "out", tiny.expected())
    assert (info["source"], info["location"]) == ("local_dir", str(tmp_path / "local"))


def test_system_dir_used_when_local_dir_is_none(tmp_path, caplog):
    tiny = write_tiny_idx_dataset(tmp_path / "system", 30, 20, side=12, gz=True)
    out = tmp_path / "raw" / "fashion-mnist"
    with caplog.at_level(logging.INFO, logger="cnnpipe"):
        info = fetch_dataset(_params(None, tmp_path / "system"), out, tiny.expected())
    assert "source local_dir skipped: not configured" in caplog.text
    # Decompressed under the canonical names, plus a record of where they came from.
    assert sorted(p.name for p in out.iterdir()) == sorted([*tiny.files(), "source.json"])
    for name, array in tiny.files().items():
        assert (out / name).read_bytes() == encode_idx(array)
    record = json.loads((out / "source.json").read_text())
    assert record == info
    assert record == {
        "dataset": "fashion-mnist",
        "source": "system_dir",
        "location": str(tmp_path / "system"),
        "files": {n: {"sha256": h, "bytes": b} for n, (h, b) in tiny.expected().items()},
        "class_names": list(FASHION_MNIST_CLASSES),
        "counts": {"train": 30, "test": 20},
        "image_shape": [12, 12],
    }


def test_incomplete_local_dir_is_skipped_with_reason(tmp_path, caplog):
    tiny = write_tiny_idx_dataset(tmp_path / "system", 20, 10)
    write_tiny_idx_dataset(tmp_path / "local", 20, 10)
    (tmp_path / "local" / TRAIN_LABELS).unlink()
    with caplog.at_level(logging.INFO, logger="cnnpipe"):
        info = fetch_dataset(_params(tmp_path / "local", tmp_path / "system"), tmp_path / "out", tiny.expected())
    assert info["source"] == "system_dir"
    assert f"lacks {TRAIN_LABELS} (plain or .gz)" in caplog.text


def test_url_used_when_no_directory_has_the_files(tmp_path, serve):
    tiny = write_tiny_idx_dataset(tmp_path / "mirror", 20, 10, gz=True)
    url, server = serve(tmp_path / "mirror")
    info = fetch_dataset(_params(tmp_path / "absent", NOWHERE, url), tmp_path / "out", tiny.expected())
    assert (info["source"], info["location"]) == ("url", url)
    assert sorted(server.requests) == sorted(f"/{n}.gz" for n in tiny.files())
    assert (tmp_path / "out" / TRAIN_IMAGES).read_bytes() == encode_idx(tiny.x_train)


def test_rerun_gives_byte_identical_output(tmp_path):
    tiny = write_tiny_idx_dataset(tmp_path / "local", 20, 10, gz=True)
    params = _params(tmp_path / "local")
    fetch_dataset(params, tmp_path / "out", tiny.expected())
    first = _snapshot(tmp_path / "out")
    fetch_dataset(params, tmp_path / "out", tiny.expected())
    assert _snapshot(tmp_path / "out") == first


# ---------------------------------------------------------------------------- verification


def test_hash_mismatch_is_an_error_not_a_fall_back(tmp_path):
    good = write_tiny_idx_dataset(tmp_path / "system", 20, 10)
    bad = write_tiny_idx_dataset(tmp_path / "local", 20, 10, seed=1)  # same names, other bytes
    with pytest.raises(DataError) as err:
        fetch_dataset(_params(tmp_path / "local", tmp_path / "system"), tmp_path / "out", good.expected())
    msg = str(err.value)
    assert f"source local_dir ({tmp_path / 'local'})" in msg
    assert str(tmp_path / "local" / TRAIN_IMAGES) in msg
    assert f"expected sha256 {good.expected()[TRAIN_IMAGES][0]}" in msg
    assert f"found {bad.expected()[TRAIN_IMAGES][0]}" in msg
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "system"]  # no temp leftovers


def test_failed_fetch_leaves_previous_output_untouched(tmp_path):
    good = write_tiny_idx_dataset(tmp_path / "good", 20, 10)
    write_tiny_idx_dataset(tmp_path / "bad", 20, 10, seed=1)
    fetch_dataset(_params(tmp_path / "good"), tmp_path / "out", good.expected())
    before = _snapshot(tmp_path / "out")
    with pytest.raises(DataError, match="fails verification"):
        fetch_dataset(_params(tmp_path / "bad"), tmp_path / "out", good.expected())
    assert _snapshot(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "out"]


def test_verified_files_that_do_not_parse_are_rejected(tmp_path):
    tiny = write_tiny_idx_dataset(tmp_path / "local", 20, 10)
    write_idx(tmp_path / "local" / TRAIN_LABELS, tiny.y_train[:19])  # 20 images, 19 labels
    expected = tiny.expected()
    short = encode_idx(tiny.y_train[:19])
    expected[TRAIN_LABELS] = (sha256_bytes(short), len(short))
    with pytest.raises(DataError) as err:
        fetch_dataset(_params(tmp_path / "local"), tmp_path / "out", expected)
    assert "source local_dir" in str(err.value)
    assert "has 20 images" in str(err.value) and "has 19 labels" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_corrupt_gzip_in_a_source_is_an_error(tmp_path):
    tiny = write_tiny_idx_dataset(tmp_path / "local", 20, 10, gz=True)
    path = tmp_path / "local" / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"source local_dir .*{TRAIN_IMAGES}\.gz: corrupt gzip data"):
        fetch_dataset(_params(tmp_path / "local"), tmp_path / "out", tiny.expected())


def test_every_source_skipped_says_why_and_what_to_do(tmp_path, serve):
    (tmp_path / "empty").mkdir()
    url, server = serve(tmp_path / "empty")  # answers 404 for everything
    with pytest.raises(DataError) as err:
        fetch_dataset(_params(None, NOWHERE, url, retries=2), tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith("no source could provide fashion-mnist: ")
    assert "local_dir: not configured (fetch.local_dir is null)" in msg
    assert f"system_dir: {NOWHERE} does not exist" in msg
    assert f"url: {url}/train-images-idx3-ubyte.gz: HTTP 404" in msg
    assert "install the Debian package dataset-fashion-mnist" in msg
    assert "set fetch.local_dir" in msg and "allow network access" in msg
    assert "\n" not in msg  # stages print it as one line
    assert server.requests == ["/train-images-idx3-ubyte.gz"]  # a 404 is not retried
    assert not (tmp_path / "out").exists()


def test_unreachable_url_is_skipped(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"url: could not download http://127\.0\.0\.1:\d+/\S+ after 1 attempt"):
        fetch_dataset(_params(url=f"http://127.0.0.1:{port}"), tmp_path / "out")


# ---------------------------------------------------------------------------- retries


def test_download_retries_after_a_server_error(tmp_path, serve):
    tiny = write_tiny_idx_dataset(tmp_path / "mirror", 20, 10, gz=True)
    url, server = serve(tmp_path / "mirror", failures=1)
    info = fetch_dataset(_params(url=url, retries=1), tmp_path / "out", tiny.expected(), backoff_s=0.01)
    assert info["source"] == "url"
    assert server.requests[:2] == [f"/{TRAIN_IMAGES}.gz"] * 2  # failed once, then served


def test_download_gives_up_after_the_retries(tmp_path, serve):
    tiny = write_tiny_idx_dataset(tmp_path / "mirror", 20, 10, gz=True)
    url, server = serve(tmp_path / "mirror", failures=99)
    with pytest.raises(DataError, match=r"after 3 attempt\(s\): HTTP 500"):
        fetch_dataset(_params(url=url, retries=2), tmp_path / "out", tiny.expected(), backoff_s=0.01)
    assert len(server.requests) == 3


# ---------------------------------------------------------------------------- the stage


def _run_stage(tmp_path: Path, fetch: dict) -> subprocess.CompletedProcess:
    params = write_params(tmp_path / "params.yaml", {"paths": {"raw": str(tmp_path / "raw")}, "fetch": fetch})
    return subprocess.run(
        [sys.executable, "-m", "stages.fetch", "--params", str(params)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def test_stage_fails_with_one_line_on_bad_local_files(tmp_path):
    write_tiny_idx_dataset(tmp_path / "local", 20, 10)  # not Fashion-MNIST: hashes cannot match
    result = _run_stage(tmp_path, {"local_dir": str(tmp_path / "local"), "system_dir": None, "url": None})
    assert result.returncode == 1, result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("stage fetch failed: ")]
    assert len(failures) == 1, result.stderr
    assert "fails verification" in failures[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "raw" / "fashion-mnist").exists()


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_stage_on_the_real_system_dir(tmp_path):
    result = _run_stage(tmp_path, {"local_dir": None, "system_dir": str(SYSTEM_DIR), "url": "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "raw" / "fashion-mnist"
    record = json.loads((out / "source.json").read_text())
    assert record["source"] == "system_dir"
    assert record["counts"] == {"train": 60000, "test": 10000} and record["image_shape"] == [28, 28]
    for name, (digest, size) in FASHION_MNIST_FILES.items():
        assert (out / name).stat().st_size == size
        assert sha256_file(out / name) == digest
    assert record["class_names"] == list(FASHION_MNIST_CLASSES)


def test_idx_dataset_records_hashes_without_pinning(tmp_path):
    from cnnpipe.data.raw.fetch import dataset_spec

    tiny = write_tiny_idx_dataset(tmp_path / "src", n_train=20, n_test=10)
    params = params_with(
        {"fetch": {"dataset": "idx", "local_dir": str(tmp_path / "src"), "system_dir": None, "url": None,
                   "class_names": [f"c{i}" for i in range(10)]}}
    ).fetch
    expected, names = dataset_spec(params)
    record = fetch_dataset(params, tmp_path / "out", expected, names)
    assert record["class_names"] == [f"c{i}" for i in range(10)]
    assert {n: (f["sha256"], f["bytes"]) for n, f in record["files"].items()} == tiny.expected()
    # Fashion-MNIST stays pinned: the same tiny files are rejected under its name.
    fm = params_with({"fetch": {"local_dir": str(tmp_path / "src"), "system_dir": None, "url": None}}).fetch
    with pytest.raises(DataError, match="fails verification"):
        fetch_dataset(fm, tmp_path / "out2", *dataset_spec(fm))
