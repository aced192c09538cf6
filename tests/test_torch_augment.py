"""Per-epoch augmentation on the torch device (`nnexp.backends.torch.augment`), on the CPU.

The functions are device-agnostic, so the CPU runs the code a GPU runs. NumPy's transforms
(`nnexp.data.expand`) are the oracle: exact for shifts, ~1e-5 for rotations at fixed angles
and for elastic warps of a fixed noise field. The random draws differ from NumPy's by design;
for them the tests check bounds, distribution, determinism and seeding from the NumPy rng.
`TorchModel` only uses this path on CUDA; tests force it on the CPU via AUGMENT_ON_DEVICE.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnexp import backends  # noqa: E402
from nnexp import training as train  # noqa: E402
from nnexp import lifecycle  # noqa: E402
from nnexp.backends import Objective  # noqa: E402
from nnexp.backends.torch import augment as device_augment  # noqa: E402
from nnexp.backends.torch import model as torch_model  # noqa: E402
from nnexp.data.augment import augment_epoch  # noqa: E402
from nnexp.data.expand import elastic, rotate_each, shift  # noqa: E402
from nnexp.network import build_spec, init_params  # noqa: E402
from nnexp.rundir import Run  # noqa: E402

from conftest import make_config, needs_mnist  # noqa: E402

ALL = {"shift": 2, "rotate": 15, "elastic": {"alpha": 34, "sigma": 4}}
ATOL = 1e-5


def blobs(n, seed=0):
    """Digit-like (n, 1, 28, 28) float32 images in [0, 1]: a Gaussian blob near the centre."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:28, 0:28]
    centres = rng.uniform(10, 18, size=(n, 2))[:, :, None, None]  # (n, 2, 1, 1)
    d2 = (r - centres[:, 0]) ** 2 + (c - centres[:, 1]) ** 2  # (n, 28, 28)
    return np.exp(-d2 / (2 * 3.0**2)).astype(np.float32)[:, None]


def noise_images(n, size=28, seed=0):
    """Random images: every pixel differs, so a shift can be recognised from the result."""
    return np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)


def run_device(x, spec, seed):
    return device_augment.augment_epoch(torch.from_numpy(x), spec, np.random.default_rng(seed)).numpy()


# --- the transforms against NumPy's -----------------------------------------------------------


def test_shift_moves_pixels_exactly_and_zero_fills():
    x = noise_images(8)
    dy, dx = np.array([0, 1, -1, 3, -5, 27, -27, 2]), np.array([0, -1, 2, 0, 4, 0, 3, -28])
    out = device_augment.shift(torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(dx)).numpy()
    for i in range(8):
        np.testing.assert_array_equal(out[i], shift(x[i], int(dy[i]), int(dx[i])))


def test_shift_offsets_are_per_image_uniform_and_within_bounds():
    x, s = noise_images(3000, size=8), 1
    out = run_device(x, {"shift": s}, seed=1)
    pairs = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    hits = np.stack([(out == shift(x, dy, dx)).all(axis=(1, 2, 3)) for dy, dx in pairs])  # (9, N)
    assert (hits.sum(axis=0) == 1).all(), "each image is exactly one in-bounds shift of itself"
    share = hits.sum(axis=1) / len(x)  # (9,) expected 1/9 each; the std of a share is ~0.006
    assert np.abs(share - 1 / 9).max() < 0.03


@pytest.mark.parametrize("x", [blobs(6), noise_images(6)], ids=["blobs", "noise"])
def test_rotation_matches_numpy_for_fixed_angles(x):
    degrees = np.array([-30.0, -7.5, 0.0, 12.0, 90.0, 180.0])
    out = device_augment.rotate(torch.from_numpy(x), torch.from_numpy(degrees)).numpy()
    np.testing.assert_allclose(out, rotate_each(x, degrees), rtol=0, atol=ATOL)


class FixedNoise:
    """Stands in for a NumPy rng in `expand.elastic`: `random` returns given uniforms."""

    def __init__(self, noise):
        self.noise = noise

    def random(self, size, dtype):
        assert size == self.noise.shape and dtype == np.float32
        return self.noise


@pytest.mark.parametrize("alpha,sigma", [(34.0, 4.0), (8.0, 2.0), (3.0, 0.0)])
def test_elastic_warp_matches_numpy_for_a_fixed_field(alpha, sigma):
    x = blobs(5)
    u = np.random.default_rng(2).random((2, 5, 28, 28), dtype=np.float32)
    expected = elastic(x, FixedNoise(u), alpha=alpha, sigma=sigma)  # it maps u to 2u - 1
    out = device_augment.distort(torch.from_numpy(x), torch.from_numpy(u) * 2 - 1, alpha, sigma).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)


# --- the epoch's array -------------------------------------------------------------------------


def test_composed_augmentation_keeps_shape_dtype_device_range_and_mass():
    x = blobs(40)
    before = x.copy()
    xt = torch.from_numpy(x)
    out = device_augment.augment_epoch(xt, ALL, np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)  # input untouched
    assert out.shape == xt.shape and out.dtype == xt.dtype and out.device == xt.device
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    ratio = out.sum(dim=(1, 2, 3)) / xt.sum(dim=(1, 2, 3))  # (N,) blobs stay mostly on the image
    assert 0.5 < float(ratio.min()) and float(ratio.max()) < 2.0


@pytest.mark.parametrize("spec", [{}, {"shift": 0}, {"elastic": False}])
def test_empty_spec_returns_the_input_itself(spec):
    xt = torch.from_numpy(blobs(3))
    assert device_augment.augment_epoch(xt, spec, np.random.default_rng(0)) is xt


def test_seeded_from_one_draw_of_the_numpy_rng():
    x = blobs(16)
    a = run_device(x, ALL, seed=0)
    np.testing.assert_array_equal(a, run_device(x, ALL, seed=0))
    assert not np.array_equal(a, run_device(x, ALL, seed=1))
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    device_augment.augment_epoch(torch.from_numpy(x), ALL, rng)
    reference.integers(2**63)
    assert rng.bit_generator.state == reference.bit_generator.state  # a resume restores exactly this


def test_chunks_draw_fresh_fields(monkeypatch):
    monkeypatch.setattr(device_augment, "CHUNK", 4)
    x = np.repeat(blobs(1), 8, axis=0)  # 8 copies of one image: 2 chunks
    out = run_device(x, {"elastic": True}, seed=0)
    assert len({out[i].tobytes() for i in range(8)}) == 8


# --- through TorchModel and the training loop ------------------------------------------------


def tiny_model(dtype="float32"):
    spec = build_spec([{"type": "dense", "units": 12, "activation": "sigmoid", "dropout": 0.0},
                       {"type": "softmax", "units": 10, "dropout": 0.0}])
    params = init_params(spec, "network2", np.random.default_rng(0))
    return backends.get("torch").build(spec, params, Objective("log-likelihood"), dtype=dtype, device="cpu", seed=3)


def test_model_augment_on_cpu_is_numpys():
    x = blobs(20)
    out = tiny_model().augment(x, ALL, np.random.default_rng(4))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, augment_epoch(x, ALL, np.random.default_rng(4)))


def test_forced_device_path_feeds_train_epoch_a_tensor(monkeypatch):
    monkeypatch.setattr(torch_model, "AUGMENT_ON_DEVICE", {"cpu", "cuda"})
    x, y = blobs(60), np.random.default_rng(0).integers(0, 10, size=60)
    batches = np.random.default_rng(1).permutation(60).reshape(-1, 10)
    model, reference = tiny_model(), tiny_model()
    xt = model.augment(x, ALL, np.random.default_rng(4))
    assert isinstance(xt, torch.Tensor) and xt.shape == (60, 1, 28, 28) and xt.dtype == torch.float32
    np.testing.assert_array_equal(xt.numpy(), run_device(x, ALL, seed=4))  # from the cached upload of x
    assert any(entry[0] is x for entry in model.train_arrays.entries.values())
    model.train_epoch(xt, y, batches, 0.5)
    reference.train_epoch(xt.numpy().copy(), y, batches, 0.5)
    after, expected = model.get_params(), reference.get_params()
    assert all(np.array_equal(after[k], expected[k]) for k in after)
    assert not np.array_equal(after["0.w"], tiny_model().get_params()["0.w"])  # it did train


@needs_mnist
@pytest.mark.usefixtures("cached_data")
@pytest.mark.parametrize("on_device", [False, True], ids=["numpy-augment", "device-augment"])
def test_short_torch_run_with_augmentation_completes(tmp_path, monkeypatch, on_device):
    if on_device:
        monkeypatch.setattr(torch_model, "AUGMENT_ON_DEVICE", {"cpu", "cuda"})
    cfg = make_config(backend="torch", device="cpu", data={"train_size": 300, "augment": ALL},
                      training={"epochs": 1, "eta": 0.5})
    exp = train.prepare(cfg)
    summary = lifecycle.start(exp, Run.create(tmp_path / "run", cfg["name"]))
    assert summary["status"] == "completed" and summary["epochs_run"] == 1
    assert summary["best_validation_accuracy"] > 0.2  # it learned something from 300 images
