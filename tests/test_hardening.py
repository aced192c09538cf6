"""Damaged and hostile input (the "Hardening" issue): broken metrics.jsonl lines, JSON files
of the wrong shape, platforms without fcntl, temporaries a SIGKILL leaves behind, YAML alias
bombs, deep nesting and duplicate keys, and a backend that must not train the caller's arrays.
Each must end in a one-line error naming the file (or be handled), never a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from runfactory import make_run
from typer.testing import CliRunner

from nnexp import backends, config, lifecycle, yamlio
from nnexp import rundir as runs_module
from nnexp.backends import Objective, Optimizer
from nnexp.cli import app
from nnexp.errors import ConfigError, RunDirError
from nnexp.evaluate import recorded_test_accuracy
from nnexp.network import build_spec, init_params
from nnexp.plots import plot_run
from nnexp.rundir import Run
from nnexp.runset import load_runs

runner = CliRunner()


def run_with_metrics(tmp_path, tail: bytes, name: str = "damaged") -> Run:
    """A finished three-epoch run whose metrics.jsonl has `tail` spliced in after epoch 1."""
    run = make_run(tmp_path, name, val=[0.90, 0.93, 0.95])
    path = run.path / "metrics.jsonl"
    first, rest = path.read_bytes().split(b"\n", 1)
    path.write_bytes(first + b"\n" + tail + rest)
    return run


# --- 1. damaged metrics.jsonl ------------------------------------------------------------------

DAMAGE = {  # what lands after epoch 1's line, so the damage is line 2
    "random bytes": b"\x89\xfe\xff\x00garbage\x9c\n",
    "a number": b"5\n",
    "an object without epoch": b'{"a": 1}\n',
    "a string epoch": b'{"epoch": "2", "validation_accuracy": 0.5}\n',
    "a boolean epoch": b'{"epoch": true}\n',
    "half a record": b'{"epoch": 2, "valid\n',
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_metrics_line_is_an_error_naming_file_and_line(tmp_path, case):
    run = run_with_metrics(tmp_path, DAMAGE[case])
    with pytest.raises(RunDirError, match=r"metrics\.jsonl line 2 is damaged") as err:
        run.read_metrics()
    assert str(run.path) in str(err.value) and "\n" not in str(err.value)
    # not strict: the damaged line is skipped, the records after it are kept
    assert [r["epoch"] for r in run.read_metrics(strict=False)] == [1, 2, 3]


def test_a_garbage_first_line_and_random_bytes_at_the_end_are_damage(tmp_path):
    run = make_run(tmp_path, "first")
    path = run.path / "metrics.jsonl"
    path.write_bytes(b"\x00\xffnot json\n" + path.read_bytes())
    with pytest.raises(RunDirError, match="line 1 is damaged"):
        run.read_metrics()
    run = make_run(tmp_path, "appended")
    path = run.path / "metrics.jsonl"
    with open(path, "ab") as f:
        f.write(b"\xde\xad\xbe\xef")  # no newline, but no crash mid-write makes bytes like these
    with pytest.raises(RunDirError, match="line 4 is damaged"):
        run.read_metrics()


def test_a_torn_last_line_is_still_dropped_silently(tmp_path):
    for torn in (b'{"epoch": 4, "validation_acc', b"\x00\x00\x00"):
        run = make_run(tmp_path, "torn")
        with open(run.path / "metrics.jsonl", "ab") as f:
            f.write(torn)
        assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
        run.truncate_metrics(2)
        assert (run.path / "metrics.jsonl").read_text().count("\n") == 2


def test_truncating_for_a_resume_never_drops_good_records_behind_a_damaged_one(tmp_path):
    run = run_with_metrics(tmp_path, b"5\n")
    before = (run.path / "metrics.jsonl").read_bytes()
    with pytest.raises(RunDirError, match="line 2 is damaged.*repair or delete that line"):
        run.truncate_metrics(3)
    assert (run.path / "metrics.jsonl").read_bytes() == before


def test_compare_skips_a_run_with_damaged_metrics_with_one_line_and_shows_the_rest(tmp_path):
    make_run(tmp_path, "good")
    run_with_metrics(tmp_path, b'{"a": 1}\n', name="bad")
    records, warnings = load_runs([tmp_path])
    assert [r.name[:4] for r in records] == ["good"]
    assert len(warnings) == 1 and "line 2 is damaged" in warnings[0] and "\n" not in warnings[0]
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "line 2 is damaged" in result.stderr and "Traceback" not in result.output


def test_plotting_a_run_with_damaged_metrics_is_a_one_line_error(tmp_path):
    run = run_with_metrics(tmp_path, b"5\n")
    with pytest.raises(RunDirError, match="line 2 is damaged"):
        plot_run(run.path, tmp_path / "curves.png")


# --- 2. JSON files of the wrong shape ----------------------------------------------------------


def test_a_summary_that_is_not_an_object_is_a_run_dir_error(tmp_path):
    make_run(tmp_path, "good")
    run = make_run(tmp_path, "list")
    (run.path / "summary.json").write_text("[1]")
    with pytest.raises(RunDirError, match=r"summary\.json is damaged: not a JSON object"):
        run.read_summary()
    records, warnings = load_runs([tmp_path])
    assert [r.name[:4] for r in records] == ["good"]
    assert len(warnings) == 1 and "summary.json is damaged" in warnings[0]


def test_compare_and_evaluate_survive_a_non_numeric_accuracy(tmp_path):
    run = make_run(tmp_path, "text")
    summary = json.loads((run.path / "summary.json").read_text())
    (run.path / "summary.json").write_text(json.dumps({**summary, "test_accuracy": "abc"}))
    records, warnings = load_runs([tmp_path])
    assert records[0].values["test_accuracy"] == summary["test_accuracy"] and not warnings
    assert recorded_test_accuracy(run) is None


def test_a_non_object_env_json_is_replaced_by_a_fresh_record_on_resume(tmp_path):
    run = Run.create(tmp_path, "env")
    for damaged in ("[1, 2]", '"text"', '{"resumes": 5, "host": "a"}'):
        (run.path / "env.json").write_text(damaged)
        run.add_resume_to_env({"host": "b"})
        record = json.loads((run.path / "env.json").read_text())
        assert record["resumes"] == [{"host": "b"}]


@pytest.mark.parametrize("value,expected", [
    (0.9712, 0.9712), (1, 1.0), ("abc", None), (None, None), (True, None), ([0.9], None),
    (float("nan"), None), (10 ** 400, None)])
def test_recorded_test_accuracy_is_a_finite_number_or_none(tmp_path, value, expected):
    run = make_run(tmp_path, "acc")
    summary = json.loads((run.path / "summary.json").read_text())
    summary["test_accuracy"] = value
    (run.path / "summary.json").write_text(json.dumps(summary))  # NaN as the literal NaN
    assert recorded_test_accuracy(run) == expected


def test_recorded_test_accuracy_of_a_missing_or_damaged_summary_is_none(tmp_path):
    run = make_run(tmp_path, "nosummary", status=None)
    assert recorded_test_accuracy(run) is None
    for damaged in ("[1]", "{truncated"):
        (run.path / "summary.json").write_text(damaged)
        assert recorded_test_accuracy(run) is None


# --- 3. platforms without fcntl ------------------------------------------------------------------


@pytest.fixture
def no_fcntl(monkeypatch):
    monkeypatch.setattr(runs_module, "fcntl", None)


def test_without_fcntl_the_run_is_locked_through_filelock(tmp_path, no_fcntl):
    run = Run.create(tmp_path, "filelock")
    assert not run.is_locked()
    with run.lock() as held:
        assert held is run and run.is_locked()
        with pytest.raises(RunDirError, match="being trained by another process"):
            with Run(run.path).lock():
                pass
    assert not run.is_locked()


def test_without_fcntl_or_filelock_locking_is_a_clear_error(tmp_path, no_fcntl, monkeypatch):
    monkeypatch.setitem(sys.modules, "filelock", None)  # `import filelock` raises ImportError
    run = Run.create(tmp_path, "nolock")
    with pytest.raises(RunDirError, match="no fcntl; pip install filelock"):
        with run.lock():
            pass
    assert not run.is_locked()  # nothing can hold it: compare still works


def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_nnexp_rundir_imports_where_fcntl_is_missing():
    proc = _python("""
        import sys
        sys.modules["fcntl"] = None  # as on Windows
        import nnexp.rundir
        assert nnexp.rundir.fcntl is None
        print("imported")
    """)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip() == "imported", err


def test_a_filelock_held_by_a_killed_process_is_released(tmp_path, no_fcntl):
    run = Run.create(tmp_path, "killed")
    holder = _python(f"""
        import time
        from nnexp import rundir
        rundir.fcntl = None
        with rundir.Run({str(run.path)!r}).lock():
            print("locked", flush=True)
            time.sleep(120)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        assert run.is_locked()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=60)
    assert not run.is_locked()
    with run.lock():  # a killed run stays resumable
        pass


# --- 4. temporaries orphaned by SIGKILL ----------------------------------------------------------


def test_remove_stale_temp_files_removes_what_a_killed_writer_left(tmp_path):
    run = Run.create(tmp_path, "orphans")
    run.write_summary({"status": "running"})
    writer = _python(f"""
        import os, signal
        from pathlib import Path
        from nnexp.fileio import atomic_path
        run = Path({str(run.path)!r})
        with atomic_path(run / "summary.json") as a, atomic_path(run / "checkpoints" / "last.npz") as b:
            a.write_text("half")
            b.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)  # no finally runs: both temporaries stay
    """)
    writer.communicate(timeout=120)
    assert writer.returncode == -signal.SIGKILL
    orphans = sorted(p for p in run.path.rglob("*.tmp"))
    assert len(orphans) == 2
    keep = [run.path / "notes.tmp", run.path / ".curves.png.1.0123abcd.tmp"]  # not the run's own
    for path in keep:
        path.write_text("mine")
    assert sorted(run.remove_stale_temp_files()) == orphans
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in keep)
    assert run.read_summary() == {"status": "running"}
    assert run.remove_stale_temp_files() == []


# --- 5. YAML bombs, depth and size ---------------------------------------------------------------


def _text(tmp_path, text: str, name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def billion_laughs(levels: int = 9) -> str:
    """A few hundred bytes that expand to 9**levels strings, used where validation quotes
    the value it rejects (7 levels made a 33 MB error message; 9 levels, a MemoryError)."""
    lines = ["model: {layers: [{type: softmax, units: 10}]}", "training:", "  epochs:", '    - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def assert_one_short_line(err, path, *words):
    message = str(err.value)
    assert str(path) in message and "\n" not in message and len(message) < 300, message[:500]
    for word in words:
        assert word in message, message


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path):
    path = _text(tmp_path, billion_laughs(7))
    assert len(path.read_bytes()) < 1000
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert_one_short_line(err, path, "100,000 values", "aliases")


def test_an_alias_bomb_through_the_cli_is_one_line_exit_2(tmp_path):
    path = _text(tmp_path, billion_laughs(7))
    result = runner.invoke(app, ["show-config", str(path)])
    assert result.exit_code == 2, result.output[:500]
    assert len(result.stderr.strip().splitlines()) == 1 and len(result.output) < 400


@pytest.mark.parametrize("text,words", [
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", ["nested more than 100 levels"]),
    ("x: " + "{a: " * 150 + "1" + "}" * 150 + "\n", ["nested more than 100 levels"]),
    ("\n".join(["l0: &l0 [1]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, 150)]) + "\n",
     ["nested more than 100 levels", "aliases"]),
    ("a: &a [1, *a]\n", ["alias *a", "contains it"]),
    ("name: " + "x" * 1_000_001 + "\n", ["larger than 1,000,000 bytes"]),
])
def test_yaml_too_deep_recursive_or_large_is_refused(tmp_path, text, words):
    path = _text(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        yamlio.read_yaml_file(path)
    assert_one_short_line(err, path, *words)


@pytest.mark.parametrize("value,words", [("1" * 5000, "cannot read the int at line 2"),
                                         ("2001-13-45", "cannot read the timestamp at line 2")])
def test_a_scalar_yaml_cannot_convert_is_a_one_line_error(tmp_path, value, words):
    path = _text(tmp_path, f"name: x\nseed: {value}\n")
    with pytest.raises(ConfigError) as err:
        yamlio.read_yaml_file(path)
    assert_one_short_line(err, path, words)


def test_a_run_config_that_is_a_bomb_is_a_run_dir_error(tmp_path):
    run = make_run(tmp_path, "bomb")
    (run.path / "config.yaml").write_text(billion_laughs())
    with pytest.raises(RunDirError, match="100,000 values"):
        run.read_config()


def test_yaml_errors_quote_at_most_a_short_piece_of_the_file(tmp_path):
    path = _text(tmp_path, "name: !" + "t" * 100_000 + " x\n")
    with pytest.raises(ConfigError) as err:
        yamlio.read_yaml_file(path)
    assert_one_short_line(err, path, "YAML syntax error")


def test_bounded_yaml_still_reads_anchors_merges_and_nesting(tmp_path):
    text = ("base: &b {eta: 0.1, epochs: 3}\ntraining: {<<: *b, eta: 0.2}\n"
            "layers: [&d {type: dense, units: 30}, *d]\n"
            "deep: " + "[" * 99 + "]" * 99 + "\n")
    raw = yamlio.read_yaml_file(_text(tmp_path, text))
    assert raw["training"] == {"eta": 0.2, "epochs": 3} and raw["layers"][0] == raw["layers"][1]


def test_parse_yaml_refuses_a_bomb_as_a_yaml_error():
    with pytest.raises(yaml.YAMLError, match="100,000 values"):
        yamlio.parse_yaml(billion_laughs())


# --- 6. duplicate keys -----------------------------------------------------------------------------


def test_a_key_given_twice_in_one_mapping_is_refused(tmp_path):
    path = _text(tmp_path, "training: {eta: 0.1, eta: 0.2}\n")
    with pytest.raises(ConfigError) as err:
        yamlio.read_yaml_file(path)
    assert_one_short_line(err, path, "'eta' is given twice", "line 1, columns 12 and 22")


def test_a_top_level_key_given_twice_on_two_lines_is_refused(tmp_path):
    path = _text(tmp_path, "training:\n  eta: 0.1\nseed: 1\ntraining:\n  epochs: 3\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert_one_short_line(err, path, "'training' is given twice", "lines 1 and 4")


def test_a_merged_key_may_be_overridden(tmp_path):
    path = _text(tmp_path, "g: &g {x: 1}\nb: &b {<<: *g, x: 2}\nc: {<<: *b, x: 3}\n")
    assert yamlio.read_yaml_file(path) == {"g": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}}


# --- 7. the NumPy backend copies the parameters it is given -----------------------------------


def test_numpy_build_copies_the_callers_float64_arrays():
    layers = config._check_layers([{"type": "dense", "units": 8}, {"type": "softmax", "units": 4}])
    spec = build_spec(layers, (1, 6, 6))
    params = init_params(spec, "network3", np.random.default_rng(0))
    for dtype in ("float64", "float32"):
        given = {k: v.astype(np.float64) for k, v in params.items()}
        before = {k: v.copy() for k, v in given.items()}
        model = backends.get("numpy").build(spec, given, Objective("log-likelihood", l2_coef=0.01),
                                            Optimizer("momentum", 0.9), dtype=dtype, device="cpu")
        rng = np.random.default_rng(1)
        x, y = rng.random((20, 1, 6, 6)), rng.integers(0, 4, 20)
        model.train_epoch(x, y, np.arange(20).reshape(2, 10), eta=0.5)
        assert any(not np.array_equal(model.get_params()[k], before[k]) for k in before), "it trained"
        assert all(np.array_equal(given[k], before[k]) for k in before), dtype
        state = model.get_state()
        velocity = {k: v.copy() for k, v in state.items() if isinstance(v, np.ndarray)}
        model.set_state(state)
        model.train_epoch(x, y, np.arange(20).reshape(2, 10), eta=0.5)
        assert all(np.array_equal(state[k], velocity[k]) for k in velocity), "set_state copies too"


# --- run directories that must not be continued as something else -------------------------------


def _synthetic_run(tmp_path, **training):
    from nnexp import training as train
    from nnexp.data import Dataset, Split

    from conftest import make_config

    rng = np.random.default_rng(0)

    def split(n):
        return Split(rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, size=n))

    data = Dataset("synthetic", split(100), split(20), split(20), 10, {})
    cfg = make_config(training={"epochs": 2, "eta": 0.5, **training})
    run = Run.at(tmp_path / "run")
    summary = lifecycle.execute(train.prepare(cfg, dataset=data), run)
    run.write_summary({**summary, "status": "interrupted"})
    return train, cfg, data, run


def test_a_history_without_last_npz_is_refused_not_restarted(tmp_path):
    train, cfg, data, run = _synthetic_run(tmp_path)
    run.checkpoint_path("last").unlink()
    before = (run.path / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="has 2 epochs in metrics.jsonl but no checkpoints/last.npz"):
        lifecycle.execute(train.prepare(cfg, dataset=data), run)
    assert (run.path / "metrics.jsonl").read_text() == before  # nothing discarded


def test_resume_refuses_a_config_edited_after_the_run_started(tmp_path):
    import yaml

    from conftest import make_config

    train, cfg, data, run = _synthetic_run(tmp_path)
    for change, words in [({"activation": "relu"}, "model.layers.0.activation = 'relu'"),
                          ({"units": 20}, "parameter 0.w")]:
        edited = make_config(layers=[{"type": "dense", "units": 30, "activation": "sigmoid", **change},
                                     {"type": "softmax", "units": 10}], training={"epochs": 3, "eta": 0.5})
        (run.path / "config.yaml").write_text(yaml.safe_dump(edited))
        with pytest.raises(RunDirError, match=words.replace(".", r"\.")):
            lifecycle.resume(train.prepare(edited, dataset=data), run)


def test_compare_shows_no_best_figures_for_a_run_with_no_best_epoch(tmp_path):
    from runfactory import make_run

    from nnexp import comparison as cmp

    run = make_run(tmp_path, "nan", val=[0.5], status="diverged")
    summary = json.loads((run.path / "summary.json").read_text())
    (run.path / "summary.json").write_text(json.dumps({**summary, "best_epoch": None}))
    (row,) = cmp.compare([tmp_path])[0].rows
    assert row.stat("best_validation_accuracy") is None and row.stat("test_accuracy") is None


def test_long_names_huge_layers_directories_and_glob_characters_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from nnexp.cli import app

    runner = CliRunner()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {layers: [{type: dense, units: 30}, {type: softmax, units: 10}]}\n")
    for args, words in [(["name=" + "x" * 400], "name: must be 1 to 100 characters"),
                        (["model.layers.0.units=1000000000000"], "model.layers.0: 785,000,000,000,000 parameters")]:
        result = runner.invoke(app, ["train", str(cfg), *args, "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code == 2 and words in result.output, result.output
        assert not (tmp_path / "runs").exists()
    result = runner.invoke(app, ["show-config", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory, not a config file" in result.output
    from runfactory import make_run

    odd = tmp_path / "runs[1]*"
    make_run(odd, "a")
    result = runner.invoke(app, ["compare", str(odd), "-f", "csv"])
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 2


def test_a_full_disk_still_leaves_the_run_marked_failed(tmp_path, monkeypatch):
    import errno

    from nnexp import rundir as runs_mod
    from nnexp import training as train
    from nnexp.lifecycle import Intent

    _, cfg, data, run = _synthetic_run(tmp_path)
    real = runs_mod.atomic_write_text

    def no_space(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(path, text):  # from the failed summary on, no new file fits
        if '"failed"' in text:
            no_space()
        real(path, text)

    monkeypatch.setattr(runs_mod, "atomic_write_text", full_disk)
    monkeypatch.setattr(runs_mod.Run, "append_metrics", no_space)  # epoch 3's record: the disk is full
    longer = {**cfg, "training": {**cfg["training"], "epochs": 3}}
    with pytest.raises(OSError):
        lifecycle.execute(train.prepare(longer, dataset=data), run, Intent.CONTINUE)
    monkeypatch.undo()
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["epochs_run"] == 2


def test_a_kill_before_the_first_checkpoint_starts_over(tmp_path):
    """The record of epoch 1 is written before last.npz: a kill between the two leaves one
    record and no checkpoint, which resume must take as a fresh start, not as lost history."""
    train, cfg, data, run = _synthetic_run(tmp_path)
    run.checkpoint_path("last").unlink()
    run.truncate_metrics(1)
    summary = lifecycle.execute(train.prepare(cfg, dataset=data), run)
    assert summary["status"] == "completed" and len(run.read_metrics()) == 2


# --- gradcheck on a deep ReLU net with tiny gradients ----------------------------------------------

DEEP_RELU = Path(__file__).resolve().parent.parent / "configs" / "saitoh_no_batch_norm.yaml"


def break_bias_gradients(monkeypatch, factor: float, *, layer: int | None = None, entry: int | None = None):
    """Scale the bias gradient of every dense layer (or of `layer` only, or of its `entry`
    only) by `factor`: a backward pass wrong by that much."""
    from nnexp.backends.numpy import layers

    original = layers.Dense.backward_z

    def scaled(self, dz):
        out = original(self, dz)
        if layer is None or self.spec.index == layer:
            if entry is None:
                self.grads["b"] = factor * self.grads["b"]
            else:
                self.grads["b"][entry] *= factor
        return out

    monkeypatch.setattr(layers.Dense, "backward_z", scaled)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("seed", [1, 4])
def test_gradcheck_gives_no_false_alarm_on_a_deep_relu_net_with_tiny_gradients(backend, seed):
    """784-[100 ReLU x 5]-10 started at std 0.01: pre-activations of 1e-6 in the last layers, so
    a step of 1e-5 crosses several kinks, and middle-layer bias gradients of 1e-7 to 1e-5, as
    small as a crossed kink's slope. The config's own seed (1) and seed 4 used to FAIL 3.b with
    correct gradients: a step ten times smaller crosses no kink, and an entry 100 times smaller
    than its neighbours is held to 1% of theirs, the noise floor's resolution."""
    if backend == "torch":
        pytest.importorskip("torch")
    from nnexp.gradcheck import gradcheck

    cfg = config.load(DEEP_RELU, [f"backend={backend}", "device=cpu", f"seed={seed}"])
    _, results = gradcheck(cfg, examples=2, max_entries=10)
    assert all(r.ok for r in results), [(r.name, r.worst_relative_error, r.worst_analytic, r.worst_numeric)
                                        for r in results if not r.ok]


def test_gradcheck_still_catches_a_slightly_wrong_bias_gradient_on_the_deep_relu_net(monkeypatch):
    """The smaller steps must not excuse a wrong gradient: 10% too large fails every bias; 0.1%
    too large fails the biases whose entries sit near kinks (2.b to 5.b), which a one-sided
    difference at 1e-5 used to match within its 1e-3. (0.b and 1.b's gradients, ~1e-9, sit
    below the costs' noise floor at any step.)"""
    from nnexp.gradcheck import gradcheck

    cfg = config.load(DEEP_RELU, ["backend=numpy", "seed=0"])
    for factor, caught in [(1.1, {f"{i}.b" for i in range(6)}), (1.001, {"2.b", "3.b", "4.b", "5.b"})]:
        with monkeypatch.context() as patch:
            break_bias_gradients(patch, factor)
            failed = {r.name for r in gradcheck(cfg, examples=2, max_entries=10)[1] if not r.ok}
        assert caught <= failed and not any(name.endswith(".w") for name in failed), (factor, failed)


def test_a_one_sided_match_no_longer_excuses_a_gradient_a_little_wrong(monkeypatch):
    """A ReLU input 3e-6 above its kink: the step of 1e-5 crosses it, and the one-sided
    difference on the other side matches the bias gradient to 1e-3, right or 0.05% wrong. At
    1e-6 nothing bends (both one-sided differences agree), so the central difference there
    decides: the right gradient passes, the wrong one fails."""
    from nnexp.gradcheck import check_model

    spec = build_spec(config._check_layers([{"type": "dense", "units": 3, "activation": "relu"},
                                            {"type": "softmax", "units": 4}]), (1, 10, 10))
    rng = np.random.default_rng(5)
    params = init_params(spec, "network2", rng)
    x, y = rng.random((1, 1, 10, 10)), np.array([1])
    params["0.b"][0] = 3e-6 - float(x.reshape(-1) @ params["0.w"][:, 0])
    model = backends.get("numpy").build(spec, params, Objective("log-likelihood"), dtype="float64")

    def bias():
        return {r.name: r for r in check_model(model, params, x, y, np.random.default_rng(0), max_entries=None)}["0.b"]

    assert bias().ok and bias().kinks == 1
    break_bias_gradients(monkeypatch, 1.0005, layer=0, entry=0)
    assert not bias().ok
