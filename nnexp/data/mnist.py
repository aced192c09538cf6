"""MNIST and Fashion-MNIST: IDX files, checksums, where the files live, the book's split.

Why this module is strict: every result in the book is quoted for one exact data set, so a
truncated download or a look-alike file must stop the run with a message that names the file,
never train quietly on the wrong pixels. Every problem with a file becomes a `DataError`.

Non-goals: no other data formats, no pickled arrays (the book's ``mnist.pkl.gz`` is derived from
these files), no automatic download of Fashion-MNIST (Debian packages it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from nnexp.errors import DataError
from nnexp.fileio import atomic_path

# The four files of a data set, by role; stored gzipped (``.gz``) or plain.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# MD5 of each *uncompressed* canonical MNIST file (the same as LeCun's originals).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_APT_HINT = "apt-get install dataset-fashion-mnist"

# Both data sets hold 60,000 training and 10,000 test images; the book keeps the last
# 10,000 training images (one sixth) for validation.
N_TRAIN_FILE, N_TEST_FILE = 60_000, 10_000
IMAGE_SHAPE = (28, 28)

# IDX type byte -> big-endian numpy dtype (the format's full table, though MNIST uses 0x08).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def cache_dir() -> Path:
    """Where downloads and built files go: ``$NNEXP_CACHE_DIR``, else ``~/.cache/nnexp``."""
    env = os.environ.get("NNEXP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nnexp"


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The directory that holds (or, for MNIST, will receive) the IDX files of `name`.

    Order: the `data_dir` argument, then the data set's environment variable
    (``NNEXP_DATA_DIR`` for MNIST and its expansion, ``NNEXP_FASHION_MNIST_DIR``), then the
    default (``cache_dir()/"mnist"``, or Debian's Fashion-MNIST directory).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if name in ("mnist", "mnist-expanded"):
        env = os.environ.get("NNEXP_DATA_DIR")
        return Path(env).expanduser() if env else cache_dir() / "mnist"
    if name == "fashion-mnist":
        env = os.environ.get("NNEXP_FASHION_MNIST_DIR")
        return Path(env).expanduser() if env else FASHION_MNIST_DIR
    raise DataError(f"unknown data set {name!r}; choose one of mnist, fashion-mnist, mnist-expanded")


def _read_bytes(path: Path) -> bytes:
    """The uncompressed content of `path`; gzip is recognised by its magic bytes, not the name."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({e}); download it again") from e


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode IDX bytes: 2 zero bytes, a type byte, a rank byte, rank big-endian uint32 sizes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad header); is it an MNIST-format file?")
    dtype, rank = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    start = 4 + 4 * rank
    if rank == 0 or len(data) < start:
        raise DataError(f"{path} has a truncated IDX header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - start != expected:
        raise DataError(
            f"{path} holds {len(data) - start} bytes of data but its header {dims} needs "
            f"{expected}; the file is truncated or corrupt, download it again"
        )
    # (dims...) native-endian copy, so callers get an ordinary writable array.
    return np.frombuffer(data, dtype=dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzipped or plain IDX file into an array shaped as its header says."""
    path = Path(path)
    return _parse_idx(_read_bytes(path), path)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` (uint8) as an IDX file, gzipped when `path` ends in ``.gz``.

    The inverse of `read_idx`; used to export data sets and to make small fake MNIST
    directories in tests.
    """
    path, array = Path(path), np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def write_mnist_files(directory, train_x, train_y, test_x, test_y, *, gz: bool = True) -> Path:
    """Write the four IDX files of an MNIST-format data set into `directory` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    for role, array in arrays.items():
        write_idx(directory / (FILES[role] + suffix), array)
    return directory


def _find(directory: Path, base: str) -> Path | None:
    for candidate in (directory / (base + ".gz"), directory / base):
        if candidate.is_file():
            return candidate
    return None


def fetch_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download `url` to `dest`. The only function that touches the network (tests replace it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f)


def _download_mnist(directory: Path, missing: list[str]) -> None:
    """Fetch the `missing` MNIST files into `directory`, each checked before it is renamed in."""
    directory.mkdir(parents=True, exist_ok=True)
    for base in missing:
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                with atomic_path(directory / (base + ".gz")) as tmp:  # renamed in once checked
                    fetch_url(mirror + base + ".gz", tmp)
                    digest = hashlib.md5(_read_bytes(tmp)).hexdigest()
                    if digest != MNIST_MD5[base]:
                        raise DataError(f"checksum {digest} is not MNIST's")
                break
            except (OSError, DataError, ValueError) as e:  # URLError and timeouts are OSErrors
                errors.append(f"{mirror}: {e}")
        else:
            names = ", ".join(b + ".gz" for b in FILES.values())
            raise DataError(
                f"could not download {base}.gz ({'; '.join(errors)}); put the four MNIST files "
                f"({names}) into {directory}, or point NNEXP_DATA_DIR at a directory holding them"
            )


def load_idx_set(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    verify_checksums: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """The raw arrays of `name` ("mnist" or "fashion-mnist") and a provenance dict.

    Returns train images (60000, 28, 28) uint8, train labels (60000,) int64, test images and
    labels likewise, and ``{"directory", "files", "md5"}``. MNIST missing from the *default*
    directory is downloaded; a directory given by argument or environment is never written to.
    `verify_checksums=False` skips the canonical checks (MD5s for MNIST, image counts for
    Fashion-MNIST) so tests can use small fake directories; headers are always validated.
    """
    directory = resolve_data_dir(name, data_dir)
    is_mnist = name in ("mnist", "mnist-expanded")
    found = {role: _find(directory, base) for role, base in FILES.items()}
    missing = [FILES[role] for role, path in found.items() if path is None]
    if missing:
        if not is_mnist:
            raise DataError(
                f"Fashion-MNIST not found in {directory} (missing {', '.join(missing)}); "
                f"install it with `{FASHION_APT_HINT}` or set NNEXP_FASHION_MNIST_DIR"
            )
        chosen = data_dir is not None or os.environ.get("NNEXP_DATA_DIR")
        if chosen:
            raise DataError(
                f"MNIST files missing from {directory}: {', '.join(b + '.gz' for b in missing)} "
                f"(plain, un-gzipped files are accepted too)"
            )
        _download_mnist(directory, missing)
        found = {role: _find(directory, base) for role, base in FILES.items()}

    arrays, md5s = {}, {}
    for role, path in found.items():
        data, base = _read_bytes(path), FILES[role]
        md5s[base] = hashlib.md5(data).hexdigest()  # of the uncompressed content
        expected = MNIST_MD5[base] if is_mnist and verify_checksums else None
        if expected is not None and md5s[base] != expected:
            raise DataError(
                f"{path} has MD5 {md5s[base]}, not MNIST's {expected}: the file is corrupt "
                f"or not MNIST; delete it and download it again"
            )
        arrays[role] = _parse_idx(data, path)

    # For MNIST the checksums already pin the counts; Fashion-MNIST has only the counts.
    _check_shapes(arrays, found, canonical=verify_checksums and not is_mnist)
    source = {
        "dataset": "fashion-mnist" if not is_mnist else "mnist",
        "directory": str(directory.resolve()),
        "files": {role: path.name for role, path in found.items()},
        "md5": md5s,
    }
    return (
        arrays["train_images"],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"],
        arrays["test_labels"].astype(np.int64),
        source,
    )


def _check_shapes(arrays: dict, paths: dict, *, canonical: bool) -> None:
    """Images must be (N, 28, 28) uint8 with N matching labels (N,) in 0..9."""
    for split, n_canonical in (("train", N_TRAIN_FILE), ("test", N_TEST_FILE)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ipath, lpath = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{ipath} holds {images.dtype} images of shape {images.shape}, not (N, 28, 28) bytes")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{lpath} holds {labels.shape} labels for {len(images)} images in {ipath}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{lpath} holds labels outside 0..9; is it an MNIST-format label file?")
        if canonical and len(images) != n_canonical:
            raise DataError(f"{ipath} holds {len(images)} images, expected {n_canonical}")
        if split == "train" and len(images) < 2:
            raise DataError(f"{ipath} holds {len(images)} images, too few to split")


def n_validation(n_train_file: int) -> int:
    """Size of the validation split: the book's last 10,000 of 60,000, i.e. one sixth."""
    return max(1, n_train_file // 6)
