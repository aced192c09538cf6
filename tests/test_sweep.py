"""Sweeps: planning (grid x seeds, ids, sweep files), the one run entry point's idempotence on
synthetic data, and whole sweeps through the CLI: failures, re-runs, SIGKILL and resume, the
local pool and Ray, each checked against a serial, uninterrupted sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnexp import sweepplan as sweeps
from nnexp import training as train
from nnexp import lifecycle
from nnexp.lifecycle import Intent
from nnexp.cli import app
from nnexp.data import Dataset, Split
from nnexp.errors import ConfigError, UserError
from nnexp.rundir import Run

from conftest import make_config, needs_mnist
from runfactory import kill_once_second_point_is_part_way

TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 2, "eta": 0.5}}


def write_tiny(tmp_path, **training) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["training"].update(training)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def metrics_of(point_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in Run(point_dir).read_metrics()]


def sweep_dir_of(runs: Path) -> Path:
    (made,) = [p for p in runs.iterdir() if p.is_dir()]
    return made


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def two_seed_sweep(tmp_path) -> tuple[Path, Path]:
    """(config, sweep directory) of a finished 2-seed sweep of the tiny net."""
    config = write_tiny(tmp_path)
    runs = tmp_path / "runs"
    assert cli("sweep", config, "--seeds", "2", "--jobs", "1", "--runs-dir", runs).exit_code == 0
    return config, sweep_dir_of(runs)


# --- planning ---------------------------------------------------------------------------------


def test_grid_and_seeds_expand_to_the_cartesian_product_in_order():
    plan = sweeps.grid_plan("s", {"s": dict(TINY)},
                            {"training.eta": [0.1, 1.0], "model.layers.0.units": [10, 20]}, [1, 2])
    assert len(plan.points) == 8
    assert [p.id for p in plan.points[:3]] == ["eta=0.1,units=10,seed=1", "eta=0.1,units=10,seed=2",
                                              "eta=0.1,units=20,seed=1"]
    assert plan.points[-1].overrides == {"training.eta": 1.0, "model.layers.0.units": 20, "seed": 2}
    cfg = plan.config(plan.points[-1])
    assert (cfg["training"]["eta"], cfg["model"]["layers"][0]["units"], cfg["seed"]) == (1.0, 20, 2)
    assert sweeps.grid_plan("s", {"s": dict(TINY)}, {}, None).points[0].id == "run"


def test_point_ids_depend_only_on_values_and_stay_safe():
    make = lambda: sweeps.grid_plan("s", {"s": dict(TINY)}, {"training.eta": [0.025, 2.5]}, [1])  # noqa: E731
    assert [p.id for p in make().points] == [p.id for p in make().points] == ["eta=0.025,seed=1",
                                                                              "eta=2.5,seed=1"]
    # the same last part under two keys: the full keys name them
    plan = sweeps.grid_plan("s", {"s": dict(TINY)}, {"model.layers.0.units": [10], "data.units": [1]}, None)
    assert plan.points[0].id == "model.layers.0.units=10,data.units=1"
    assert sweeps.point_id([("path", "a/b c")]) == "path=a_b_c"
    long = sweeps.point_id([("k", "x" * 200)])
    assert len(long) == sweeps.ID_LIMIT and long != sweeps.point_id([("k", "x" * 199)])


def test_several_configs_are_a_dimension_of_the_grid(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**TINY, "name": "a"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**TINY, "name": "b"}))
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump({"config": ["a.yaml", "b.yaml"], "seeds": 2,
                                    "set": {"training.epochs": 1}}))
    plan = sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)
    assert plan.name == "ladder"
    assert [p.id for p in plan.points] == ["a,seed=0", "a,seed=1", "b,seed=0", "b,seed=1"]
    assert all(plan.config(p)["training"]["epochs"] == 1 for p in plan.points)


def test_a_sweep_file_takes_command_line_grid_and_seeds_over_its_own(tmp_path):
    write_tiny(tmp_path)
    path = tmp_path / "eta.yaml"
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "grid": {"training.eta": [0.1, 0.2]}, "seeds": [4]}))
    plan = sweeps.read_sweep_file(path, sets=["training.epochs=3"], grid={"training.eta": [0.3]},
                                  seeds="1,2", name="mine")
    assert plan.name == "mine" and [p.id for p in plan.points] == ["eta=0.3,seed=1", "eta=0.3,seed=2"]
    assert plan.config(plan.points[0])["training"]["epochs"] == 3


@pytest.mark.parametrize("content,words", [
    ({"config": "tiny.yaml", "grids": {}}, "grids: unknown key"),
    ({"config": "missing.yaml"}, "config: config file not found"),
    ({"config": "tiny.yaml", "grid": {"training.eta": 0.1}}, "grid: expected a mapping"),
    ({"config": "tiny.yaml", "seeds": 0}, "seeds: the number of seeds must be at least 1"),
    ({"config": "tiny.yaml", "grid": {"training.etaa": [0.1]}}, "training.etaa: unknown key"),
    ({"config": "tiny.yaml", "grid": {"training.eta": [-1]}}, "training.eta: must be > 0"),
])
def test_bad_sweep_files_name_the_key(tmp_path, content, words):
    write_tiny(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        plan = sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)
        [plan.config(p) for p in plan.points]


@pytest.mark.parametrize("text,expected", [("3", [1, 2, 3]), ("1,3,5", [1, 3, 5]), (2, [1, 2]), ([7, 8], [7, 8])])
def test_seeds_count_up_from_the_configs_or_are_listed(text, expected):
    assert sweeps.parse_seeds(text, 1) == expected


@pytest.mark.parametrize("text", ["0", "x", "1,1", "1,-2", True])
def test_bad_seeds_are_refused(text):
    with pytest.raises(UserError):
        sweeps.parse_seeds(text, 1)


@pytest.mark.parametrize("items,words", [(["training.eta"], "expected KEY=V1,V2"),
                                         (["training.eta=0.1", "training.eta=0.2"], "given twice"),
                                         (["training.eta=[0.1"], "not valid YAML")])
def test_bad_grids_are_refused(items, words):
    with pytest.raises(UserError, match=words):
        sweeps.parse_grid(items)


# --- the one entry point, on synthetic data ---------------------------------------------------


def synthetic(n_train=200, seed=0) -> Dataset:
    """Separable random data: the class is which of ten pixel blocks is brightest."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 10, size=n)
        x = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.2
        for i, label in enumerate(y):
            x[i, 0, 2 * label:2 * label + 2, :] += 0.8
        return Split(x, y.astype(np.int64))

    return Dataset("synthetic", split(n_train), split(50), split(50), 10, {"synthetic": seed})


def test_execute_is_idempotent_and_never_starts_a_failed_run_over(tmp_path):
    cfg = make_config(training={"epochs": 2, "eta": 0.5})
    exp = train.prepare(cfg, dataset=synthetic())
    run = Run.at(tmp_path / "p")
    first = lifecycle.execute(exp, run)
    assert first["status"] == "completed" and first["best_validation_accuracy"] > 0.5
    written = (run.path / "metrics.jsonl").stat().st_mtime_ns
    assert lifecycle.execute(exp, run) == first  # done: nothing trains again
    assert (run.path / "metrics.jsonl").stat().st_mtime_ns == written

    run.write_summary({**first, "status": "failed"})
    run.checkpoint_path("last").unlink()  # else RESUME would continue a failed run from it
    for intent in (Intent.CONTINUE, Intent.RESUME):  # left as it is: --retry-failed starts its point anew
        assert lifecycle.execute(exp, run, intent)["status"] == "failed"
    assert (run.path / "metrics.jsonl").stat().st_mtime_ns == written


def test_execute_resumes_only_under_the_runs_own_config(tmp_path):
    cfg = make_config(training={"epochs": 2, "eta": 0.5})
    run = Run.at(tmp_path / "p")
    summary = lifecycle.execute(train.prepare(cfg, dataset=synthetic()), run)
    run.write_summary({**summary, "status": "interrupted"})
    other = make_config(training={"epochs": 2, "eta": 0.25})
    with pytest.raises(UserError, match=r"training.eta = 0.5, not 0.25"):
        lifecycle.execute(train.prepare(other, dataset=synthetic()), run)
    longer = make_config(training={"epochs": 3, "eta": 0.5})  # epochs may change: it extends the run
    assert lifecycle.execute(train.prepare(longer, dataset=synthetic()), run)["epochs_run"] == 3


def test_prepare_takes_datasets_from_the_cache_once(monkeypatch):
    loads = []
    monkeypatch.setattr(train, "load_dataset", lambda name, **kw: loads.append(name) or synthetic())
    cache = train.DataCache()
    for eta in (0.1, 0.2, 0.3):
        train.prepare(make_config(training={"eta": eta}), datasets=cache)
    assert loads == ["mnist"] and len(cache) == 1


# --- whole sweeps, through the CLI, on small MNIST subsets ------------------------------------


@needs_mnist
def test_one_diverging_point_does_not_stop_the_others_and_reruns_skip_done_points(tmp_path):
    config = write_tiny(tmp_path)
    runs = tmp_path / "runs"
    result = cli("sweep", config, "--grid", "training.eta=0.5,1e9", "--set", "model.init=large",
                 "--set", "model.layers.0.activation=linear", "--jobs", "1", "--runs-dir", runs)
    assert result.exit_code == 1, result.output
    assert "1 of 2 points did not complete: eta=1000000000.0 (diverged)" in result.output
    made = sweep_dir_of(runs)
    assert result.stdout.strip().splitlines()[-1] == str(made)
    manifest = json.loads((made / "sweep.json").read_text())
    assert {p["id"]: p["status"] for p in manifest["points"]} == {"eta=0.5": "completed",
                                                                  "eta=1000000000.0": "diverged"}
    stamp = (made / "eta=0.5" / "metrics.jsonl").stat().st_mtime_ns
    again = cli("sweep", made, "--jobs", "1")
    assert again.exit_code == 1 and "2 points, 2 already done or not retried" in again.output
    assert (made / "eta=0.5" / "metrics.jsonl").stat().st_mtime_ns == stamp
    retried = cli("sweep", made, "--jobs", "1", "--retry-failed")
    assert retried.exit_code == 1 and "eta=1000000000.0: diverged" in retried.output
    assert "1 already done" in retried.output


@needs_mnist
def test_bad_sweeps_fail_before_anything_is_made(tmp_path):
    config = write_tiny(tmp_path)
    runs = tmp_path / "runs"
    for args, words in [(["--grid", "training.etaa=1,2"], "training.etaa: unknown key"),
                        (["--grid", "training.batch_size=10,1000"], "1000 is larger than the training set"),
                        (["--seeds", "x"], "--seeds: expected a count"),
                        (["--executor", "slurm"], "unknown executor 'slurm'")]:
        result = cli("sweep", config, *args, "--runs-dir", runs)
        assert result.exit_code == 2 and words in result.output, result.output
        assert "Traceback" not in result.output and not runs.exists()


# Input that once escaped as a traceback, ran, or planned for minutes; each is now one line,
# exit code 2, and nothing is made. Each case: (sweep file contents or None, args, words).
ONE_LINE_REFUSALS = [
    ({"config": "tiny.yaml", "grid": {5: [1]}}, [], "grid: key 5 is not a config key"),  # was AttributeError
    (None, ["--seeds", "99999999999999999999"], "--seeds: at most 10,000 seeds"),  # was OverflowError
    (None, ["--seeds", "9223372036854775807"], "--seeds: at most 10,000 seeds"),  # was MemoryError
    (None, ["--seeds", "3000000"], "--seeds: at most 10,000 seeds"),  # was 15 s and 1.7 GB of planning
    (None, ["--seeds", "9" * 5000], "--seeds: at most 10,000 seeds"),
    (None, ["--seeds", "9223372036854775808,1"], "a seed must be at most 2**63 - 1"),
    (None, ["--grid", "training.eta=0.1,.nan"], "grid: training.eta: a value must be a finite number, got nan"),
    (None, ["--grid", "training.eta=-.inf"], "a value must be a finite number, got -inf"),
    (None, ["--grid", "training.eta=nan"], "training.eta: expected a finite number, got a string ('nan')"),
    ({"config": "tiny.yaml", "grid": {"training.eta": [float("inf")]}}, [], "a value must be a finite number, got inf"),
    ({"config": "tiny.yaml", "seeds": [1.5]}, [], "seeds: expected a count N or a list of whole-number seeds"),
    (None, ["--grid", "training.eta=1,1.0"], "grid: training.eta lists a value twice"),  # was two equal points
    (None, ["--set", "training.epochs=" + "9" * 5000], "is an integer of 5,000 digits, too large to read"),
]


@pytest.mark.parametrize("content,args,words", ONE_LINE_REFUSALS,
                         ids=[w[:40] for _, _, w in ONE_LINE_REFUSALS])
def test_bad_sweep_input_is_one_line_with_exit_2(tmp_path, content, args, words):
    target = write_tiny(tmp_path)
    if content is not None:
        target = tmp_path / "sweep.yaml"
        target.write_text(yaml.safe_dump(content))
    runs = tmp_path / "runs"
    result = cli("sweep", target, *args, "--jobs", "1", "--runs-dir", runs)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and words in lines[0], result.output[-500:]
    assert "Traceback" not in result.output and not runs.exists()


def test_whole_number_seeds_and_distinct_numbers_still_plan():
    assert sweeps.parse_seeds([0, 2**63 - 1], 1) == [0, 2**63 - 1]
    assert len(sweeps.parse_seeds("10000", 0)) == 10_000
    grid = sweeps.parse_grid(["training.eta=1,1.5", "model.layers.0.activation=relu,sigmoid"])
    assert len(sweeps.grid_plan("g", {"g": {}}, grid, None).points) == 4


@needs_mnist
def test_resume_option_continues_only_the_same_sweep(tmp_path):
    config, made = two_seed_sweep(tmp_path)
    same = cli("sweep", config, "--seeds", "2", "--jobs", "1", "--resume", made)
    assert same.exit_code == 0 and "2 already done" in same.output
    other = cli("sweep", config, "--seeds", "3", "--jobs", "1", "--resume", made)
    assert other.exit_code == 2 and "holds a different sweep" in other.output


def _serial_reference(tmp_path, config, *args) -> Path:
    runs = tmp_path / "serial"
    result = cli("sweep", config, *args, "--jobs", "1", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    return sweep_dir_of(runs)


def _assert_same_points(made: Path, reference: Path) -> None:
    ids = sorted(p.name for p in reference.iterdir() if p.is_dir())
    assert ids == sorted(p.name for p in made.iterdir() if p.is_dir() and not p.name.startswith("."))
    for point in ids:
        assert metrics_of(made / point) == metrics_of(reference / point), point
        assert json.loads((made / point / "summary.json").read_text())["status"] == "completed"


@needs_mnist
def test_the_local_pool_gives_the_serial_sweeps_metrics(tmp_path):
    config = write_tiny(tmp_path)
    args = ("--grid", "training.eta=0.2,0.6", "--seeds", "2")
    reference = _serial_reference(tmp_path, config, *args)
    runs = tmp_path / "pool"
    result = cli("sweep", config, *args, "--jobs", "2", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert "2 local processes" in result.output
    _assert_same_points(sweep_dir_of(runs), reference)


@needs_mnist
def test_a_sigkilled_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    config = write_tiny(tmp_path, epochs=6)
    args = ("--grid", "training.eta=0.2,0.4,0.6", "--set", "data.train_size=3000")
    reference = _serial_reference(tmp_path, config, *args)
    runs = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", "sweep", str(config), *args, "--jobs", "1",
                             "--runs-dir", str(runs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    kill_once_second_point_is_part_way(proc, runs, "*/eta=*", epochs=6, timeout=120)
    made = sweep_dir_of(runs)
    assert json.loads((made / "eta=0.4" / "summary.json").read_text())["status"] == "running"
    result = cli("sweep", made, "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "1 already done" in result.output
    _assert_same_points(made, reference)
    assert "resumed after epoch" in (made / "eta=0.4" / "train.log").read_text()


@needs_mnist
def test_the_ray_executor_gives_the_serial_sweeps_metrics(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    config = write_tiny(tmp_path)
    args = ("--grid", "training.eta=0.2,0.6")
    reference = _serial_reference(tmp_path, config, *args)
    runs = tmp_path / "ray"
    result = cli("sweep", config, *args, "--executor", "ray", "--jobs", "2", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    made = sweep_dir_of(runs)
    _assert_same_points(made, reference)
    summary = json.loads((made / "eta=0.2" / "summary.json").read_text())
    assert summary["run_dir"] == str(made / "eta=0.2")  # the worker's scratch path is not kept


def test_the_ray_executor_without_ray_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = cli("sweep", write_tiny(tmp_path), "--executor", "ray", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and 'needs Ray: pip install -e ".[ray]"' in result.output


def test_positional_overrides_reach_the_config(tmp_path):
    result = cli("show-config", write_tiny(tmp_path), "training.eta=0.125", "model.layers.0.units=7")
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    assert cfg["training"]["eta"] == 0.125 and cfg["model"]["layers"][0]["units"] == 7
    bad = cli("train", write_tiny(tmp_path), "eta")
    assert bad.exit_code == 2 and "unexpected argument 'eta'" in bad.output


def test_the_chapter_6_ladder_is_one_sweep_file_of_every_rung_with_the_books_numbers():
    path = Path(__file__).resolve().parent.parent / "configs" / "ch6_ladder.yaml"
    plan = sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)
    rungs = ["shallow", "conv1", "conv2", "conv2_relu", "expanded", "expanded_fc300", "expanded_fc1000",
             "expanded_2fc100", "expanded_2fc300", "expanded_2fc1000", "dropout"]
    assert list(plan.bases) == rungs and len(plan.points) == 3 * len(rungs)
    assert [p.id for p in plan.points[:3]] == ["shallow,seed=1", "shallow,seed=2", "shallow,seed=3"]
    books = {p.base: plan.config(p)["reference"]["value"] for p in plan.points}
    assert books["conv2"] == 99.06 and books["conv2_relu"] == 99.23 and books["dropout"] == 99.60
    assert all(not plan.config(p)["training"]["shuffle"] for p in plan.points)  # network3's order
    assert [p.id for p in sweeps.selected(plan, ["conv2,*"])] == ["conv2,seed=1", "conv2,seed=2", "conv2,seed=3"]


def test_grid_points_that_change_the_experiment_carry_no_book_number():
    path = Path(__file__).resolve().parent.parent / "configs" / "conv2_relu.yaml"
    base = sweeps.load_base(path, [])
    seeds_only = sweeps.grid_plan("s", {"conv2_relu": base}, {}, [1, 2])
    assert all(seeds_only.config(p)["reference"]["value"] == 99.23 for p in seeds_only.points)
    etas = sweeps.grid_plan("s", {"conv2_relu": base}, {"training.eta": [0.03, 0.1]}, None)
    assert all(etas.config(p)["reference"] is None for p in etas.points)
    assert sweeps.load_base(path, ["training.epochs=1"])["reference"] is None


# --- review fixes: sweep files, one process per sweep, Ctrl-C, resume of a failed run ------------


def test_a_nested_set_in_a_sweep_file_sets_keys_not_sections(tmp_path):
    write_tiny(tmp_path, eta=0.3)
    path = tmp_path / "nested.yaml"
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "set": {"training": {"epochs": 5}}}))
    plan = sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)
    cfg = plan.config(plan.points[0])
    assert cfg["training"]["epochs"] == 5 and cfg["training"]["eta"] == 0.3
    path.write_text(yaml.safe_dump({"config": []}))
    with pytest.raises(ConfigError, match="config: lists no config"):
        sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)


@needs_mnist
def test_one_process_runs_a_sweep_at_a_time_and_compare_finds_sweeps_in_a_folder(tmp_path):
    _, made = two_seed_sweep(tmp_path)
    with Run(made).lock():
        busy = cli("sweep", made, "--jobs", "1")
    assert busy.exit_code == 2 and "another process" in busy.output
    table = cli("compare", made.parent, "-f", "csv", "--no-group")  # the folder holding the sweep
    assert table.exit_code == 0 and len(table.stdout.strip().splitlines()) == 3


@needs_mnist
@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c", "kill-int-to-the-sweep-alone"])
def test_ctrl_c_stops_a_parallel_sweep_at_once(tmp_path, to_group):
    config = write_tiny(tmp_path, epochs=40)
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", "sweep", str(config), "--seeds", "6",
                             "--set", "data.train_size=2000", "--jobs", "2", "--runs-dir", str(runs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            len(Run(p).read_metrics()) >= 1 for p in runs.glob("*/seed=*")):
        time.sleep(0.05)
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does: the whole group
    else:
        os.kill(proc.pid, signal.SIGINT)  # `kill -INT PID`: the workers hear of it from the sweep
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, proc.stderr.read().decode()[-2000:]
    made = sweep_dir_of(runs)
    started = [p for p in made.iterdir() if p.is_dir() and (p / "config.yaml").exists()]
    assert len(started) <= 3  # the two running points, no new ones after Ctrl-C
    for point in started:
        assert json.loads((point / "summary.json").read_text())["status"] == "interrupted"
    manifest = json.loads((made / "sweep.json").read_text())
    assert "running" not in {p["status"] for p in manifest["points"]}


@needs_mnist
def test_resume_continues_a_failed_run_and_refuses_to_shorten_one(tmp_path):
    runner = CliRunner()
    run_dir = runner.invoke(app, ["train", str(write_tiny(tmp_path)), "--runs-dir", str(tmp_path / "r")]).stdout.strip()
    run = Run(run_dir)
    summary = json.loads((run.path / "summary.json").read_text())
    run.write_summary({**summary, "status": "failed"})  # as a full disk leaves it
    shorter = runner.invoke(app, ["resume", run_dir, "--set", "training.epochs=1"])
    assert shorter.exit_code == 2 and "can be extended, not shortened" in shorter.output
    again = runner.invoke(app, ["resume", run_dir, "--set", "training.epochs=3"])
    assert again.exit_code == 0, again.output
    assert json.loads((run.path / "summary.json").read_text())["status"] == "completed"
    assert len(run.read_metrics()) == 3


@needs_mnist
def test_retry_failed_keeps_a_damaged_point_aside_and_runs_it_afresh(tmp_path):
    _, made = two_seed_sweep(tmp_path)
    point = made / "seed=0"
    with open(point / "metrics.jsonl", "a") as f:
        f.write("5\n{\"epoch\": 9}\n")  # a damaged line in the middle of the history
    skipped = cli("sweep", made, "--jobs", "1")
    assert skipped.exit_code == 1 and "seed=0 (damaged)" in skipped.output
    retried = cli("sweep", made, "--jobs", "1", "--retry-failed")
    assert retried.exit_code == 0, retried.output
    (aside,) = made.glob(".damaged-*-seed=0")
    assert "5\n" in (aside / "metrics.jsonl").read_text()  # nothing the user had is lost
    assert len(Run(point).read_metrics()) == 2 and json.loads((point / "summary.json").read_text())["status"] == "completed"


# --- variants: an ablation changes one thing at a time ---------------------------------------


def test_variants_change_one_config_one_named_way_each(tmp_path):
    write_tiny(tmp_path, eta=0.3)
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "seeds": 2, "set": {"training.epochs": 2},
                                    "variants": {"all": {}, "slow": {"training.eta": 0.1},
                                                 "small": {"model": {"layers": {0: {"units": 5}}}}}}))
    plan = sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)
    assert [p.id for p in plan.points] == ["all,seed=0", "all,seed=1", "slow,seed=0", "slow,seed=1",
                                           "small,seed=0", "small,seed=1"]
    configs = {p.base: plan.config(p) for p in plan.points}
    assert [configs[v]["training"]["eta"] for v in ("all", "slow", "small")] == [0.3, 0.1, 0.3]
    assert [configs[v]["model"]["layers"][0]["units"] for v in ("all", "slow", "small")] == [10, 10, 5]
    assert all(c["training"]["epochs"] == 2 for c in configs.values())  # set: reaches every variant


@pytest.mark.parametrize("variants,words", [
    ([1], "variants: expected a mapping of variant names"),
    ({"a b": {}}, "variants.a b: a variant's name is part of a directory name"),
    ({"x": 3}, r"variants.x: expected a mapping of config keys"),
    ({"x": {"training.etta": 1}}, "variants.x.training.etta: unknown key"),
])
def test_bad_variants_name_the_variant_and_key(tmp_path, variants, words):
    write_tiny(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "variants": variants}))
    with pytest.raises(ConfigError, match=words):
        sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)


def test_the_beyond_ablation_removes_one_ingredient_per_variant():
    path = Path(__file__).resolve().parent.parent / "configs" / "beyond_ablation.yaml"
    plan = sweeps.read_sweep_file(path, sets=[], grid={}, seeds=None, name=None)
    full = plan.config(plan.points[0])
    assert plan.points[0].base == "all" and full["reference"] is not None
    from nnexp.config import flatten

    for variant in list(plan.bases)[1:]:
        cfg = plan.config(next(p for p in plan.points if p.base == variant))
        a, b = flatten(full), flatten(cfg)
        changed = {k for k in set(a) | set(b) if a.get(k, "absent") != b.get(k, "absent")
                   and k != "name" and not k.startswith("reference")}
        assert changed and not any(k.startswith("seed") for k in changed), variant
        assert cfg["reference"] is None  # no longer the recorded experiment
