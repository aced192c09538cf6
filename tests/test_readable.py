"""Which run won, and why, in any terminal: compare, the sweep's final table, ensemble,
gradcheck and the comparison plot, read as a person reads them.

The terminal tests run `nnexp` in a real pseudo-terminal of 80 and of 120 columns (its
window size set with TIOCSWINSZ, COLUMNS and LINES to match) over (a) five runs of five
configs, (b) chapter 3 configs with the book's references, as a sweep, and (c) fifty runs:
no line wider than the terminal, no word broken across lines, every row's validation and
test accuracy whole, and at 80 columns every row's verdict.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from runfactory import make_run, write_manifest
from typer.testing import CliRunner

from nnexp import comparison as cmp
from nnexp import config, plots, render
from nnexp.cli import app
from nnexp.errors import UserError
from nnexp.gradcheck import gradcheck
from nnexp.sweepplan import plan_sweep

from conftest import needs_mnist

ROOT = Path(__file__).resolve().parents[1]
SIGMOID_OUT = {"type": "dense", "units": 10, "activation": "sigmoid"}
TINY = [{"type": "dense", "units": 10}, {"type": "softmax", "units": 10}]  # cheap to vote with
BOOK = {"source": "Nielsen ch. 3", "chapter": 3}
CH3 = {  # name: (book %, selection, hidden units, overrides): chapter 3's configs, in brief
    "ch3_cross_entropy": (95.49, "peak-test", 30, {}),
    "ch3_cross_entropy_100": (96.82, "peak-test", 100, {}),
    "ch3_l2": (96.49, "peak-test", 30, {"training.lambda": 5.0}),
    "ch3_l2_100": (97.92, "single", 100, {"training.lambda": 5.0}),
    "ch3_l2_1000": (87.1, "single", 30, {"training.lambda": 0.1, "data.train_size": 1000}),
}


# --- a real terminal --------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def in_pty(args: list[str], columns: int, cwd: Path, timeout: float = 300) -> str:
    """`nnexp ARGS` with stdout and stderr on a pseudo-terminal `columns` wide; what it
    showed, escape sequences removed, one string per line as the terminal drew it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm-256color",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"nnexp {' '.join(args)} gave no output for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal (EIO)
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    assert proc.returncode == 0, text
    return text.replace("\r\n", "\n")


def lines_of(text: str) -> list[str]:
    """The lines as drawn: a carriage return starts the line over (live displays)."""
    return [part for line in text.split("\n") for part in line.split("\r")]


def assert_fits(text: str, width: int) -> None:
    too_wide = [line for line in lines_of(text) if len(line.rstrip()) > width]
    assert not too_wide, f"wider than {width}: {too_wide[:3]}"


def _bare(word: str) -> str:
    return word.strip(",;:()[]")


def shown_words(comparison, width: int) -> set[str]:
    """Every word any cell, header or note of the comparison's terminal table can hold."""
    cols = render.columns(comparison, terse=True) + render.columns(comparison, terse=True, compact=True)
    texts = [h for h, _, _ in cols] + [c for _, _, cells in cols for c in cells]
    texts += render.table_notes(comparison, True) + render.hidden_note([h for h, _, _ in cols], None)
    texts += [row.display for row in comparison.rows] + ["more columns column --wide -f markdown shows them"]
    counts = {str(n) for n in range(len(cols) + 1)}  # "12 more columns"
    return {_bare(w) for text in texts for w in text.split()} | {"", "·"} | counts


def assert_no_broken_words(text: str, known: set[str]) -> None:
    """A word cut at the terminal's edge (`5,00` / `0`) is no word of any cell."""
    unknown = {w for line in lines_of(text) for w in map(_bare, line.split()) if w not in known and set(w) != {"─"}}
    assert not unknown, f"words not in any cell, header or note (broken?): {sorted(unknown)[:10]}"


def assert_rows_whole(text: str, comparison) -> None:
    """Every row's validation and test accuracy printed whole, and its label's words."""
    words = {_bare(w) for line in lines_of(text) for w in line.split()}
    for row in comparison.rows:
        for metric in ("best_validation_accuracy", "test_accuracy"):
            assert f"{100 * row.stat(metric).mean:.2f}" in words, (row.display, metric)
        assert all(_bare(w) in words for w in row.display.split()), row.display


# --- the three sets ---------------------------------------------------------------------------


def five_configs(root: Path, *, checkpoint: bool = False) -> None:
    """(a): five runs of five different configs, as `nnexp compare runs/*` meets them."""
    conv = [{"type": "conv", "filters": 20, "size": 5, "pool": 2, "activation": "relu"},
            {"type": "dense", "units": 100, "activation": "relu"}, {"type": "softmax", "units": 10}]
    specs = [("ch3_cross_entropy", [{"type": "dense", "units": 30}, SIGMOID_OUT],
              {"training.cost": "cross-entropy", "training.eta": 0.5, "model.init": "large", "training.l2": "network2"}),
             ("conv2_relu", conv, {"training.eta": 0.03, "training.lambda": 0.1}),
             ("saitoh_simple_convnet", conv, {"training.optimizer": "adam", "training.eta": 0.001,
                                             "training.batch_size": 100}),
             ("shallow", [{"type": "dense", "units": 100}, {"type": "softmax", "units": 10}], {}),
             ("ch1_quadratic", [{"type": "dense", "units": 30}, SIGMOID_OUT],
              {"training.cost": "quadratic", "training.eta": 3.0, "data.train_size": 5000})]
    for i, (name, layers, sets) in enumerate(specs):
        if checkpoint:  # small nets to vote with, and the cost their softmax needs
            layers, sets = TINY, {k: v for k, v in sets.items() if k != "training.cost"}
        make_run(root, name, layers=layers, sets=sets, seed=1,
                 val=[0.9, 0.95 + i / 100], test=[0.89, 0.948 + i / 100], checkpoint=checkpoint)


def ch3_sweep(root: Path, seeds=(1, 2), *, checkpoint: bool = False) -> Path:
    """(b): chapter 3's configs with the book's references, as the points of one sweep
    (`checkpoint`: with small nets' parameters, to vote with)."""
    sweep = root / "ch3-20261130-201206"
    sweep.mkdir(parents=True)
    for name, (value, selection, units, sets) in CH3.items():
        for seed in seeds:
            layers = TINY if checkpoint else [{"type": "dense", "units": units}, SIGMOID_OUT]
            run = make_run(sweep, name, seed=seed, layers=layers, checkpoint=checkpoint,
                           sets={"training.cost": "log-likelihood" if checkpoint else "cross-entropy",
                                 "training.eta": 0.5, **sets,
                                 "reference": {**BOOK, "value": value, "selection": selection}},
                           val=[0.9, value / 100 - 0.002 * seed], test=[0.89, value / 100 - 0.003 * seed])
            run.path.rename(sweep / f"{name},seed={seed}")
    return write_manifest(sweep)


def fifty_runs(root: Path, *, checkpoint: bool = False) -> None:
    """(c): fifty runs, ten values of η by five seeds."""
    for i in range(50):
        make_run(root, "sweep", seed=i % 5, sets={"training.eta": round(0.01 * (1 + i // 5), 2)},
                 layers=TINY if checkpoint else None, val=[0.9, 0.9 + i / 1000], checkpoint=checkpoint)


SETS = {"five configs": five_configs, "ch3 sweep": ch3_sweep, "fifty runs": fifty_runs}


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("kind", list(SETS))
def test_compare_in_a_terminal_fits_and_answers_first(tmp_path, kind, columns):
    SETS[kind](tmp_path / "runs")
    comparison, _ = cmp.compare([tmp_path / "runs"])
    text = in_pty(["compare", "runs"], columns, tmp_path)
    assert_fits(text, columns)
    assert_rows_whole(text, comparison)
    assert_no_broken_words(text, shown_words(comparison, columns))
    header = next(line for line in lines_of(text) if "status" in line)
    assert header.startswith("run") and "status" in header
    if kind == "ch3 sweep":
        verdicts = [w for line in lines_of(text) for w in line.split() if w in ("reproduced", "above", "below")]
        assert len(verdicts) == len(comparison.rows)  # every row's verdict, at 80 columns too
    if "more column" in text:  # what was left out, and how to see it, in one line
        (note,) = [line for line in lines_of(text) if "more column" in line]
        assert "--wide" in note and "-f markdown" in note


@needs_mnist
def test_a_sweep_of_chapter_3_configs_prints_its_table_in_a_terminal(tmp_path):
    """(b) as a real sweep: its final table at 80 columns, and again (`nnexp sweep DIR`,
    every point done) at 120, with the book's verdict on every row."""
    paths = []
    for name in CH3:
        raw = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        raw["data"] = {**raw.get("data", {}), "train_size": 300}  # in the file: the reference stays
        raw["training"].update(epochs=1)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        paths.append(f"{name}.yaml")
    (tmp_path / "ch3.yaml").write_text(yaml.safe_dump({"name": "ch3", "config": paths, "seeds": [1, 2]}))
    text = in_pty(["sweep", "ch3.yaml", "--jobs", "1", "--runs-dir", "runs"], 80, tmp_path, timeout=600)
    (sweep,) = (tmp_path / "runs").iterdir()
    comparison, _ = cmp.compare([sweep], sort="best_validation_accuracy")
    assert len(comparison.rows) == len(CH3) and all(row.reference for row in comparison.rows)
    for columns, shown in ((80, text), (120, in_pty(["sweep", f"runs/{sweep.name}"], 120, tmp_path))):
        assert_fits(shown, columns)
        table = shown[shown.rindex("status"):]
        assert_rows_whole(table, comparison)
        verdicts = [w for line in lines_of(table) for w in line.split() if w in ("reproduced", "above", "below")]
        assert len(verdicts) == len(comparison.rows), table
        flat = " ".join(shown.split())
        assert "10 points" in flat and f"runs/{sweep.name}" in flat  # its path whole, on one line


@needs_mnist
@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("kind", ["five configs", "fifty runs"])
def test_ensemble_renders_its_table_in_a_terminal(tmp_path, kind, columns):
    SETS[kind](tmp_path / "runs", checkpoint=True)
    text = in_pty(["ensemble", "runs"], columns, tmp_path)
    assert_fits(text, columns)
    assert "[bold]" not in text and "[/]" not in text  # styled, not printed as markup
    n = len(list((tmp_path / "runs").iterdir()))
    assert f"ensemble of {n}" in text and "10,000" in text
    names = {p.name for p in (tmp_path / "runs").iterdir()}
    words = {_bare(w) for line in lines_of(text) for w in line.split()}
    assert names <= words  # every member's name whole


@needs_mnist
@pytest.mark.parametrize("columns", [80, 120])
def test_ensemble_of_a_ch3_sweep_in_a_terminal(tmp_path, columns):
    sweep = ch3_sweep(tmp_path / "runs", checkpoint=True)
    text = in_pty(["ensemble", f"runs/{sweep.name}"], columns, tmp_path)
    assert_fits(text, columns)
    assert "[bold]" not in text and f"ensemble of {2 * len(CH3)}" in text
    words = {_bare(w) for line in lines_of(text) for w in line.split()}
    assert {p.name for p in sweep.iterdir() if p.is_dir()} <= words


def test_the_ensemble_table_is_styled_not_marked_up():
    from nnexp.ensemble import EnsembleResult, Member

    members = [Member("seed=1", 0.99, 100, 0.991), Member("seed=2", 0.98, 200, 0.981)]
    result = EnsembleResult(members, 0.995, 50, 10_000, np.zeros(1), None, 0.996)
    console = Console(width=80, record=True, file=io.StringIO(), markup=False)  # as nnexp's consoles
    console.print(render.ensemble_table(result, "best", 80))
    text = console.export_text()
    assert "[bold]" not in text and "ensemble of 2" in text and "50 of 10,000" in text


# --- 1. the answer first; what was left out, said ---------------------------------------------


def test_book_columns_never_drop_before_what_differs_and_the_note_says_what_was_left_out(tmp_path):
    ch3_sweep(tmp_path)
    comparison, _ = cmp.compare([tmp_path])
    fitted = render.render(comparison, "table", width=80)
    headers = [c.header.replace("\n", " ") for c in fitted.table.columns]
    assert headers[:2] == ["run", "status"]
    for header in ("book %", "ours %", "Δ", "verdict"):
        assert header in headers, headers
    assert not {"epochs", "wall time", "λ"} & set(headers)
    (note,) = [n for n in fitted.notes if "more column" in n]
    assert note.startswith(f"{len(render.columns(comparison)) - len(headers) - 2} more columns")  # the ± joined
    assert "--wide" in note and "-f markdown" in note and len(note) <= 80


def test_the_block_layout_fits_the_terminal_too(tmp_path):
    for i, name in enumerate(["a_config_with_a_rather_long_name_indeed", "another_config_with_a_long_name_too"]):
        make_run(tmp_path, name, sets={"training.eta": 0.1 * (i + 1)}, val=[0.9, 0.95])
    comparison, _ = cmp.compare([tmp_path])
    fitted = render.render(comparison, "table", width=30)
    assert fitted.table is None  # even the answer does not fit: one block per row
    console = Console(width=30, record=True, file=io.StringIO())
    console.print(fitted)
    assert_fits(console.export_text(), 30)


def test_wide_prints_every_column_on_a_terminal(tmp_path):
    five_configs(tmp_path / "runs")
    text = in_pty(["compare", "runs", "--wide"], 80, tmp_path)
    assert "backend/device" in text and "more column" not in text


@needs_mnist
def test_train_messages_break_between_words_and_count_epochs_right(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "ch3_l2.yaml").read_text())
    raw["data"] = {"train_size": 5000}
    raw["training"].update(epochs=1)
    raw["model"]["layers"][0]["units"] = 10
    (tmp_path / "a_config_whose_name_is_long_enough_to_wrap.yaml").write_text(yaml.safe_dump(raw))
    text = in_pty(["train", "a_config_whose_name_is_long_enough_to_wrap.yaml", "--runs-dir", "runs",
                   "training.eta=0.4"], 80, tmp_path)
    assert_fits(text, 80)
    flat = " ".join(text.split())  # a word broken at the edge would not survive this
    assert "5,000 training images" in flat and "(1 epoch," in flat and "1 epochs" not in flat
    # the override took the book's number away: said in one line
    (line,) = [line for line in lines_of(text) if "not compared with the book's" in line]
    assert line == "not compared with the book's 96.49%: training.eta changed the experiment"


# --- 2. short labels ----------------------------------------------------------------------------


def test_labels_are_the_name_then_what_differs_within_that_name(tmp_path):
    """The issue's 150-character label: what differs across the table is in columns."""
    for init in ("large", "network2"):
        for seed in (1, 2):
            make_run(tmp_path, "ch3_cross_entropy", seed=seed, layers=[{"type": "dense", "units": 30}, SIGMOID_OUT],
                     sets={"model.init": init, "training.cost": "cross-entropy", "training.eta": 0.5,
                           "training.l2": "network2", "data.train_size": 10000, "training.shuffle": True})
    make_run(tmp_path, "shallow", layers=[{"type": "dense", "units": 100}, {"type": "softmax", "units": 10}])
    make_run(tmp_path, "ch3_l2", sets={"training.lambda": 5.0, "training.monitor_train": True})
    comparison, _ = cmp.compare([tmp_path])
    labels = sorted(row.display for row in comparison.rows)
    assert labels == ["ch3_cross_entropy, model.init large [seeds 1, 2]",
                      "ch3_cross_entropy, model.init network2 [seeds 1, 2]", "ch3_l2", "shallow"]
    assert all(len(label) <= 55 for label in labels)
    headers, _ = render.human_table(comparison)
    assert {"model.init", "cost", "train_size", "λ", "monitor_train"} <= set(headers)


def test_long_values_fold_inside_their_cell_between_words(tmp_path):
    deep = [{"type": "dense", "units": 100}, {"type": "dense", "units": 100}, {"type": "dense", "units": 100},
            {"type": "softmax", "units": 10}]
    make_run(tmp_path, "deep", layers=deep, sets={"data.augment": {"shift": 2, "rotate": 10}}, val=[0.9, 0.96])
    make_run(tmp_path, "shallow", val=[0.9, 0.95])
    comparison, _ = cmp.compare([tmp_path])
    for width in (80, 100):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(render.render(comparison, "table", width=width))
        text = console.export_text()
        assert_fits(text, width)
        assert_no_broken_words(text, shown_words(comparison, width))


# --- 3. sorting ---------------------------------------------------------------------------------


def test_the_default_sort_is_validation_accuracy(tmp_path):
    """The issue's case: seed 2 has the better validation, seed 1 the better test."""
    make_run(tmp_path, "ch3", seed=1, sets={"training.eta": 5.0}, val=[0.8, 0.8930], test=[0.8, 0.8921])
    make_run(tmp_path, "ch3", seed=2, sets={"training.eta": 5.0}, val=[0.8, 0.8958], test=[0.8, 0.8866])
    comparison, _ = cmp.compare([tmp_path], group=False)
    assert [row.display for row in comparison.rows] == ["seed 2", "seed 1"]
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--no-group", "-f", "csv"])
    assert [row["seeds"] for row in csv.DictReader(io.StringIO(result.stdout))] == ["2", "1"]


@pytest.mark.parametrize("key, expected", [("val", "bca"), ("best val %", "bca"), ("test", "bac"),
                                           ("test %", "bac"), ("η", "bac"), ("eta", "bac"), ("wall time", "bca"),
                                           ("VAL", "bca")])
def test_sort_keys_are_the_headers_and_short_names(tmp_path, key, expected):
    make_run(tmp_path, "a", sets={"training.eta": 0.5}, val=[0.95], test=[0.94], wall_time_s=30)
    make_run(tmp_path, "b", sets={"training.eta": 0.1}, val=[0.97], test=[0.96], wall_time_s=10)
    make_run(tmp_path, "c", sets={"training.eta": 1.0}, val=[0.96], test=[0.92], wall_time_s=20)
    comparison, _ = cmp.compare([tmp_path], sort=key)
    assert "".join(row.display[0] for row in comparison.rows) == expected


def test_a_misspelt_sort_key_gets_a_suggestion_not_a_hundred_names(tmp_path):
    make_run(tmp_path, "a")
    with pytest.raises(UserError, match=r"unknown sort key 'vall' \(did you mean 'val'") as error:
        cmp.compare([tmp_path], sort="vall")
    assert len(str(error.value)) < 200
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--sort", "best val"])
    assert result.exit_code == 2 and "did you mean 'best val %'" in result.output


# --- 4. ids -------------------------------------------------------------------------------------


def test_each_row_shows_the_id_that_finds_it_again(tmp_path):
    alone = make_run(tmp_path / "runs", "shallow")
    ch3_sweep(tmp_path / "runs")
    comparison, _ = cmp.compare([tmp_path / "runs"])
    headers, cells = render.human_table(comparison)
    ids = [line[headers.index("id")] for line in cells]
    assert alone.name in ids and "ch3-20261130-201206/ch3_l2,seed=*" in ids
    for row in comparison.rows:
        found = sorted((tmp_path / "runs").glob(row.id))
        assert [p.name for p in found] == sorted(r.name for r in row.runs)  # the glob finds just them
    sweep_only, _ = cmp.compare([tmp_path / "runs" / "ch3-20261130-201206"], group=False)
    headers, cells = render.human_table(sweep_only)
    assert "point" in headers and "ch3_l2,seed=1" in [line[headers.index("point")] for line in cells]
    data = json.loads(render.to_json(sweep_only))
    assert "ch3-20261130-201206/ch3_l2,seed=1" in [row["id"] for row in data]


# --- 5. seeds, nulls, float noise -----------------------------------------------------------------


def test_a_repeated_seed_is_not_pooled_as_another_seed(tmp_path):
    for seed in (1, 1, 2):
        make_run(tmp_path, "shallow", seed=seed, val=[0.9, 0.95 + seed / 100])
    comparison, warnings = cmp.compare([tmp_path])
    assert sorted(row.seeds for row in comparison.rows) == [[1], [1, 2]]
    assert not any(row.display.count("1,") > 1 or "1, 1" in row.display for row in comparison.rows)
    (warning,) = warnings
    assert "2 runs of shallow" in warning and "seed 1" in warning and "not pooled" in warning
    result = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 0 and "not pooled as seeds" in result.output


def test_null_train_size_reads_all(tmp_path):
    make_run(tmp_path, "shallow", val=[0.9, 0.95])
    make_run(tmp_path, "shallow", sets={"data.train_size": 1000}, val=[0.9, 0.9])
    comparison, _ = cmp.compare([tmp_path])
    headers, cells = render.human_table(comparison)
    assert sorted(line[headers.index("train_size")] for line in cells) == ["1000", "all"]
    assert sorted(row.display for row in comparison.rows) == ["train_size 1000", "train_size all"]


def test_csv_and_json_numbers_carry_no_float_noise(tmp_path):
    for seed, (val, test) in enumerate([(0.9, 0.97), (0.9, 0.98), (0.9, 0.991)], start=1):
        make_run(tmp_path, "conv2_relu", seed=seed, val=[val], test=[test],
                 sets={"reference": {**BOOK, "chapter": 6, "value": 99.23, "selection": "single"}})
    comparison, _ = cmp.compare([tmp_path])
    text = render.to_csv(comparison) + render.to_json(comparison)
    assert not re.search(r"\d\.\d*(0000000|9999999)\d", text), text
    (row,) = csv.DictReader(io.StringIO(render.to_csv(comparison)))
    assert row["book"] == "0.9923" and row["test_accuracy"] == "0.980333333333"


# --- 5. gradcheck -------------------------------------------------------------------------------


def test_gradcheck_shows_the_real_relative_error_and_marks_the_noise_floor():
    """Large weights and λ 5 make a cost of ~6e4, whose rounding swamps gradients of 1e-7:
    such an entry's relative error is shown as it is, marked, and does not fail."""
    cfg = config.load(ROOT / "configs" / "ch3_l2_1000.yaml", ["training.lambda=5", "model.init=large"])
    _, results = gradcheck(cfg, examples=3, max_entries=30)
    assert all(r.ok for r in results)
    noisy = [r for r in results if r.under_noise]
    assert noisy and all(r.relative_error > 0 for r in noisy)
    fitted = render.gradcheck_table(results, "check", 120)
    (column,) = [c for c in fitted.table.columns if c.header == "rel. error"]
    cells = [str(c) for c in column._cells]
    assert not any(c.startswith("0.00e+00") for c in cells), cells
    assert any("(noise)" in c for c in cells) and any("rounding noise" in n for n in fitted.notes)


# --- 6. the comparison plot ---------------------------------------------------------------------


def _curves(tmp_path, n=3, **kw):
    comparison, _ = cmp.compare([tmp_path], **kw)
    return cmp.curves(comparison)


def test_the_legend_is_never_cut_and_layout_warns_nothing(tmp_path):
    for i in range(12):
        make_run(tmp_path, f"a_config_whose_name_goes_on_and_on_for_a_while_{i}",
                 sets={"training.eta": 0.1 + i / 100, "data.train_size": 1000 + i},
                 val=[0.9, 0.92 + i / 1000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied" and the like
        fig = plots.comparison_figure(_curves(tmp_path))
        fig.canvas.draw()
    box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    for ax in fig.axes:
        assert not ax.get_window_extent().overlaps(box)


def test_the_cost_axis_is_logarithmic_when_curves_are_far_apart(tmp_path):
    make_run(tmp_path / "far", "a", val=[0.9, 0.95])
    run = make_run(tmp_path / "far", "b", sets={"training.eta": 5.0}, val=[0.1, 0.1])
    path = run.path / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "validation_cost": 200.0 + r["epoch"]}) + "\n" for r in records))
    assert plots.comparison_figure(_curves(tmp_path / "far")).axes[1].get_yscale() == "log"
    make_run(tmp_path / "near", "a", val=[0.9, 0.95])
    make_run(tmp_path / "near", "b", sets={"training.eta": 5.0}, val=[0.5, 0.6])
    assert plots.comparison_figure(_curves(tmp_path / "near")).axes[1].get_yscale() == "linear"


def test_the_cost_title_says_how_many_runs_monitored_the_training_cost(tmp_path):
    make_run(tmp_path, "a", sets={"training.monitor_train": True})
    make_run(tmp_path, "b", sets={"training.eta": 0.3})
    title = plots.comparison_figure(_curves(tmp_path)).axes[1].get_title()
    assert "not monitored" not in title and "1 of 2" in title


def test_one_epoch_has_integer_epoch_ticks(tmp_path):
    make_run(tmp_path, "a", val=[0.9])
    make_run(tmp_path, "b", sets={"training.eta": 0.3}, val=[0.8])
    fig = plots.comparison_figure(_curves(tmp_path))
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    run = make_run(tmp_path / "one", "c", val=[0.9])
    fig = plots.run_figure(run.read_metrics(), run.read_summary())
    fig.canvas.draw()
    low, high = fig.axes[0].get_xlim()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks() if low <= t <= high)


def test_a_seed_group_legend_does_not_count_its_seeds_twice(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path, "shallow", seed=seed, val=[0.9, 0.95])
    make_run(tmp_path, "deep", sets={"training.eta": 0.5})
    fig = plots.comparison_figure(_curves(tmp_path))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("[seeds 1, 2]" in label for label in labels) and not any("(n=" in label for label in labels)


# --- 7. the book's number an override took away ------------------------------------------------


def test_an_override_that_changes_the_experiment_keeps_what_it_dropped():
    cfg = config.load(ROOT / "configs" / "ch3_l2.yaml", ["training.eta=0.1", "seed=2"])
    assert cfg["reference"] is None
    assert cfg["reference_dropped"]["value"] == 96.49 and cfg["reference_dropped"]["by"] == ["training.eta"]
    assert config.load(ROOT / "configs" / "ch3_l2.yaml", ["seed=2"])["reference_dropped"] is None


def test_a_sweep_s_points_keep_what_their_overrides_dropped(tmp_path):
    plan = plan_sweep(ROOT / "configs" / "ch3_l2.yaml", sets=["training.epochs=3"], grid=["training.eta=0.1,0.5"],
                      seeds=None, name=None)
    for point in plan.points:
        dropped = plan.config(point)["reference_dropped"]
        assert dropped["value"] == 96.49 and dropped["by"] == ["training.epochs", "training.eta"]


def test_compare_says_why_a_run_has_no_book_number(tmp_path):
    ref = {**BOOK, "value": 96.49, "selection": "peak-test"}
    make_run(tmp_path, "ch3_l2", sets={"reference": ref}, val=[0.95, 0.962])
    make_run(tmp_path, "ch3_l2", sets={"training.eta": 0.1 + 0.3,
                                       "reference_dropped": {"source": "x", "value": 96.49, "by": ["training.eta"]}},
             val=[0.95, 0.958])
    comparison, _ = cmp.compare([tmp_path])
    headers, cells = render.human_table(comparison)
    verdicts = sorted(line[headers.index("verdict")] for line in cells)
    assert verdicts == ["n/a (η changed)", "reproduced (±1.5)"]
    assert any("η changed the experiment of the book's number (ch3_l2: 96.49%)" in note
               for note in render.table_notes(comparison, True))
    assert [r["book_dropped_by"] for r in json.loads(render.to_json(comparison))] in (
        [None, ["training.eta"]], [["training.eta"], None])
    only_dropped, _ = cmp.compare([tmp_path], where=["training.eta=0.4"])
    assert "book %" not in render.human_table(only_dropped)[0]
    assert any(note.startswith("no book column: η changed") for note in render.table_notes(only_dropped, True))
