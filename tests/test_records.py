"""`nnexp export record`: copies of runs to keep. A real trained run's copy answers
`evaluate`, `compare` and `ensemble` as the run does, with its checkpoint in the run's own
precision and compressed; a sweep's point keeps its place beside the manifest; nothing is
overwritten and a run in training is refused."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
import yaml
from runfactory import SMALL_LAYERS, make_run, write_manifest
from typer.testing import CliRunner

from conftest import make_config, needs_mnist
from nnexp.cli import app
from nnexp.rundir import Run

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def trained(tmp_path, dtype: str = "float32"):
    """A small run really trained on MNIST, two epochs."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(make_config(SMALL_LAYERS, training={"epochs": 2}, dtype=dtype,
                                                 sets={"data.train_size": 500})))
    result = cli("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "runs").iterdir()
    return Run(path)


@needs_mnist
def test_a_copy_answers_as_the_run_does(tmp_path):
    run = trained(tmp_path)
    result = cli("export", "record", run.path, "--out", tmp_path / "kept")
    assert result.exit_code == 0, result.output
    copy = Run(tmp_path / "kept" / run.name)
    assert result.stdout.strip() == str(copy.path)
    assert re.search(rf"^{re.escape(str(copy.path))}: \d+(\.\d)? (kB|MB)$", result.stderr, re.M)  # its size
    assert sorted(p.name for p in copy.path.iterdir()) == sorted(
        p.name for p in run.path.iterdir() if p.name not in (".lock", ".notes.lock"))
    assert [p.name for p in (copy.path / "checkpoints").iterdir()] == ["best.npz"]
    # the same numbers, narrowed to float32 (what the run trained in) and compressed
    mine, meta, _ = run.load_checkpoint("best")
    kept, kept_meta, _ = copy.load_checkpoint("best")
    assert kept_meta == meta and kept.keys() == mine.keys()
    for name in mine:
        assert mine[name].dtype == np.float64 and kept[name].dtype == np.float32
        assert np.array_equal(kept[name].astype(np.float64), mine[name])
    with zipfile.ZipFile(copy.checkpoint_path("best")) as z:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in z.infolist())
    assert copy.checkpoint_path("best").stat().st_size < 0.75 * run.checkpoint_path("best").stat().st_size
    # the readers' answers
    evaluated = cli("evaluate", copy.path)
    assert evaluated.exit_code == 0 and "reproduces summary.json's test accuracy: yes" in evaluated.stdout
    rows = [json.loads(cli("compare", p, "-f", "json").stdout) for p in (run.path, copy.path)]
    for row in rows:
        for key in ("id", "path", "run_dir"):
            [r.pop(key, None) for r in row]
    assert rows[0] == rows[1]
    votes = [cli("ensemble", p, p) for p in (run.path, copy.path)]
    assert votes[0].exit_code == 0 and votes[0].stdout.replace(str(run.path), "X").replace(run.name, "N") \
        == votes[1].stdout.replace(str(copy.path), "X").replace(copy.name, "N")


@needs_mnist
def test_a_float64_run_keeps_its_precision_and_both_checkpoints_go_when_asked(tmp_path):
    run = trained(tmp_path, dtype="float64")
    result = cli("export", "record", run.path, "--out", tmp_path / "kept", "--checkpoint", "both")
    assert result.exit_code == 0, result.output
    copy = Run(tmp_path / "kept" / run.name)
    for which in ("best", "last"):
        kept, _, state = copy.load_checkpoint(which)
        mine, _, mine_state = run.load_checkpoint(which)
        assert all(kept[n].dtype == np.float64 and np.array_equal(kept[n], mine[n]) for n in mine)
        assert state.keys() == mine_state.keys()
    resumed = cli("resume", copy.path, "--set", "training.epochs=3")  # a last checkpoint carries on
    assert resumed.exit_code == 0, resumed.output


def test_a_sweeps_points_keep_their_place_beside_its_manifest(tmp_path):
    sweep = tmp_path / "ch6-20261203-120000"
    first, second = (make_run(sweep, "dropout", seed=seed, val=[0.99, 0.995], checkpoint=True) for seed in (1, 2))
    write_manifest(sweep)
    result = cli("export", "record", second.path, "--out", tmp_path / "kept", "--checkpoint", "none")
    assert result.exit_code == 0, result.output
    kept = tmp_path / "kept" / sweep.name
    assert sorted(p.name for p in kept.iterdir()) == sorted([second.name, "sweep.json"])
    assert (kept / "sweep.json").read_bytes() == (sweep / "sweep.json").read_bytes()
    assert not list((kept / second.name / "checkpoints").iterdir())
    # later, another point of the same sweep joins the copy
    more = cli("export", "record", first.path, "--out", tmp_path / "kept")
    assert more.exit_code == 0, more.output
    compared = json.loads(cli("compare", kept, "-f", "json", "--no-group").stdout)
    assert sorted(r["id"] for r in compared) == sorted(f"{sweep.name}/{p.name}" for p in (first, second))


@pytest.mark.parametrize("case", ["exists", "training", "bad choice", "out is a file"])
def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, case):
    run = make_run(tmp_path / "runs", "r", checkpoint=True)
    out = tmp_path / "kept"
    args = ["export", "record", run.path, "--out", out]
    if case == "exists":
        (out / run.name).mkdir(parents=True)
        (out / run.name / "mine.txt").write_text("the user's")
    elif case == "bad choice":
        args += ["--checkpoint", "fastest"]
    elif case == "out is a file":
        out.write_text("a file")
    if case == "training":
        with run.lock():
            result = cli(*args)
    else:
        result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    words = {"exists": "exists already", "training": "is being trained", "bad choice": "choose one of",
             "out is a file": "is a file"}[case]
    assert words in result.output
    if case == "exists":
        assert [p.name for p in (out / run.name).iterdir()] == ["mine.txt"]
    elif case != "out is a file":
        assert not out.exists()
