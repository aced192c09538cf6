"""Run ids: the short id compare shows for each row (a run directory's name, `SWEEP/POINT`
for a sweep's point) names the run wherever a run is named. An existing path wins; else the
id is looked up under the runs directory (--runs-dir, default `runs`, where train puts runs);
a unique start of a name will do; an unknown id is one line with the nearest ids, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runfactory import CONV_LAYERS, make_run, png_size, write_manifest
from test_readable import TINY, ch3_sweep
from typer.testing import CliRunner

from nnexp import comparison as cmp
from nnexp.cli import app
from nnexp.errors import UserError
from nnexp.rundir import Notes, Run
from nnexp.runset import find_run_dirs, known_ids, resolve_run

from conftest import needs_mnist

SWEEP = "ch3-20261130-201206"  # ch3_sweep's directory


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """A runs directory with two runs of one config, one of another, and a sweep; the
    working directory is its parent, so the default --runs-dir finds it."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    for name in ("shallow", "shallow", "deep"):
        make_run(root, name, sets={"training.eta": 0.5} if name == "deep" else None)
    ch3_sweep(root)
    return root


def names(root: Path, start: str) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(start))


# --- the rule ---------------------------------------------------------------------------------


def test_an_id_is_a_name_or_sweep_point_under_the_runs_directory(runs):
    deep = names(runs, "deep")[0]
    assert resolve_run(deep) == Path("runs") / deep
    assert resolve_run(f"{SWEEP}/ch3_l2,seed=1") == Path("runs") / SWEEP / "ch3_l2,seed=1"
    assert resolve_run(SWEEP) == Path("runs") / SWEEP  # a sweep, for the commands that take one
    assert resolve_run(deep, runs) == runs / deep


def test_a_unique_start_of_a_name_will_do(runs):
    assert resolve_run("deep") == Path("runs") / names(runs, "deep")[0]
    assert resolve_run("ch3-2026/ch3_l2_1000,seed=2") == Path("runs") / SWEEP / "ch3_l2_1000,seed=2"
    assert resolve_run("ch3/ch3_l2_1000,seed=2") == Path("runs") / SWEEP / "ch3_l2_1000,seed=2"
    with pytest.raises(UserError, match=r"'shallow' starts shallow-\d+-\d+, shallow-"):
        resolve_run("shallow")  # two runs start so
    with pytest.raises(UserError, match="ambiguous"):
        resolve_run(f"{SWEEP}/ch3_l2")  # ch3_l2,seed=1 and ch3_l2_100,... and more


def test_an_existing_path_wins_over_an_id(runs, tmp_path):
    deep = names(runs, "deep")[0]
    mine = make_run(tmp_path / "elsewhere", "mine")
    (tmp_path / deep).symlink_to(mine.path)  # ./<deep> exists: it is what the argument names
    assert resolve_run(deep) == Path(deep)
    assert resolve_run(str(runs / deep)) == runs / deep


@pytest.mark.parametrize("name, words", [
    ("shalow", "did you mean 'shallow-"), ("dep", "did you mean 'deep-"),
    (f"{SWEEP}/ch3_l2,seed=3", f"did you mean '{SWEEP}/ch3_l2,seed="), ("nothing-like-it", "nor a run id in runs"),
    ("../runs", "no such path"), ("/abs/olute", "no such path")])
def test_an_unknown_id_names_the_nearest(runs, name, words):
    with pytest.raises(UserError, match="no run") as error:
        resolve_run(name)
    assert words in str(error.value) and "\n" not in str(error.value) and len(str(error.value)) < 300


def test_without_a_runs_directory_the_error_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no runs directory runs to look its id up in \(--runs-dir\)"):
        resolve_run("shallow")


def test_known_ids_are_the_ids_compare_shows(runs):
    comparison, _ = cmp.compare([runs], group=False)
    shown = {row.id for row in comparison.rows}
    ids = set(known_ids(runs))
    assert shown <= ids and SWEEP in ids and ids - shown == {SWEEP}


# --- every command that names a run -----------------------------------------------------------


def test_every_id_compare_shows_finds_its_runs_again(runs):
    """Round trip: each row's id, given back to compare, is that row's runs."""
    for group in (True, False):
        rows = json.loads(cli("compare", "runs", "-f", "json", "--group" if group else "--no-group").stdout)
        assert len(rows) == (8 if group else 13)  # the two shallow runs share seed 0: never pooled
        for row in rows:
            again = cli("compare", row["id"], "-f", "json", "--group" if group else "--no-group")
            assert again.exit_code == 0, again.output
            assert [r["runs"] for r in json.loads(again.stdout)] == [row["runs"]], row["id"]


def test_compare_takes_ids_with_runs_dir_and_warns_of_an_unknown_one(tmp_path):
    make_run(tmp_path / "store", "deep")
    ch3_sweep(tmp_path / "store")
    result = cli("compare", "deep", f"{SWEEP}/ch3_l2,seed=*", "shalow", "--runs-dir", tmp_path / "store",
                 "-f", "json", "--no-group")
    assert result.exit_code == 0, result.output
    assert sorted(r["id"] for r in json.loads(result.stdout)) == sorted(
        [f"{SWEEP}/ch3_l2,seed=1", f"{SWEEP}/ch3_l2,seed=2", next((tmp_path / "store").glob("deep-*")).name])
    assert "no run 'shalow'" in result.stderr  # a typo does not hide the other runs
    alone = cli("compare", "dep", "--runs-dir", tmp_path / "store")
    assert alone.exit_code == 2 and "did you mean 'deep-" in alone.output and alone.output.count("\n") == 1


def test_find_run_dirs_leaves_ids_alone_without_a_runs_directory(runs):
    with pytest.raises(UserError, match="no run directories found"):
        find_run_dirs(["deep"])
    assert find_run_dirs(["deep"], "runs")[0] == [Path("runs") / names(runs, "deep")[0]]


def test_tag_and_note_take_ids(runs):
    deep = names(runs, "deep")[0]
    result = cli("tag", "deep", f"{SWEEP}/ch3_l2,seed=1", "+keep")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"runs/{deep}: #keep", f"runs/{SWEEP}/ch3_l2,seed=1: #keep"]
    assert cli("note", deep, "why").exit_code == 0
    assert Run(runs / deep).read_notes() == Notes("why", ("keep",))
    assert cli("note", "deep").stdout == "why\n"
    unknown = cli("note", "dep", "x")
    assert unknown.exit_code == 2 and "did you mean 'deep-" in unknown.output and unknown.output.count("\n") == 1


def test_tag_takes_globs_as_compare_does(runs):
    result = cli("tag", f"{SWEEP}/ch3_l2,seed=*", "runs/deep*", "+picked")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3 and all(line.endswith(": #picked") for line in result.stdout.splitlines())
    assert Run(runs / SWEEP / "ch3_l2,seed=2").read_notes().tags == ("picked",)


def test_tag_of_a_sweep_id_tags_its_points(runs):
    assert cli("tag", SWEEP, "+ch3").exit_code == 0
    assert all(Run(p).read_notes().tags == ("ch3",) for p in (runs / SWEEP).iterdir() if p.is_dir())


def test_plot_takes_an_id(runs):
    deep = names(runs, "deep")[0]
    result = cli("plot", "deep")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"runs/{deep}/curves.png" and png_size(runs / deep / "curves.png")[0] > 0


def test_filters_take_an_id(tmp_path):
    conv = make_run(tmp_path / "store", "conv", layers=CONV_LAYERS, checkpoint=True)
    result = cli("filters", "conv", "--runs-dir", tmp_path / "store", "-o", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    assert png_size(tmp_path / "f.png")[0] > 0
    assert Path(result.stdout.strip()) == tmp_path / "f.png" and conv.path.parent == tmp_path / "store"


def test_resume_takes_an_id(runs):
    result = cli("resume", f"{SWEEP}/ch3_l2,seed=1")
    assert result.exit_code == 0, result.output  # completed: nothing to do, said so
    assert "already completed" in result.stderr and result.stdout.strip() == f"runs/{SWEEP}/ch3_l2,seed=1"


@pytest.mark.parametrize("command", [["plot"], ["evaluate"], ["resume"], ["filters"], ["ensemble"], ["note"],
                                     ["tag"]])
def test_an_unknown_id_is_one_line_exit_2_everywhere(runs, command):
    result = cli(*command, "dep")
    assert result.exit_code == 2, result.output
    assert "dep" in result.output and "did you mean 'deep-" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@needs_mnist
def test_evaluate_and_ensemble_take_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in (1, 2):
        make_run(tmp_path / "runs" / "vote-20261203-000000", "tiny", seed=seed, layers=TINY, checkpoint=True,
                 sets={"training.cost": "log-likelihood"})
    sweep = tmp_path / "runs" / "vote-20261203-000000"
    for i, point in enumerate(sorted(p for p in sweep.iterdir() if p.is_dir())):
        point.rename(sweep / f"seed={i + 1}")
    write_manifest(sweep)
    evaluated = cli("evaluate", "vote/seed=1")
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stdout.startswith(f"runs/vote-20261203-000000/seed=1: best checkpoint")
    voted = cli("ensemble", "vote/seed=1", "vote-20261203-000000/seed=2")
    assert voted.exit_code == 0, voted.output
    assert "ensemble of 2" in voted.stdout
    whole = cli("ensemble", "vote")  # the sweep's id: its points
    assert whole.exit_code == 0 and "ensemble of 2" in whole.stdout


def test_report_takes_ids_with_runs_dir(tmp_path):
    """report chooses runs as compare does, ids included: the page's rows are those runs."""
    make_run(tmp_path / "store", "deep")
    ch3_sweep(tmp_path / "store")
    page = tmp_path / "r.html"
    result = cli("report", "deep", f"{SWEEP}/ch3_l2,seed=*", "--runs-dir", tmp_path / "store", "-o", page)
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("compare", "deep", f"{SWEEP}/ch3_l2,seed=*", "--runs-dir", tmp_path / "store",
                          "-f", "json").stdout)
    text = page.read_text(encoding="utf-8")
    assert len(rows) == 2 and all(f'"{r["id"]}"' in text for r in rows)
    assert cli("report", "nosuch", "--runs-dir", tmp_path / "store", "-o", page).exit_code == 2
