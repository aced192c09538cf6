"""TensorBoard event files (`nnexp.tblog`): `nnexp export tensorboard`, and `--tensorboard` on
train, resume and sweep. Read back with TensorBoard's own reader (EventAccumulator) and from a
real `tensorboard` server on 127.0.0.1; skipped only where the tensorboard extra is missing."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnexp import lifecycle, tblog
from nnexp import training as train
from nnexp.cli import app
from nnexp.lifecycle import Intent
from nnexp.rundir import MANIFEST, Run
from nnexp.training import SilentReporter

from conftest import make_config, needs_mnist
from runfactory import make_run, write_manifest

runner = CliRunner()
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason='the tensorboard extra is not installed (pip install -e ".[tensorboard]")')

# what each metrics.jsonl key is called in the event files: the documented tags, spelled out
# here rather than taken from tblog, so a renamed or dropped tag fails
TAG_OF = {"validation_accuracy": "accuracy/validation", "test_accuracy": "accuracy/test",
          "train_accuracy": "accuracy/train", "validation_cost": "cost/validation", "test_cost": "cost/test",
          "train_cost": "cost/train", "eta": "eta", "seconds": "time/epoch_seconds", "best": "best/new_best"}


# --- helpers ----------------------------------------------------------------------------------


def events(directory: Path):
    """The event files of one run directory, read by TensorBoard's own reader, every value kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def expected_values(records: list[dict]) -> dict[str, dict[int, float]]:
    """tag -> {epoch: value} for every key of every record but the epoch itself. A null (a
    diverged epoch's NaN, as strict JSON writes it) is no value: no scalar at that epoch."""
    expected: dict[str, dict[int, float]] = {}
    for record in records:
        for key, value in record.items():
            if key == "epoch" or value is None:
                continue
            if key == "layer_speed":
                for i, speed in enumerate(value, start=1):
                    expected.setdefault(f"layer_speed/hidden{i}", {})[record["epoch"]] = speed
            else:
                expected.setdefault(TAG_OF[key], {})[record["epoch"]] = float(value)
    return expected


def assert_every_value(accumulator, records: list[dict]) -> None:
    """Each value of metrics.jsonl (keys x epochs) is in the events once, at its epoch, to
    float32's precision; no epoch appears twice."""
    assert records, "no epochs to look for"
    scalars = set(accumulator.Tags()["scalars"])
    for tag, by_epoch in expected_values(records).items():
        assert tag in scalars, f"{tag} missing; the events have {sorted(scalars)}"
        found = accumulator.Scalars(tag)
        steps = [event.step for event in found]
        assert steps == sorted(by_epoch), f"{tag}: steps {steps}, epochs {sorted(by_epoch)}"
        for event in found:
            want = float(np.float32(by_epoch[event.step]))  # scalars are stored as float32
            assert event.value == pytest.approx(want, rel=1e-6, abs=1e-12), (tag, event.step)


def hparams_of(accumulator) -> tuple[dict, object | None]:
    """The run's HParams session values, and the experiment summary if it has one."""
    from tensorboard.plugins.hparams import metadata

    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    experiment = (metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
                  if metadata.EXPERIMENT_TAG in content else None)
    return values, experiment


def status_texts(accumulator) -> list[str]:
    return [event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors("run/status/text_summary")]


def event_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("events.out.tfevents.*"))


def with_layer_speeds(run: Run, speeds: list[list[float]]) -> None:
    """Add chapter 5's layer speeds (two hidden layers) to a synthetic run's records."""
    records = run.read_metrics()
    run.truncate_metrics(0)
    for record, speed in zip(records, speeds):
        run.append_metrics({**record, "layer_speed": speed})


def as_point(run: Run, point: str) -> Run:
    """A synthetic run renamed as a sweep names its points' run directories."""
    return Run(run.path.rename(run.path.with_name(point)))


def made_runs(root: Path) -> dict[str, Run]:
    """Runs of every kind the export meets: plain, a sweep's points with layer speeds and
    seeds, an interrupted one, and a diverged one whose last epoch has a NaN."""
    runs = {"plain": make_run(root / "runs", "plain", sets={"training.eta": 0.5})}
    sweep = root / "runs" / "etas-20250101-000000"
    sweep.mkdir(parents=True)
    runs["p1"] = as_point(make_run(sweep, "p", sets={"training.eta": 0.1, "training.monitor_layer_speed": 100},
                                   seed=1, val=[0.6, 0.7, 0.65, 0.7]), "eta=0.1")
    with_layer_speeds(runs["p1"], [[0.5, 0.125], [0.25, 0.0625], [0.2, 0.05], [0.1, 0.03]])
    runs["p2"] = as_point(make_run(sweep, "p", sets={"training.eta": 3.0}, seed=2, val=[0.3, float("nan")],
                                   status="diverged"), "eta=3.0")
    runs["stopped"] = make_run(root / "runs", "stopped", sets={"training.eta": 0.5}, val=[0.5, 0.55],
                               status="interrupted")
    write_manifest(sweep)  # a sweep directory to readers of runs, listing its points
    return runs


def export_cli(*args) -> object:
    return runner.invoke(app, ["export", "tensorboard", *map(str, args)])


def small_config(tmp_path: Path, **training) -> Path:
    cfg = {"name": "small", "data": {"train_size": 300},
           "model": {"init": "network2", "layers": [{"type": "dense", "units": 20},
                                                    {"type": "softmax", "units": 10}]},
           "training": {"epochs": 2, "eta": 0.5, "monitor_train": True, "monitor_layer_speed": 50, **training}}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- export -----------------------------------------------------------------------------------


@needs_tensorboard
def test_export_holds_every_value_of_metrics_jsonl_and_the_hparams(tmp_path):
    runs = made_runs(tmp_path)
    out = tmp_path / "tb"
    result = export_cli(tmp_path / "runs", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)

    where = {"plain": out / runs["plain"].name, "p1": out / "etas-20250101-000000" / "eta=0.1",
             "p2": out / "etas-20250101-000000" / "eta=3.0", "stopped": out / runs["stopped"].name}
    for key, run in runs.items():
        assert len(event_files(where[key])) == 1, key
        assert_every_value(events(where[key]), run.read_metrics())

    p1 = events(where["p1"])
    assert {f"layer_speed/hidden{i}" for i in (1, 2)} <= set(p1.Tags()["scalars"])
    # the HParams: the keys that differ between the exported runs, and the seed
    values, experiment = hparams_of(p1)
    assert values == {"seed": 1, "training.eta": 0.1, "training.monitor_layer_speed": 100}
    # null there (the default): no value rather than a made-up one
    assert hparams_of(events(where["plain"]))[0] == {"seed": 0, "training.eta": 0.5}
    assert {info.name for info in experiment.hparam_infos} == set(values)
    assert [m.name.tag for m in experiment.metric_infos] == ["best/validation_accuracy", "best/test_accuracy"]
    # the metrics the HParams table shows: their last values are the run's summary
    summary = runs["p1"].read_summary()
    assert p1.Scalars("best/validation_accuracy")[-1].value == pytest.approx(summary["best_validation_accuracy"])
    assert p1.Scalars("best/test_accuracy")[-1].value == pytest.approx(summary["test_accuracy"])
    best = p1.Scalars("best/validation_accuracy")
    assert [e.step for e in best] == [1, 2, 3, 4]
    assert [e.value for e in best] == pytest.approx([0.6, 0.7, 0.7, 0.7])
    # status (and stop reason) as text
    assert status_texts(p1) == ["completed: all epochs run"]
    assert status_texts(events(where["stopped"])) == ["interrupted"]
    assert status_texts(events(where["p2"])) == ["diverged"]


@needs_tensorboard
def test_exporting_again_replaces_a_runs_events_and_never_touches_a_users_files(tmp_path):
    run = make_run(tmp_path / "runs", "plain")
    out = tmp_path / "tb"
    for _ in range(2):
        assert export_cli(tmp_path / "runs", "--out", out).exit_code == 0
    assert len(event_files(out / run.name)) == 1  # replaced, not a second copy of every epoch
    assert_every_value(events(out / run.name), run.read_metrics())
    assert [p.name for p in out.iterdir()] == [run.name]  # no temporary folder left

    other = make_run(tmp_path / "more", "other")
    mine = out / other.name
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = export_cli(tmp_path / "runs", tmp_path / "more", "--out", out)
    assert result.exit_code == 2 and "holds more than TensorBoard event files" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert (mine / "notes.txt").read_text() == "mine" and not event_files(mine)

    (tmp_path / "file").write_text("x")
    result = export_cli(tmp_path / "runs", "--out", tmp_path / "file")
    assert result.exit_code == 2 and "is a file" in result.stderr


def test_a_missing_tensorboard_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    make_run(tmp_path / "runs", "plain")
    result = export_cli(tmp_path / "runs", "--out", tmp_path / "tb")
    assert result.exit_code == 2 and 'pip install -e ".[tensorboard]"' in result.stderr
    assert not (tmp_path / "tb").exists()
    result = runner.invoke(app, ["train", str(small_config(tmp_path)), "--tensorboard",
                                 "--runs-dir", str(tmp_path / "new")])
    assert result.exit_code == 2 and 'pip install -e ".[tensorboard]"' in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "new").exists()  # nothing half-made


# --- TensorBoard itself -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


@needs_tensorboard
def test_a_tensorboard_server_serves_an_exported_runs_scalars(tmp_path):
    runs = made_runs(tmp_path)
    out = tmp_path / "tb"
    assert export_cli(tmp_path / "runs", "--out", out).exit_code == 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/data/plugin/scalars"
    try:
        tags, deadline = {}, time.monotonic() + 120
        while "etas-20250101-000000/eta=0.1" not in tags or runs["plain"].name not in tags:
            assert server.poll() is None, f"tensorboard exited: {server.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"tensorboard did not list the runs in 120 s: {tags}"
            time.sleep(0.5)
            try:
                tags = get_json(f"{base}/tags")
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                tags = {}  # not listening yet, or still loading
        assert "accuracy/validation" in tags["etas-20250101-000000/eta=0.1"]
        assert "layer_speed/hidden2" in tags["etas-20250101-000000/eta=0.1"]
        query = urllib.parse.urlencode({"run": "etas-20250101-000000/eta=0.1", "tag": "accuracy/validation"})
        served = get_json(f"{base}/scalars?{query}")  # [[wall time, step, value], ...]
        records = runs["p1"].read_metrics()
        assert [step for _, step, _ in served] == [r["epoch"] for r in records]
        assert [value for _, _, value in served] == pytest.approx([r["validation_accuracy"] for r in records])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- live: --tensorboard ----------------------------------------------------------------------


class Watcher(SilentReporter):
    """Reads the run's events back as each epoch ends (the live writer passes the epoch on
    after writing it); interrupts the run as the epoch `stop_at` trains, as Ctrl-C would."""

    def __init__(self, run: Run, stop_at: int | None = None):
        self.run, self.stop_at, self.seen, self.epoch = run, stop_at, [], 0

    def epoch_started(self, epoch, num_batches):
        self.epoch = epoch

    def batches_done(self, done):
        if self.epoch == self.stop_at:
            raise KeyboardInterrupt

    def epoch_finished(self, record, line):
        steps = [e.step for e in events(self.run.events_dir()).Scalars("accuracy/validation")]
        self.seen.append(steps)


@needs_tensorboard
@needs_mnist
def test_a_runs_events_land_with_each_epoch_and_a_resume_shows_none_twice(tmp_path, cached_data):
    cfg = make_config(data={"train_size": 200}, training={"epochs": 3, "eta": 0.5, "monitor_layer_speed": 20})
    exp = train.prepare(cfg)
    run = Run.create(tmp_path / "runs", cfg["name"])
    watcher = Watcher(run, stop_at=3)
    with pytest.raises(KeyboardInterrupt), tblog.live(run, watcher) as reporter:
        lifecycle.execute(exp, run, Intent.START, reporter)
    assert watcher.seen == [[1], [1, 2]]  # on disk as each epoch ended, not at the end
    assert status_texts(events(run.events_dir())) == ["interrupted"]

    result = runner.invoke(app, ["resume", str(run.path), "--tensorboard"])
    assert result.exit_code == 0, result.output
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    accumulator = events(run.events_dir())
    assert_every_value(accumulator, records)  # epochs 1 and 2 once each, though written twice
    assert status_texts(accumulator) == ["completed: all epochs run"]
    assert hparams_of(accumulator)[0] == {"seed": 0}


@needs_tensorboard
@needs_mnist
def test_train_and_resume_with_tensorboard_write_every_epoch(tmp_path):
    result = runner.invoke(app, ["train", str(small_config(tmp_path)), "--tensorboard", "--seed", "3",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = Run.open(result.stdout.strip().splitlines()[-1])
    assert_every_value(events(run.events_dir()), run.read_metrics())
    assert {"accuracy/train", "layer_speed/hidden1"} <= set(events(run.events_dir()).Tags()["scalars"])

    result = runner.invoke(app, ["resume", str(run.path), "--set", "training.epochs=3", "--tensorboard"])
    assert result.exit_code == 0, result.output
    accumulator = events(run.events_dir())
    assert_every_value(accumulator, run.read_metrics())
    assert len(run.read_metrics()) == 3 and len(event_files(run.events_dir())) == 1
    assert hparams_of(accumulator)[0] == {"seed": 3}

    # trained without it: no events; resumed with it, the earlier epochs are there too
    result = runner.invoke(app, ["train", str(small_config(tmp_path)), "--runs-dir", str(tmp_path / "plain")])
    plain = Run.open(result.stdout.strip().splitlines()[-1])
    assert not plain.events_dir().exists()
    result = runner.invoke(app, ["resume", str(plain.path), "--set", "training.epochs=3", "--tensorboard"])
    assert result.exit_code == 0, result.output
    assert_every_value(events(plain.events_dir()), plain.read_metrics())


@needs_tensorboard
@needs_mnist
def test_a_sweeps_points_write_their_events_and_the_sweep_remembers_it(tmp_path):
    config = small_config(tmp_path, monitor_layer_speed=None)  # the speeds cost a pass
    result = runner.invoke(app, ["sweep", str(config), "--grid", "training.eta=0.1,0.5,1.0", "--tensorboard",
                                 "--jobs", "2", "--only", "eta=0.*", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    sweep = Path(result.stdout.strip().splitlines()[-1])
    assert json.loads((sweep / MANIFEST).read_text())["spec"]["tensorboard"] is True
    assert not (sweep / "eta=1.0").exists()

    result = runner.invoke(app, ["sweep", str(sweep), "--jobs", "2"])  # continued: still writes events
    assert result.exit_code == 0, result.output
    for eta in (0.1, 0.5, 1.0):
        run = Run.open(sweep / f"eta={eta}")
        accumulator = events(run.events_dir())
        assert_every_value(accumulator, run.read_metrics())
        # the sweep's grid key against its metrics, the same keys for every point
        assert hparams_of(accumulator)[0] == {"training.eta": eta, "seed": 0}
        assert status_texts(accumulator) == ["completed: all epochs run"]
