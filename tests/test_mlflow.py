"""MLflow runs for nnexp runs (`nnexp.mlflowlog`, `nnexp export mlflow`): written to a local
store in tmp_path and read back with MLflow's own MlflowClient; skipped only where the mlflow
extra is missing. Synthetic run directories (runfactory) keep it fast; the store's database
is made once (MLflow creates its tables in seconds) and copied for each test."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nnexp.cli import app
from nnexp.rundir import Notes, Run
from nnexp.runset import read_run

from runfactory import make_run, write_manifest

runner = CliRunner()
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason='the mlflow extra is not installed (pip install -e ".[mlflow]")')
EXTRA = 'pip install "nnexp[mlflow]"'


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from the tests


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A sqlite store with MLflow's tables and nothing in them."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, empty_store):
    """The tracking URI of a fresh store in tmp_path."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_runs(uri: str, experiment: str = "nnexp") -> dict[str, object]:
    """run name -> MLflow run, for the active runs of `experiment`; fails on a name twice."""
    c = client(uri)
    found = c.search_runs([c.get_experiment_by_name(experiment).experiment_id], "", max_results=1000)
    names = [r.info.run_name for r in found]
    assert len(names) == len(set(names)), f"an nnexp run exported twice: {sorted(names)}"
    return {r.info.run_name: r for r in found}


def export_cli(*args):
    return runner.invoke(app, ["export", "mlflow", *map(str, args)])


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def with_layer_speeds(run: Run, speeds: list[list[float]]) -> None:
    records = run.read_metrics()
    run.truncate_metrics(0)
    for record, speed in zip(records, speeds):
        run.append_metrics({**record, "layer_speed": speed})


def expected_metrics(records: list[dict]) -> dict[str, dict[int, float]]:
    """key -> {epoch: value} for every number of metrics.jsonl, spelled out here rather than
    taken from mlflowlog: the record's own keys, layer_speed per hidden layer, best as 1/0;
    a null (a diverged epoch's NaN) is no value."""
    expected: dict[str, dict[int, float]] = {}
    for record in records:
        for key, value in record.items():
            if key == "epoch" or value is None:
                continue
            if key == "layer_speed":
                for i, speed in enumerate(value, start=1):
                    expected.setdefault(f"layer_speed/hidden{i}", {})[record["epoch"]] = speed
            else:
                expected.setdefault(key, {})[record["epoch"]] = float(value)
    return expected


def assert_every_value(uri: str, mlrun, records: list[dict]) -> None:
    assert records
    c = client(uri)
    for key, by_epoch in expected_metrics(records).items():
        history = c.get_metric_history(mlrun.info.run_id, key)
        assert {m.step: m.value for m in history} == pytest.approx(by_epoch), key
        assert len(history) == len(by_epoch), f"{key}: a step logged twice"


def config_params(run: Run) -> dict[str, str]:
    """The flattened resolved config, each value as text (JSON for all but strings)."""
    flat = read_run(run.path).flat
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}


def artifacts(uri: str, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run, by its path."""
    found = set()
    for info in client(uri).list_artifacts(run_id, path):
        found |= artifacts(uri, run_id, info.path) if info.is_dir else {info.path}
    return found


# --- export -----------------------------------------------------------------------------------


@needs_mlflow
def test_export_holds_the_config_every_metric_the_tags_note_status_times_and_files(tmp_path, store):
    plain = make_run(tmp_path / "runs", "plain", sets={"training.eta": 0.5, "training.monitor_train": True},
                     seed=3, checkpoint=True, wall_time_s=42.5)
    plain.write_notes(Notes("the baseline: eta 0.5", ("baseline", "ch3")))
    speeds = make_run(tmp_path / "runs", "speeds", sets={"training.monitor_layer_speed": 100}, val=[0.6, 0.7])
    with_layer_speeds(speeds, [[0.5, 0.125], [0.25, 0.0625]])
    diverged = make_run(tmp_path / "runs", "diverged", val=[0.3, float("nan")], status="diverged")
    stopped = make_run(tmp_path / "runs", "stopped", val=[0.5, 0.55], status="interrupted")

    result = export_cli(tmp_path / "runs", "--tracking-uri", store)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("created ") == 4 and "4 runs in experiment nnexp: 4 created" in result.stderr
    runs = mlflow_runs(store)
    assert set(runs) == {r.name for r in (plain, speeds, diverged, stopped)}
    assert sorted(result.stdout.split()) == sorted(r.info.run_id for r in runs.values())  # the ids, for scripts

    for run in (plain, speeds, diverged, stopped):
        mlrun = runs[run.name]
        assert mlrun.data.params == config_params(run)
        assert_every_value(store, mlrun, run.read_metrics())
        assert mlrun.data.tags["nnexp.id"] == run.name
        assert mlrun.data.tags["nnexp.path"] == str(run.path.resolve())

    got = runs[plain.name]
    assert got.data.params["training.eta"] == "0.5" and got.data.params["seed"] == "3"
    assert got.data.params["backend"] == "numpy" and got.data.params["training.monitor_layer_speed"] == "null"
    assert got.data.tags["nnexp.tag.baseline"] == got.data.tags["nnexp.tag.ch3"] == "true"
    assert got.data.tags["mlflow.note.content"] == "the baseline: eta 0.5"
    assert got.data.tags["nnexp.status"] == "completed" and got.data.tags["nnexp.stop_reason"] == "epochs"
    assert got.info.status == "FINISHED"
    assert got.info.start_time == int(plain.created_at() * 1000)
    assert got.info.end_time == got.info.start_time + 42_500
    # the running best, whose last values are the summary's
    summary = plain.read_summary()
    best = client(store).get_metric_history(got.info.run_id, "best_validation_accuracy")
    assert [m.value for m in sorted(best, key=lambda m: m.step)][-1] == pytest.approx(summary["best_validation_accuracy"])
    assert got.data.metrics["best_test_accuracy"] == pytest.approx(summary["test_accuracy"])
    # the run directory, checkpoints too, as files the same as the run's own
    files = artifacts(store, got.info.run_id)
    assert files == {"config.yaml", "metrics.jsonl", "summary.json", "notes.json",
                     "checkpoints/best.npz", "checkpoints/last.npz"}
    (tmp_path / "down").mkdir()
    local = Path(client(store).download_artifacts(got.info.run_id, "metrics.jsonl", str(tmp_path / "down")))
    assert local.read_bytes() == (plain.path / "metrics.jsonl").read_bytes()
    # kept beside the database, not in the working directory
    assert got.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    assert "nnexp.tag.baseline" not in runs[speeds.name].data.tags
    assert "mlflow.note.content" not in runs[speeds.name].data.tags
    assert {"layer_speed/hidden1", "layer_speed/hidden2"} <= set(runs[speeds.name].data.metrics)
    assert runs[diverged.name].info.status == "FAILED"
    assert runs[diverged.name].data.tags["nnexp.status"] == "diverged"
    assert runs[stopped.name].info.status == "KILLED"


@needs_mlflow
def test_a_sweep_exports_one_mlflow_run_per_point_named_sweep_slash_point(tmp_path, store):
    sweep = tmp_path / "runs" / "etas-20250101-000000"
    sweep.mkdir(parents=True)
    points = {}
    for eta in (0.1, 0.5, 3.0):
        run = make_run(sweep, "p", sets={"training.eta": eta})
        points[f"eta={eta}"] = Run(run.path.rename(run.path.with_name(f"eta={eta}")))
    write_manifest(sweep)
    (sweep / "stray").mkdir()  # not a point the manifest lists: a warning, not a run

    result = export_cli(sweep, "--tracking-uri", store, "--experiment", "etas")
    assert result.exit_code == 0, result.output
    assert "stray" in result.stderr and "warning" in result.stderr
    runs = mlflow_runs(store, "etas")
    assert set(runs) == {f"{sweep.name}/{point}" for point in points}
    for point, run in points.items():
        mlrun = runs[f"{sweep.name}/{point}"]
        assert mlrun.data.tags["nnexp.sweep"] == sweep.name
        assert mlrun.data.params["training.eta"] == point.split("=")[1]
        assert_every_value(store, mlrun, run.read_metrics())


@needs_mlflow
def test_exporting_again_makes_no_second_run_skips_the_unchanged_updates_and_replaces(tmp_path, store):
    run = make_run(tmp_path / "runs", "plain", checkpoint=True)
    run.write_notes(Notes("first note", ("old",)))
    other = make_run(tmp_path / "runs", "other")
    assert export_cli(tmp_path / "runs", "--tracking-uri", store).exit_code == 0
    first = mlflow_runs(store)

    result = export_cli(tmp_path / "runs", "--tracking-uri", store)
    assert result.exit_code == 0 and result.stderr.count("unchanged ") == 2, result.stderr
    assert {k: r.info.run_id for k, r in mlflow_runs(store).items()} == {k: r.info.run_id for k, r in first.items()}

    # grown: one more epoch, a new tag for an old one, a new note -> updated in place
    run.append_metrics({"epoch": 4, "eta": 0.1, "validation_cost": 0.03, "validation_accuracy": 0.97,
                        "test_cost": 0.04, "test_accuracy": 0.96, "seconds": 2.0, "best": True})
    run.write_notes(Notes("second note", ("new",)))
    result = export_cli(tmp_path / "runs", "--tracking-uri", store)
    assert result.exit_code == 0, result.output
    assert f"updated   {run.name}" in result.stderr and f"unchanged {other.name}" in result.stderr
    now = mlflow_runs(store)[run.name]
    assert now.info.run_id == first[run.name].info.run_id
    assert_every_value(store, now, run.read_metrics())  # epoch 4 there, epochs 1-3 once each
    assert now.data.tags["nnexp.tag.new"] == "true" and "nnexp.tag.old" not in now.data.tags
    assert now.data.tags["mlflow.note.content"] == "second note"

    # changed: the config (a resume --set) -> MLflow keeps params as first logged: a new run
    cfg = run.read_config()
    cfg["training"]["eta"] = 0.25
    run.write_config(cfg)
    result = export_cli(tmp_path / "runs", "--tracking-uri", store)
    assert result.exit_code == 0 and f"replaced  {run.name}" in result.stderr, result.output
    replaced = mlflow_runs(store)[run.name]
    assert replaced.info.run_id != now.info.run_id
    assert replaced.data.params == config_params(run) and replaced.data.params["training.eta"] == "0.25"
    assert_every_value(store, replaced, run.read_metrics())
    assert client(store).get_run(now.info.run_id).info.lifecycle_stage == "deleted"
    assert len(mlflow_runs(store)) == 2


@needs_mlflow
def test_no_checkpoints_leaves_checkpoints_out_of_the_artifacts(tmp_path, store):
    run = make_run(tmp_path / "runs", "plain", checkpoint=True)
    result = export_cli(run.path, "--tracking-uri", store, "--no-checkpoints")
    assert result.exit_code == 0, result.output
    mlrun = mlflow_runs(store)[run.name]
    assert artifacts(store, mlrun.info.run_id) == {"config.yaml", "metrics.jsonl", "summary.json"}


@needs_mlflow
def test_a_damaged_run_is_a_warning_and_the_others_are_exported(tmp_path, store):
    good = make_run(tmp_path / "runs", "good")
    bad = make_run(tmp_path / "runs", "bad")
    with open(bad.path / "metrics.jsonl", "r+", encoding="utf-8") as f:  # a damaged line, not the last
        lines = f.readlines()
        lines[0] = "{not json\n"
        f.seek(0)
        f.writelines(lines)
    result = export_cli(tmp_path / "runs", "--tracking-uri", store)
    assert result.exit_code == 0, result.output
    assert f"skipped {bad.path}" in result.stderr
    assert set(mlflow_runs(store)) == {good.name}


# --- errors -----------------------------------------------------------------------------------


def test_a_missing_mlflow_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    make_run(tmp_path / "runs", "plain")
    result = export_cli(tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    one_line_error(result, EXTRA)
    assert not (tmp_path / "mlflow.db").exists()


@needs_mlflow
def test_a_bad_tracking_uri_is_one_line(tmp_path, monkeypatch):
    make_run(tmp_path / "runs", "plain")
    one_line_error(export_cli(tmp_path / "runs", "--tracking-uri", "nosuch://x"), "--tracking-uri nosuch://x")
    (tmp_path / "file").write_text("x")
    one_line_error(export_cli(tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'file' / 'm.db'}"),
                   "--tracking-uri sqlite:///", "cannot make")
    one_line_error(export_cli(tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path}"), "is a directory")
    one_line_error(export_cli(tmp_path / "runs", "--tracking-uri", " "), "--tracking-uri is empty")


@needs_mlflow
def test_the_file_store_is_refused_by_mlflow_3_unless_allowed_and_then_works(tmp_path, monkeypatch):
    import mlflow

    run = make_run(tmp_path / "runs", "plain")
    uri = (tmp_path / "fs").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = export_cli(tmp_path / "runs", "--tracking-uri", uri)
    if int(mlflow.__version__.split(".")[0]) >= 3:
        one_line_error(result, "use sqlite:///PATH, or set MLFLOW_ALLOW_FILE_STORE=true")
    else:
        assert result.exit_code == 0, result.output
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = export_cli(tmp_path / "runs", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    mlrun = mlflow_runs(uri)[run.name]
    assert mlrun.data.params == config_params(run)
    assert_every_value(uri, mlrun, run.read_metrics())
