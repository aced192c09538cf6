"""The Python API (`nnexp.train`, `runs`, `compare`, `sweep`, their objects and the notebook's
progress display), `resume --set` extending a completed run, and the command line's small
promises (--version, flags shown as flags)."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types

import pytest
import yaml
from typer.testing import CliRunner

import nnexp
from nnexp import notebook
from nnexp.cli import app
from nnexp.errors import ConfigError, RunFailed, UserError
from nnexp.rundir import Notes, Run

from conftest import needs_mnist
from runfactory import make_run

TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 2, "eta": 0.5}}


def write(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def metrics(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in Run(path).read_metrics()]


@needs_mnist
def test_nnexp_train_from_python_is_the_cli_s_run(tmp_path):
    run = nnexp.train(write(tmp_path), runs_dir=tmp_path / "py", epochs=3, **{"training.eta": 0.25})
    assert run.summary["status"] == "completed" and len(run.metrics) == 3
    assert run.config["training"]["eta"] == 0.25 and run.path.parent == tmp_path / "py"
    cli = CliRunner().invoke(app, ["train", str(write(tmp_path)), "training.epochs=3", "training.eta=0.25",
                                   "--runs-dir", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert metrics(run.path) == metrics(cli.stdout.strip())
    try:
        nnexp.train(write(tmp_path), runs_dir=tmp_path / "bad", training__etaa=1)
    except ConfigError as exc:
        assert "training.etaa" in str(exc)
    else:
        raise AssertionError("an unknown key must be refused")
    assert not (tmp_path / "bad").exists()


@needs_mnist
def test_resume_set_epochs_extends_a_completed_run_to_what_a_longer_run_gives(tmp_path):
    runner = CliRunner()
    short = runner.invoke(app, ["train", str(write(tmp_path)), "--runs-dir", str(tmp_path / "a")]).stdout.strip()
    longer = runner.invoke(app, ["train", str(write(tmp_path)), "training.epochs=4",
                                 "--runs-dir", str(tmp_path / "b")]).stdout.strip()
    extended = runner.invoke(app, ["resume", short, "--set", "training.epochs=4"])
    assert extended.exit_code == 0, extended.output
    assert metrics(short) == metrics(longer)
    assert yaml.safe_load((Run(short).path / "config.yaml").read_text())["training"]["epochs"] == 4
    refused = runner.invoke(app, ["resume", short, "--set", "model.layers.0.units=20"])
    assert refused.exit_code == 2 and "model.layers.0.units: cannot change when resuming" in refused.output


def test_version_and_flags_read_as_flags():
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"nnexp {nnexp.__version__}"
    help_text = runner.invoke(app, ["expand-mnist", "--help"], terminal_width=120).stdout
    line = next(line for line in help_text.splitlines() if "--force" in line)
    assert "<bool>" not in line and "BOOLEAN" not in line


@needs_mnist
def test_square_brackets_in_paths_and_values_print_as_they_are(tmp_path):
    runner = CliRunner()
    runs = tmp_path / "[red]x[/]"
    made = runner.invoke(app, ["train", str(write(tmp_path)), "--runs-dir", str(runs)])
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().startswith(str(runs) + "/") and (tmp_path / "[red]x[/]").is_dir()
    missing = runner.invoke(app, ["show-config", str(tmp_path / "[/]nope.yaml")])
    assert missing.exit_code == 2 and "[/]nope.yaml" in missing.output and "Traceback" not in missing.output
    value = runner.invoke(app, ["show-config", str(write(tmp_path)), "--set", "training.cost=[bold]x"])
    assert value.exit_code == 2 and "[bold]x" in value.output


def test_errors_name_the_users_file_not_the_temporary_one_written_through():
    from nnexp.cli import _users_path

    assert _users_path("/out/.expanded.npz.4242.0a1b2c3d.tmp") == "/out/expanded.npz"
    assert _users_path("/out/plain.npz") == "/out/plain.npz"


def test_train_refuses_nan_and_infinity_as_a_finite_number_needed(tmp_path):
    # json.dumps wrote them as NaN / Infinity, which came back as strings: "expected a
    # number, got a string ('NaN')"
    for value in (float("nan"), float("-inf"), [0.1, float("inf")]):
        with pytest.raises(ConfigError, match="training.eta: must be a finite number"):
            nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", eta=value)
    assert not (tmp_path / "runs").exists()


# --- the Python API: signatures, keywords, the objects it returns -----------------------------


def test_train_has_a_real_signature_and_docstring_and_the_others_too():
    params = inspect.signature(nnexp.train).parameters
    for name in ("epochs", "eta", "lmbda", "batch_size", "train_size", "seed", "backend", "device", "note",
                 "tags", "runs_dir", "data_dir", "time_limit_minutes", "progress", "set"):
        assert params[name].kind == inspect.Parameter.KEYWORD_ONLY, name
    assert params["dotted"].kind == inspect.Parameter.VAR_KEYWORD
    assert "Examples" in nnexp.train.__doc__ and "training.lambda" in nnexp.train.__doc__
    importlib.import_module("nnexp.comparison")  # importing the package's modules leaves the API as it is

    for name, keywords in (("compare", ("sort", "where", "group")), ("runs", ("where", "status", "last")),
                           ("sweep", ("grid", "seeds", "jobs", "runs_dir"))):
        assert callable(getattr(nnexp, name))
        assert set(keywords) <= set(inspect.signature(getattr(nnexp, name)).parameters), name


def test_unknown_keywords_are_one_line_with_the_nearest_keyword_or_key(tmp_path):
    cases = {"training_size": "did you mean 'train_size'?", "momentun": "did you mean 'training__momentum'?",
             "augment": "did you mean 'data__augment'?", "lmbd": "did you mean 'lmbda'?"}
    for name, hint in cases.items():
        with pytest.raises(ConfigError) as caught:
            nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", **{name: 1})
        message = str(caught.value)
        assert f"unknown keyword argument {name!r}" in message and hint in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"training.momentum: given twice"):
        nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", set={"training.momentum": 0.5}, momentum=0.9)
    with pytest.raises(ConfigError, match=r"training.momentun: unknown key \(did you mean 'momentum'\?\)"):
        nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", set={"training.momentun": 0.5})
    with pytest.raises(UserError, match="tag 'no spaces'"):
        nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", tags=["ok", "no spaces"])
    with pytest.raises(UserError, match="progress='loud'"):
        nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", progress="loud")
    assert not (tmp_path / "runs").exists()  # refused before anything was made


class FakeDisplay:
    """IPython's display, as the notebook reporters use it: what was shown, then each update."""

    def __init__(self):
        self.shown: list[tuple[str, str]] = []

    def __call__(self, html_text, text):
        self.shown.append((html_text, text))
        return self

    def update(self, html_text, text):
        self.shown.append((html_text, text))


@needs_mnist
def test_train_keywords_notes_tags_and_the_notebook_display(tmp_path, monkeypatch):
    shown = FakeDisplay()
    monkeypatch.setattr(notebook, "ipython_show", shown)
    run = nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", train_size=200, lmbda=0.5, batch_size=20,
                      set={"training.optimizer": "momentum"}, training__momentum=0.5,
                      note="why: a test", tags=["t1", "ch3:l2"], progress="notebook")
    assert run.summary["train_size"] == 200 and run.summary["status"] == "completed"
    tr = run.config["training"]
    assert (tr["lambda"], tr["batch_size"], tr["optimizer"], tr["momentum"]) == (0.5, 20, "momentum", 0.5)
    assert Run(run.path).read_notes() == Notes("why: a test", ("t1", "ch3:l2"))
    assert (run.note, run.tags, run.id, run.status) == ("why: a test", ("t1", "ch3:l2"), run.path.name, "completed")
    text = repr(run)
    assert len(text) < 200 and "\n" not in text and run.id in text and "completed" in text
    assert f"test {100 * run.summary['test_accuracy']:.2f}%" in text and "2/2 epochs" in text
    assert run.id in run._repr_html_() and "why: a test" in run._repr_html_()
    # one display, replaced in place as the epochs went: epoch 1 training ... the outcome
    assert len(shown.shown) >= 5
    first, last = shown.shown[0], shown.shown[-1]
    assert "1/2 (training)" in first[0] and "<td>2/2</td>" in last[0]
    assert f"completed: best validation {100 * run.summary['best_validation_accuracy']:.2f}%" in last[1]
    assert f"{100 * run.metrics[-1]['test_accuracy']:.2f}%" in last[0]


@needs_mnist
def test_train_in_a_terminal_or_pipe_shows_the_commands_lines_and_false_nothing(tmp_path, capsys):
    nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", progress="terminal")
    said = capsys.readouterr()
    assert "epoch   1/2" in said.err and "epoch   2/2" in said.err and said.out == ""
    nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", progress=False)
    said = capsys.readouterr()
    assert said.err == "" and said.out == ""


def test_the_notebook_reporter_draws_epochs_eta_and_the_outcome():
    now = [100.0]
    shown = FakeDisplay()
    reporter = notebook.NotebookReporter("<b>net</b>", 4, show=shown, clock=lambda: now[0])
    reporter.epoch_started(1, 10)
    now[0] += 1.0
    reporter.batches_done(5)  # half an epoch: the bar at 1/8
    assert "width:12.5%" in shown.shown[-1][0] and "1/4 (training)" in shown.shown[-1][1]
    reporter.batches_done(6)  # within UPDATE_EVERY_S of the last drawing: not drawn again
    assert len(shown.shown) == 2
    reporter.evaluating()
    reporter.epoch_finished({"epoch": 1, "validation_accuracy": 0.9, "test_accuracy": 0.89, "seconds": 3.0,
                             "best": True}, "")
    now[0] += 2.0
    reporter.epoch_started(2, 10)
    reporter.epoch_finished({"epoch": 2, "validation_accuracy": 0.8, "test_accuracy": 0.85, "seconds": 5.0,
                             "best": False}, "")
    html_text, text = shown.shown[-1]
    assert "&lt;b&gt;net&lt;/b&gt;" in html_text and "<b>net</b>" not in html_text  # the name is escaped
    assert "val 80.00%" in text and "test 85.00%" in text and "best val 90.00% (epoch 1)" in text
    assert "test at best 89.00%" in text and "elapsed 3.0 s" in text
    assert "ETA 8.0 s" in text  # two epochs left at the mean of 4 s
    assert "width:50.0%" in html_text
    reporter.finish({"status": "completed", "best_epoch": 1, "best_validation_accuracy": 0.9, "test_accuracy": 0.89})
    html_text, text = shown.shown[-1]
    assert "completed: best validation 90.00% at epoch 1, test 89.00%" in text and "width:100.0%" in html_text
    assert shown.shown.count(shown.shown[0]) == 1 and len(shown.shown) == 7  # shown once, then updated


def test_in_notebook_only_under_a_kernel(monkeypatch):
    assert not notebook.in_notebook()
    shell = types.SimpleNamespace(kernel=None)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert not notebook.in_notebook()  # a terminal IPython
    shell.kernel = object()
    assert notebook.in_notebook()


# --- runs(), compare(): the runs on disk --------------------------------------------------------


def _study(root):
    a = make_run(root, "shallow", sets={"training.eta": 0.1}, val=[0.90, 0.93])
    b = make_run(root, "shallow", sets={"training.eta": 0.5}, val=[0.91, 0.95], test=[0.90, 0.96])
    c = make_run(root, "shallow", sets={"training.eta": 0.5}, seed=1, val=[0.92, 0.94])
    d = make_run(root, "shallow", sets={"training.eta": 2.5}, val=[0.5, float("nan")], status="diverged")
    a.write_notes(Notes("baseline", ("study", "baseline")))
    b.write_notes(Notes("larger eta", ("study",)))
    return a, b, c, d


def test_runs_lists_filters_and_tabulates(tmp_path, monkeypatch):
    a, b, c, d = _study(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    listed = nnexp.runs()  # "runs" by default
    assert [r.path.resolve() for r in listed] == [a.path, b.path, c.path, d.path]
    assert repr(listed) == "<RunList: 4 runs (3 completed, 1 diverged)>"
    assert [r.id for r in nnexp.runs("runs", where="training.eta>0.2", status="completed")] == [b.name, c.name]
    assert [r.id for r in nnexp.runs("runs", tags="study")] == [a.name, b.name]
    assert [r.id for r in nnexp.runs("runs", tags=["study", "baseline"])] == [a.name]
    assert len(nnexp.runs("runs", where=["test_accuracy>0.95"])) == 1
    assert listed[b.name].note == "larger eta" and listed[1:3][0].id == b.name
    with pytest.raises(UserError, match="no run has a key 'training.etaa'"):
        nnexp.runs("runs", where="training.etaa=1")
    rows = listed.rows()
    assert rows[1]["id"] == b.name and rows[1]["best_validation_accuracy"] == 0.95
    assert rows[1]["test_accuracy"] == 0.96
    assert rows[1]["note"] == "larger eta" and rows[1]["tags"] == ["study"] and rows[1]["status"] == "completed"
    assert rows[1]["epochs_run"] == 2 and rows[3]["status"] == "diverged"
    assert [r["training.eta"] for r in rows] == [0.1, 0.5, 0.5, 2.5] and [r["seed"] for r in rows] == [0, 0, 1, 0]
    assert "training.epochs" not in rows[0]  # the same in every run: no column
    html_text = listed._repr_html_()
    assert html_text.count("<tr>") == 5 and "larger eta" in html_text and "95.00" in html_text
    frame = listed.to_pandas() if _has_pandas() else None
    if frame is not None:
        assert list(frame["id"]) == [a.name, b.name, c.name, d.name] and frame.loc[1, "training.eta"] == 0.5
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(UserError, match=r"needs pandas: pip install pandas"):
        listed.to_pandas()


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("options, args", [
    ({}, []),
    ({"sort": "test", "group": False}, ["--sort", "test", "--no-group"]),
    ({"where": "training.eta<1", "sort": "eta"}, ["--where", "training.eta<1", "--sort", "eta"]),
])
def test_compare_gives_the_rows_compare_json_prints(tmp_path, options, args):
    _study(tmp_path / "runs")
    rows = nnexp.compare(tmp_path / "runs", **options)
    cli = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "-f", "json", *args])
    assert cli.exit_code == 0, cli.output
    assert json.loads(json.dumps(rows, default=str)) == json.loads(cli.stdout)
    assert rows and all(isinstance(r, dict) for r in rows) and len(repr(rows)) < 200
    assert rows[0]["id"] in rows._repr_html_()


# --- sweep() -------------------------------------------------------------------------------------


@needs_mnist
def test_sweep_runs_the_grid_and_returns_a_row_per_point(tmp_path, monkeypatch):
    shown = FakeDisplay()
    monkeypatch.setattr(notebook, "ipython_show", shown)
    rows = nnexp.sweep(write(tmp_path), grid={"training.eta": [0.25, 1.0], "lmbda": [0.0]}, epochs=1,
                       train_size=200, runs_dir=tmp_path / "runs", progress="notebook")
    assert len(rows) == 2 and sorted(r["training.eta"] for r in rows) == [0.25, 1.0]
    assert all(r["status"] == "completed" and r["epochs_run"] == 1 for r in rows)
    assert rows.path.parent == tmp_path / "runs" and (rows.path / "sweep.json").is_file()
    cli = CliRunner().invoke(app, ["compare", str(rows.path), "-f", "json"])
    assert json.loads(json.dumps(rows, default=str)) == json.loads(cli.stdout)
    last = shown.shown[-1][1]
    assert "2/2 points" in last and last.count(": completed") == 2
    again = nnexp.sweep(write(tmp_path), grid={"eta": [0.25]}, seeds=[3, 4], epochs=1, train_size=200,
                        runs_dir=tmp_path / "runs", progress=False, group=False)
    assert sorted(r["seeds"][0] for r in again) == [3, 4]
    with pytest.raises(ConfigError, match="did you mean 'eta'"):
        nnexp.sweep(write(tmp_path), grid={"etaa": [0.1]}, runs_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@needs_mnist
def test_a_sweep_with_no_time_left_starts_nothing_and_says_how_to_continue(tmp_path):
    """time_limit_minutes is --time-limit's: a budget spent before the first point leaves every
    point planned, with a warning naming the command that continues the sweep, which does."""
    with pytest.warns(UserWarning, match=r"paused by the time limit: 0 point\(s\) paused, 2 not started; "
                                         r"continue with: nnexp sweep .*"):
        rows = nnexp.sweep(write(tmp_path), grid={"eta": [0.25, 1.0]}, epochs=1, train_size=200,
                           runs_dir=tmp_path / "runs", progress=False, time_limit_minutes=0)
    assert len(rows) == 0 and not [p for p in rows.path.iterdir() if Run.is_run(p)]
    result = CliRunner().invoke(app, ["sweep", str(rows.path)])
    assert result.exit_code == 0, result.output
    assert sorted(r["status"] for r in nnexp.compare(rows.path, group=False)) == ["completed", "completed"]


@needs_mnist
def test_a_config_mapping_trains_and_a_diverged_run_ends_its_display_so(tmp_path, monkeypatch):
    shown = FakeDisplay()
    monkeypatch.setattr(notebook, "ipython_show", shown)
    diverging = {"name": "diverge", "data": {"train_size": 200}, "model": {"init": "large", "layers": [
        {"type": "dense", "units": 30, "activation": "linear"}, {"type": "softmax", "units": 10}]},
        "training": {"epochs": 3}}
    with pytest.raises(RunFailed, match="diverged"):
        nnexp.train(diverging, eta=1e6, runs_dir=tmp_path / "runs", progress="notebook")
    assert shown.shown[-1][1].splitlines()[-1].startswith("diverged")
    (path,) = (tmp_path / "runs").iterdir()
    assert path.name.startswith("diverge-") and Run(path).read_summary()["status"] == "diverged"
