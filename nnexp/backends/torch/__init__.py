"""The torch backend: the NumPy backend's networks with autograd, on the CPU or a CUDA GPU.

This package is imported lazily by the registry, and this module itself imports torch only
inside its methods, so `nnexp backends` can report "torch is not installed" instead of
crashing. The model lives in `model.py`, its maths in `functional.py`, and the CUDA-graph
training path in `graph.py`.
"""

from __future__ import annotations

import os

import numpy as np

from nnexp.backends.base import Backend, Model, Objective, Optimizer
from nnexp.errors import BackendError
from nnexp.network import NetworkSpec

DEVICES = ("auto", "cpu", "cuda")
# Reproducible cuBLAS sums need a fixed workspace, and cuBLAS reads this variable once, at
# the first matrix multiply in the process: it must be set before any CUDA work, so here,
# when the torch backend is first imported, not when a deterministic model is built.
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS[0])


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch autograd, same network and update rule as numpy; CPU, or CUDA with CUDA graphs"

    def available(self) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        except OSError as exc:  # a broken install: missing or mismatched shared libraries
            return False, f"torch cannot be loaded ({str(exc).splitlines()[0]})"
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        return True, f"torch {torch.__version__.split('+')[0]}, CUDA: {gpu}"

    def devices(self) -> list[str]:
        import torch

        gpus = range(torch.cuda.device_count()) if torch.cuda.is_available() else range(0)
        return ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in gpus]

    def resolve_device(self, device: str) -> str:
        import torch

        if device not in DEVICES:
            raise BackendError(f"unknown device {device!r} for the torch backend; valid: {', '.join(DEVICES)}")
        if device == "cpu":
            return "cpu"
        if torch.cuda.is_available():
            return "cuda"
        if device == "auto":
            return "cpu"
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise BackendError(f"device 'cuda' was asked for, but torch {torch.__version__} ({build}) "
                           "sees no CUDA GPU here; use --device cpu or auto")

    def build(self, spec: NetworkSpec, params: dict[str, np.ndarray], objective: Objective,
              optimizer: Optimizer = Optimizer(), *, dtype: str = "float32", device: str = "auto",
              seed: int = 0, deterministic: bool = False) -> Model:
        import torch

        from nnexp.backends.torch.model import TorchModel

        resolved = self.resolve_device(device)
        if deterministic:
            workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
            if resolved == "cuda" and workspace not in DETERMINISTIC_CUBLAS:
                raise BackendError(f"deterministic CUDA runs need CUBLAS_WORKSPACE_CONFIG set to "
                                   f"{' or '.join(DETERMINISTIC_CUBLAS)}, not {workspace!r}")
            torch.use_deterministic_algorithms(True)  # process-wide, as torch offers it
            torch.backends.cudnn.benchmark = False
        if resolved == "cuda":
            # float32 means IEEE float32 on every device. cuDNN would otherwise run float32
            # convolutions in TF32 (10-bit mantissa), a silent precision change between the
            # CPU and the GPU. Process-wide, as torch offers it. The older allow_tf32 flags,
            # not fp32_precision: setting the newer one makes torch refuse every later read
            # of the older (torch.compile and cudnn.flags() read them).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        return TorchModel(spec, params, objective, optimizer, dtype, resolved, seed)
