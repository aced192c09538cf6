"""`nnexp compare` on synthetic run directories: finding runs, differing keys, seed groups,
sorting, incomplete and damaged runs, and every output format."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import pytest
from runfactory import make_run
from typer.testing import CliRunner

from nnexp import comparison as cmp
from nnexp import render
from nnexp.cli import app
from nnexp.errors import UserError
from nnexp.rundir import Run
from nnexp.config import flatten
from nnexp.runset import find_run_dirs, load_runs, read_run

from conftest import needs_mnist

DEEP = [{"type": "dense", "units": 100}, {"type": "dense", "units": 30}, {"type": "softmax", "units": 10}]


def build(tmp_path, group=True, sort="test_accuracy", descending=None):
    comparison, warnings = cmp.compare([tmp_path], sort=sort, descending=descending, group=group)
    return comparison, warnings


def labels(comparison):
    return [row.label for row in comparison.rows]


# --- flattening and differing keys ------------------------------------------------------------


def test_flatten_uses_dotted_keys_with_list_indices():
    flat = flatten({"model": {"layers": [{"type": "dense", "units": 30}]}, "training": {"eta": 0.1},
                    "data": {"augment": None}, "empty": []})
    assert flat == {"model.layers.0.type": "dense", "model.layers.0.units": 30, "training.eta": 0.1,
                    "data.augment": None, "empty": []}


def test_differing_keys_nested_values_and_layer_lists_of_different_length():
    a = flatten({"name": "a", "training": {"eta": 0.1, "epochs": 5},
                 "model": {"layers": [{"type": "dense", "units": 30}, {"type": "softmax", "units": 10}]},
                 "seed": 1})
    b = flatten({"name": "b", "training": {"eta": 0.5, "epochs": 5},
                 "model": {"layers": [{"type": "dense", "units": 30}, {"type": "dense", "units": 20},
                                      {"type": "softmax", "units": 10}]},
                 "seed": 1})
    keys = cmp.differing_keys([a, b])
    assert keys == ["training.eta", "model.layers.1.type", "model.layers.1.units",
                    "model.layers.2.type", "model.layers.2.units"]  # name ignored; extra layer kept in order


def test_differing_keys_show_a_subtree_not_its_null_parent():
    plain = flatten({"data": {"augment": None}, "training": {"eta": 0.1}})
    shifted = flatten({"data": {"augment": {"shift": 2}}, "training": {"eta": 0.1}})
    both = flatten({"data": {"augment": {"shift": 2, "rotate": 10}}, "training": {"eta": 0.1}})
    assert cmp.differing_keys([plain, shifted]) == ["data.augment.shift"]
    assert cmp.differing_keys([plain, shifted, both]) == ["data.augment.shift", "data.augment.rotate"]
    # a parent that holds a value somewhere is kept: its cell says something
    listed = flatten({"data": {"augment": "shift"}, "training": {"eta": 0.1}})
    assert set(cmp.differing_keys([listed, shifted])) == {"data.augment", "data.augment.shift"}


def test_differing_keys_of_identical_configs_is_empty(tmp_path):
    make_run(tmp_path, "first", seed=3)
    make_run(tmp_path, "second", seed=3)  # only `name` differs
    comparison, _ = build(tmp_path, group=False)
    assert comparison.keys == []
    headers, _ = render.human_table(comparison)
    assert not any("." in h for h in headers)


def test_a_key_added_to_nnexp_later_is_not_a_difference(tmp_path):
    """A run written before a config key existed is compared with that key's default."""
    import yaml

    old = make_run(tmp_path, "old", seed=3)
    make_run(tmp_path, "new", seed=3)
    path = old.path / "config.yaml"
    written = yaml.safe_load(path.read_text())
    del written["deterministic"], written["training"]["shuffle"]
    path.write_text(yaml.safe_dump(written))
    comparison, _ = build(tmp_path, group=False)
    assert comparison.keys == []


def test_real_runs_with_different_layers_show_missing_keys_as_dash(tmp_path):
    make_run(tmp_path, "shallow")
    make_run(tmp_path, "deep", layers=DEEP, sets={"training.eta": 0.5})
    comparison, _ = build(tmp_path, sort="name")
    assert "training.eta" in comparison.keys and "model.layers.2.units" in comparison.keys
    headers, cells = render.human_table(comparison)  # one architecture column for the layer keys
    assert not any(h.startswith("model.layers") for h in headers)
    by_name = {row.label.split("-")[0]: cells[i] for i, row in enumerate(comparison.rows)}
    assert by_name["shallow"][headers.index("architecture")] == "dense 30 sigmoid → softmax 10"
    assert by_name["deep"][headers.index("architecture")] == "dense 100 sigmoid → dense 30 sigmoid → softmax 10"
    assert by_name["shallow"][headers.index("η")] == "0.1"
    assert by_name["deep"][headers.index("run")] == "deep"  # different networks: named by their config


# --- grouping ---------------------------------------------------------------------------------


def make_seed_group(tmp_path):
    for seed, acc in [(1, 0.970), (2, 0.975), (3, 0.972)]:
        make_run(tmp_path, "shallow", seed=seed, val=[0.9, acc], test=[0.89, acc - 0.01], wall_time_s=10.0 * seed)


def test_seed_group_statistics_by_hand(tmp_path):
    make_seed_group(tmp_path)
    comparison, _ = build(tmp_path)
    assert len(comparison.rows) == 1 and comparison.keys == []  # seed is not a column when grouping
    row = comparison.rows[0]
    test = row.stat("test_accuracy")
    # values 0.960, 0.965, 0.962: mean 0.962333..., deviations -2.333e-3, +2.667e-3, -0.333e-3
    assert test.n == 3
    assert test.mean == pytest.approx(0.9623333333)
    assert test.std == pytest.approx(math.sqrt((2.3333e-3 ** 2 + 2.6667e-3 ** 2 + 0.3333e-3 ** 2) / 2), rel=1e-3)
    assert (test.min, test.max) == (pytest.approx(0.960), pytest.approx(0.965))
    wall = row.stat("wall_time_s")
    assert (wall.mean, wall.std) == (pytest.approx(20.0), pytest.approx(10.0))  # 10, 20, 30: sample std 10
    assert row.seeds == [1, 2, 3] and row.label == "shallow [seeds 1, 2, 3]"
    headers, cells = render.human_table(comparison)
    assert cells[0][headers.index("n")] == "3"
    assert cells[0][headers.index("test %")] == "96.23"
    assert cells[0][headers.index("test min")] == "96.00" and cells[0][headers.index("test max")] == "96.50"


def test_single_run_group_shows_std_as_dash(tmp_path):
    make_seed_group(tmp_path)
    make_run(tmp_path, "other", sets={"training.eta": 0.5}, val=[0.9, 0.91])
    comparison, _ = build(tmp_path)
    row = next(r for r in comparison.rows if not r.grouped)
    assert row.stat("test_accuracy").std is None and row.stat("test_accuracy").n == 1
    headers, cells = render.human_table(comparison)
    line = cells[comparison.rows.index(row)]
    assert line[headers.index("±")] == "-"
    assert cmp.machine_row(row, comparison)["test_accuracy_std"] is None


def test_no_group_lists_seeds_separately_with_seed_column(tmp_path):
    make_seed_group(tmp_path)
    comparison, _ = build(tmp_path, group=False)
    assert len(comparison.rows) == 3 and comparison.keys == ["seed"]
    assert "test_accuracy_std" not in cmp.machine_row(comparison.rows[0], comparison)


def test_runs_of_different_status_are_not_pooled(tmp_path):
    make_seed_group(tmp_path)
    make_run(tmp_path, "shallow", seed=4, val=[0.5], status="running")
    comparison, _ = build(tmp_path)
    assert sorted(len(r.runs) for r in comparison.rows) == [1, 3]


# --- sorting ----------------------------------------------------------------------------------


def make_three(tmp_path):
    make_run(tmp_path, "a", sets={"training.eta": 0.5}, val=[0.95], test=[0.94], wall_time_s=30)
    make_run(tmp_path, "b", sets={"training.eta": 0.1}, val=[0.97], test=[0.96], wall_time_s=10)
    make_run(tmp_path, "c", sets={"training.eta": 1.0}, val=[0.96], test=[0.92], wall_time_s=20)


def test_default_sort_is_test_accuracy_descending(tmp_path):
    make_three(tmp_path)
    comparison, _ = build(tmp_path)
    assert [l[0] for l in labels(comparison)] == ["b", "a", "c"]


@pytest.mark.parametrize("key, descending, expected", [
    ("test_accuracy", False, "cab"),
    ("training.eta", None, "bac"),  # ascending for non-accuracies
    ("training.eta", True, "cab"),
    ("wall_time_s", None, "bca"),
    ("best_validation_accuracy", None, "bca"),
    ("name", True, "cba"),
])
def test_sort_by_key_and_direction(tmp_path, key, descending, expected):
    make_three(tmp_path)
    comparison, _ = build(tmp_path, sort=key, descending=descending)
    assert "".join(l[0] for l in labels(comparison)) == expected


def test_runs_without_a_value_sort_last_in_both_directions(tmp_path):
    make_three(tmp_path)
    make_run(tmp_path, "z", val=[], status=None)
    for descending in (True, False):
        comparison, _ = build(tmp_path, descending=descending)
        assert labels(comparison)[-1].startswith("z")


def test_unknown_sort_key_lists_valid_keys(tmp_path):
    make_three(tmp_path)
    with pytest.raises(UserError, match="unknown sort key 'nope'; sort by a column \\(val, test, .*training.eta"):
        build(tmp_path, sort="nope")


# --- incomplete and damaged runs --------------------------------------------------------------


def test_incomplete_runs_are_listed_with_their_status(tmp_path):
    for status in ("running", "interrupted", "diverged", "failed"):
        make_run(tmp_path, status, val=[0.8, 0.85], status=status)
    make_run(tmp_path, "nosummary", val=[0.8, 0.9, 0.9], status=None)
    make_run(tmp_path, "starting", val=[], status=None)
    make_run(tmp_path, "dead", val=[0.8], status="running")
    live = next(p for p in tmp_path.iterdir() if p.name.startswith("running"))
    with Run(live).lock():  # a training process holds the live one; nobody holds "dead"
        comparison, warnings = build(tmp_path, sort="name", group=False)
    status = {row.label.rsplit("-", 2)[0]: row.status for row in comparison.rows}
    assert status == {"diverged": "diverged", "dead": "killed", "failed": "failed",
                      "interrupted": "interrupted", "nosummary": "unknown", "running": "running",
                      "starting": "starting"}
    assert warnings == []
    nosummary = next(r for r in comparison.rows if r.label.startswith("nosummary")).runs[0]
    # recomputed from metrics.jsonl: ties go to the later epoch, as in training
    assert nosummary.values["best_epoch"] == 3 and nosummary.values["epochs_run"] == 3
    assert nosummary.values["test_accuracy"] == pytest.approx(0.89)
    for fmt in render.FORMATS:
        render.render(comparison, fmt)


def test_diverged_run_with_nan_accuracy_does_not_break_anything(tmp_path):
    make_run(tmp_path, "ok", val=[0.9])
    make_run(tmp_path, "nan", val=[0.5, float("nan")], status="diverged")
    comparison, _ = build(tmp_path)
    record = read_run(comparison.rows[-1].runs[0].run.path)
    assert record.values["best_epoch"] == 1
    json.loads(render.to_json(comparison))


def test_damaged_run_dirs_are_skipped_with_a_one_line_warning(tmp_path):
    make_run(tmp_path, "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("[: not yaml\n  - oops")
    bad_summary = make_run(tmp_path, "badsummary")
    (bad_summary.path / "summary.json").write_text("{truncated")
    records, warnings = load_runs([tmp_path])
    assert [r.name[:4] for r in records] == ["good"]
    assert len(warnings) == 2 and all("\n" not in w and w.startswith("skipped") for w in warnings)


# --- finding runs -----------------------------------------------------------------------------


def test_globs_parent_dirs_and_duplicates(tmp_path):
    a = make_run(tmp_path / "runs", "alpha")
    b = make_run(tmp_path / "runs", "beta")
    found, warnings = find_run_dirs([str(tmp_path / "runs" / "alpha-*"), a.path])
    assert found == [a.path] and warnings == []
    found, _ = find_run_dirs([tmp_path / "runs"])
    assert sorted(found) == sorted([a.path, b.path])
    found, warnings = find_run_dirs([tmp_path / "runs", tmp_path / "missing", str(tmp_path / "x*")])
    assert len(found) == 2 and len(warnings) == 2


def test_nothing_found_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run directories found"):
        find_run_dirs([tmp_path / "empty", str(tmp_path / "nope*")])


# --- formats ----------------------------------------------------------------------------------


def make_mixed(tmp_path):
    make_seed_group(tmp_path)
    make_run(tmp_path, "deep", layers=DEEP, val=[0.95, 0.98], test=[0.94, 0.978])
    make_run(tmp_path, "running", sets={"training.eta": 0.5}, val=[0.6], status="running")
    make_run(tmp_path, "starting", sets={"training.eta": 0.7}, val=[], status=None)


@pytest.mark.parametrize("group", [True, False])
def test_csv_parses_back_to_the_same_numbers(tmp_path, group):
    make_mixed(tmp_path)
    comparison, _ = build(tmp_path, group=group)
    expected = [cmp.machine_row(row, comparison) for row in comparison.rows]
    parsed = list(csv.DictReader(io.StringIO(render.to_csv(comparison))))
    assert len(parsed) == len(expected)
    for got, want in zip(parsed, expected):
        assert list(got) == list(want)
        for key, value in want.items():
            if isinstance(value, float):
                assert float(got[key]) == value, key  # exact: written with repr
            elif value is None:
                assert got[key] == ""
        assert got["test_accuracy"] == "" or 0 <= float(got["test_accuracy"]) <= 1  # fractions


def test_json_parses_back_to_the_same_rows(tmp_path):
    make_mixed(tmp_path)
    comparison, _ = build(tmp_path)
    parsed = json.loads(render.to_json(comparison))
    assert parsed == [cmp.machine_row(row, comparison) for row in comparison.rows]
    group = next(r for r in parsed if r["n"] == 3)
    assert group["seeds"] == [1, 2, 3] and group["test_accuracy_max"] == pytest.approx(0.965)


def test_markdown_and_rich_table_have_one_line_per_row(tmp_path):
    make_mixed(tmp_path)
    comparison, _ = build(tmp_path)
    lines = render.markdown(comparison).splitlines()
    assert len(lines) == 2 + len(comparison.rows)
    assert lines[0].startswith("| run | status | best val % | ± | test % | ± |")
    assert "96.23" in render.markdown(comparison)  # percentages, 2 decimals
    table = render.render(comparison, "table").table
    assert table.row_count == len(comparison.rows)
    assert len(table.columns) == len(render.human_table(comparison)[0])


def test_text_config_columns_align_left_and_numbers_right(tmp_path):
    make_run(tmp_path, "a", sets={"training.optimizer": "adam", "training.eta": 0.001})
    make_run(tmp_path, "b", sets={"training.optimizer": "sgd", "training.eta": 0.1})
    comparison, _ = build(tmp_path)
    header, rule = render.markdown(comparison).splitlines()[:2]
    align = dict(zip([h.strip() for h in header.strip("|").split("|")], rule.strip("|").split("|")))
    assert align["optimizer"] == ":---" and align["η"] == "---:"
    table = render.render(comparison, "table").table
    justify = {c.header: c.justify for c in table.columns}
    assert justify["optimizer"] == "left" and justify["η"] == "right"


def test_unknown_format_is_a_user_error(tmp_path):
    make_run(tmp_path, "a")
    comparison, _ = build(tmp_path)
    with pytest.raises(UserError, match="unknown format 'xml'; valid: table, markdown, csv, json"):
        render.render(comparison, "xml")


# --- the command ------------------------------------------------------------------------------


def test_cli_compare_prints_tables_and_maps_errors(tmp_path):
    make_mixed(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "shallow [seeds 1, 2, 3]" in result.stdout and "96.23" in result.stdout
    result = runner.invoke(app, ["compare", str(tmp_path / "*"), "--no-group", "--format", "json",
                                 "--sort", "training.eta", "--desc"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 6 and rows[0]["training.eta"] == 0.7
    result = runner.invoke(app, ["compare", str(tmp_path), "--sort", "bogus"])
    assert result.exit_code == 2 and "unknown sort key" in result.output
    result = runner.invoke(app, ["compare", str(tmp_path / "nothing-here")])
    assert result.exit_code == 2 and "no run directories found" in result.output


# --- the book's number (reference:) -----------------------------------------------------------

BOOK = {"source": "Nielsen ch. 6", "chapter": 6, "value": 99.06, "selection": "best-of-seeds"}


def _seed_group(tmp_path, reference, tests=(0.9850, 0.9950, 0.9800)):
    """Three seeds where the best by validation (seed 1) is not the best by test (seed 2)."""
    for seed, (val, test) in enumerate(zip((0.9900, 0.9850, 0.9800), tests), start=1):
        make_run(tmp_path, "conv2", seed=seed, sets={"reference": reference},
                 val=[val - 0.01, val], test=[test - 0.01, test])
    comparison, _ = cmp.compare([tmp_path])
    (row,) = comparison.rows
    return row, cmp.machine_row(row, comparison), comparison


def test_best_of_seeds_is_chosen_by_validation_never_by_test(tmp_path):
    row, machine, _ = _seed_group(tmp_path, BOOK)
    assert row.ours() == 0.9850  # seed 1's test accuracy, not seed 2's 0.9950
    assert machine["book"] == pytest.approx(0.9906) and machine["book_difference"] == pytest.approx(-0.56)
    assert machine["book_verdict"] == "below" and machine["book_tolerance"] == 0.15  # chapter 6's default


def test_the_verdict_follows_the_stated_tolerance_and_chapter(tmp_path):
    _, machine, _ = _seed_group(tmp_path, {**BOOK, "tolerance": 0.6})
    assert machine["book_verdict"] == "reproduced"
    early = {**BOOK, "chapter": 3, "selection": "single"}  # chapters 1-3: ±1.5 points, mean of seeds
    _, machine, _ = _seed_group(tmp_path / "ch3", early, tests=(0.9950, 0.9950, 0.9950))
    assert machine["book_ours"] == pytest.approx(0.9950) and machine["book_verdict"] == "reproduced"
    assert machine["book_tolerance"] == 1.5


def test_peak_test_takes_the_highest_test_accuracy_over_the_epochs(tmp_path):
    make_run(tmp_path, "ch3", sets={"reference": {**BOOK, "chapter": 3, "value": 96.0, "selection": "peak-test"}},
             val=[0.95, 0.96, 0.955], test=[0.95, 0.948, 0.962])
    comparison, _ = cmp.compare([tmp_path])
    assert comparison.rows[0].ours() == 0.962  # epoch 3's, though epoch 2 has the best validation


def test_compare_prints_the_book_columns_in_every_format(tmp_path):
    _seed_group(tmp_path, BOOK)
    runner = CliRunner()
    table = runner.invoke(app, ["compare", str(tmp_path), "-f", "markdown"])
    assert table.exit_code == 0, table.output
    header, _, line = table.stdout.splitlines()[:3]
    assert "| test % | ± | book % | ours % | Δ | verdict |" in header
    assert "| 99.06 | 98.50 (best by val) | -0.56 | below (±0.15) |" in line
    assert "reference" not in header  # the block is not a config difference
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["compare", str(tmp_path), "-f", "csv"]).stdout)))
    assert rows[0]["book_verdict"] == "below" and rows[0]["book_selection"] == "best-of-seeds"
    data = json.loads(runner.invoke(app, ["compare", str(tmp_path), "-f", "json"]).stdout)
    assert data[0]["book_ours"] == 0.985


def test_runs_without_a_reference_get_no_book_columns(tmp_path):
    make_run(tmp_path, "plain")
    comparison, _ = cmp.compare([tmp_path])
    assert "book %" not in render.human_table(comparison)[0] and "book" not in cmp.machine_row(comparison.rows[0], comparison)


# --- fitting the terminal ---------------------------------------------------------------------


def _sets(tmp_path, kind):
    if kind == "same-architecture":
        for eta, lam in [(0.025, 5.0), (0.25, 5.0), (2.5, 0.0)]:
            make_run(tmp_path, "ch3_l2-with-a-long-name", sets={"training.eta": eta, "training.lambda": lam},
                     val=[0.9, 0.93 + eta / 100])
    elif kind == "mixed-architecture":
        make_run(tmp_path, "conv2_relu", layers=[{"type": "conv", "filters": 20, "size": 5, "pool": 2,
                                                  "activation": "relu"},
                                                 {"type": "conv", "filters": 40, "size": 5, "pool": 2,
                                                  "activation": "relu"},
                                                 {"type": "dense", "units": 100, "activation": "relu"},
                                                 {"type": "softmax", "units": 10}],
                 sets={"training.eta": 0.03, "training.lambda": 0.1}, val=[0.99, 0.9912])
        make_run(tmp_path, "saitoh_simple_convnet", layers=[{"type": "conv", "filters": 30, "size": 5, "pool": 2,
                                                             "activation": "relu"},
                                                            {"type": "dense", "units": 100, "activation": "relu"},
                                                            {"type": "softmax", "units": 10}],
                 sets={"training.optimizer": "adam", "training.eta": 0.001, "training.batch_size": 100},
                 val=[0.98, 0.989])
        make_run(tmp_path, "shallow", val=[0.97, 0.978])
    elif kind == "seed-group":
        make_seed_group(tmp_path)
        make_run(tmp_path, "shallow", seed=9, sets={"training.eta": 0.5}, val=[0.9, 0.95])
    else:  # 50 runs
        for i in range(50):
            make_run(tmp_path, "sweep", seed=i % 5, sets={"training.eta": round(0.01 * (1 + i // 5), 2)},
                     val=[0.9, 0.9 + i / 1000])


@pytest.mark.parametrize("kind", ["same-architecture", "mixed-architecture", "seed-group", "50 runs"])
@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_the_table_fits_the_terminal_and_never_cuts_labels_or_accuracies(tmp_path, kind, width):
    from rich.console import Console

    _sets(tmp_path, kind)
    comparison, _ = build(tmp_path)
    console = Console(width=width, record=True, file=io.StringIO(), highlight=False)
    console.print(render.render(comparison, "table", width=width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    for row in comparison.rows:
        # the whole label, folded between words where the terminal is narrow
        assert all(word in text for word in row.display.split()), row.display
        for metric in ("best_validation_accuracy", "test_accuracy"):
            assert f"{100 * row.stat(metric).mean:.2f}" in text
    assert "…" not in text


def test_rows_are_labelled_by_what_differs(tmp_path):
    _sets(tmp_path, "same-architecture")
    comparison, _ = build(tmp_path)
    assert sorted(r.display for r in comparison.rows) == ["η 0.025, λ 5", "η 0.25, λ 5", "η 2.5, λ 0"]
    assert sorted(label for label, _ in cmp.curves(comparison)) == ["η 0.025, λ 5", "η 0.25, λ 5", "η 2.5, λ 0"]
    _sets(tmp_path / "seeds", "seed-group")
    comparison, _ = build(tmp_path / "seeds")
    assert sorted(r.display for r in comparison.rows) == ["η 0.1 [seeds 1, 2, 3]", "η 0.5"]


def test_a_narrow_terminal_gets_one_block_per_run(tmp_path):
    _sets(tmp_path, "mixed-architecture")
    comparison, _ = build(tmp_path)
    assert render.fit(comparison, 40) is None and render.fit(comparison, None) is not None
    blocks = render.vertical(comparison, 40)
    assert blocks[0].plain == comparison.rows[0].display and "best val %" in blocks[1].plain


def test_where_status_and_last_choose_the_runs(tmp_path):
    make_three(tmp_path)  # a: eta 0.5, b: eta 0.1, c: eta 1.0, made in that order
    make_run(tmp_path, "d", sets={"training.eta": 0.2}, val=[0.5], status="interrupted")
    names = lambda **kw: sorted(r.name[0] for r in cmp.select(load_runs([tmp_path])[0], **kw))  # noqa: E731
    assert names(where=["training.eta<0.5"]) == ["b", "d"]
    assert names(where=["training.eta>=0.5", "test_accuracy>0.93"]) == ["a"]
    assert names(where=["training.eta!=0.1"]) == ["a", "c", "d"]
    assert names(status=["interrupted"]) == ["d"] and names(status=["completed"], last=1) == ["c"]
    with pytest.raises(UserError, match="no run has a key 'training.etaa' \\(did you mean 'training.eta'\\?\\)"):
        names(where=["training.etaa=1"])
    with pytest.raises(UserError, match="< needs a number"):
        names(where=["training.eta<x"])
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--where", "training.eta=0.1", "-f", "csv"])
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 2


@needs_mnist
def test_last_means_created_last_even_after_resume_set_rewrites_an_old_config(tmp_path):
    """`resume --set training.epochs=N` writes an old run's config.yaml again: --last must
    still order runs by when they were started (env.json), so the extended one stays old."""
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "data": {"train_size": 300}, "model": {
        "layers": [{"type": "dense", "units": 10}, {"type": "softmax", "units": 10}]},
        "training": {"epochs": 1, "eta": 0.5}}))
    runner = CliRunner()
    old, new = (runner.invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs"), "--set", f"seed={seed}"])
                .stdout.strip() for seed in (1, 2))
    extended = runner.invoke(app, ["resume", old, "--set", "training.epochs=2"])
    assert extended.exit_code == 0, extended.output
    assert (Run(old).path / "config.yaml").stat().st_mtime_ns > (Run(new).path / "config.yaml").stat().st_mtime_ns
    picked = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--last", "1", "-f", "json"])
    assert picked.exit_code == 0, picked.output
    assert [name for row in json.loads(picked.stdout) for name in row["runs"]] == [Run(new).name]


def test_last_orders_by_env_json_then_the_name_s_stamp_then_the_config_s_mtime(tmp_path):
    """A run's creation time: env.json's unix_time, else its ISO `started`, else the stamp in
    the directory's name (env.json missing or damaged), else config.yaml's mtime (no stamp
    either); a config written again later, as resume --set does, changes nothing."""
    envs = {"unix": ("20200101-000000", '{"unix_time": 1.9e9, "started": "2000-01-01T00:00:00+00:00"}'),
            "iso": ("20200101-000000-2", '{"unix_time": "abc", "started": "2030-01-01T00:00:00+00:00"}'),
            "newest": ("20250101-000000-2", '{"started": "not a time"}'),
            "newer": ("20240101-120001", "[1, 2]"),
            "older": ("20240101-120000", None)}
    for name, (stamp, env) in envs.items():
        path = make_run(tmp_path, name).path.rename(tmp_path / f"{name}-{stamp}")
        if env is not None:
            (path / "env.json").write_text(env)
    os.utime(tmp_path / "older-20240101-120000" / "config.yaml")  # written again, just now
    bare = make_run(tmp_path, "bare").path.rename(tmp_path / "bare")
    os.utime(bare / "config.yaml", (0, 0))
    records = load_runs([tmp_path])[0]
    newest_first = ["unix", "iso", "newest", "newer", "older", "bare"]
    for n in range(1, 7):
        assert {r.name.split("-")[0] for r in cmp.select(records, last=n)} == set(newest_first[:n]), n


def test_ungrouped_seeds_of_different_networks_are_named_and_told_apart(tmp_path):
    relu = [{"type": "dense", "units": 30, "activation": "relu"}, {"type": "softmax", "units": 10}]
    for seed in (1, 2):
        make_run(tmp_path, "sig", seed=seed, val=[0.9, 0.91 + seed / 100])
        make_run(tmp_path, "relu", layers=relu, seed=seed, val=[0.9, 0.92 + seed / 100])
    comparison, _ = build(tmp_path, group=False)
    assert sorted(r.display for r in comparison.rows) == ["relu, seed 1", "relu, seed 2", "sig, seed 1", "sig, seed 2"]
