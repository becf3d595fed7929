"""Data sets of the shared harness: found on disk, or downloaded from their canonical source with a
checksum, and loaded whole into memory as float tensors (every set here fits easily).

Where a set is looked for, in order: ``--data-dir`` / ``$ATLAS_DATA_DIR``, Debian's
``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``), then the user cache
``~/.cache/compression-atlas/data/<name>``. A set that is nowhere and may not be downloaded raises
:class:`~atlas.errors.DatasetUnavailable` saying how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from atlas.errors import DatasetUnavailable
from atlas.fsio import default_cache_dir

DEBIAN_DATASETS = Path("/usr/share/datasets")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set with its canonical address and published checksum."""

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None  # only where the source publishes no SHA-256 (SVHN)

    def verify(self, path: Path) -> None:
        algo, expected = ("sha256", self.sha256) if self.sha256 else ("md5", self.md5)
        if expected is None:
            return
        digest = hashlib.new(algo)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise DatasetUnavailable(
                f"{path} does not match its published {algo} checksum "
                f"(got {digest.hexdigest()[:16]}…, expected {expected[:16]}…)",
                hint="delete the file and download it again",
            )


@dataclass
class Split:
    x: torch.Tensor  # float32, N x C x H x W, normalised
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    source: str  # where it was read from

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def limited(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first ``train`` / ``test`` examples (the files' own order), for quick profiles."""
        return Dataset(self.name, self.train.subset(train), self.test.subset(test), self.num_classes, self.source)

    def validation(self, n: int) -> Dataset:
        """The data set for tuning: the training set's last ``n`` examples are the evaluation split, the
        rest the training split; the test set is left out, so a choice made on it is not made on
        the test set."""
        if not 0 < n < len(self.train):
            raise ValueError(f"a validation split of {n} examples needs a training set larger than "
                             f"{self.name}'s {len(self.train)}")
        k = len(self.train) - n
        return Dataset(self.name, Split(self.train.x[:k], self.train.y[:k]), Split(self.train.x[k:], self.train.y[k:]),
                       self.num_classes, f"{self.source} (validation: the last {n} training examples)")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    files: tuple[RemoteFile, ...]
    parse: Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None
    num_classes: int = 10
    how_to_get: str = ""
    input_shape: tuple[int, int, int] = (1, 28, 28)  # C, H, W of one example, as the harness loads it
    builtin: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = field(default=None)


# ---------------------------------------------------------------------------------------------- parsers
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0:
        raise DatasetUnavailable(f"{path} is not an IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetUnavailable(f"{path} is truncated: {data.size} values for shape {dims}")
    return data.reshape(dims)


def _parse_idx_set(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def find(stem: str) -> Path:
        for candidate in (root / f"{stem}.gz", root / stem):
            if candidate.exists():
                return candidate
        raise FileNotFoundError(root / f"{stem}.gz")

    xtr = _read_idx(find("train-images-idx3-ubyte"))[:, None]
    ytr = _read_idx(find("train-labels-idx1-ubyte"))
    xte = _read_idx(find("t10k-images-idx3-ubyte"))[:, None]
    yte = _read_idx(find("t10k-labels-idx1-ubyte"))
    return xtr, ytr, xte, yte


def _parse_cifar(root: Path, archive: str, folder: str, label_key: bytes, train: list[str], test: list[str]):
    base = root / folder
    if not base.exists():
        with tarfile.open(root / archive) as tar:
            tar.extractall(root, filter="data")

    def load(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            with open(base / name, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")  # the archive's own format (trusted, checksummed)
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return (*load(train), *load(test))


def _parse_cifar10(root: Path):
    return _parse_cifar(
        root, "cifar-10-python.tar.gz", "cifar-10-batches-py", b"labels",
        [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
    )


def _parse_cifar100(root: Path):
    return _parse_cifar(root, "cifar-100-python.tar.gz", "cifar-100-python", b"fine_labels", ["train"], ["test"])


def _parse_svhn(root: Path):
    from scipy.io import loadmat

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        mat = loadmat(root / name)
        x = np.transpose(mat["X"], (3, 2, 0, 1))  # H W C N -> N C H W
        y = mat["y"].reshape(-1).astype(np.int64) % 10  # SVHN labels the digit 0 as 10
        return x, y

    return (*load("train_32x32.mat"), *load("test_32x32.mat"))


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 8x8, values 0..16 -> 0..255
    y = bunch.target.astype(np.int64)
    # A fixed split: every fifth example is a test example (360 test, 1437 train).
    test = np.arange(len(y)) % 5 == 0
    return x[~test], y[~test], x[test], y[test]


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")


#: The published SHA-256 of every IDX file, as ``sha256sum`` prints them (set/file).
_IDX_SHA256SUMS = """
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  fashion-mnist/train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  fashion-mnist/train-labels-idx1-ubyte.gz
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  fashion-mnist/t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  fashion-mnist/t10k-labels-idx1-ubyte.gz
440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609  mnist/train-images-idx3-ubyte.gz
3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c  mnist/train-labels-idx1-ubyte.gz
8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6  mnist/t10k-images-idx3-ubyte.gz
f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6  mnist/t10k-labels-idx1-ubyte.gz
"""


def _idx_set(name: str, description: str, base_url: str, how_to_get: str) -> DatasetSpec:
    """A 28x28 set in the four IDX files of MNIST's layout, each checked against its published SHA-256."""
    sums = dict(reversed(line.split()) for line in _IDX_SHA256SUMS.strip().splitlines())
    files = tuple(RemoteFile(n, base_url + n, sha256=sums[f"{name}/{n}"]) for n in _IDX)
    return DatasetSpec(name, description, files, _parse_idx_set, how_to_get=how_to_get)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "digits", "scikit-learn's 8x8 handwritten digits (embedded; the smallest set)", (), None,
            builtin=_digits, how_to_get="ships inside scikit-learn", input_shape=(1, 8, 8),
        ),
        _idx_set("fashion-mnist", "Fashion-MNIST (Xiao et al. 2017), 60k/10k 28x28 grey images", _FASHION_URL,
                 how_to_get="on Debian: apt-get install dataset-fashion-mnist; elsewhere: --download"),
        _idx_set("mnist", "MNIST (LeCun et al. 1998), 60k/10k 28x28 grey digits", _MNIST_URL,
                 how_to_get="--download, or put the four IDX .gz files in DATA_DIR/mnist"),
        DatasetSpec(
            "cifar10", "CIFAR-10 (Krizhevsky 2009), 50k/10k 32x32 colour images",
            (RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
            _parse_cifar10,
            how_to_get="--download, or put cifar-10-python.tar.gz in DATA_DIR/cifar10", input_shape=(3, 32, 32),
        ),
        DatasetSpec(
            "cifar100", "CIFAR-100 (Krizhevsky 2009), 50k/10k 32x32 colour images, 100 classes",
            (RemoteFile("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),),
            _parse_cifar100, num_classes=100,
            how_to_get="--download, or put cifar-100-python.tar.gz in DATA_DIR/cifar100", input_shape=(3, 32, 32),
        ),
        DatasetSpec(
            "svhn", "SVHN cropped digits (Netzer et al. 2011), 73k/26k 32x32 colour images",
            (RemoteFile("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                        md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
             RemoteFile("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                        md5="eb5a983be6a315427106f1b164d9cef3")),
            _parse_svhn,
            how_to_get="--download, or put train_32x32.mat and test_32x32.mat in DATA_DIR/svhn", input_shape=(3, 32, 32),
        ),
    )
}


def candidate_dirs(name: str, data_dir: Path | None) -> list[Path]:
    dirs: list[Path] = []
    user = data_dir or (Path(os.environ["ATLAS_DATA_DIR"]) if os.environ.get("ATLAS_DATA_DIR") else None)
    if user is not None:
        dirs += [user / name, user]
    dirs.append(DEBIAN_DATASETS / name)
    dirs.append(default_cache_dir() / "data" / name)
    return dirs


def _complete(spec: DatasetSpec, folder: Path) -> bool:
    return all((folder / f.name).exists() or (folder / f.name.removesuffix(".gz")).exists() for f in spec.files)


def download(spec: DatasetSpec, target: Path, *, base_url: str | None = None, timeout: float = 60.0) -> Path:
    """Download the set's files into ``target`` and check each against its published checksum.

    A file is written to a temporary name and renamed only once its checksum matches, so an
    interrupted or corrupt download never leaves a file that looks complete. ``base_url`` replaces
    the canonical host (for mirrors, and for the tests' local server)."""
    target.mkdir(parents=True, exist_ok=True)
    for remote in spec.files:
        final = target / remote.name
        if final.exists():
            remote.verify(final)
            continue
        url = (base_url.rstrip("/") + "/" + remote.name) if base_url else remote.url
        fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{remote.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            remote.verify(tmp)
            os.replace(tmp, final)
        except (urllib.error.URLError, OSError) as exc:
            raise DatasetUnavailable(
                f"could not download {spec.name} file {remote.name} from {url}: {exc}",
                hint=spec.how_to_get,
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _to_split(x: np.ndarray, y: np.ndarray) -> Split:
    xt = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True)).float().div_(255.0)
    return Split(xt, torch.from_numpy(np.asarray(y, dtype=np.int64)))


def load_dataset(
    name: str, *, data_dir: Path | None = None, allow_download: bool = False, base_url: str | None = None
) -> Dataset:
    """Load a data set by name (see :data:`DATASETS`)."""
    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetUnavailable(
            f"unknown data set '{name}'", hint=f"known data sets: {', '.join(sorted(DATASETS))}"
        )
    if spec.builtin is not None:
        arrays, source = spec.builtin(), spec.how_to_get
    else:
        folder = next((d for d in candidate_dirs(name, data_dir) if _complete(spec, d)), None)
        if folder is None:
            if not allow_download:
                looked = ", ".join(str(d) for d in candidate_dirs(name, data_dir))
                raise DatasetUnavailable(
                    f"data set '{name}' ({spec.title}) was not found (looked in: {looked})",
                    hint=spec.how_to_get,
                )
            folder = download(spec, candidate_dirs(name, data_dir)[-1 if data_dir is None else 0],
                              base_url=base_url)
        for remote in spec.files:
            if (folder / remote.name).exists():
                remote.verify(folder / remote.name)
        assert spec.parse is not None
        try:
            arrays = spec.parse(folder)
        except (OSError, ValueError, KeyError, EOFError, tarfile.TarError) as exc:
            raise DatasetUnavailable(f"data set '{name}' in {folder} could not be read: {exc}") from None
        source = str(folder)
    xtr, ytr, xte, yte = arrays
    train, test = _to_split(xtr, ytr), _to_split(xte, yte)
    # Per-channel standardisation with the training split's own mean and std.
    mean = train.x.mean(dim=(0, 2, 3), keepdim=True)
    std = train.x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    train.x.sub_(mean).div_(std)
    test.x.sub_(mean).div_(std)
    return Dataset(name, train, test, spec.num_classes, source)
