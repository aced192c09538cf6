"""Expanded MNIST and the image transforms: shifts, rotation, elastic distortion, the builder,
the saved file, the preview, and per-epoch augmentation. Synthetic images, no network."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
from scipy import ndimage

from nnexp.data import (
    augment_epoch,
    build_expanded,
    default_expanded_path,
    elastic,
    expand_shifts,
    load_dataset,
    load_expanded,
    rotate,
    shift,
)
from nnexp.data import expand, mnist
from nnexp.errors import ConfigError, DataError

from conftest import write_fake_mnist

REAL_DIR = os.environ.get("NNEXP_DATA_DIR")


def blobs(n, seed=0):
    """Digit-like float images in [0, 1]: a Gaussian blob near the centre of each."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:28, 0:28]
    centres = rng.uniform(10, 18, size=(n, 2))[:, :, None, None]  # (n, 2, 1, 1)
    d2 = (r - centres[:, 0]) ** 2 + (c - centres[:, 1]) ** 2  # (n, 28, 28)
    return np.exp(-d2 / (2 * 3.0**2)).astype(np.float32)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("NNEXP_DATA_DIR", raising=False)
    monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "fetch_url", lambda *a, **k: pytest.fail("network used"))
    return tmp_path


# --- shift -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dy,dx,expected", [(1, 0, (6, 7)), (-1, 0, (4, 7)), (0, 1, (5, 8)), (0, -1, (5, 6)),
                                            (2, -3, (7, 4))])
def test_shift_moves_a_lit_pixel(dy, dx, expected):
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 5, 7] = 200
    out = shift(image, dy, dx)
    assert out[0, expected[0], expected[1]] == 200 and out.sum() == 200


def test_shift_zero_fills_the_vacated_edge():
    ones = np.ones((2, 1, 28, 28), np.float32)
    assert (shift(ones, 1, 0)[..., 0, :] == 0).all() and (shift(ones, 1, 0)[..., 1:, :] == 1).all()  # down
    assert (shift(ones, -1, 0)[..., -1, :] == 0).all() and (shift(ones, -1, 0)[..., :-1, :] == 1).all()  # up
    assert (shift(ones, 0, 1)[..., :, 0] == 0).all() and (shift(ones, 0, 1)[..., :, 1:] == 1).all()  # right
    assert (shift(ones, 0, -1)[..., :, -1] == 0).all() and (shift(ones, 0, -1)[..., :, :-1] == 1).all()  # left
    assert not shift(ones, 28, 0).any() and shift(ones, 0, 0).dtype == np.float32


def test_shift_matches_slicing_on_random_images():
    x = np.random.default_rng(0).random((5, 28, 28))
    np.testing.assert_array_equal(shift(x, 1, 0)[:, 1:], x[:, :-1])
    np.testing.assert_array_equal(shift(x, 0, -1)[:, :, :-1], x[:, :, 1:])
    np.testing.assert_array_equal(shift(x, 0, 0), x)


# --- the book's expansion --------------------------------------------------------------------


def _key(image):
    return np.ascontiguousarray(image).tobytes()


def test_expand_shifts_holds_each_image_and_its_four_shifts_once():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    y = np.arange(20) % 10
    images, labels = expand_shifts(x, y, np.random.default_rng(0))
    assert images.shape == (100, 28, 28) and labels.shape == (100,) and labels.dtype == np.int64
    expected = collections.Counter()
    label_of = {}
    for i in range(20):
        for dy, dx in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]:
            k = _key(shift(x[i], dy, dx))
            expected[k] += 1
            label_of[k] = y[i]
    assert collections.Counter(_key(im) for im in images) == expected
    assert all(label_of[_key(im)] == lab for im, lab in zip(images, labels))  # labels follow


def test_expand_shifts_order_is_the_books_before_the_shuffle():
    x = np.random.default_rng(2).random((3, 1, 28, 28)).astype(np.float32)
    perm = np.random.default_rng(7).permutation(15)
    images, labels = expand_shifts(x, np.array([4, 5, 6]), np.random.default_rng(7))
    unshuffled = np.empty_like(images)
    unshuffled[perm] = images
    names = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # orig, down, up, right, left
    for j in range(15):
        np.testing.assert_array_equal(unshuffled[j], shift(x[j // 5], *names[j % 5]))


def test_expand_shifts_seeding():
    x = np.random.default_rng(3).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = np.arange(20) % 10
    a, la = expand_shifts(x, y, np.random.default_rng(0))
    b, lb = expand_shifts(x, y, np.random.default_rng(0))
    c, lc = expand_shifts(x, y, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert sorted(map(_key, a)) == sorted(map(_key, c))


# --- rotation and elastic distortion ---------------------------------------------------------


def test_rotate_90_is_rot90_and_0_is_identity():
    x = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28) / (2 * 28 * 28)
    np.testing.assert_allclose(rotate(x, 90), np.rot90(x, 1, axes=(2, 3)), atol=1e-6)  # counter-clockwise
    np.testing.assert_allclose(rotate(x, -90), np.rot90(x, -1, axes=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(rotate(x, 0), x, atol=1e-6)


def test_rotate_matches_scipy_bilinear():
    x = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    ref = np.stack([ndimage.rotate(im, 17.0, reshape=False, order=1, mode="grid-constant") for im in x])
    np.testing.assert_allclose(rotate(x, 17.0), ref, atol=1e-5)


def test_rotate_each_uses_each_angle():
    x = blobs(2)
    out = expand.rotate_each(x, np.array([90.0, 0.0]))
    np.testing.assert_allclose(out[0], np.rot90(x[0]), atol=1e-6)
    np.testing.assert_allclose(out[1], x[1], atol=1e-6)


def test_warp_matches_scipy_map_coordinates():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28)).astype(np.float32)
    rows, cols = rng.uniform(-4, 32, (2, 3, 28, 28))  # many points off the image
    ref = np.stack([ndimage.map_coordinates(x[i].astype(np.float64), [rows[i], cols[i]], order=1,
                                            mode="grid-constant") for i in range(3)])
    np.testing.assert_allclose(expand._warp(x, lambda a, b: (rows[a:b], cols[a:b])), ref, atol=1e-5)


def test_gaussian_matrix_matches_scipy():
    v = np.random.default_rng(0).random((4, 28, 28))
    g = expand.gaussian_matrix(28, 4.0)
    np.testing.assert_allclose(g @ v @ g.T, ndimage.gaussian_filter(v, (0, 4, 4), mode="constant"), atol=1e-6)


@pytest.mark.parametrize("transform", ["rotate", "elastic"])
def test_range_dtype_and_bounded_mass(transform):
    x = blobs(64)
    rng = np.random.default_rng(0)
    out = rotate(x, 12) if transform == "rotate" else elastic(x, rng)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    ratio = out.sum(axis=(1, 2)) / x.sum(axis=(1, 2))  # (64,) total intensity kept
    assert 0.5 < ratio.min() and ratio.max() < 2.0 and abs(ratio.mean() - 1) < 0.1
    assert not np.allclose(out, x, atol=1e-3)
    u = np.rint(x * 255).astype(np.uint8)
    out_u = rotate(u, 12) if transform == "rotate" else elastic(u, rng)
    assert out_u.dtype == np.uint8 and out_u.shape == u.shape


def test_elastic_is_seeded_and_alpha_zero_is_identity():
    x = blobs(5)[:, None]  # (5, 1, 28, 28)
    a = elastic(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, elastic(x, np.random.default_rng(3)))
    assert a.shape == (5, 1, 28, 28)
    assert not np.array_equal(a, elastic(x, np.random.default_rng(4)))
    np.testing.assert_allclose(elastic(x, np.random.default_rng(3), alpha=0.0), x, atol=1e-6)


# --- building, saving and loading the expanded file ------------------------------------------


def test_build_on_fake_mnist(env):
    train_x, train_y, test_x, _ = write_fake_mnist(env / "d")
    out = env / "out" / "exp.npz"
    result = build_expanded(out=out, seed=5, data_dir=env / "d", verify_checksums=False)
    assert result.path == out and result.n_images == 250 and result.seconds > 0
    assert result.transforms == ["original", "shift:down", "shift:up", "shift:right", "shift:left"]
    images, labels, meta = load_expanded(out)
    assert images.dtype == np.uint8 and images.shape == (250, 28, 28) and labels.dtype == np.int64
    ref_images, ref_labels = expand_shifts(train_x[:50], train_y[:50], np.random.default_rng(5))
    np.testing.assert_array_equal(images, ref_images)  # the builder is the book's expansion
    np.testing.assert_array_equal(labels, ref_labels)
    assert meta["seed"] == 5 and meta["n_images"] == 250 and meta["format_version"] == 1
    assert meta["transforms"] == result.transforms and "train-images-idx3-ubyte" in meta["source_md5"]
    # No validation (training file 50..59) or test image leaks in.
    inside = {_key(im) for im in images}
    assert not inside & {_key(im) for im in np.concatenate([train_x[50:], test_x])}
    assert {_key(im) for im in train_x[:50]} <= inside
    assert [p.name for p in out.parent.iterdir()] == ["exp.npz"]  # no temp files left


def test_same_seed_same_file_different_seed_different_order(env):
    write_fake_mnist(env / "d")
    kw = dict(data_dir=env / "d", verify_checksums=False)
    a = build_expanded(out=env / "a.npz", seed=1, **kw).path
    b = build_expanded(out=env / "b.npz", seed=1, **kw).path
    c = build_expanded(out=env / "c.npz", seed=2, **kw).path
    assert a.read_bytes() == b.read_bytes()
    (ia, la, _), (ic, lc, _) = load_expanded(a), load_expanded(c)
    assert not np.array_equal(ia, ic)
    assert sorted(zip(map(_key, ia), la)) == sorted(zip(map(_key, ic), lc))


def test_refuses_to_overwrite_without_force(env):
    write_fake_mnist(env / "d")
    kw = dict(out=env / "e.npz", data_dir=env / "d", verify_checksums=False)
    build_expanded(seed=0, **kw)
    with pytest.raises(DataError, match="already exists; use --force"):
        build_expanded(seed=1, **kw)
    build_expanded(seed=1, force=True, **kw)
    assert load_expanded(env / "e.npz")[2]["seed"] == 1


def test_rotate_and_elastic_copies_keep_labels(env):
    train_x, train_y, *_ = write_fake_mnist(env / "d", n_train=24, n_test=4)
    result = build_expanded(out=env / "e.npz", seed=3, rotate_deg=10, elastic=2, data_dir=env / "d",
                            verify_checksums=False)
    assert result.n_images == 20 * 9 and result.transforms[5:7] == ["rotate:+10", "rotate:-10"]
    assert [t.split(":")[0] for t in result.transforms[7:]] == ["elastic#1", "elastic#2"]
    images, labels, _ = load_expanded(result.path)
    label_of = {}
    x, y = train_x[:20], train_y[:20]
    rng = np.random.default_rng(3)  # the builder's draws: elastic copies, then the shuffle
    for copy in [rotate(x, 10), rotate(x, -10), elastic(x, rng), elastic(x, rng)]:
        label_of.update((_key(im), lab) for im, lab in zip(copy, y))
    found = [label_of[_key(im)] == lab for im, lab in zip(images, labels) if _key(im) in label_of]
    assert len(found) >= 4 * 20 - 2 and all(found)  # (two copies could coincide by chance)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), 9 * np.bincount(y, minlength=10))


@pytest.mark.parametrize("kw", [dict(rotate_deg=200.0), dict(rotate_deg=float("nan")), dict(elastic=-1),
                                dict(elastic=1.5)])
def test_bad_build_options(env, kw):
    write_fake_mnist(env / "d")
    with pytest.raises(DataError):
        build_expanded(out=env / "e.npz", data_dir=env / "d", verify_checksums=False, **kw)


def test_preview_png(env):
    write_fake_mnist(env / "d")
    build_expanded(out=env / "e.npz", rotate_deg=8, data_dir=env / "d", verify_checksums=False,
                   preview=env / "p" / "preview.png")
    data = (env / "p" / "preview.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_bad_expanded_file(env, damage):
    write_fake_mnist(env / "d")
    path = build_expanded(out=env / "e.npz", data_dir=env / "d", verify_checksums=False).path
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"hello")
    else:
        path.unlink()
    with pytest.raises(DataError, match="e.npz"):
        load_expanded(path)


def test_load_dataset_expanded_builds_on_first_use(env):
    train_x, train_y, test_x, test_y = write_fake_mnist(env / "d")
    assert default_expanded_path(4) == env / "cache" / "mnist-expanded-seed4.npz"
    ds = load_dataset("mnist-expanded", data_dir=env / "d", expanded_seed=4, verify_checksums=False)
    assert default_expanded_path(4).is_file()
    plain = load_dataset("mnist", data_dir=env / "d", verify_checksums=False)
    assert ds.name == "mnist-expanded" and len(ds.train.y) == 250
    np.testing.assert_array_equal(ds.validation.x, plain.validation.x)
    np.testing.assert_array_equal(ds.test.y, plain.test.y)
    images, labels, meta = load_expanded(default_expanded_path(4))
    np.testing.assert_allclose(ds.train.x[:, 0], images / 255.0, atol=1e-7)
    assert ds.source["expanded"]["seed"] == 4
    small = load_dataset("mnist-expanded", data_dir=env / "d", expanded_seed=4, train_size=30, verify_checksums=False)
    np.testing.assert_array_equal(small.train.y, labels[:30])


def test_expanded_file_from_other_data_is_refused(env):
    write_fake_mnist(env / "a", seed=1)
    write_fake_mnist(env / "b", seed=2)
    build_expanded(out=env / "e.npz", data_dir=env / "a", verify_checksums=False)
    with pytest.raises(DataError, match="built from different training images"):
        load_dataset("mnist-expanded", data_dir=env / "b", expanded_path=env / "e.npz", verify_checksums=False)


@pytest.mark.skipif(not REAL_DIR, reason="NNEXP_DATA_DIR not set (real MNIST files)")
def test_real_build_250k(env, monkeypatch):
    monkeypatch.setenv("NNEXP_DATA_DIR", REAL_DIR)
    result = build_expanded(out=env / "real.npz")
    assert result.n_images == 250_000 and result.seconds < 60
    ds = load_dataset("mnist-expanded", expanded_path=result.path, train_size=1000)
    assert len(ds.train.y) == 1000 and len(ds.validation.y) == 10_000 and ds.test.y[0] == 7
    assert ds.source["expanded"]["source_md5"] == mnist.MNIST_MD5


# --- per-epoch augmentation ------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, {}, {"shift": 0}, {"elastic": False}])
def test_augment_noop_returns_same_object(spec):
    x = blobs(3)[:, None]
    assert augment_epoch(x, spec, np.random.default_rng(0)) is x


def test_augment_shift_is_a_small_integer_shift_per_image():
    x = np.random.default_rng(0).random((40, 1, 28, 28)).astype(np.float32)
    before = x.copy()
    out = augment_epoch(x, {"shift": 2}, np.random.default_rng(1))
    np.testing.assert_array_equal(x, before)  # input untouched
    assert out.shape == x.shape and out.dtype == np.float32
    seen = set()
    for i in range(40):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[i], shift(x[i], dy, dx))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5  # drawn per image, not one shift for all


def test_augment_composes_and_is_seeded():
    x = blobs(16)[:, None]
    spec = {"shift": 1, "rotate": 10, "elastic": {"alpha": 20, "sigma": 4}}
    a = augment_epoch(x, spec, np.random.default_rng(0))
    np.testing.assert_array_equal(a, augment_epoch(x, spec, np.random.default_rng(0)))
    assert not np.array_equal(a, augment_epoch(x, spec, np.random.default_rng(1)))
    assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    ratio = a.sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
    assert 0.5 < ratio.min() and ratio.max() < 2.0


@pytest.mark.parametrize("spec,path", [({"flip": 1}, "data.augment.flip"), ({"shift": -1}, "data.augment.shift"),
                                       ({"shift": 1.5}, "data.augment.shift"), ({"rotate": "x"}, "data.augment.rotate"),
                                       ({"elastic": {"alpha": -1}}, "data.augment.elastic.alpha"),
                                       ({"elastic": {"beta": 1}}, "data.augment.elastic"), ([1], "data.augment")])
def test_augment_bad_spec(spec, path):
    with pytest.raises(ConfigError) as err:
        augment_epoch(blobs(2)[:, None], spec, np.random.default_rng(0))
    assert err.value.path == path

