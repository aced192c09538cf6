"""NumPy backend vs a plain hand-written PyTorch CPU loop: ms per training step.

The network is the book's conv2_relu (conv 20@5x5 + pool 2, conv 40@5x5 + pool 2, dense 100,
softmax 10; ReLU; mini-batch 10) on random MNIST-shaped data. Both are timed in the same
process, in alternating rounds, and the median round is reported, so the ratio holds up on a
shared, noisy machine better than either absolute number.

    python benchmarks/bench_numpy_cpu.py [--steps 300] [--rounds 7] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

CONV2_RELU = [
    {"type": "conv", "filters": 20, "size": 5, "pool": 2, "activation": "relu"},
    {"type": "conv", "filters": 40, "size": 5, "pool": 2, "activation": "relu"},
    {"type": "dense", "units": 100, "activation": "relu", "dropout": 0.0},
    {"type": "softmax", "units": 10, "dropout": 0.0},
]
BATCH, ETA, L2 = 10, 0.03, 0.1 * 10 / 50_000


def numpy_stepper(x, y):
    from nnexp.backends import Objective, get
    from nnexp.network import build_spec, init_params

    spec = build_spec(CONV2_RELU)
    params = init_params(spec, "network3", np.random.default_rng(0))
    model = get("numpy").build(spec, params, Objective("log-likelihood", l2_coef=L2), seed=0)

    def run(batches):
        model.train_epoch(x, y, batches, ETA)

    return run


def torch_stepper(x, y):
    """The plain loop a PyTorch user would write: nn.Sequential, F.cross_entropy, optim.SGD."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=ETA, weight_decay=L2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run(batches):
        for idx in torch.from_numpy(batches):
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.random((5_000, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=5_000)
    steppers = {"nnexp numpy": numpy_stepper(x, y), "plain torch": torch_stepper(x, y)}
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(args.rounds + 1):  # round 0 warms caches, allocators and thread pools
        batches = rng.permutation(len(y))[: args.steps * BATCH].reshape(args.steps, BATCH)
        for name, step in steppers.items():
            start = time.perf_counter()
            step(batches)
            if r:
                times[name].append(1000 * (time.perf_counter() - start) / args.steps)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"conv2_relu, mini-batch {BATCH}, {args.steps} steps x {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}")
    for name, ms in med.items():
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"  {name:<12} {ms:6.2f} ms/step  (rounds: {spread})")
    print(f"  ratio numpy / torch: {med['nnexp numpy'] / med['plain torch']:.2f}x  (target <= 1.25x)")


if __name__ == "__main__":
    main()
