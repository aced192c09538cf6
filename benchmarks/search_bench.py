"""Random search against a search that learns (Optuna's TPE sampler with a pruner): how many
epochs each spends, and what each finds.

    python benchmarks/search_bench.py [--seeds 1 2 3] [--pruners median asha] [--out DIR]
                                      [--conv-trials 10 --conv-epochs 6 --conv-backend torch] [--skip-conv]
                                      [--conv-pruner P: only part 2, with pruner P]

1. configs/saitoh_search.yaml (Saitoh ch. 6: 784-[100 x 6]-10 ReLU, 50 epochs on 500 images),
   η log-uniform 1e-6..1e-2 and λ log-uniform 1e-8..1e-4, 20 trials: `--sampler random`
   (no pruner) against `--sampler tpe --pruner P` for each of --pruners, at each --search-seed.
2. The same on saitoh_simple_convnet on 10,000 images, its trials and epochs cut to
   --conv-trials and --conv-epochs (η log-uniform 1e-5..1e-1 for its Adam, λ 1e-8..1e-3),
   with the pruner that did better in part 1 (fewer epochs to reach random's best; on a tie,
   fewer epochs spent).

Every search is a whole `nnexp search ... --jobs 1` command, so trials run one after another
and a trial's order is the order its epochs were spent in. Per seed it prints the epochs each
method spent, the best validation accuracy each reached, the epochs TPE + pruner needed to
reach random's best (counted in trial order, through each trial's epochs), and, at TPE's
epoch budget, TPE's best against random's best within its first that-many epochs. Only
validation accuracies are compared: the test set plays no part. Needs $NNEXP_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAITOH = ["training.eta=log-uniform:1e-6:1e-2", "training.lambda=log-uniform:1e-8:1e-4"]
CONV = ["training.eta=log-uniform:1e-5:1e-1", "training.lambda=log-uniform:1e-8:1e-3"]


def search(config: str, samples: list[str], trials: int, seed: int, runs: Path, extra: list[str]) -> tuple[Path, float]:
    """Run one search; its directory and wall time."""
    cmd = [sys.executable, "-m", "nnexp", "search", config, "--trials", str(trials), "--search-seed", str(seed),
           "--jobs", "1", "--runs-dir", str(runs), *extra]
    for sample in samples:
        cmd += ["--sample", sample]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some trial diverged, which a search may well meet
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1]), wall


def trajectory(sweep: Path) -> list[tuple[int, float]]:
    """(epochs spent so far, best validation so far) after every epoch, trials in order."""
    manifest = json.loads((sweep / "sweep.json").read_text())
    spent, best, out = 0, 0.0, []
    for point in manifest["points"]:
        metrics = sweep / point["id"] / "metrics.jsonl"
        if not metrics.is_file():
            continue
        for line in metrics.read_text().splitlines():
            record = json.loads(line)
            spent += 1
            value = record.get("validation_accuracy")
            if isinstance(value, (int, float)) and value == value:  # NaN: a diverged epoch
                best = max(best, value)
            out.append((spent, best))
    return out


def best_within(curve: list[tuple[int, float]], budget: int) -> float:
    return max((b for spent, b in curve if spent <= budget), default=0.0)


def epochs_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((spent for spent, b in curve if b >= target), None)


def compare(label: str, config: str, samples: list[str], trials: int, seeds: list[int], pruners: list[str],
            runs: Path, extra: list[str]) -> dict:
    results = {}
    for seed in seeds:
        random_dir, random_wall = search(config, samples, trials, seed, runs, extra)
        rnd = trajectory(random_dir)
        row = {"random": {"epochs": rnd[-1][0], "best": rnd[-1][1], "wall_s": round(random_wall), "dir": str(random_dir)}}
        for pruner in pruners:
            tpe_dir, tpe_wall = search(config, samples, trials, seed, runs,
                                       [*extra, "--sampler", "tpe", "--pruner", pruner])
            tpe = trajectory(tpe_dir)
            row[pruner] = {"epochs": tpe[-1][0], "best": tpe[-1][1], "wall_s": round(tpe_wall), "dir": str(tpe_dir),
                           "epochs_to_random_best": epochs_to_reach(tpe, rnd[-1][1]),
                           "random_best_at_equal_epochs": best_within(rnd, tpe[-1][0])}
        results[seed] = row
        print(f"{label}, search seed {seed}:", flush=True)
        print(f"  random:            {row['random']['epochs']:5d} epochs, best validation "
              f"{100 * row['random']['best']:.2f}% ({row['random']['wall_s']} s)", flush=True)
        for pruner in pruners:
            r = row[pruner]
            reach = r["epochs_to_random_best"]
            reached = f"reached random's best after {reach} epochs" if reach is not None else "never reached random's best"
            print(f"  tpe + {pruner:<10}  {r['epochs']:5d} epochs, best validation {100 * r['best']:.2f}% "
                  f"({r['wall_s']} s); {reached}; random's best in its first {r['epochs']} epochs: "
                  f"{100 * r['random_best_at_equal_epochs']:.2f}%", flush=True)
    summary = {}
    for pruner in pruners:
        fractions = []
        for seed in seeds:
            reach, spent = results[seed][pruner]["epochs_to_random_best"], results[seed]["random"]["epochs"]
            fractions.append(reach / spent if reach is not None else float("inf"))
        median = statistics.median(fractions)
        wins = sum(results[s][pruner]["best"] >= results[s][pruner]["random_best_at_equal_epochs"] for s in seeds)
        summary[pruner] = {"median_fraction_of_random_epochs_to_reach_its_best": median,
                           "seeds_where_tpe_best_>=_random_at_equal_epochs": wins}
        print(f"{label}: tpe + {pruner}: median over seeds of (epochs to reach random's best) / (random's epochs) "
              f"= {median:.3f} (target <= 1/3: {'met' if median <= 1 / 3 else 'NOT met'}); at equal epochs TPE's "
              f"best >= random's in {wins} of {len(seeds)} seeds", flush=True)
    return {"seeds": results, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--pruners", nargs="+", default=["median", "asha"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--conv-trials", type=int, default=10)
    parser.add_argument("--conv-epochs", type=int, default=6)
    parser.add_argument("--conv-seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--conv-backend", default="torch")
    parser.add_argument("--skip-conv", action="store_true")
    parser.add_argument("--conv-pruner", default=None, help="Only the conv part, with this pruner.")
    parser.add_argument("--out", type=Path, default=None, help="Keep the searches here (default: a temporary folder).")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="nnexp-search-bench-"))
    report = {}
    if not args.conv_pruner:
        report["saitoh_search"] = compare("saitoh_search (500 images, 50 epochs)", "configs/saitoh_search.yaml",
                                          SAITOH, args.trials, args.seeds, args.pruners, out / "saitoh", [])
    if not args.skip_conv:
        summary = report.get("saitoh_search", {}).get("summary")
        # fewer epochs to reach random's best; on a tie, fewer epochs spent in all
        pruner = args.conv_pruner or min(args.pruners, key=lambda p: (
            summary[p]["median_fraction_of_random_epochs_to_reach_its_best"],
            statistics.median(report["saitoh_search"]["seeds"][s][p]["epochs"] for s in args.seeds)))
        print(f"conv: pruner {pruner}" + ("" if args.conv_pruner else " (the better on saitoh_search)"), flush=True)
        extra = ["--set", "data.train_size=10000", "--set", f"training.epochs={args.conv_epochs}",
                 "--backend", args.conv_backend]
        report["conv"] = compare(f"saitoh_simple_convnet ({args.conv_backend}, 10,000 images, {args.conv_epochs} epochs)",
                                 "configs/saitoh_simple_convnet.yaml", CONV, args.conv_trials, args.conv_seeds,
                                 [pruner], out / "conv", extra)
        report["conv"]["pruner"] = pruner
    (out / "search_bench.json").write_text(json.dumps(report, indent=2))
    print(f"searches and search_bench.json in {out}")


if __name__ == "__main__":
    main()
