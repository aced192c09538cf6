"""The interface every backend implements: arrays in, arrays out.

The training loop (`nnexp.train`) owns the epochs; a backend's `Model` owns what happens
*inside* one: `train_epoch` receives the whole epoch's mini-batch index matrix, so a GPU
backend can run it without returning to Python per step. Everything that crosses this
boundary is NumPy: parameters, predictions, optimiser state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from nnexp.network import NetworkSpec


@dataclass(frozen=True)
class Objective:
    """What is minimised: the mean mini-batch `cost` plus ``0.5 * l2 * sum ||W||^2``."""

    cost: str  # log-likelihood | cross-entropy | quadratic
    l2: float = 0.0  # already resolved from lambda, the L2 form, n and m (network.l2_coefficient)


@dataclass(frozen=True)
class Optimizer:
    name: str = "sgd"  # sgd | momentum
    momentum: float = 0.9


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
        from nnexp.data.augment import augment_epoch

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
        optimiser buffers (``{"velocity.<name>": array}``) and the dropout RNG state."""

    @abstractmethod
    def set_state(self, state: dict) -> None: ...

    @abstractmethod
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean data cost, accuracy) in inference mode; the L2 penalty is not included."""


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
