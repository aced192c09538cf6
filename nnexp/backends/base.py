"""The interface every backend implements: arrays in, arrays out.

The training loop (`nnexp.training`) owns the epochs; a backend's `Model` owns what happens
*inside* one: `train_epoch` receives the whole epoch's mini-batch index matrix, so a GPU
backend can run it without returning to Python per step. Everything that crosses this
boundary is NumPy: parameters, predictions, optimiser state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from nnexp.data.augment import augment_epoch
from nnexp.network import NetworkSpec


def penalty_scale(form: str, n: int, m: int) -> float:
    """What a penalty strength (lambda, or training.l1) is multiplied by before it meets the
    mean mini-batch cost, in each code base's form (the config's `training.l2`), for a
    training set of n images in mini-batches of m:

    network2 (Nielsen, chapter 3): C = C0 + lambda/(2n) sum w^2, and C0 + (lambda/n) sum |w|
        for L1: 1/n. Its update is w -> (1 - eta lambda/n) w - (eta/m) sum_x dC_x/dw.
    network3 (Nielsen, chapter 6): cost + 0.5*lambda*sum||W||^2 / num_training_batches, and
        num_training_batches = n/m: m/n, m times stronger than network2's.
    plain (Saitoh): loss + 0.5*lambda*sum||W||^2, whatever n and m: 1.
    """
    if form == "plain":
        return 1.0
    if form == "network2":
        return 1.0 / n
    if form == "network3":
        return m / n
    raise ValueError(f"unknown L2 form {form!r}")


def _float64(w):
    return w.astype(np.float64) if isinstance(w, np.ndarray) else w.double()


def _sign(w):
    return np.sign(w) if isinstance(w, np.ndarray) else w.sign()  # sign(0) = 0 in both


@dataclass(frozen=True)
class Objective:
    """What is minimised, and the one place its weight penalties are written: the mean
    mini-batch `cost` plus ``0.5 * l2_coef * sum ||W||^2`` plus ``l1_coef * sum |W|``, over
    the weights of every layer (`penalises`: never biases, nor batch norm's gamma and beta).

    The coefficients are already resolved from the config (`from_training`): lambda times the
    form's scale, so each backend only ever adds ``l2_coef * w`` (weight decay) and
    ``l1_coef * sign(w)`` to a weight's gradient. In network2's form, with C0 the mean
    mini-batch cost, that is Nielsen's C = C0 + lambda/(2n) sum w^2 and his update
    w -> (1 - eta lambda/n) w - (eta/m) sum_x dC_x/dw (`penalty_scale` has all three forms).

    Build it with `from_training` from a config's quantities, or directly with the
    coefficients (tests, benchmarks): ``Objective("log-likelihood", l2_coef=0.01)``.
    """

    cost: str  # log-likelihood | cross-entropy | quadratic
    l2_coef: float = 0.0  # the c in 0.5*c*sum||W||^2: weight decay, g += c*w
    l1_coef: float = 0.0  # the c in c*sum|W|: g += c*sign(w), with sign(0) = 0

    @classmethod
    def from_training(cls, cost: str, form: str, lmbda: float, l1: float, n: int, m: int) -> Objective:
        """The objective a run trains: `cost` with the L2 strength `lmbda` (training.lambda)
        and the L1 strength `l1` (training.l1), both scaled as `form` (training.l2) says for
        n training images in mini-batches of m (`penalty_scale`)."""
        scale = penalty_scale(form, n, m)
        return cls(cost, l2_coef=lmbda * scale, l1_coef=l1 * scale)

    @staticmethod
    def penalises(name: str) -> bool:
        """Whether the parameter `name` ("<layer>.<key>": "0.w", "0.b", "1.gamma", ...) is a
        weight, which the penalties reach: a dense layer's matrix or a conv layer's kernels."""
        return name.rpartition(".")[2] == "w"

    def penalty(self, w) -> float:
        """The penalties' cost term for one weight w (a NumPy array or a torch tensor),
        summed in float64."""
        w64, total = _float64(w), 0.0
        if self.l2_coef:
            total += 0.5 * self.l2_coef * float((w64 ** 2).sum())
        if self.l1_coef:
            total += self.l1_coef * float(abs(w64).sum())
        return total

    def add_penalty_grad(self, w, g) -> None:
        """Add the penalties' gradient at w to g, in place: ``g += l2_coef * w``, then
        ``g += l1_coef * sign(w)``. w and g are NumPy arrays or torch tensors (under no_grad);
        it branches on the coefficients only, never on tensor values, so a CUDA graph can
        capture it."""
        if self.l2_coef:
            g += self.l2_coef * w
        if self.l1_coef:
            g += self.l1_coef * _sign(w)


# The buffers each optimiser keeps per parameter, named as they appear in checkpoints
# ("<buffer>.<param name>"); Adam also counts its steps ("optimizer.step").
OPTIMIZER_BUFFERS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("velocity",),
    "nesterov": ("velocity",),
    "adagrad": ("square",),
    "rmsprop": ("square",),
    "adam": ("moment1", "moment2"),
}


@dataclass(frozen=True)
class Optimizer:
    """An update rule, applied by both backends through `update`, so they cannot drift apart.

    sgd       w -= eta g
    momentum  v = mu v - eta g;  w += v                              (Nielsen ch. 3, Saitoh)
    nesterov  v = mu v - eta g;  w += mu v - eta g                   (Saitoh's form)
    adagrad   h += g^2;  w -= eta g / (sqrt(h) + eps)
    rmsprop   h = rho h + (1 - rho) g^2;  w -= eta g / (sqrt(h) + eps)
    adam      m += (1-b1)(g - m);  v += (1-b2)(g^2 - v);  t += 1
              w -= eta sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)    (Saitoh's form)

    Saitoh's nesterov keeps an eta-scaled velocity, so it is PyTorch's nesterov=True only
    while eta is constant: under a warm-up or a step, cosine or halve-on-plateau schedule
    (beyond_bn runs it under a warm-up and cosine) the velocity carries the earlier epochs'
    eta, where PyTorch's buffer of raw gradients would take the new one.

    `g` already includes the penalties' gradient (`Objective.add_penalty_grad`). eps = 1e-7
    as in Saitoh's code: it only keeps a parameter whose gradient has always been zero from
    dividing by zero.
    """

    name: str = "sgd"
    momentum: float = 0.9  # mu: momentum and nesterov
    rmsprop_decay: float = 0.99  # rho
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7

    @property
    def buffers(self) -> tuple[str, ...]:
        return OPTIMIZER_BUFFERS[self.name]

    def step_size(self, eta, t):
        """The step size this update uses: eta, or Adam's bias-corrected eta at step t (the
        count after this step). Works on Python numbers and on 0-d tensors alike, so a CUDA
        graph can keep t on the device."""
        if self.name != "adam":
            return eta
        return eta * (1.0 - self.beta2 ** t) ** 0.5 / (1.0 - self.beta1 ** t)

    def update(self, w, g, buffers: dict, eta) -> None:
        """Update w in place from its gradient g; `buffers` holds this parameter's buffers
        (named as in `self.buffers`), also updated in place. Only in-place operators and
        ``**`` are used, so w may be a NumPy array or a torch tensor (under no_grad); `eta`
        is what `step_size` returned, a number or a 0-d tensor."""
        name = self.name
        if name == "sgd":
            w -= eta * g
        elif name in ("momentum", "nesterov"):
            v = buffers["velocity"]
            v *= self.momentum
            v -= eta * g
            if name == "momentum":
                w += v
            else:
                w += self.momentum * v - eta * g
        elif name in ("adagrad", "rmsprop"):
            h = buffers["square"]
            if name == "rmsprop":
                h *= self.rmsprop_decay
                h += (1.0 - self.rmsprop_decay) * (g * g)
            else:
                h += g * g
            w -= eta * g / (h ** 0.5 + self.eps)
        elif name == "adam":
            m, v = buffers["moment1"], buffers["moment2"]
            m += (1.0 - self.beta1) * (g - m)
            v += (1.0 - self.beta2) * (g * g - v)
            w -= eta * m / (v ** 0.5 + self.eps)
        else:
            raise ValueError(f"unknown optimizer {name!r}")


Progress = Callable[[int], None]  # called with the number of mini-batches done so far
PROGRESS_EVERY = 100  # mini-batches between progress callbacks


def batch_numbers(num_batches: int, progress: Progress | None) -> Iterator[int]:
    """0 .. num_batches-1, reporting progress every PROGRESS_EVERY batches and at the end.

    A report comes after the batch's work: the loop asks for the next number only then.
    """
    for i in range(num_batches):
        yield i
        if progress is not None and (i + 1) % PROGRESS_EVERY == 0:
            progress(i + 1)
    if progress is not None:
        progress(num_batches)


class Model(ABC):
    """A network built by a backend, with its parameters and optimiser state."""

    spec: NetworkSpec
    objective: Objective

    @abstractmethod
    def train_epoch(self, x: np.ndarray, y: np.ndarray, batches: np.ndarray, eta: float,
                    progress: Progress | None = None) -> None:
        """One SGD pass: ``batches`` is (num_batches, batch_size) indices into x and y.
        x is the training array, or what `augment` returned for this epoch."""

    def augment(self, x: np.ndarray, spec: dict, rng: np.random.Generator):
        """This epoch's randomly augmented copy of the training images (`data.augment`).

        By default NumPy does it on the CPU; a backend may override this to do it where its
        data lives (the GPU) and return its own array type, which its `train_epoch` accepts.
        All randomness must come from `rng`: the loop saves its state for resuming.
        """
        return augment_epoch(x, spec, rng)

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Output activations in inference mode: (N, num_classes) float64."""

    @abstractmethod
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray,
                       dropout_seed: int = 0) -> tuple[float, dict[str, np.ndarray]]:
        """The objective on one batch in training mode, and its gradient per parameter.

        Dropout masks are drawn from a generator seeded with `dropout_seed`, so two calls
        with the same seed use the same masks (what a finite-difference check needs).
        """

    @abstractmethod
    def get_params(self) -> dict[str, np.ndarray]:
        """Copies of the parameters as NumPy arrays, named as in `NetworkSpec.param_shapes`."""

    @abstractmethod
    def set_params(self, params: dict[str, np.ndarray]) -> None: ...

    @abstractmethod
    def get_state(self) -> dict:
        """Everything beyond the parameters needed to continue training bit-identically:
        optimiser buffers (``{"<buffer>.<name>": array}``, Adam's ``"optimizer.step"``) and
        the dropout RNG state."""

    @abstractmethod
    def set_state(self, state: dict) -> None: ...

    @abstractmethod
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean data cost, accuracy) in inference mode; the weight penalties are not included."""


class Backend(ABC):
    """A way to build and run networks. Registered by name in `nnexp.backends`."""

    name: str
    description: str

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(usable here?, why not / version info)."""

    @abstractmethod
    def devices(self) -> list[str]:
        """Human-readable devices this backend can run on here, e.g. ``["cpu"]``."""

    @abstractmethod
    def build(self, spec: NetworkSpec, params: dict[str, np.ndarray], objective: Objective,
              optimizer: Optimizer = Optimizer(), *, dtype: str = "float32", device: str = "auto",
              seed: int = 0, deterministic: bool = False) -> Model:
        """A model holding `params` (copied), ready to train. `seed` seeds dropout;
        `deterministic` asks for bit-identical results from run to run, at some speed."""

    def resolve_device(self, device: str) -> str:
        """The concrete device `auto` means here; a device this backend cannot use is an error."""
        return "cpu"
