"""Sweeps: how much faster `--jobs 2` runs points than `--jobs 1`, and what a sweep costs
beyond its points' own training and evaluation.

    python benchmarks/bench_sweep.py [--repeats 2] [--keep DIR]

Each measurement is a whole `nnexp sweep` command (process start, data loading, run
directories, the final table), timed from outside; the commands alternate, so load on a
shared machine hits each alike, and the best of the repeats counts.

1. Throughput: 4 points of conv2_relu (NumPy, 1 epoch on 10,000 images), `--jobs 1` against
   `--jobs 2` (one thread per point in both, so each point does the same arithmetic), and
   `--jobs 1 --threads 2` (one point at a time with both threads) for reference.
2. Overhead: 20 tiny points (1 epoch on 500 images) with `--jobs 1`; the time outside the
   points' own epochs (metrics.jsonl's `seconds`: training and evaluation) over the sweep's
   wall time. For conv2_relu and for the small dense `shallow` net, whose epochs are so short
   that the sweep's fixed costs show.
Needs $NNEXP_DATA_DIR (MNIST).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sweep(args: list[str], runs: Path) -> tuple[float, Path]:
    """Wall time of one `nnexp sweep` and the sweep directory it made."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnexp", "sweep", *args, "--runs-dir", str(runs)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"nnexp sweep {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall, Path(done.stdout.strip().splitlines()[-1])


def epoch_seconds(sweep_dir: Path) -> float:
    total = 0.0
    for metrics in sweep_dir.glob("*/metrics.jsonl"):
        total += sum(json.loads(line)["seconds"] for line in metrics.read_text().splitlines())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the sweep directories here")
    args = parser.parse_args()
    if not os.environ.get("NNEXP_DATA_DIR"):
        sys.exit("set NNEXP_DATA_DIR to the folder of the MNIST files")
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}; sweeps under {scratch}")

    four = ["configs/conv2_relu.yaml", "--seeds", "4", "--set", "data.train_size=10000",
            "--set", "training.epochs=1", "--backend", "numpy"]
    contenders = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"],
                  "--jobs 1 --threads 2": ["--jobs", "1", "--threads", "2"]}
    best = {name: float("inf") for name in contenders}
    for r in range(args.repeats):
        for name, extra in contenders.items():
            wall, _ = sweep([*four, *extra], scratch / f"throughput-{r}")
            best[name] = min(best[name], wall)
    print("\n1. 4 points of conv2_relu, NumPy, 1 epoch on 10,000 images (best of "
          f"{args.repeats}, wall seconds of the whole command)")
    for name, wall in best.items():
        print(f"   {name:<22} {wall:7.1f} s   {wall / best['--jobs 1']:.2f}x of --jobs 1")

    print("\n2. 20 tiny points (1 epoch on 500 images), --jobs 1")
    for config in ("configs/conv2_relu.yaml", "configs/shallow.yaml"):
        tiny = [config, "--seeds", "20", "--set", "data.train_size=500", "--set", "training.epochs=1",
                "--backend", "numpy", "--jobs", "1"]
        runs = []
        for r in range(args.repeats):
            wall, made = sweep(tiny, scratch / f"overhead-{Path(config).stem}-{r}")
            runs.append((wall - epoch_seconds(made), wall))
        outside, wall = min(runs)
        print(f"   {Path(config).stem:<12} wall {wall:6.1f} s, outside the points' epochs {outside:5.1f} s "
              f"= {100 * outside / wall:4.1f}%")


if __name__ == "__main__":
    main()
