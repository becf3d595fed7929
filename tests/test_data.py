"""Data sets: the embedded digits, Debian's Fashion-MNIST, and checksummed downloads tested against a
local HTTP server serving small files the test makes."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from atlas.cli import main
from atlas.errors import DatasetUnavailable
from atlas.harness import data


def test_digits_is_embedded_with_a_fixed_split() -> None:
    ds = data.load_dataset("digits")
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 10
    # Standardised with the training split's statistics.
    assert abs(float(ds.train.x.mean())) < 1e-4
    assert abs(float(ds.train.x.std()) - 1.0) < 1e-3


@pytest.mark.skipif(not (data.DEBIAN_DATASETS / "fashion-mnist").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package() -> None:
    ds = data.load_dataset("fashion-mnist")
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert ds.input_shape == (1, 28, 28)
    assert sorted(ds.train.y.unique().tolist()) == list(range(10))
    assert ds.source.startswith("/usr/share/datasets")


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(DatasetUnavailable, match="unknown data set 'mnits'") as err:
        data.load_dataset("mnits")
    assert "fashion-mnist" in str(err.value)


def test_missing_dataset_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetUnavailable) as err:
        data.load_dataset("cifar10", data_dir=tmp_path / "nothing-here")
    text = str(err.value)
    assert "was not found" in text and "cifar-10-python.tar.gz" in text and "--download" in text


def test_missing_dataset_through_the_cli_is_a_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["reproduce", "hinton2015", "--profile", "smoke", "--dataset", "svhn",
                 "--data-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith("error: data set 'svhn'") and "Traceback" not in err


# ------------------------------------------------------------------------------ downloads
def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A local HTTP server on 127.0.0.1 serving a tiny MNIST-format data set; yields its base URL
    and the files' SHA-256."""
    root = tmp_path / "served"
    root.mkdir()
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (20, 28, 28))),
        "train-labels-idx1-ubyte.gz": _idx(np.arange(20) % 10),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (10, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(np.arange(10)),
    }
    for name, payload in files.items():
        (root / name).write_bytes(payload)
    digests = {name: hashlib.sha256(payload).hexdigest() for name, payload in files.items()}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", digests
    finally:
        server.shutdown()
        server.server_close()


def _mnist_spec_with(digests: dict[str, str]) -> data.DatasetSpec:
    spec = data.DATASETS["mnist"]
    return replace(spec, files=tuple(replace(f, sha256=digests[f.name]) for f in spec.files))


def test_the_real_mnist_spec_points_at_canonical_files_with_sha256() -> None:
    spec = data.DATASETS["mnist"]
    assert [f.name for f in spec.files] == list(data._IDX)
    assert all(f.sha256 and len(f.sha256) == 64 for f in spec.files)
    assert spec.files[0].sha256 == "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"


def test_download_checks_sha256_and_loads(idx_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, digests = idx_server
    monkeypatch.setitem(data.DATASETS, "mnist", _mnist_spec_with(digests))
    ds = data.load_dataset("mnist", data_dir=tmp_path / "data", allow_download=True, base_url=url)
    assert (len(ds.train), len(ds.test)) == (20, 10)
    assert ds.test.y.tolist() == list(range(10))
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(digests)


def test_download_with_a_wrong_checksum_leaves_no_file(idx_server, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, digests = idx_server
    bad = dict(digests, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    monkeypatch.setitem(data.DATASETS, "mnist", _mnist_spec_with(bad))
    with pytest.raises(DatasetUnavailable, match="does not match its published sha256"):
        data.load_dataset("mnist", data_dir=tmp_path / "data", allow_download=True, base_url=url)
    left = sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir())
    assert "t10k-images-idx3-ubyte.gz" not in left
    assert not any(name.endswith(".part") for name in left)


def test_download_from_a_dead_address_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(data.DATASETS, "mnist", _mnist_spec_with(dict.fromkeys(data._IDX, "0" * 64)))
    with pytest.raises(DatasetUnavailable, match="could not download mnist file"):
        data.load_dataset("mnist", data_dir=tmp_path / "d", allow_download=True, base_url="http://127.0.0.1:9/")


def test_a_validation_split_is_carved_from_the_training_set_and_never_reads_the_test_set(tmp_path: Path) -> None:
    """Tuning data: the training set's last N examples are evaluated on, the rest trained on; a Run
    with ``validation`` sees that data set, and its limits apply to the remaining training examples."""
    from atlas.harness.run import Run

    digits = data.load_dataset("digits")
    val = digits.validation(300)
    n = len(digits.train)
    assert len(val.train) == n - 300 and len(val.test) == 300
    assert (val.test.x == digits.train.x[n - 300:]).all() and (val.train.y == digits.train.y[: n - 300]).all()
    assert "validation" in val.source
    with pytest.raises(ValueError, match="validation split of 5000 examples"):
        digits.validation(5000)
    run = Run("hinton2015", "smoke", {"dataset": "digits", "train_limit": 500}, 0, cache_dir=tmp_path,
              progress=False, validation=300)
    seen = run.dataset()
    assert len(seen.train) == 500 and (seen.test.y == digits.train.y[n - 300:]).all()
    assert len(run.dataset(full_train=True).train) == n - 300
