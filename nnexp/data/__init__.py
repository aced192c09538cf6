"""The data sets nnexp trains on, as arrays in the book's three splits.

`load_dataset(name)` is the one entry point: it finds (or downloads, or builds) the files,
checks them, and returns a `Dataset` of float32 images in [0, 1] shaped (N, 1, 28, 28) with
int64 labels. Everything about files lives in `mnist.py`; the book's expanded training set and
the image transforms in `expand.py`; per-epoch random augmentation in `augment.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnexp.data.augment import AUGMENT_KEYS, augment_epoch, check_augment_spec
from nnexp.data.expand import (
    ExpandResult,
    build_expanded_from_arrays,
    build_expanded,
    default_expanded_path,
    elastic,
    expand_shifts,
    load_expanded,
    rotate,
    shift,
)
from nnexp.data.mnist import cache_dir, load_idx_set, n_validation, read_idx, resolve_data_dir, write_idx
from nnexp.errors import DataError

__all__ = [
    "AUGMENT_KEYS", "DATASETS", "Dataset", "ExpandResult", "Split", "augment_epoch", "build_expanded",
    "cache_dir", "check_augment_spec", "default_expanded_path", "elastic", "expand_shifts",
    "load_dataset", "load_expanded", "read_idx", "resolve_data_dir", "rotate", "shift", "write_idx",
]

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "mnist-expanded")


@dataclass(frozen=True)
class Split:
    """One split: x (N, 1, 28, 28) float32 in [0, 1], C-contiguous; y (N,) int64 in 0..9."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """The three splits of a data set plus where they came from (JSON-able, for summaries)."""

    name: str
    train: Split
    validation: Split
    test: Split
    num_classes: int
    source: dict


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) / 255, the layout every backend expects."""
    x = np.ascontiguousarray(images[:, None, :, :], dtype=np.float32)  # (N, 1, 28, 28)
    x /= np.float32(255.0)
    return Split(x=x, y=np.ascontiguousarray(labels, dtype=np.int64))


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    train_size: int | None = None,
    expanded_path: str | os.PathLike | None = None,
    expanded_seed: int = 0,
    verify_checksums: bool = True,
) -> Dataset:
    """Load `name` in the book's split: train = first 50,000 training images, validation =
    the last 10,000, test = the 10,000 t10k images; "mnist-expanded" swaps train for the
    250,000-image expanded file (built on first use). `train_size=N` keeps the first N
    training images. `verify_checksums=False` is for tests with fake data directories.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    train_x, train_y, test_x, test_y, source = load_idx_set(name, data_dir, verify_checksums=verify_checksums)
    n_train = len(train_x) - n_validation(len(train_x))
    validation = _to_split(train_x[n_train:], train_y[n_train:])
    test = _to_split(test_x, test_y)

    if name == "mnist-expanded":
        train_images, train_labels, meta = _expanded_train(
            expanded_path, expanded_seed, source, train_x[:n_train], train_y[:n_train]
        )
        source = {**source, "expanded": meta}
    else:
        train_images, train_labels = train_x[:n_train], train_y[:n_train]

    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, (int, np.integer)) or not (
            1 <= train_size <= len(train_images)
        ):
            raise DataError(
                f"data.train_size: {train_size!r} is not a whole number between 1 and "
                f"{len(train_images)} (the size of the {name} training split)"
            )
        train_images, train_labels = train_images[:train_size], train_labels[:train_size]
        source = {**source, "train_size": int(train_size)}

    return Dataset(
        name=name,
        train=_to_split(train_images, train_labels),
        validation=validation,
        test=test,
        num_classes=10,
        source=source,
    )


def _expanded_train(expanded_path, seed, source, train_x, train_y):
    """The expanded training images, built from these very files if the file is missing."""
    path = Path(expanded_path).expanduser() if expanded_path is not None else default_expanded_path(seed)
    if not path.exists():
        build_expanded_from_arrays(train_x, train_y, source, out=path, seed=seed)
    images, labels, meta = load_expanded(path)
    key = "train-images-idx3-ubyte"
    if meta.get("source_md5", {}).get(key, source["md5"][key]) != source["md5"][key]:
        raise DataError(
            f"{path} was built from different training images than those in "
            f"{source['directory']}; rebuild it with --force"
        )
    return images, labels, {"path": str(path.resolve()), **meta}
