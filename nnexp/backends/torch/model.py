"""The torch model: the NumPy backend's network and update rule, with autograd and a device.

Semantics are the NumPy model's, step for step: the same parameter names and layouts, the
same `Objective` (its penalties' cost and gradient terms), the same `_step` arithmetic
(`Objective.add_penalty_grad`, then `Optimizer.update`), dropout masks drawn per dense
layer in forward order.
What differs is where the arrays live: the training images are uploaded to the device once
and kept (cached by array identity), each epoch's index matrix crosses once, and mini-batches
are gathered on the device. On CUDA, `data.augment`'s per-epoch images are made there too
(`augment.py`), and `graph.py` replays the step below as a CUDA graph.

`step` updates parameters and optimiser buffers *in place*, and `set_params` / `set_state`
copy into the existing tensors: a captured graph holds their addresses.
"""

from __future__ import annotations

import numpy as np
import torch

from nnexp.backends.base import Model, Objective, Optimizer, Progress, batch_numbers
from nnexp.backends.torch import augment
from nnexp.backends.torch.functional import cost_sum, forward
from nnexp.backends.torch.graph import graphed_step
from nnexp.network import NetworkSpec

EVAL_CHUNK = {"cpu": 100, "cuda": 5000}  # examples per inference pass: bounds activation memory;
# on the CPU, small passes keep a conv net's feature maps in cache (1000 took 1.8x as long)
# Device types whose per-epoch augmentation runs in torch (augment.py). Not the CPU: there
# it would save no upload, and NumPy's keeps CPU runs identical across backends. Tests add "cpu".
AUGMENT_ON_DEVICE = {"cuda"}


class DeviceArrays:
    """NumPy arrays uploaded to the device once, found again by identity.

    The loop hands the same validation and test arrays to `evaluate` every epoch, and the
    same training array to `train_epoch`; re-uploading them would cost more than an epoch on
    a GPU. Entries keep their array alive, so an id cannot be reused while cached; the least
    recently used entry goes first. Arrays are assumed not to change in place (nnexp never
    does that; an augmented epoch is a new array).
    """

    def __init__(self, device: torch.device, slots: int):
        self.device, self.slots = device, slots
        self.entries: dict[tuple[int, torch.dtype], tuple[np.ndarray, torch.Tensor]] = {}

    def get(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        key = (id(array), dtype)
        hit = self.entries.pop(key, None)
        if hit is None or hit[0] is not array:
            hit = (array, torch.from_numpy(np.ascontiguousarray(array)).to(self.device, dtype))
        self.entries[key] = hit  # (re)inserted last: most recently used
        while len(self.entries) > self.slots:
            del self.entries[next(iter(self.entries))]
        return hit[1]


class TorchModel(Model):
    def __init__(self, spec: NetworkSpec, params: dict[str, np.ndarray], objective: Objective,
                 optimizer: Optimizer, dtype: str, device: str, seed: int):
        self.spec, self.objective, self.optimizer = spec, objective, optimizer
        self.dtype, self.np_dtype = getattr(torch, dtype), np.dtype(dtype)
        self.device = torch.device(device)
        shapes, trainable = spec.param_shapes(), spec.trainable_names
        self.params = {name: torch.zeros(shape, dtype=self.dtype, device=self.device,
                                         requires_grad=name in trainable)
                       for name, shape in shapes.items()}
        # the tensors gradients are taken for; batch-norm statistics are updated in place instead
        self.trainable = {name: self.params[name] for name in trainable}
        self.buffers = {name: {b: torch.zeros(shapes[name], dtype=self.dtype, device=self.device)
                               for b in optimizer.buffers}
                        for name in trainable}
        # Updates made so far (Adam's t): a device tensor, so a CUDA graph can count too.
        # float64 counts exactly far beyond any run's number of steps.
        self.steps = torch.zeros((), dtype=torch.float64, device=self.device)
        self.set_params(params)
        self.generator = torch.Generator(device=self.device)  # dropout masks
        self.generator.manual_seed(seed)
        self.numpy_masks: np.random.Generator | None = None
        # Training data apart from evaluation data: an augmented epoch's new images then
        # replace the last epoch's instead of piling up beside validation and test.
        self.train_arrays = DeviceArrays(self.device, slots=2)  # x, y
        self.eval_arrays = DeviceArrays(self.device, slots=6)  # x, y of validation, test, train
        self.graph = None  # the captured step (graph.GraphedStep), made on the first CUDA epoch
        self.graph_error: str | None = None  # why capture failed: then CUDA trains eagerly

    # --- parameters and state -----------------------------------------------------------------

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().numpy().astype(np.float64) for name, p in self.params.items()}

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        missing = set(self.params) - set(params)
        if missing:
            raise ValueError(f"parameters missing: {sorted(missing)}")
        with torch.no_grad():
            for name, p in self.params.items():
                value = np.asarray(params[name])
                if value.shape != tuple(p.shape):
                    raise ValueError(f"parameter {name} has shape {value.shape}, expected {tuple(p.shape)}")
                p.copy_(torch.tensor(value, dtype=self.dtype))

    def get_state(self) -> dict:
        """Optimiser buffers in portable layout, the step count, and the dropout generator's
        state as uint8 bytes.

        The bytes only mean something to a generator of the same device type (CPU and CUDA
        generators differ), so the device type is saved beside them.
        """
        state: dict = {f"{b}.{name}": t.cpu().numpy().copy()
                       for name, bufs in self.buffers.items() for b, t in bufs.items()}
        state["optimizer.step"] = np.array(int(self.steps), dtype=np.int64)
        state["rng_torch"] = self.generator.get_state().numpy().copy()
        state["rng_device"] = self.device.type
        return state

    def set_state(self, state: dict) -> None:
        """Restore `get_state`'s output. A generator state saved on another device type is
        not restorable here; dropout then continues from this model's seeded generator."""
        with torch.no_grad():
            for name, bufs in self.buffers.items():
                for b, t in bufs.items():
                    t.copy_(torch.tensor(np.asarray(state[f"{b}.{name}"]), dtype=self.dtype))
            self.steps.fill_(int(state.get("optimizer.step", 0)))
        if state.get("rng_device") == self.device.type:
            self.generator.set_state(torch.from_numpy(np.asarray(state["rng_torch"], dtype=np.uint8)))

    def use_numpy_masks(self, seed: int | None) -> None:
        """Draw dropout masks exactly as the NumPy backend does, from
        ``np.random.default_rng(seed)`` (reseeded with `dropout_seed` in `loss_and_grads`).

        For parity tests: a torch model built with seed S then trains like a NumPy model
        built with seed S, dropout included. It costs a host round trip per mask, so it also
        turns the CUDA graph off; `None` goes back to the torch generator.
        """
        self.numpy_masks = None if seed is None else np.random.default_rng(seed)

    def _mask(self, shape: tuple[int, ...], keep: float) -> torch.Tensor:
        if self.numpy_masks is not None:
            u = self.numpy_masks.random(shape, dtype=self.np_dtype)
            return torch.from_numpy((u < keep).astype(self.np_dtype)).to(self.device)
        u = torch.rand(shape, generator=self.generator, dtype=self.dtype, device=self.device)
        return (u < keep).to(self.dtype)

    # --- training -----------------------------------------------------------------------------

    def _data_loss(self, x: torch.Tensor, y: torch.Tensor, update_stats: bool = False) -> torch.Tensor:
        """Mean cost of one training batch (masks drawn), without the penalties."""
        z, a = forward(self.spec, self.params, x, self._mask, update_stats)
        return cost_sum(self.objective.cost, z, a, y) / x.shape[0]

    def step(self, x: torch.Tensor, y: torch.Tensor, eta: float | torch.Tensor) -> None:
        """One update on a batch, as `NumpyModel._step`: the penalties' gradient added to each
        weight's (`Objective.add_penalty_grad`), then `Optimizer.update`. `eta` may be a 0-d
        device tensor (the graph's)."""
        objective, optimizer = self.objective, self.optimizer
        grads = torch.autograd.grad(self._data_loss(x, y, update_stats=True), list(self.trainable.values()))
        with torch.no_grad():
            self.steps += 1
            eta = optimizer.step_size(eta, self.steps)
            for (name, w), g in zip(self.trainable.items(), grads):
                if objective.penalises(name):
                    objective.add_penalty_grad(w, g)  # in place: a weight's gradient is its own tensor
                optimizer.update(w, g, self.buffers[name], eta)

    def _eager_step(self, xs: torch.Tensor, ys: torch.Tensor, rows: torch.Tensor, eta: float) -> None:
        self.step(xs.index_select(0, rows), ys.index_select(0, rows), eta)

    def augment(self, x: np.ndarray, spec: dict, rng: np.random.Generator) -> np.ndarray | torch.Tensor:
        """On CUDA, a device tensor (N, 1, 28, 28) made on the device from the cached upload of
        x, so an epoch uploads nothing; elsewhere NumPy's array, as the NumPy backend makes it."""
        if self.device.type not in AUGMENT_ON_DEVICE:
            return super().augment(x, spec, rng)
        return augment.augment_epoch(self.train_arrays.get(x, self.dtype), spec, rng)

    def train_epoch(self, x: np.ndarray | torch.Tensor, y: np.ndarray, batches: np.ndarray, eta: float,
                    progress: Progress | None = None) -> None:
        """x may be `augment`'s device tensor, used as it is; a NumPy x is uploaded (cached)."""
        xs = x if isinstance(x, torch.Tensor) else self.train_arrays.get(x, self.dtype)
        ys = self.train_arrays.get(y, torch.int64)
        index = torch.from_numpy(np.ascontiguousarray(batches, dtype=np.int64))
        if self.device.type == "cuda":  # page-locked, so the one upload is queued, not waited for
            index = index.pin_memory().to(self.device, non_blocking=True)
        step = graphed_step(self, batches.shape[1]) or self._eager_step
        for i in batch_numbers(len(batches), progress):
            step(xs, ys, index[i], eta)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray,
                       dropout_seed: int = 0) -> tuple[float, dict[str, np.ndarray]]:
        saved_torch, saved_numpy = self.generator.get_state(), self.numpy_masks
        self.generator.manual_seed(dropout_seed)
        if saved_numpy is not None:
            self.numpy_masks = np.random.default_rng(dropout_seed)
        try:
            xt = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
            yt = torch.as_tensor(np.asarray(y), dtype=torch.int64, device=self.device)
            loss_t = self._data_loss(xt, yt)
            grads = torch.autograd.grad(loss_t, list(self.trainable.values()))
        finally:
            self.generator.set_state(saved_torch)
            self.numpy_masks = saved_numpy
        loss, objective, out = float(loss_t.detach()), self.objective, {}
        with torch.no_grad():
            for (name, w), g in zip(self.trainable.items(), grads):
                if objective.penalises(name):
                    loss += objective.penalty(w)
                    objective.add_penalty_grad(w, g)
                out[name] = g.cpu().numpy().astype(np.float64)
        return loss, out

    # --- inference ----------------------------------------------------------------------------

    def _chunks(self, x: np.ndarray):
        xs, size = self.eval_arrays.get(x, self.dtype), EVAL_CHUNK[self.device.type]
        with torch.no_grad():
            for start in range(0, len(xs), size):
                yield start, forward(self.spec, self.params, xs[start:start + size], None)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return torch.cat([a for _, (_, a) in self._chunks(x)]).cpu().numpy().astype(np.float64)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        ys = self.eval_arrays.get(y, torch.int64)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start, (z, a) in self._chunks(x):
            yy = ys[start:start + len(a)]
            total += cost_sum(self.objective.cost, z, a, yy).double()
            correct += (a.argmax(dim=1) == yy).sum()
        return float(total) / len(x), int(correct) / len(x)  # the one read-back per call
