"""The NumPy backend: networks built from the hand-written layers in `layers.py`, no autograd."""

from __future__ import annotations

import numpy as np

from nnexp.backends.base import Backend, Model, Objective, Optimizer, Progress, batch_numbers
from nnexp.backends.numpy.functional import cost_delta, cost_value
from nnexp.backends.numpy.layers import make_layer
from nnexp.errors import BackendError
from nnexp.network import NetworkSpec

EVAL_CHUNK = 500  # examples per inference pass: bounds im2col memory (~64 MB for conv2)


class NumpyModel(Model):
    def __init__(self, spec: NetworkSpec, params: dict[str, np.ndarray], objective: Objective,
                 optimizer: Optimizer, dtype: str, seed: int):
        self.spec, self.objective, self.optimizer = spec, objective, optimizer
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)  # dropout masks
        self.layers = [make_layer(layer, need_dx=i > 0, rng=self.rng)
                       for i, layer in enumerate(spec.layers)]
        # name -> (layer, key): the one map between portable names and working arrays
        self.slots = {f"{layer.spec.index}.{key}": (layer, key)
                      for layer in self.layers for key in layer.spec.param_shapes()}
        self.trainable = {name: self.slots[name] for name in spec.trainable_names}
        self.set_params(params)
        # name -> {buffer: array}, in the layer's working layout like the parameter itself
        self.buffers = {name: {b: np.zeros_like(self._param(name)) for b in optimizer.buffers}
                        for name in self.trainable}
        self.steps = 0  # updates made so far (Adam's t)

    # --- parameters ---------------------------------------------------------------------------

    def _param(self, name: str) -> np.ndarray:
        layer, key = self.slots[name]
        return layer.params[key]

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: layer.canonical(key, layer.params[key]).astype(np.float64)
                for name, (layer, key) in self.slots.items()}

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        missing = set(self.slots) - set(params)
        if missing:
            raise ValueError(f"parameters missing: {sorted(missing)}")
        for name, (layer, key) in self.slots.items():
            value = np.asarray(params[name])
            expected = self.spec.param_shapes()[name]
            if value.shape != expected:
                raise ValueError(f"parameter {name} has shape {value.shape}, expected {expected}")
            # always a copy: training updates it in place, and ascontiguousarray would hand
            # back the caller's own array when it already has the dtype and layout
            layer.params[key] = np.array(layer.internal(key, value), dtype=self.dtype, order="C")

    def get_state(self) -> dict:
        state = {f"{b}.{name}": layer.canonical(key, self.buffers[name][b])
                 for name, (layer, key) in self.trainable.items() for b in self.optimizer.buffers}
        state["optimizer.step"] = np.array(self.steps, dtype=np.int64)
        state["rng"] = self.rng.bit_generator.state
        return state

    def set_state(self, state: dict) -> None:
        for name, (layer, key) in self.trainable.items():
            for b in self.optimizer.buffers:
                self.buffers[name][b] = np.array(  # a copy, as for parameters
                    layer.internal(key, np.asarray(state[f"{b}.{name}"])), dtype=self.dtype, order="C")
        self.steps = int(state.get("optimizer.step", 0))
        self.rng.bit_generator.state = state["rng"]

    # --- forward / backward -------------------------------------------------------------------

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        if self.spec.layers[0].type in ("conv", "pool"):
            x = x.transpose(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C), a view
        else:
            x = x.reshape(len(x), -1)  # (B, C*H*W) in (C, H, W) order, the portable flattening
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def _backward(self, y: np.ndarray) -> None:
        out = self.layers[-1]
        grad = out.backward_z(cost_delta(self.objective.cost, out.spec.activation, out.a, y))
        for layer in reversed(self.layers[:-1]):
            grad = layer.backward(grad)

    def _step(self, eta: float) -> None:
        objective, optimizer = self.objective, self.optimizer
        self.steps += 1
        eta = optimizer.step_size(eta, self.steps)
        for name, (layer, key) in self.trainable.items():
            w, g = layer.params[key], layer.grads[key]
            if objective.penalises(name):
                objective.add_penalty_grad(w, g)
            optimizer.update(w, g, self.buffers[name], eta)

    @np.errstate(over="ignore", invalid="ignore")  # a diverging run is reported by the loop
    def train_epoch(self, x: np.ndarray, y: np.ndarray, batches: np.ndarray, eta: float,
                    progress: Progress | None = None) -> None:
        for i in batch_numbers(len(batches), progress):
            idx = batches[i]
            self._forward(x[idx], train=True)
            self._backward(y[idx])
            self._step(eta)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray,
                       dropout_seed: int = 0) -> tuple[float, dict[str, np.ndarray]]:
        saved = self.rng.bit_generator.state
        self.rng.bit_generator.state = np.random.default_rng(dropout_seed).bit_generator.state
        for layer in self.layers:  # a gradient is not a training step: batch-norm stats stay
            layer.update_stats = False
        try:
            a = self._forward(x, train=True)
            out = self.layers[-1]
            loss = cost_value(self.objective.cost, out.z, a, y)
            self._backward(y)
        finally:
            self.rng.bit_generator.state = saved
            for layer in self.layers:
                layer.update_stats = True
        grads, objective = {}, self.objective
        for name, (layer, key) in self.trainable.items():
            g = layer.grads[key]  # made anew by each backward pass: adding to it is safe
            if objective.penalises(name):
                w = layer.params[key]
                loss += objective.penalty(w)
                objective.add_penalty_grad(w, g)
            grads[name] = layer.canonical(key, g).astype(np.float64)
        return loss, grads

    # --- inference ----------------------------------------------------------------------------

    def _chunks(self, x: np.ndarray):
        for start in range(0, len(x), EVAL_CHUNK):
            a = self._forward(x[start:start + EVAL_CHUNK], train=False)
            yield self.layers[-1].z, a

    @np.errstate(over="ignore", invalid="ignore")
    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([a.astype(np.float64) for _, a in self._chunks(x)])

    @np.errstate(over="ignore", invalid="ignore")
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        total_cost, correct, start = 0.0, 0, 0
        for z, a in self._chunks(x):
            yy = y[start:start + len(a)]
            start += len(a)
            total_cost += cost_value(self.objective.cost, z, a, yy) * len(a)
            correct += int(np.sum(a.argmax(axis=1) == yy))
        return total_cost / len(x), correct / len(x)


class NumpyBackend(Backend):
    name = "numpy"
    description = "from-scratch NumPy layers (no autograd), CPU"

    def available(self) -> tuple[bool, str]:
        return True, f"numpy {np.__version__}"

    def devices(self) -> list[str]:
        return ["cpu"]

    def resolve_device(self, device: str) -> str:
        if device not in ("auto", "cpu"):
            raise BackendError(f"the numpy backend runs on the CPU only, not {device!r}; "
                               "use --backend torch for a GPU")
        return "cpu"

    def build(self, spec: NetworkSpec, params: dict[str, np.ndarray], objective: Objective,
              optimizer: Optimizer = Optimizer(), *, dtype: str = "float32", device: str = "auto",
              seed: int = 0, deterministic: bool = False) -> Model:
        # Always deterministic: every operation runs in a fixed order on one generator.
        self.resolve_device(device)
        return NumpyModel(spec, params, objective, optimizer, dtype, seed)
