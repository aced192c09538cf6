"""Notes and tags: why a run exists, said with --note/--tag when it is made or with `nnexp
note`/`nnexp tag` later, kept in RUN/notes.json and never in the config; read back by
`nnexp compare` (a notes column, --where tag=NAME, every format)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from runfactory import make_run, write_manifest
from test_readable import (assert_fits, assert_no_broken_words, assert_rows_whole, ch3_sweep, in_pty, lines_of,
                           shown_words)
from typer.testing import CliRunner

from nnexp import batch, render
from nnexp import comparison as cmp
from nnexp.cli import app
from nnexp.errors import UserError
from nnexp.rundir import NOTES, Notes, Run, Status, notes_given, tag_arguments
from nnexp.runset import read_run

from conftest import needs_mnist

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10}, {"type": "softmax", "units": 10}]},
        "training": {"epochs": 1, "eta": 0.5}}


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def tiny(tmp_path, name="tiny.yaml", **training) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["training"].update(training)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def notes_of(path) -> Notes:
    return Run(path).read_notes()


def only_dir(path: Path) -> Path:
    (made,) = [p for p in path.iterdir() if p.is_dir()]
    return made


# --- made with its notes: train, sweep, search ----------------------------------------------


@needs_mnist
def test_train_writes_the_note_and_tags_beside_an_unchanged_config(tmp_path):
    plain = cli("train", tiny(tmp_path), "--runs-dir", tmp_path / "a")
    noted = cli("train", tiny(tmp_path), "--runs-dir", tmp_path / "b", "--note", "baseline for ch3, first try",
                "--tag", "baseline", "--tag", "ch3", "--tag", "baseline")
    assert plain.exit_code == 0 and noted.exit_code == 0, noted.output
    run = Path(noted.stdout.strip().splitlines()[-1])
    assert notes_of(run) == Notes("baseline for ch3, first try", ("baseline", "ch3"))
    assert json.loads((run / NOTES).read_text()) == {"note": "baseline for ch3, first try", "tags": ["baseline", "ch3"]}
    other = Path(plain.stdout.strip().splitlines()[-1])
    assert (run / "config.yaml").read_text() == (other / "config.yaml").read_text()  # the same experiment
    assert "baseline" not in (run / "config.yaml").read_text() and not (other / NOTES).exists()


@needs_mnist
def test_a_run_that_fails_in_its_first_epoch_still_has_its_note(tmp_path):
    result = cli("train", tiny(tmp_path, eta=1e6), "--runs-dir", tmp_path / "runs", "--note", "how far can eta go",
                 "--tag", "probe", "--set", "model.layers.0.activation=linear", "--set", "model.init=large")
    assert result.exit_code == 1 and "diverged" in result.stderr
    run = only_dir(tmp_path / "runs")
    assert read_run(run).status == Status.DIVERGED
    assert notes_of(run) == Notes("how far can eta go", ("probe",))


def test_new_run_writes_notes_as_the_directory_is_made(tmp_path, monkeypatch):
    """`lifecycle.new_run` writes notes.json before anything trains; a directory holding only
    it is still blank, so the run starts in it."""
    from nnexp import lifecycle
    from conftest import make_config

    monkeypatch.setattr(lifecycle, "prepare", lambda cfg, data_dir=None: "checked")
    exp, run = lifecycle.new_run(make_config(), tmp_path, notes=Notes("why", ("t1",)))
    assert exp == "checked" and notes_of(run.path) == Notes("why", ("t1",))
    assert Run.is_blank(run.path) and not Run.is_run(run.path)
    _, bare = lifecycle.new_run(make_config(), tmp_path)
    assert not (bare.path / NOTES).exists()


@pytest.mark.parametrize("command", [
    ["train", "CONFIG"], ["sweep", "CONFIG", "--seeds", "2"],
    ["search", "CONFIG", "--sample", "training.eta=log-uniform:0.1:1", "--trials", "2"]])
@pytest.mark.parametrize("tag", ["bad tag", "-x", "", "a" * 41, "x/y"])
def test_a_bad_tag_is_one_line_exit_2_before_anything_is_made(tmp_path, command, tag):
    args = [str(tiny(tmp_path)) if a == "CONFIG" else a for a in command]
    result = cli(*args, "--runs-dir", tmp_path / "runs", "--tag", "ok", "--tag", tag)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and f"tag {tag!r}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_notes_given_checks_every_tag_and_gives_none_for_nothing():
    assert notes_given(None, None) is None and notes_given(None, []) is None
    assert notes_given("", None) == Notes("", ())
    assert notes_given("n", ["a", "b", "a"]) == Notes("n", ("a", "b"))
    with pytest.raises(UserError, match="tag 'a b'"):
        notes_given("n", ["ok", "a b"])


@needs_mnist
def test_every_point_a_sweep_command_starts_gets_its_notes_and_others_keep_theirs(tmp_path):
    config, runs = tiny(tmp_path), tmp_path / "runs"
    first = cli("sweep", config, "--seeds", "3", "--only", "seed=0", "--jobs", "1", "--runs-dir", runs,
                "--note", "first batch", "--tag", "a")
    assert first.exit_code == 0, first.output
    made = only_dir(runs)
    assert notes_of(made / "seed=0") == Notes("first batch", ("a",))
    assert not (made / "seed=1").exists()  # not selected: not made
    again = cli("sweep", made, "--jobs", "1", "--note", "second batch", "--tag", "b")
    assert again.exit_code == 0, again.output
    assert notes_of(made / "seed=0") == Notes("first batch", ("a",))  # it existed: keeps its own
    assert notes_of(made / "seed=1") == notes_of(made / "seed=2") == Notes("second batch", ("b",))
    # a point started over (--retry-failed) is the same point: its notes go with it
    with open(made / "seed=0" / "metrics.jsonl", "a") as f:
        f.write("5\n{\"epoch\": 9}\n")  # damaged
    retried = cli("sweep", made, "--jobs", "1", "--retry-failed", "--note", "third")
    assert retried.exit_code == 0, retried.output
    assert notes_of(made / "seed=0") == Notes("first batch", ("a",)) and read_run(made / "seed=0").status == "completed"
    (aside,) = made.glob(".damaged-*-seed=0")
    assert notes_of(aside) == Notes("first batch", ("a",))
    comparison, _ = cmp.compare([made], group=False)
    assert len(comparison.rows) == 3


class Interrupted:
    """An executor stopped (Ctrl-C) before any point started."""

    description = "interrupted"

    def run(self, tasks, on_event):
        raise KeyboardInterrupt


@needs_mnist
def test_points_get_their_notes_before_any_trains_and_an_interrupted_sweep_keeps_them(tmp_path):
    from nnexp import sweepplan as sweeps

    plan = sweeps.plan_sweep(tiny(tmp_path), sets=[], grid=["training.eta=0.5,0.25"], seeds=None, name=None)
    made = batch.new_sweep(plan, tmp_path / "runs")
    todo, before = batch.tasks(made)
    with pytest.raises(KeyboardInterrupt):
        batch.run(made, Interrupted(), todo, before, notes=Notes("eta study", ("lr",)))
    for point in made.plan.points:
        assert notes_of(made.run_path(point)) == Notes("eta study", ("lr",))
        assert made.point_status(point) == Status.PENDING  # a directory with only its notes is no damage
    result = cli("sweep", made.path, "--jobs", "1")
    assert result.exit_code == 0, result.output
    comparison, _ = cmp.compare([made.path])
    assert [r.tags for r in comparison.rows] == [["lr"], ["lr"]]
    assert all(r.status == "completed" and r.note == "eta study" for r in comparison.rows)


@needs_mnist
def test_every_trial_of_a_search_gets_its_notes(tmp_path):
    result = cli("search", tiny(tmp_path), "--sample", "training.eta=log-uniform:0.1:1", "--trials", "2",
                 "--jobs", "1", "--runs-dir", tmp_path / "runs", "--note", "where is eta best", "--tag", "search")
    assert result.exit_code == 0, result.output
    made = only_dir(tmp_path / "runs")
    points = [p for p in made.iterdir() if p.is_dir()]
    assert len(points) == 2
    assert all(notes_of(p) == Notes("where is eta best", ("search",)) for p in points)


# --- nnexp tag, nnexp note -------------------------------------------------------------------


def test_tag_adds_removes_and_prints_each_runs_tags(tmp_path):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    result = cli("tag", a.path, b.path, "+baseline", "ch3", "+keep")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{a.path}: #baseline #ch3 #keep", f"{b.path}: #baseline #ch3 #keep"]
    result = cli("tag", a.path, "-keep", "-absent", "+ch6")
    assert result.exit_code == 0 and result.stdout.strip() == f"{a.path}: #baseline #ch3 #ch6"
    assert cli("tag", b.path, "old").stdout.strip() == f"{b.path}: #baseline #ch3 #keep #old"  # the last: a tag
    assert cli("tag", b.path).stdout.strip() == f"{b.path}: #baseline #ch3 #keep #old"  # one run alone: shown
    assert cli("tag", a.path, "-baseline", "-ch3", "-ch6").stdout.strip() == f"{a.path}: (no tags)"


def test_tag_of_a_sweep_tags_its_points(tmp_path):
    sweep = ch3_sweep(tmp_path / "runs")
    result = cli("tag", sweep, "+ch3")
    assert result.exit_code == 0, result.output
    points = [p for p in sweep.iterdir() if p.is_dir()]
    assert len(result.stdout.splitlines()) == len(points) == 10
    assert all(notes_of(p).tags == ("ch3",) for p in points)


@pytest.mark.parametrize("args, words", [
    (["RUN", "+bad tag"], "tag 'bad tag'"), (["RUN", "+ok", "-"], "tag ''"), (["+ok"], "name the runs first"),
    (["RUN", "+ok", "++x"], "tag '+x'"), (["nothere", "+ok"], "no run 'nothere'")])
def test_bad_tag_arguments_are_one_line_exit_2_and_change_nothing(tmp_path, args, words):
    run = make_run(tmp_path / "runs", "a")
    run.write_notes(Notes("kept", ("old",)))
    result = cli("tag", *[run.path if a == "RUN" else a for a in args], "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and words in result.output and result.output.count("\n") == 1, result.output
    assert notes_of(run.path) == Notes("kept", ("old",))


def test_tag_arguments_read_runs_then_changes():
    assert tag_arguments(["r1", "r2", "+a", "b", "-c"]) == (["r1", "r2"], ["a", "b"], ["c"])
    assert tag_arguments(["r1", "keep"]) == (["r1"], ["keep"], [])
    assert tag_arguments(["r1"]) == (["r1"], [], [])


def test_note_sets_prints_replaces_and_clears_without_touching_the_config(tmp_path):
    run = make_run(tmp_path, "shallow")
    config = (run.path / "config.yaml").read_bytes()
    summary = (run.path / "summary.json").read_bytes()
    assert cli("tag", run.path, "+keep").exit_code == 0
    result = cli("note", run.path)
    assert result.exit_code == 0 and result.stdout == "" and "has no note" in result.stderr
    assert cli("note", run.path, "eta too high, see ch3").exit_code == 0
    assert cli("note", run.path).stdout == "eta too high, see ch3\n"
    assert cli("note", run.path, "replaced").exit_code == 0
    assert notes_of(run.path) == Notes("replaced", ("keep",))  # the tags stay
    cleared = cli("note", run.path, "")
    assert cleared.exit_code == 0 and "cleared" in cleared.stderr and notes_of(run.path) == Notes("", ("keep",))
    assert (run.path / "config.yaml").read_bytes() == config and (run.path / "summary.json").read_bytes() == summary
    bad = cli("note", tmp_path / "missing", "x")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1


@needs_mnist
def test_tagging_a_run_while_it_trains_is_safe(tmp_path):
    """The trainer never writes notes.json: tagging takes only notes.json's own lock, waits
    for nothing and disturbs nothing the run writes."""
    config = tiny(tmp_path, epochs=400, **{"early_stopping": {"patience": None}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", "train", str(config), "--runs-dir", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("*/metrics.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.1)
        run = only_dir(tmp_path / "runs")
        during = []
        for i in range(5):
            assert cli("tag", run, f"+t{i}").exit_code == 0
            assert cli("note", run, f"note {i}").exit_code == 0
            during.append(read_run(run).status)
    finally:
        proc.send_signal(signal.SIGTERM)  # stops at its last epoch, resumable, as Ctrl-C does
        proc.communicate(timeout=120)
    assert Status.RUNNING in during  # it was training while tagged
    record = read_run(run)
    assert record.status == Status.INTERRUPTED and len(record.metrics) >= 1
    assert record.notes == Notes("note 4", tuple(f"t{i}" for i in range(5)))


def test_two_writers_of_notes_keep_each_others_changes(tmp_path):
    """`nnexp tag` reads, changes and writes notes.json under its lock: started while another
    process holds that lock (here this test, which adds a tag of its own meanwhile), it waits,
    then reads the notes as they are, so both tags stay."""
    run = make_run(tmp_path / "runs", "r")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with run._notes_lock():
        proc = subprocess.Popen([sys.executable, "-m", "nnexp", "tag", str(run.path), "+theirs"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            # waiting: Linux lists a process blocked on a lock in /proc/locks, behind "->"
            deadline = time.monotonic() + 60
            while not any(line.split()[1] == "->" and line.split()[5] == str(proc.pid)
                          for line in Path("/proc/locks").read_text().splitlines()):
                assert proc.poll() is None, proc.communicate()  # it finished without waiting
                assert time.monotonic() < deadline, "nnexp tag never waited on the notes' lock"
                time.sleep(0.05)
            run.write_notes(run.read_notes().tagged(["mine"], []))
        except BaseException:
            proc.kill()
            raise
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert run.read_notes().tags == ("mine", "theirs")
    assert stdout.strip() == f"{run.path}: #mine #theirs"
    made = tmp_path / "made"  # what a run directory holds before it trains, the lock file included
    made.mkdir()
    (made / ".notes.lock").touch()
    (made / NOTES).write_text('{"note": "", "tags": ["x"]}')
    assert Run.is_blank(made)


# --- compare: the notes column, --where tag, every format -----------------------------------


def noted_runs(root: Path) -> None:
    """A seed group whose runs say different things, a tagged run and a silent one."""
    for seed, note, tags in ((1, "first seed", ("baseline",)), (2, "second seed", ("baseline", "ch3")),
                             (3, "", ("keep",))):
        make_run(root, "shallow", seed=seed, val=[0.9, 0.95 + seed / 1000]).write_notes(Notes(note, tags))
    make_run(root, "deep", sets={"training.eta": 0.5}, val=[0.9, 0.97]).write_notes(Notes("deeper", ("ch3",)))
    make_run(root, "silent", sets={"training.eta": 0.25}, val=[0.9, 0.93])


def test_notes_never_split_a_group_and_a_group_shows_their_union(tmp_path):
    noted_runs(tmp_path)
    comparison, _ = cmp.compare([tmp_path])
    assert len(comparison.rows) == 3
    group = next(r for r in comparison.rows if r.grouped)
    assert len(group.runs) == 3
    assert group.note == "first seed; second seed" and group.tags == ["baseline", "ch3", "keep"]
    headers, cells = render.human_table(comparison)
    names = [row.runs[0].config["name"] for row in comparison.rows]
    notes = dict(zip(names, [line[headers.index("notes")] for line in cells]))
    assert notes == {"shallow": "first seed; second seed #baseline #ch3 #keep", "silent": "-", "deep": "deeper #ch3"}


def test_a_note_changes_no_config_label_grouping_or_book_reference(tmp_path):
    ch3_sweep(tmp_path / "plain")
    ch3_sweep(tmp_path / "noted")
    for i, point in enumerate(sorted(p for p in (tmp_path / "noted").rglob("*,seed=*") if p.is_dir())):
        assert cli("note", point, f"note {i}").exit_code == 0 and cli("tag", point, f"+t{i % 3}").exit_code == 0
    plain, _ = cmp.compare([tmp_path / "plain"])
    noted, _ = cmp.compare([tmp_path / "noted"])
    strip = lambda row: {k: v for k, v in cmp.machine_row(row, noted).items() if k not in ("note", "tags")}  # noqa: E731
    assert [strip(r) for r in noted.rows] == [strip(r) for r in plain.rows]  # labels, ids, verdicts, groups
    assert [r.display for r in noted.rows] == [r.display for r in plain.rows]
    assert all(r.note for r in noted.rows) and not any(r.note or r.tags for r in plain.rows)
    for a, b in zip(noted.rows, plain.rows):
        assert [r.config for r in a.runs] == [r.config for r in b.runs]


def test_where_tag_chooses_runs_with_or_without_a_tag(tmp_path):
    noted_runs(tmp_path)
    tagged, _ = cmp.compare([tmp_path], where=["tag=ch3"], group=False)
    assert sorted((r.runs[0].config["name"], r.runs[0].config["seed"]) for r in tagged.rows) == [
        ("deep", 0), ("shallow", 2)]
    untagged, _ = cmp.compare([tmp_path], where=["tag!=baseline"], group=False)
    assert sorted(r.runs[0].config["name"] for r in untagged.rows) == ["deep", "shallow", "silent"]
    both, _ = cmp.compare([tmp_path], where=["tag=baseline", "tag=ch3"])
    assert [r.tags for r in both.rows] == [["baseline", "ch3"]]
    numeric = make_run(tmp_path, "n", sets={"training.eta": 0.75})
    numeric.write_notes(Notes("", ("1", "yes")))  # tag=1, tag=yes name tags, not a number or a boolean
    assert len(cmp.compare([tmp_path], where=["tag=1"])[0].rows) == 1
    assert len(cmp.compare([tmp_path], where=["tag=yes"])[0].rows) == 1
    result = cli("compare", tmp_path, "--where", "tag=ch3", "-f", "json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 2


@pytest.mark.parametrize("where, words", [("tag<3", "a tag is matched with = or !="),
                                          ("tag=a b", "tag 'a b'"), ("tags=x", "did you mean 'tag'")])
def test_a_bad_where_tag_is_one_line_exit_2(tmp_path, where, words):
    noted_runs(tmp_path)
    result = cli("compare", tmp_path, "--where", where)
    assert result.exit_code == 2 and words in result.output and result.output.count("\n") == 1, result.output


def test_where_tag_that_no_run_has_matches_nothing(tmp_path):
    noted_runs(tmp_path)
    with pytest.raises(UserError, match="no run matches"):
        cmp.compare([tmp_path], where=["tag=nobody"])


def test_every_format_carries_the_notes(tmp_path):
    noted_runs(tmp_path)
    comparison, _ = cmp.compare([tmp_path])
    rows = {r["name"]: r for r in json.loads(render.to_json(comparison))}
    group = next(r for r in rows.values() if r["n"] == 3)
    assert group["note"] == "first seed; second seed" and group["tags"] == ["baseline", "ch3", "keep"]
    silent = next(r for r in rows.values() if r["runs"][0].startswith("silent"))
    assert silent["note"] == "" and silent["tags"] == []
    parsed = list(csv.DictReader(io.StringIO(render.to_csv(comparison))))
    by_note = {r["note"]: r["tags"] for r in parsed}
    assert by_note == {"first seed; second seed": "baseline ch3 keep", "deeper": "ch3", "": ""}
    markdown = render.markdown(comparison)
    header = markdown.splitlines()[0]
    assert "| notes |" in header or header.endswith("| notes |") or " notes " in header
    assert "first seed; second seed #baseline #ch3 #keep" in markdown and "deeper #ch3" in markdown
    console = render.Console(width=300, record=True, file=io.StringIO(), markup=False)
    console.print(render.render(comparison, "table", width=None))  # a pipe's table: every column
    text = console.export_text()
    assert "notes" in text and "deeper #ch3" in text and "first seed; second seed #baseline #ch3 #keep" in text


def test_no_notes_no_column_but_machine_rows_always_have_the_fields(tmp_path):
    make_run(tmp_path, "a", sets={"training.eta": 0.5})
    make_run(tmp_path, "b")
    comparison, _ = cmp.compare([tmp_path])
    assert "notes" not in render.human_table(comparison)[0]
    assert all(r["note"] == "" and r["tags"] == [] for r in json.loads(render.to_json(comparison)))
    assert "note,tags" in render.to_csv(comparison).splitlines()[0]


def test_a_long_note_folds_in_its_cell_and_never_pushes_out_the_answer(tmp_path):
    sweep = ch3_sweep(tmp_path / "runs")
    long = ("tried again after fixing the data loader; compare with the one from last week before "
            "trusting the test number")
    for point in sorted(p for p in sweep.iterdir() if p.is_dir())[:4]:
        Run(point).write_notes(Notes(long, ("baseline", "ch3")))
    comparison, _ = cmp.compare([tmp_path / "runs"])
    for width in (80, 100, 120, 160, 200, 240):
        fitted = render.render(comparison, "table", width=width)
        headers = [c.header.replace("\n", " ") for c in fitted.table.columns]
        for header in ("run", "status", "best val %", "test %", "book %", "ours %", "Δ", "verdict"):
            assert header in headers, (width, headers)
        console = render.Console(width=width, record=True, file=io.StringIO(), markup=False)
        console.print(fitted)
        text = console.export_text()
        assert_fits(text, width)
        assert_no_broken_words(text, shown_words(comparison, width))
        if width < 200:  # the secondary column goes before anything the answer needs
            continue
        assert "notes" in headers and "#baseline" in text
        (notes,) = [c for c in fitted.table.columns if c.header == "notes"]
        assert notes.width < len(long)  # folded inside its cell, every word whole
        assert {w.strip(";") for w in long.split()} <= {w.strip(";") for w in text.split()}


@pytest.mark.parametrize("columns", [80, 120])
def test_compare_with_notes_in_a_terminal_keeps_the_answer_and_the_verdicts(tmp_path, columns):
    sweep = ch3_sweep(tmp_path / "runs")
    for i, point in enumerate(sorted(p for p in sweep.iterdir() if p.is_dir())):
        Run(point).write_notes(Notes(f"a rather long note about point {i} that needs folding", ("ch3", f"p{i}")))
    comparison, _ = cmp.compare([tmp_path / "runs"])
    text = in_pty(["compare", "runs"], columns, tmp_path)
    assert_fits(text, columns)
    assert_no_broken_words(text, shown_words(comparison, columns))
    header = next(line for line in lines_of(text) if "status" in line)
    assert header.startswith("run") and "status" in header
    verdicts = [w for line in lines_of(text) for w in line.split() if w in ("reproduced", "above", "below")]
    assert len(verdicts) == len(comparison.rows)
    assert "more columns" in text  # the notes too, where the book's columns take the width


@pytest.mark.parametrize("columns", [80, 120])
def test_a_terminal_with_room_shows_the_notes_folded_in_their_cells(tmp_path, columns):
    long = "lowered eta after the first run overshot; compare with last week's before trusting it"
    for i, eta in enumerate((0.1, 0.25, 0.5)):
        run = make_run(tmp_path / "runs", "a", sets={"training.eta": eta}, val=[0.9, 0.95 + i / 100])
        run.write_notes(Notes(long if i else "", ("ch1", f"try{i}")))
    comparison, _ = cmp.compare([tmp_path / "runs"])
    text = in_pty(["compare", "runs"], columns, tmp_path)
    assert_fits(text, columns)
    assert_no_broken_words(text, shown_words(comparison, columns))
    assert_rows_whole(text, comparison)
    header = next(line for line in lines_of(text) if "status" in line)
    assert header.startswith("run") and header.rstrip().endswith("notes")
    words = {w for line in lines_of(text) for w in line.split()}
    assert {"#ch1", "#try0", "#try1", "#try2", "overshot;", "trusting"} <= words
    if columns == 80:
        assert not any(long in line for line in lines_of(text))  # folded, not on one line


def test_notes_are_no_sort_key(tmp_path):
    noted_runs(tmp_path)
    with pytest.raises(UserError, match="unknown sort key 'note'"):
        cmp.compare([tmp_path], sort="note")


def test_a_damaged_notes_file_reads_as_no_notes(tmp_path):
    run = make_run(tmp_path, "a")
    (run.path / NOTES).write_text("{not json")
    assert read_run(run.path).notes == Notes()
    assert cli("tag", run.path, "+fresh").stdout.strip() == f"{run.path}: #fresh"
