"""Where a training step of chapter 6's dropout net goes on the NumPy backend, one thread, and
how far each part is from what this core could do at best.

    python benchmarks/bench_dropout_step.py [--steps 400] [--rounds 5]

The net is configs/dropout.yaml's (conv 20@5 pool 2, conv 40@5 pool 2, two dense layers of
1000 ReLUs with dropout 0.5 on their inputs and on the softmax's, mini-batch 10), float32, on
random MNIST-shaped data. Each layer's forward, backward and parameter update are timed inside
real training steps (the median round is reported), then set against two bounds measured on
the same core in the same run:

- memory: a dense layer of an n_in x 1000 weight matrix at mini-batch 10 does 20 multiply-adds
  per weight, so it is bound by moving the matrix: read in the forward pass, read again for
  the gradient to the layer below, its gradient written; the update then reads the weights
  and the gradient and writes the weights, for every parameter. Each is bounded below by
  those bytes over the copy bandwidth of one core (`np.copyto` of 64 MB, read + write);
- compute: a conv layer's multiply-adds (as im2col matrix products, forward and backward) over
  the float32 matrix-product rate of one core (a 1000 x 1000 product).

The ratio measured / bound says how much a faster formulation could win at most.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
BATCH, ETA = 10, 0.03


def build():
    from nnexp.backends import Objective, get
    from nnexp.network import build_spec, init_params

    layers = yaml.safe_load((ROOT / "configs" / "dropout.yaml").read_text())["model"]["layers"]
    spec = build_spec(layers)
    params = init_params(spec, "network3", np.random.default_rng(0))
    return get("numpy").build(spec, params, Objective("log-likelihood"), seed=0)


def instrument(model, spent: dict[str, float]) -> None:
    """Wrap each layer's forward and backward, and the update, with timers."""
    def timed(key, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start
        return run

    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        name = f"{i} {layer.spec.type}"
        layer.forward = timed((name, "forward"), layer.forward)
        method = "backward_z" if i == last else "backward"  # what the model calls (backward calls backward_z)
        setattr(layer, method, timed((name, "backward"), getattr(layer, method)))
    model._step = timed(("all", "update"), model._step)


def best_of(fn, repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with threadpool_limits(1):
        model = build()
        rng = np.random.default_rng(0)
        x = rng.random((5_000, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, size=5_000)
        spent: dict = defaultdict(float)
        instrument(model, spent)
        rounds: list[dict] = []
        for r in range(args.rounds + 1):  # round 0 warms caches and the allocator
            spent.clear()
            batches = rng.permutation(len(y))[: args.steps * BATCH].reshape(args.steps, BATCH)
            start = time.perf_counter()
            model.train_epoch(x, y, batches, ETA)
            total = time.perf_counter() - start
            if r:
                rounds.append({**{k: v / args.steps for k, v in spent.items()}, "step": total / args.steps})

        big = np.ones(16_000_000, dtype=np.float32)
        copy = np.empty_like(big)
        bandwidth = 2 * big.nbytes / best_of(lambda: np.copyto(copy, big))
        a, b = np.ones((1000, 1000), np.float32), np.ones((1000, 1000), np.float32)
        flops = 2e9 / best_of(lambda: a @ b)

    def median(key):
        return statistics.median(r[key] for r in rounds)

    step = median("step")
    print(f"dropout net, NumPy backend, float32, mini-batch {BATCH}, one thread; {args.steps} steps x "
          f"{args.rounds} rounds (median round)")
    print(f"one core: copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write), "
          f"float32 matrix product {flops / 1e9:.0f} GFLOP/s")
    print(f"{'layer':<14}{'forward':>9}{'backward':>10}{'share':>8}{'bound':>9}{'measured/bound':>16}")
    shapes = {}
    for layer in model.layers:
        spec = layer.spec
        if spec.type in ("dense", "softmax"):
            n_in, n_out = layer.params["w"].shape
            shapes[spec.index] = ("memory", 3 * n_in * n_out * 4 / bandwidth)
        elif spec.type == "conv":
            w = layer.params["w"]  # (k*k*C, F)
            out_hw = {0: 24, 1: 8}[spec.index]  # 28-5+1 and 12-5+1 positions a side
            macs = BATCH * out_hw * out_hw * w.shape[0] * w.shape[1]
            backward = 2 if spec.index else 1  # the first layer needs no gradient to its input
            shapes[spec.index] = ("compute", 2 * macs * (1 + backward) / flops)
    keys = sorted({k[0] for r in rounds for k in r if isinstance(k, tuple) and k[0] != "all"})
    for name in keys:
        f, bw = median((name, "forward")), median((name, "backward"))
        index = int(name.split()[0])
        kind, bound = shapes.get(index, ("", None))
        ratio = f"{(f + bw) / bound:.1f}x ({kind})" if bound else ""
        bound_ms = f"{1000 * bound:.3f}" if bound else ""
        print(f"{name:<14}{1000 * f:>9.3f}{1000 * bw:>10.3f}{(f + bw) / step:>8.0%}{bound_ms:>9}{ratio:>16}")
    update = median(("all", "update"))
    params = sum(v.size for v in model.get_params().values())
    bound = 3 * params * 4 / bandwidth
    print(f"{'update':<14}{'':>9}{1000 * update:>10.3f}{update / step:>8.0%}{1000 * bound:>9.3f}"
          f"{f'{update / bound:.1f}x (memory)':>16}")
    print(f"{'step':<14}{1000 * step:>19.3f} ms")


if __name__ == "__main__":
    main()
