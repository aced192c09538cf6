"""MNIST / Fashion-MNIST loading: IDX parsing, checksums, lookup order, download, the split.

Fake data directories (small random IDX files) test the logic; the real files are used only
through NNEXP_DATA_DIR (CI sets it). No test touches the network: `fetch_url` is replaced.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from nnexp.data import DATASETS, cache_dir, load_dataset, read_idx, resolve_data_dir
from nnexp.data import mnist
from nnexp.errors import DataError, UserError

from conftest import write_fake_mnist

REAL_DIR = os.environ.get("NNEXP_DATA_DIR")
needs_real = pytest.mark.skipif(not REAL_DIR, reason="NNEXP_DATA_DIR not set (real MNIST files)")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No data-dir variables, the cache in tmp, and a downloader that fails the test if used."""
    monkeypatch.delenv("NNEXP_DATA_DIR", raising=False)
    monkeypatch.delenv("NNEXP_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(url, dest, timeout=30.0):
        raise AssertionError(f"network used: {url}")

    monkeypatch.setattr(mnist, "fetch_url", no_network)
    return tmp_path


# --- IDX files -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip(tmp_path, suffix):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    mnist.write_idx(tmp_path / f"a{suffix}", array)
    out = read_idx(tmp_path / f"a{suffix}")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_idx_bad_header(tmp_path):
    (tmp_path / "x").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "x")


def test_idx_wrong_length(tmp_path):
    mnist.write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "x")


def test_truncated_gzip(tmp_path):
    mnist.write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    data = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="x.gz.*truncated or corrupt gzip"):
        read_idx(tmp_path / "x.gz")


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


# --- split and dataset shape -----------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fake_split_follows_file_order(clean_env, gz):
    train_x, train_y, test_x, test_y = write_fake_mnist(clean_env / "d", gz=gz)
    ds = load_dataset("mnist", data_dir=clean_env / "d", verify_checksums=False)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert (len(ds.train.y), len(ds.validation.y), len(ds.test.y)) == (50, 10, 12)
    for split, (x, y) in [(ds.train, (train_x[:50], train_y[:50])), (ds.validation, (train_x[50:], train_y[50:])),
                          (ds.test, (test_x, test_y))]:
        assert split.x.dtype == np.float32 and split.x.shape == (len(y), 1, 28, 28) and split.x.flags.c_contiguous
        assert split.y.dtype == np.int64
        np.testing.assert_allclose(split.x[:, 0], x / 255.0, atol=1e-7)
        np.testing.assert_array_equal(split.y, y)
    assert ds.source["files"]["train_images"] == "train-images-idx3-ubyte" + (".gz" if gz else "")
    train_file = clean_env / "d" / ds.source["files"]["train_images"]
    assert ds.source["md5"]["train-images-idx3-ubyte"] == hashlib.md5(_uncompressed(train_file)).hexdigest()


def _uncompressed(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.mark.parametrize("n", [1, 7, 50])
def test_train_size_takes_first_n(clean_env, n):
    train_x, *_ = write_fake_mnist(clean_env / "d")
    ds = load_dataset("mnist", data_dir=clean_env / "d", train_size=n, verify_checksums=False)
    assert len(ds.train.y) == n and len(ds.validation.y) == 10
    np.testing.assert_allclose(ds.train.x[:, 0], train_x[:n] / 255.0, atol=1e-7)


@pytest.mark.parametrize("n", [0, -1, 51, 2.5, True, "10"])
def test_bad_train_size(clean_env, n):
    write_fake_mnist(clean_env / "d")
    with pytest.raises(DataError, match="data.train_size"):
        load_dataset("mnist", data_dir=clean_env / "d", train_size=n, verify_checksums=False)


def test_unknown_dataset():
    assert DATASETS == ("mnist", "fashion-mnist", "mnist-expanded")
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")


def test_labels_out_of_range(clean_env):
    write_fake_mnist(clean_env / "d")
    mnist.write_idx(clean_env / "d" / "t10k-labels-idx1-ubyte.gz", np.full(12, 11, np.uint8))
    with pytest.raises(DataError, match="t10k-labels.*outside 0..9"):
        load_dataset("mnist", data_dir=clean_env / "d", verify_checksums=False)


def test_label_count_mismatch(clean_env):
    write_fake_mnist(clean_env / "d")
    mnist.write_idx(clean_env / "d" / "train-labels-idx1-ubyte.gz", np.zeros(59, np.uint8))
    with pytest.raises(DataError, match="train-labels"):
        load_dataset("mnist", data_dir=clean_env / "d", verify_checksums=False)


def test_data_error_is_user_error():
    assert issubclass(DataError, UserError) and DataError.exit_code == 2


# --- where the files are ---------------------------------------------------------------------


def test_lookup_order(clean_env, monkeypatch):
    assert cache_dir() == clean_env / "cache"
    assert resolve_data_dir("mnist") == clean_env / "cache" / "mnist"
    monkeypatch.setenv("NNEXP_DATA_DIR", str(clean_env / "env"))
    assert resolve_data_dir("mnist") == clean_env / "env"
    assert resolve_data_dir("mnist-expanded") == clean_env / "env"
    assert resolve_data_dir("mnist", clean_env / "arg") == clean_env / "arg"
    assert resolve_data_dir("fashion-mnist") == Path("/usr/share/datasets/fashion-mnist")
    monkeypatch.setenv("NNEXP_FASHION_MNIST_DIR", str(clean_env / "f"))
    assert resolve_data_dir("fashion-mnist") == clean_env / "f"


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("NNEXP_CACHE_DIR", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "nnexp"


def test_explicit_dir_missing_files_never_downloads(clean_env):
    write_fake_mnist(clean_env / "d")
    (clean_env / "d" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing from .*d: t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=clean_env / "d")


def test_env_dir_missing_files_never_downloads(clean_env, monkeypatch):
    monkeypatch.setenv("NNEXP_DATA_DIR", str(clean_env / "empty"))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz, train-labels"):
        load_dataset("mnist")


def _fake_mirror(monkeypatch, source_dir: Path, fail_first_mirror=False):
    """Serve `source_dir` as the mirrors, with its MD5s as the canonical table."""
    monkeypatch.setattr(mnist, "MNIST_MD5", {b: hashlib.md5(_uncompressed(source_dir / (b + ".gz"))).hexdigest()
                                             for b in mnist.FILES.values()})
    calls = []

    def fetch(url, dest, timeout=30.0):
        calls.append(url)
        if fail_first_mirror and url.startswith(mnist.MNIST_MIRRORS[0]):
            raise urllib.error.URLError("mirror down")
        shutil.copyfile(source_dir / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(mnist, "fetch_url", fetch)
    return calls


@pytest.mark.parametrize("fail_first_mirror", [False, True])
def test_download_into_cache(clean_env, monkeypatch, fail_first_mirror):
    train_x, *_ = write_fake_mnist(clean_env / "mirror")
    calls = _fake_mirror(monkeypatch, clean_env / "mirror", fail_first_mirror)
    ds = load_dataset("mnist")
    target = clean_env / "cache" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(b + ".gz" for b in mnist.FILES.values())
    assert len(calls) == (8 if fail_first_mirror else 4)
    np.testing.assert_allclose(ds.train.x[0, 0], train_x[0] / 255.0, atol=1e-7)
    load_dataset("mnist")  # second time from the cache
    assert len(calls) == (8 if fail_first_mirror else 4)


def test_download_with_bad_checksum_keeps_nothing(clean_env, monkeypatch):
    write_fake_mnist(clean_env / "mirror")
    _fake_mirror(monkeypatch, clean_env / "mirror")
    monkeypatch.setitem(mnist.MNIST_MD5, "train-images-idx3-ubyte", "0" * 32)
    with pytest.raises(DataError, match="could not download train-images.*not MNIST's"):
        load_dataset("mnist")
    assert not any("train-images" in p.name for p in (clean_env / "cache" / "mnist").iterdir())


def test_offline_message(clean_env, monkeypatch):
    def offline(url, dest, timeout=30.0):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mnist, "fetch_url", offline)
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    message = str(err.value)
    assert "\n" not in message
    for base in mnist.FILES.values():
        assert base + ".gz" in message
    assert str(clean_env / "cache" / "mnist") in message and "NNEXP_DATA_DIR" in message
    assert list((clean_env / "cache" / "mnist").iterdir()) == []  # no partial files left


def test_checksum_mismatch_on_fake(clean_env):
    write_fake_mnist(clean_env / "d")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz has MD5 .* corrupt or not MNIST"):
        load_dataset("mnist", data_dir=clean_env / "d")


# --- Fashion-MNIST ---------------------------------------------------------------------------


def test_fashion_missing_dir_hint(clean_env, monkeypatch):
    monkeypatch.setenv("NNEXP_FASHION_MNIST_DIR", str(clean_env / "nowhere"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_fake_and_count_check(clean_env, monkeypatch):
    write_fake_mnist(clean_env / "f", gz=False)
    monkeypatch.setenv("NNEXP_FASHION_MNIST_DIR", str(clean_env / "f"))
    ds = load_dataset("fashion-mnist", verify_checksums=False)
    assert ds.name == "fashion-mnist" and len(ds.train.y) == 50
    with pytest.raises(DataError, match="holds 60 images, expected 60000"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(not mnist.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion(clean_env):
    ds = load_dataset("fashion-mnist")
    assert (len(ds.train.y), len(ds.validation.y), len(ds.test.y)) == (50_000, 10_000, 10_000)
    assert ds.train.y[0] == 9 and ds.test.y[0] == 9  # ankle boots, the files' first images


# --- the real MNIST files --------------------------------------------------------------------


@needs_real
def test_real_mnist_split():
    ds = load_dataset("mnist")
    assert (len(ds.train.y), len(ds.validation.y), len(ds.test.y)) == (50_000, 10_000, 10_000)
    assert ds.train.y[0] == 5 and ds.test.y[0] == 7 and ds.validation.y[0] == 3
    assert ds.train.x.shape == (50_000, 1, 28, 28) and ds.train.x.dtype == np.float32
    assert ds.train.x.min() == 0.0 and ds.train.x.max() == 1.0
    assert ds.source["md5"] == mnist.MNIST_MD5
    assert np.bincount(ds.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_real
def test_real_checksum_error_on_corrupted_copy(tmp_path):
    for name in os.listdir(REAL_DIR):
        if name.endswith(".gz"):
            shutil.copy(Path(REAL_DIR) / name, tmp_path / name)
    labels = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # still a valid IDX file, one label changed
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz has MD5 .* corrupt or not MNIST"):
        load_dataset("mnist", data_dir=tmp_path)


@needs_real
def test_real_truncated_file(tmp_path):
    for name in os.listdir(REAL_DIR):
        if name.endswith(".gz"):
            shutil.copy(Path(REAL_DIR) / name, tmp_path / name)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:10_000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is a truncated or corrupt gzip"):
        load_dataset("mnist", data_dir=tmp_path)
