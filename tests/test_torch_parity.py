"""The torch backend against the NumPy backend (the reference), on the CPU in float64.

Both models get the same parameters; forward outputs, costs, gradients and the parameters
after a training epoch must agree to 1e-6 relative, for every layer type, activation, cost,
penalty (L2 forms, L1), optimiser and dropout. Dropout masks are shared by making the torch model
draw them from the NumPy generator the NumPy model uses (`TorchModel.use_numpy_masks`).
Images are 12x12 here: the maths does not care, and the whole file stays fast.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from nnexp import backends, config  # noqa: E402
from nnexp.backends import Objective, Optimizer  # noqa: E402
from nnexp.gradcheck import check_model  # noqa: E402
from nnexp.network import build_spec, init_params  # noqa: E402

INPUT = (1, 12, 12)
RTOL, ATOL = 1e-6, 1e-12
SEED = 7  # the models' dropout seed


def conv(filters, size, activation, pool=1, pad=0, **more):
    return {"type": "conv", "filters": filters, "size": size, "pool": pool, "activation": activation,
            "pad": pad, **more}


def dense(units, activation, dropout=0.0):
    return {"type": "dense", "units": units, "activation": activation, "dropout": dropout}


def softmax(dropout=0.0):
    return {"type": "softmax", "units": 10, "dropout": dropout}


NETS = {  # id: (layers, cost)
    **{f"dense-{act}": ([dense(20, act), softmax()], "log-likelihood")
       for act in ("sigmoid", "tanh", "relu", "linear")},
    "conv": ([conv(4, 3, "relu"), softmax()], "log-likelihood"),
    "conv-pool": ([conv(4, 3, "tanh", pool=2), dense(16, "sigmoid"), softmax()], "log-likelihood"),
    "conv-pool-conv": ([conv(4, 3, "relu", pool=2), conv(6, 2, "sigmoid"), softmax()], "log-likelihood"),
    "separate-pool": ([conv(3, 3, "linear"), {"type": "pool", "size": 2}, dense(12, "relu"), softmax()],
                      "log-likelihood"),
    "cross-entropy": ([dense(16, "relu"), dense(10, "sigmoid")], "cross-entropy"),
    **{f"quadratic-{act}": ([dense(16, "tanh"), dense(10, act)], "quadratic")
       for act in ("sigmoid", "tanh", "relu", "linear")},
    "dropout": ([conv(4, 3, "relu", pool=2), dense(20, "relu", dropout=0.5), softmax(dropout=0.3)],
                "log-likelihood"),
    "padded": ([conv(3, 3, "relu", pad=1), conv(4, 3, "tanh", pool=2, pad=2), softmax()], "log-likelihood"),
    "batch-norm": ([conv(4, 3, "relu", pool=2), {**dense(16, "relu", dropout=0.3), "batch_norm": True},
                    {**dense(12, "sigmoid"), "batch_norm": True}, softmax()], "log-likelihood"),
    "stride": ([conv(4, 3, "relu", stride=2), conv(5, 2, "tanh", stride=2, pad=1), softmax()], "log-likelihood"),
    "conv-batch-norm": ([conv(4, 3, "relu", pool=2, pad=1, batch_norm=True),
                         conv(6, 3, "relu", stride=2, batch_norm=True), dense(12, "relu", dropout=0.3),
                         softmax()], "log-likelihood"),
}
PENALTIES = {"none": ("plain", 0.0, 0.0),  # (training.l2, training.lambda, training.l1)
             "l2-network2": ("network2", 5.0, 0.0),
             "l2-network3": ("network3", 1.0, 0.0),
             "l1": ("plain", 0.0, 0.01)}
N_TRAIN, BATCH = 40, 8  # the n and m the penalties are scaled for (`Objective.from_training`)


def make_pair(net: str, penalty: str = "none", optimizer: Optimizer = Optimizer(), dtype: str = "float64"):
    """(numpy model, torch model, params, spec) with identical parameters and mask streams."""
    layers, cost = NETS[net]
    spec = build_spec(layers, INPUT)
    params = init_params(spec, "network2", np.random.default_rng(0))
    objective = Objective.from_training(cost, *PENALTIES[penalty], N_TRAIN, BATCH)
    ref = backends.get("numpy").build(spec, params, objective, optimizer, dtype=dtype, seed=SEED)
    model = backends.get("torch").build(spec, params, objective, optimizer, dtype=dtype,
                                        device="cpu", seed=SEED)
    model.use_numpy_masks(SEED)
    return ref, model, params, spec


def data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, *INPUT)).astype(np.float32), rng.integers(0, 10, size=n)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("net", NETS)
def test_inference_and_gradients_match(net, penalty):
    ref, model, _, _ = make_pair(net, penalty)
    x, y = data()
    close(model.predict(x), ref.predict(x))  # dropout nets: inference scales by 1-p, exactly
    close(model.evaluate(x, y), ref.evaluate(x, y))
    loss_ref, grads_ref = ref.loss_and_grads(x[:8], y[:8], dropout_seed=3)
    loss, grads = model.loss_and_grads(x[:8], y[:8], dropout_seed=3)
    close(loss, loss_ref)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == np.float64 and grads[name].shape == grads_ref[name].shape
        close(grads[name], grads_ref[name])


# Every update rule, at a learning rate it is used with: the adaptive ones scale steps to ~eta;
# nesterov's first step is (1 + mu) times momentum's, so it gets half the rate.
OPTIMIZERS = {"sgd": (Optimizer("sgd"), 0.5), "momentum": (Optimizer("momentum", 0.9), 0.5),
              "nesterov": (Optimizer("nesterov", 0.9), 0.25), "adagrad": (Optimizer("adagrad"), 0.05),
              "rmsprop": (Optimizer("rmsprop"), 0.01), "adam": (Optimizer("adam"), 0.01)}


def all_pairs(nets, penalties, optimizers) -> list[tuple[str, str, str]]:
    """(net, penalty, optimizer) cases in which every pair of values from any two of the
    three axes appears at least once: a pairwise cover of their cross product.

    Greedy and deterministic: each (net, optimizer) pair, the largest product of two axes,
    once, with the penalty that covers the most (net, penalty) and (penalty, optimizer)
    pairs not yet covered, ties going to the least used so far, then to the first; then a
    case for any pair still missing.
    """
    missing = ({("net", a, b) for a in nets for b in penalties}
               | {("opt", b, c) for b in penalties for c in optimizers})
    cases, uses = [], dict.fromkeys(penalties, 0)
    for a, c in itertools.product(nets, optimizers):
        b = max(penalties, key=lambda b: ((("net", a, b) in missing) + (("opt", b, c) in missing), -uses[b]))
        cases.append((a, b, c))
        uses[b] += 1
        missing -= {("net", a, b), ("opt", b, c)}
    for kind, u, v in sorted(missing):
        cases.append((u, v, next(iter(optimizers))) if kind == "net" else (next(iter(nets)), u, v))
    return cases


# Every net, penalty and optimiser, and every pair of them, without the whole cross product.
TRAIN_CASES = all_pairs(NETS, PENALTIES, OPTIMIZERS)


def test_train_cases_cover_every_pair():
    axes = (NETS, PENALTIES, OPTIMIZERS)
    for i, j in itertools.combinations(range(3), 2):
        assert {(case[i], case[j]) for case in TRAIN_CASES} == set(itertools.product(axes[i], axes[j]))
    assert len(set(TRAIN_CASES)) == len(TRAIN_CASES) == len(NETS) * len(OPTIMIZERS)  # the fewest possible


@pytest.mark.parametrize("net,penalty,optimizer", TRAIN_CASES)
def test_train_epoch_matches(net, penalty, optimizer):
    optimizer, eta = OPTIMIZERS[optimizer]
    ref, model, _, spec = make_pair(net, penalty, optimizer)
    x, y = data()
    batches = np.random.default_rng(2).permutation(len(y))[:24].reshape(3, 8)
    for scale in (1.0, 0.5):  # two epochs: buffers carry over, masks keep their stream
        ref.train_epoch(x, y, batches, eta * scale)
        model.train_epoch(x, y, batches, eta * scale)
    expected, actual = ref.get_params(), model.get_params()
    for name in expected:
        close(actual[name], expected[name])
    ref_state, state = ref.get_state(), model.get_state()
    buffers = [key for key, value in ref_state.items() if isinstance(value, np.ndarray)]
    trainable = spec.trainable_names
    assert len(buffers) == 1 + len(optimizer.buffers) * len(trainable)  # + optimizer.step
    assert int(state["optimizer.step"]) == int(ref_state["optimizer.step"]) == 2 * len(batches)
    for key in buffers:
        close(state[key], ref_state[key])


def test_float32_agrees_loosely():
    ref, model, _, _ = make_pair("conv-pool", dtype="float32")
    x, _ = data()
    np.testing.assert_allclose(model.predict(x), ref.predict(x), rtol=1e-4, atol=1e-6)


def test_gradcheck():
    _, model, params, spec = make_pair("dropout", "l2-network3")
    model.use_numpy_masks(None)  # the torch generator, reseeded per call by dropout_seed
    rng = np.random.default_rng(5)
    x, y = rng.random((4, *spec.input_shape)), rng.integers(0, 10, size=4)
    results = check_model(model, params, x, y, rng, max_entries=20)
    assert [r.name for r in results] == list(spec.param_shapes())
    assert all(r.ok for r in results), [(r.name, r.worst_relative_error) for r in results]


def test_dropout_masks_follow_the_seed():
    _, model, _, _ = make_pair("dropout")
    model.use_numpy_masks(None)
    x, y = data(8)
    assert model.loss_and_grads(x, y, 1)[0] == model.loss_and_grads(x, y, 1)[0]
    assert model.loss_and_grads(x, y, 1)[0] != model.loss_and_grads(x, y, 2)[0]


def test_state_round_trip_continues_identically():
    """Saving params + state and restoring into a fresh model continues the same training,
    dropout masks included: what `nnexp resume` relies on."""
    _, model, _, _ = make_pair("dropout", optimizer=Optimizer("momentum", 0.9))
    model.use_numpy_masks(None)
    x, y = data()
    batches = np.arange(24).reshape(3, 8)
    model.train_epoch(x, y, batches, 0.1)
    params, state = model.get_params(), model.get_state()
    assert state["rng_torch"].dtype == np.uint8 and json.dumps(state["rng_device"])
    model.train_epoch(x, y, batches, 0.1)

    _, other, _, _ = make_pair("dropout", optimizer=Optimizer("momentum", 0.9))
    other.use_numpy_masks(None)
    other.set_params(params)
    other.set_state(state)
    other.train_epoch(x, y, batches, 0.1)
    for name, value in model.get_params().items():
        np.testing.assert_array_equal(other.get_params()[name], value)


def test_cuda_without_a_gpu_is_a_one_line_error():
    import torch

    from nnexp.errors import BackendError

    backend = backends.get("torch")
    ok, info = backend.available()
    assert ok and info.startswith("torch ") and "CUDA: " in info
    assert backend.devices()[0] == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert backend.resolve_device("auto") == "cpu"
    with pytest.raises(BackendError) as exc:
        backend.resolve_device("cuda")
    assert "\n" not in str(exc.value)


def test_numpy_paths_never_import_torch():
    code = """
import sys
from typer.testing import CliRunner
import numpy as np
from nnexp.cli import app
assert CliRunner().invoke(app, ["--help"]).exit_code == 0
from nnexp import backends
from nnexp.backends import Objective
from nnexp.network import build_spec, init_params
spec = build_spec([{"type": "dense", "units": 5, "activation": "sigmoid", "dropout": 0.0},
                   {"type": "softmax", "units": 10, "dropout": 0.0}])
model = backends.get("numpy").build(spec, init_params(spec, "network3", np.random.default_rng(0)),
                                    Objective("log-likelihood"))
model.predict(np.zeros((2, 1, 28, 28)))
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- real MNIST: a short run on both backends, and `nnexp evaluate` across them ---------------

needs_mnist = pytest.mark.skipif(not os.environ.get("NNEXP_DATA_DIR"),
                                 reason="NNEXP_DATA_DIR (the MNIST IDX files) is not set")


def run_config(backend: str, **training) -> dict:
    raw = {"name": f"parity-{backend}", "seed": 3, "backend": backend, "device": "cpu",
           "dtype": "float64", "data": {"train_size": 500},
           "model": {"layers": [conv(4, 5, "relu", pool=2), dense(20, "sigmoid"), softmax()]},
           "training": {"epochs": 2, "eta": 0.1, "lambda": 1.0, "optimizer": "momentum",
                        "monitor_train": True, **training}}
    return config.resolve(raw)


def train_run(cfg: dict, runs_dir):
    from nnexp import lifecycle
    from nnexp import training as train
    from nnexp.rundir import Run

    exp = train.prepare(cfg)
    run = Run.create(runs_dir, cfg["name"])
    lifecycle.start(exp, run)
    return run


@needs_mnist
@pytest.mark.slow
def test_same_learning_curve_on_both_backends(tmp_path):
    curves = {}
    for name in ("numpy", "torch"):
        run = train_run(run_config(name), tmp_path)
        curves[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in run.read_metrics()]
    assert len(curves["torch"]) == 2
    for ref, rec in zip(curves["numpy"], curves["torch"]):
        assert rec.keys() == ref.keys()
        for key, value in ref.items():
            if isinstance(value, float):
                close(rec[key], value)
            else:
                assert rec[key] == value, key


@needs_mnist
@pytest.mark.slow
def test_evaluate_command_reproduces_a_numpy_run_on_torch(tmp_path):
    from typer.testing import CliRunner

    from nnexp.cli import app

    cfg = run_config("numpy", epochs=1)
    cfg["data"]["train_size"] = 200
    run = train_run(cfg, tmp_path)
    result = CliRunner().invoke(app, ["evaluate", str(run.path), "--backend", "torch", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    accuracy = run.read_summary()["test_accuracy"]
    assert f"test accuracy {100 * accuracy:.2f}%" in result.stdout
    assert "reproduces summary.json's test accuracy: yes" in result.stdout
