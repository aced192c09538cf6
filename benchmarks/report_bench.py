"""`nnexp report` on 50 runs of 60 epochs: how long it takes to write, how big it is, how soon
a browser has drawn it, and how soon a new epoch shows on a page that `--watch` keeps live.

    python benchmarks/report_bench.py [--runs 50] [--epochs 60] [--keep DIR]

The runs are synthetic (written through `nnexp.rundir.Run`, as training writes them): 10
configurations (η) x 5 seeds, every epoch with validation and test accuracy and cost, η, and,
for half the configurations, training accuracy and cost and three hidden layers' speeds.

1. Write: the whole `nnexp report DIR -o FILE` command, timed from outside (process start,
   reading 50 run directories, the page), best of 3. Target 3 s.
2. Size of the file. Target 5 MB.
3. Load: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) from navigation
   start until the page's script has drawn every chart (`window.nnexpDrawnAt`, taken when
   the last Plotly.newPlot resolved), best of 3; seed groups pooled (10 rows), and with
   --no-group (50 curves a chart). Target 2 s.
4. Live: `nnexp report DIR --watch 2` on the runs with one of them training (its lock held
   here); an epoch is appended to it and the time until the page open in Chromium (reloading
   itself when the watcher's beacon names a new file) holds that epoch, drawn, is measured,
   6 times, at different points of the watcher's period. Target 5 s.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnexp import config  # noqa: E402
from nnexp.rundir import Run  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def record(epoch: int, eta: float, seed: int, monitored: bool) -> dict:
    """A plausible epoch: accuracy rising towards a ceiling, cost falling, a little noise."""
    wobble = math.sin(epoch * 1.7 + seed) * 0.002
    val = 0.99 - 0.08 * math.exp(-epoch / (8 + 20 * eta)) + wobble
    out = {"epoch": epoch, "eta": eta * 0.5 ** (epoch // 20), "validation_cost": 0.02 + 0.3 * math.exp(-epoch / 10) - wobble,
           "validation_accuracy": round(val, 4), "test_cost": 0.025 + 0.3 * math.exp(-epoch / 10),
           "test_accuracy": round(val - 0.001, 4)}
    if monitored:
        out.update(train_accuracy=round(min(1.0, val + 0.01), 4), train_cost=0.01 + 0.3 * math.exp(-epoch / 8),
                   layer_speed=[0.001 * (k + 1) ** 3 * math.exp(-epoch / 30) for k in range(3)])
    out.update(seconds=2.0 + wobble, best=False)
    return out


def make_runs(root: Path, runs: int, epochs: int) -> list[Run]:
    made = []
    for i in range(runs):
        eta, seed = 0.05 * (1 + i // 5), 1 + i % 5
        monitored = (i // 5) % 2 == 0
        layers = [{"type": "dense", "units": 100}, {"type": "dense", "units": 30}, {"type": "dense", "units": 30},
                  {"type": "softmax", "units": 10}]
        cfg = config.resolve({"name": "bench", "seed": seed, "model": {"layers": layers},
                              "training": {"eta": eta, "epochs": epochs, "monitor_train": monitored}})
        run = Run.create(root, "bench")
        run.write_config(cfg)
        best = -1.0
        for epoch in range(1, epochs + 1):
            rec = record(epoch, eta, seed, monitored)
            rec["best"] = rec["validation_accuracy"] >= best
            best = max(best, rec["validation_accuracy"])
            run.append_metrics(rec)
        run.write_summary({"name": "bench", "status": "completed", "stop_reason": "epochs", "epochs_run": epochs,
                           "epochs": epochs, "backend": "numpy", "device": "cpu", "seed": seed, "dataset": "mnist"})
        made.append(run)
    return made


def nnexp(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nnexp.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def line(what: str, value: float, unit: str, target: float) -> None:
    verdict = "ok" if value <= target else "OVER"
    print(f"{what:<52} {value:8.2f} {unit:<3} (target <= {target:g} {unit}: {verdict})")


def _descendants_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's descendants still alive: the
    Playwright driver and the Chromium it started (read from /proc; 0 where there is none)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid], times[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(more)
        mine |= more
    return sum(times[pid] for pid in mine if pid != os.getpid())


def load_time(browser, path: Path) -> tuple[float, float, float, float]:
    """(seconds from navigation start until every chart is drawn, of which until Plotly had
    started, the CPU seconds the browser's processes spent meanwhile, and the seconds until
    the table and panels were there: the document parsed, before any chart)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        before = _descendants_cpu()
        page.goto(path.as_uri())
        page.wait_for_function("window.nnexpReady === true", timeout=120_000)
        cpu = _descendants_cpu() - before
        table = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd") / 1000
        return (page.evaluate("window.nnexpDrawnAt") / 1000, page.evaluate("window.nnexpPlotlyAt") / 1000, cpu,
                table)
    finally:
        page.close()


def live_delay(browser, runs_dir: Path, run: Run, out: Path, epochs: int, tries: int = 6) -> list[float]:
    """Seconds from appending an epoch to `run` (held locked, as training holds it) until the
    page a `--watch 2` keeps rewriting shows it, drawn."""
    delays = []
    with run.lock():
        summary = run.read_summary()
        run.write_summary({**summary, "status": "running"})
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        watcher = subprocess.Popen([sys.executable, "-m", "nnexp.cli", "report", str(runs_dir), "-o", str(out),
                                    "--watch", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 120
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(out.as_uri())
            probe = f"""() => window.nnexpReady === true && JSON.parse(document.getElementById('nnexp-data')
                .textContent).runs.find(r => r.path === {str(run.path)!r}).metrics.epoch.length"""
            for k in range(tries):
                n = epochs + k + 1
                time.sleep(1.3 * k)  # appends at different points of the watcher's period
                run.append_metrics({**record(n, 0.05, 1, True), "best": False})
                start = time.monotonic()
                while time.monotonic() - start < 60:
                    try:
                        if page.evaluate(probe) == n:
                            break
                    except Exception:  # noqa: BLE001 - the page is reloading: ask again
                        pass
                    time.sleep(0.05)
                delays.append(time.monotonic() - start)
            page.close()
        finally:
            watcher.terminate()
            watcher.wait(timeout=60)
        run.write_summary(summary)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--keep", type=Path, help="Build the runs and reports here and keep them.")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="nnexp-report-bench-"))
    runs_dir = work / "runs"
    try:
        made = make_runs(runs_dir, args.runs, args.epochs)
        print(f"{args.runs} synthetic runs x {args.epochs} epochs in {runs_dir}")
        out = work / "report.html"
        walls = []
        for _ in range(3):
            start = time.perf_counter()
            done = nnexp("report", str(runs_dir), "-o", str(out))
            walls.append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"nnexp report failed:\n{done.stderr[-2000:]}")
        line("write: nnexp report (whole command, best of 3)", min(walls), "s", 3)
        line("size of the file", out.stat().st_size / 1e6, "MB", 5)
        single = work / "report-no-group.html"
        if nnexp("report", str(runs_dir), "-o", str(single), "--no-group").returncode != 0:
            sys.exit("nnexp report --no-group failed")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sys.exit('the load and live figures need playwright: pip install -e ".[browser]"')
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                for what, path in (("seeds pooled", out), ("--no-group", single)):
                    drawn, started, cpu, table = min(load_time(browser, path) for _ in range(3))
                    line(f"load: every chart drawn, {what} (best of 3)", drawn, "s", 2)
                    print(f"  the table there after {table:.2f} s; Plotly's JavaScript run after {started:.2f} s; "
                          f"CPU time of the browser's processes: {cpu:.2f} s")
                delays = live_delay(browser, runs_dir, made[0], work / "live.html", args.epochs)
                line(f"live: appended epoch on the page, --watch 2 (median of {len(delays)})",
                     statistics.median(delays), "s", 5)
                line("live: the same, worst", max(delays), "s", 5)
            finally:
                browser.close()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
