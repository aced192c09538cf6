"""The fast CUDA path: one training step captured in a CUDA graph, replayed per mini-batch.

At batch size 10 an eager step is ~100 tiny kernels, each launched from Python, and the GPU
mostly waits for the host. A CUDA graph launches the whole step with one call. Per mini-batch
an epoch then queues two gathers into static input buffers (the dataset and the epoch's index
matrix already live on the device) and one replay; nothing reads a value back, so the host
never waits for the GPU inside an epoch and runs ahead until the queue is full.

What is captured is `TorchModel.step` itself, so both paths compute the same numbers (up to
the float noise of kernel choice). Dropout masks come from the model's own CUDA generator,
registered with the graph: each replay advances its Philox offset, so every step draws fresh
masks and `get_state` stays meaningful between epochs.

Training several models of one architecture together (an ensemble, or the seeds of one
config) fits this shape without touching the maths: stack each parameter and buffer along a
new leading axis (K, ...), give the static inputs one too ((K, m, C, H, W), gathered from a
(K, num_batches, m) index matrix), and capture `torch.func.vmap` of the step's loss gradient
(`torch.func.grad` of `_data_loss` via `torch.func.functional_call`) over that axis, followed
by the same in-place update on the stacked tensors; masks drawn at (K, ...) give each model
its own. The graph and the per-batch loop below stay as they are.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # model.py imports this module
    from nnexp.backends.torch.model import TorchModel

WARMUP_STEPS = 3  # as the CUDA-graph docs advise: lazy init (cuBLAS handles, cuDNN plans) must precede capture


class CaptureFailed(RuntimeError):
    """The step could not be captured (an operation that is not graph-safe): train eagerly."""


class GraphedStep:
    """`model.step` on static buffers, captured once for one batch size."""

    def __init__(self, model: TorchModel, batch_size: int):
        self.batch_size = batch_size
        device, dtype = model.device, model.dtype
        self.x = torch.zeros((batch_size, *model.spec.input_shape), dtype=dtype, device=device)
        self.y = torch.zeros(batch_size, dtype=torch.int64, device=device)
        # float64 whatever the model's dtype: the eager step multiplies by a Python float, and
        # a 0-d tensor does not change the result's dtype, so both round alike
        self.eta = torch.zeros((), dtype=torch.float64, device=device)
        self.eta_value: float | None = None
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(model.generator)
        # Warm-up steps really update the parameters (capture itself runs nothing): keep a
        # copy of everything they touch and put it back afterwards.
        saved = _snapshot(model)
        main = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(main)
        try:
            # An error here is a real one (a bug, out of memory): it propagates.
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    model.step(self.x, self.y, self.eta)
            main.wait_stream(side)
            try:
                with torch.cuda.graph(self.graph):
                    model.step(self.x, self.y, self.eta)
            except RuntimeError as exc:
                # A failed capture_end leaves the thread on the capture stream: go back.
                torch.cuda.set_stream(main)
                torch.cuda.synchronize(device)
                raise CaptureFailed(str(exc).strip().splitlines()[0] if str(exc).strip()
                                    else type(exc).__name__) from exc
        finally:
            torch.cuda.current_stream(device).wait_stream(side)
            _restore(model, saved)

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor, rows: torch.Tensor, eta: float) -> None:
        """One step on the examples `rows` (a device tensor) of the device-resident xs, ys."""
        torch.index_select(xs, 0, rows, out=self.x)
        torch.index_select(ys, 0, rows, out=self.y)
        if eta != self.eta_value:  # a fill kernel, not a copy from the host: no wait
            self.eta.fill_(eta)
            self.eta_value = eta
        self.graph.replay()


def graphed_step(model: TorchModel, batch_size: int) -> GraphedStep | None:
    """The model's captured step for this batch size, or None where it trains eagerly: on the
    CPU, with NumPy-drawn masks (test-only), or after a capture failed (warned once)."""
    if model.device.type != "cuda" or model.numpy_masks is not None or model.graph_error:
        return None
    if model.graph is None or model.graph.batch_size != batch_size:
        model.graph = None
        try:
            model.graph = GraphedStep(model, batch_size)
        except CaptureFailed as exc:
            model.graph_error = str(exc)
            warnings.warn(f"CUDA graph capture failed, training eagerly: {model.graph_error}",
                          RuntimeWarning, stacklevel=3)
    return model.graph


def _snapshot(model: TorchModel) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Copies of every tensor a step writes: parameters, optimiser buffers, the step count."""
    live = _written(model)
    return live, [t.detach().clone() for t in live], model.generator.get_state()


def _restore(model: TorchModel, saved: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]) -> None:
    live, copies, rng = saved
    with torch.no_grad():
        for tensor, copy in zip(live, copies):
            tensor.copy_(copy)
    model.generator.set_state(rng)


def _written(model: TorchModel) -> list[torch.Tensor]:
    return [*model.params.values(), *(t for bufs in model.buffers.values() for t in bufs.values()),
            model.steps]
