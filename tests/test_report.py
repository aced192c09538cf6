"""`nnexp report` (`nnexp.report`): the HTML page's data and markup, the page in a real
browser (Playwright driving Debian's chromium; skipped only where either is missing), and
`--watch` as a subprocess following a run that grows and then finishes."""

from __future__ import annotations

import base64
import contextlib
import html
import html.parser
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nnexp import report
from nnexp.cli import app
from nnexp.batch import SweepDir
from nnexp.rundir import Run, Status
from nnexp.sweepplan import search_plan

from conftest import needs_mnist
from runfactory import CONV_LAYERS, FAST_CONV_LAYERS, make_run, write_manifest

runner = CliRunner()
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------


def page_data(text: str) -> dict:
    """The JSON the page embeds (everything its charts and panels are built from)."""
    match = re.search(r'<script type="application/json" id="nnexp-data">(.*?)</script>', text, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


class TableCells(html.parser.HTMLParser):
    """The text of each cell of the page's compare table, row by row."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.headers: list[str] = []
        self._in_table = self._cell = False
        self._text = ""

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("id", "compare") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif self._in_table and tag in ("td", "th") and self._cell:
            self._cell = False
            self.rows[-1].append(self._text)

    def handle_data(self, data):
        if self._cell:
            self._text += data


def table_of(text: str) -> tuple[list[str], list[list[str]]]:
    parser = TableCells()
    parser.feed(text)
    return parser.rows[0], parser.rows[1:]


def markdown_cells(text: str) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of `nnexp compare -f markdown`'s table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # noqa: E731
    return split(lines[0]), [split(line) for line in lines[2:]]


def write_report(args: list[str], out: Path) -> str:
    result = runner.invoke(app, ["report", *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out.read_text(encoding="utf-8")


def mixed_runs(root: Path) -> Path:
    """Three configurations (η 0.1, 0.5, 1.0), the last with two seeds, plus a diverged run."""
    make_run(root, "shallow", sets={"training.eta": 0.1}, val=[0.90, 0.93, 0.95], test=[0.89, 0.92, 0.94])
    make_run(root, "shallow", sets={"training.eta": 0.5, "training.monitor_train": True},
             val=[0.91, 0.96, 0.94, 0.95], test=[0.90, 0.955, 0.93, 0.945])
    make_run(root, "shallow", seed=1, sets={"training.eta": 1.0}, val=[0.80, 0.85], test=[0.79, 0.84])
    make_run(root, "shallow", seed=2, sets={"training.eta": 1.0}, val=[0.82, 0.88], test=[0.81, 0.86])
    make_run(root, "shallow", sets={"training.eta": 9.0}, val=[0.5, float("nan")], status="diverged")
    return root


SEARCH_SAMPLES = ["training.eta=log-uniform:0.01:3", "training.batch_size=choice:10,20"]
# (trial, eta, batch size, per-epoch validation accuracies, test accuracies, status): the
# trials listed out of the order their values would sort in, one pruned and one diverged
SEARCH_TRIALS = [("t001", 0.05, 20, [0.90, 0.93], [0.97, 0.98], "completed"),
                 ("t002", 1.5, 10, [0.80], [0.79], "pruned"),
                 ("t003", 2.9, 10, [0.50, float("nan")], None, "diverged"),
                 ("t004", 0.3, 20, [0.94, 0.96, 0.95], [0.90, 0.91, 0.92], "completed")]


def search_sweep(root: Path) -> Path:
    """A search's sweep directory as `nnexp search` leaves one: its manifest's plan of kind
    "search" with the samples in its spec and each trial's draw as the point's overrides,
    and a run directory per trial (t001, ...) trained on those values."""
    sweep = root / "shallow-search"
    sweep.mkdir(parents=True)
    for trial, eta, batch, val, test, status in SEARCH_TRIALS:
        run = make_run(sweep, trial, sets={"training.eta": eta, "training.batch_size": batch}, val=val, test=test,
                       status=status)
        run.path.rename(sweep / trial)  # a sweep's point is its id, no time stamp
    draws = [{"training.eta": eta, "training.batch_size": batch} for _, eta, batch, *_ in SEARCH_TRIALS]
    plan = search_plan("shallow-search", Run(sweep / "t001").read_config(), draws,
                       {"samples": SEARCH_SAMPLES, "trials": len(draws), "search_seed": 0})
    SweepDir(sweep, plan, {t[0]: Status(t[5]) for t in SEARCH_TRIALS}, 1, ["nnexp", "search"]).save()
    return sweep


# --- the data and the markup -----------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--no-group"], ["--sort", "test"], ["--where", "training.eta<2"],
                                     ["--status", "completed", "--asc"]])
def test_table_is_compares_table(tmp_path, options):
    """Rows, their order, labels, ids and every cell: those of `nnexp compare` with the same options."""
    runs = mixed_runs(tmp_path / "runs")
    text = write_report([str(runs), *options], tmp_path / "r.html")
    headers, rows = table_of(text)
    md_headers, md_rows = markdown_cells(runner.invoke(app, ["compare", str(runs), *options, "-f", "markdown"]).stdout)
    assert headers == md_headers
    assert rows == md_rows
    compared = json.loads(runner.invoke(app, ["compare", str(runs), *options, "-f", "json"]).stdout)
    data = page_data(text)
    assert [r["id"] for r in data["rows"]] == [c["id"] for c in compared]
    assert [[data["runs"][k]["name"] for k in r["runs"]] for r in data["rows"]] == [c["runs"] for c in compared]


def test_reading_runs_writes_nothing_into_them(tmp_path):
    """compare and report only read: no lock file or anything else appears in the runs (a
    finished copy under results/ must stay exactly as committed)."""
    runs = mixed_runs(tmp_path / "runs")
    make_run(runs, "shallow", sets={"training.eta": 3.0}, val=[0.7], status="running")  # asks the lock
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert runner.invoke(app, ["compare", str(runs)]).exit_code == 0
    write_report([str(runs)], tmp_path / "r.html")
    write_report([str(runs), "--watch", "1"], tmp_path / "w.html")  # nothing live: one write
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    assert not any(p.name == ".lock" for p in before)


def test_book_verdicts_as_compare(tmp_path):
    """A config with the book's number: the page's book, ours, Δ and verdict cells are compare's."""
    ref = {"source": "Nielsen ch. 1", "chapter": 1, "value": 95.0, "tolerance": 1.0}
    make_run(tmp_path, "ch1", sets={"reference": ref, "training.eta": 3.0}, val=[0.94, 0.951], test=[0.94, 0.9505])
    make_run(tmp_path, "ch1", sets={"reference": ref, "training.eta": 0.5}, val=[0.90, 0.92], test=[0.89, 0.91])
    text = write_report([str(tmp_path)], tmp_path / "r.html")
    headers, rows = table_of(text)
    md_headers, md_rows = markdown_cells(runner.invoke(app, ["compare", str(tmp_path), "-f", "markdown"]).stdout)
    assert "verdict" in headers and (headers, rows) == (md_headers, md_rows)
    verdicts = [row[headers.index("verdict")] for row in rows]
    assert verdicts[0].startswith("reproduced") and verdicts[1].startswith("below")


def test_every_metrics_value_is_embedded(tmp_path):
    """Each value of each metrics.jsonl line, layer speeds and a diverged epoch's null
    included, is in the page's data exactly (no rounding)."""
    runs = mixed_runs(tmp_path / "runs")
    speedy = make_run(runs, "deep", val=[0.9, 0.91])
    speedy.append_metrics({"epoch": 3, "eta": 0.1, "validation_cost": 0.123456789012345, "validation_accuracy": 0.9123,
                           "test_cost": 0.2, "test_accuracy": 0.9, "layer_speed": [0.00123456789, 0.0456, 1.5e-07],
                           "seconds": 1.0, "best": True})
    data = page_data(write_report([str(runs)], tmp_path / "r.html"))
    by_name = {run["name"]: run for run in data["runs"]}
    paths = [p for p in runs.iterdir() if Run.is_run(p)]
    assert sorted(by_name) == sorted(p.name for p in paths)
    checked = 0
    for path in paths:
        lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        columns = by_name[path.name]["metrics"]
        for i, record in enumerate(lines):
            for key, value in record.items():
                assert columns[key][i] == value, (path.name, key, i)
                checked += 1
    assert checked > 100
    assert by_name[speedy.name]["metrics"]["layer_speed"][2] == [0.00123456789, 0.0456, 1.5e-07]
    assert any(v is None for run in data["runs"] for v in run["metrics"]["validation_accuracy"])  # the NaN


def test_page_is_self_contained(tmp_path):
    """No script, style, image or link the page would fetch: nothing with an http(s) or
    protocol-relative src/href, no <link>, no CSS url() or @import. Plotly's JavaScript is in it."""
    text = write_report([str(mixed_runs(tmp_path / "runs"))], tmp_path / "r.html")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"<link\b", text, re.I)
    styles = re.findall(r"<style[^>]*>(.*?)</style>|style=\"([^\"]*)\"", text, re.S | re.I)
    assert styles  # the page's stylesheet is there to be checked
    assert not any(re.search(r"@import|url\(", css, re.I) for pair in styles for css in pair)
    assert not re.search(r"<script[^>]*\bsrc=", text, re.I)
    packed = re.search(r'<script type="application/octet-stream" id="plotly-gz">(.*?)</script>', text, re.S).group(1)
    plotly_js = zlib.decompress(base64.b64decode(packed), 16 + zlib.MAX_WBITS).decode()
    assert plotly_js == report.plotly_js()
    assert text.count('id="plotly-gz"') == 1


def test_the_shipped_plotly_is_the_recorded_file():
    """The vendored plotly.js is byte for byte the file nnexp/assets/README.md names (its
    sha256 recorded beside the code), its licence ships with it, and the page's script asks
    for no trace type the basic bundle lacks."""
    import hashlib
    from importlib import resources

    js = report.plotly_js()
    assert hashlib.sha256(js.encode("utf-8")).hexdigest() == report.PLOTLY_SHA256
    assert "plotly.js (basic - minified) v4.1.1" in js[:200]
    assert "MIT License" in resources.files("nnexp").joinpath("assets", "LICENSE-plotly.js.txt").read_text()
    drawn = set(re.findall(r'\btype: "(\w+)"', report.SCRIPT))
    assert drawn == {"scatter"}  # the basic bundle has scatter, bar and pie


def test_bad_options_are_one_line(tmp_path):
    runs = mixed_runs(tmp_path / "runs")
    for args, words in ((["-o", str(tmp_path / "r.png")], "ending in .html"),
                        (["-o", str(tmp_path / "r.html"), "--sort", "bogus"], "unknown sort key"),
                        (["-o", str(tmp_path / "r.html"), "--where", "nokey=1"], "no run has a key")):
        result = runner.invoke(app, ["report", str(runs), *args])
        assert result.exit_code == 2, result.output
        assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("r.*"))


def test_run_panels_hold_config_env_notes_status(tmp_path):
    from nnexp.rundir import Notes

    run = make_run(tmp_path, "shallow", sets={"training.eta": 0.25}, val=[0.9, 0.92])
    run.write_notes(Notes("why: <b>a baseline</b> </script><!-- <script>", ("baseline", "ch1")))
    run.write_env({"python": "3.11.9", "numpy": "1.26"})
    other = make_run(tmp_path, "shallow", sets={"training.eta": 0.5}, val=[0.9, 0.91], status="interrupted")
    text = write_report([str(tmp_path)], tmp_path / "r.html")
    data = page_data(text)
    mine = next(r for r in data["runs"] if r["name"] == run.name)
    assert (mine["note"], mine["tags"], mine["env"]["python"]) == ("why: <b>a baseline</b> </script><!-- <script>",
                                                                   ["baseline", "ch1"], "3.11.9")
    assert mine["config"]["training.eta"] == "0.25" and mine["stop_reason"] == "all epochs run"
    assert next(r for r in data["runs"] if r["name"] == other.name)["status"] == "interrupted"
    assert "why: &lt;b&gt;a baseline&lt;/b&gt; &lt;/script&gt;" in text  # a note is text, never markup
    assert text.count("</script>") == 4  # the data, packed Plotly, its loader, the page script: none from the note
    assert '<span class="tag">baseline</span>' in text and "3.11.9" in text
    assert data["watch"] is None  # no run trains: no reloading


def test_log_axis_only_for_costs_far_apart(tmp_path):
    make_run(tmp_path / "near", "a", sets={"training.eta": 0.1}, val=[0.9, 0.91])
    make_run(tmp_path / "near", "a", sets={"training.eta": 0.2}, val=[0.8, 0.85])
    near = {c["key"]: c["log"] for c in page_data(write_report([str(tmp_path / "near")], tmp_path / "n.html"))["charts"]}
    assert near["validation_cost"] is False and near["validation_accuracy"] is False
    make_run(tmp_path / "far", "a", sets={"training.eta": 0.1}, val=[0.9, 0.91])
    make_run(tmp_path / "far", "a", sets={"training.eta": 0.2}, val=[0.9999, 0.99995])  # cost 1e-4: 1000x below
    charts = {c["key"]: c["log"] for c in page_data(write_report([str(tmp_path / "far")], tmp_path / "f.html"))["charts"]}
    assert charts["validation_cost"] is True and charts["validation_accuracy"] is False
    assert "train_cost" not in charts and "layer_speed" not in charts  # nobody recorded them


def _png_pixels(uri: str) -> np.ndarray:
    """Decode the page's 8-bit greyscale PNGs (filter type 0 rows, as `report._png` writes)."""
    data = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    idat = data[8 + 25 + 8: -12]  # after the signature and IHDR chunk, before IEND
    raw = zlib.decompress(idat[:-4])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, w + 1)
    assert not rows[:, 0].any()
    return rows[:, 1:]


def test_conv_run_with_checkpoint_shows_its_filters(tmp_path):
    from nnexp.plots import conv_weights, mosaic, normalise_tiles

    conv = make_run(tmp_path, "conv", layers=CONV_LAYERS, checkpoint=True)
    make_run(tmp_path, "dense", checkpoint=True)
    make_run(tmp_path, "conv", layers=CONV_LAYERS, seed=3)  # no checkpoint: nothing to show
    data = page_data(write_report([str(tmp_path)], tmp_path / "r.html"))
    with_filters = [r for r in data["runs"] if "filters" in r]
    assert [r["name"] for r in with_filters] == [conv.name]
    _, weights = conv_weights(conv.path)
    image, _ = mosaic(normalise_tiles(weights.mean(axis=1)))
    pixels = _png_pixels(with_filters[0]["filters"]["src"])
    assert pixels.shape == image.shape
    assert np.abs(pixels.astype(int) - np.round(255 * (1 - image))).max() <= 1
    assert "4 filters 5x5" in with_filters[0]["filters"]["caption"]


@needs_mnist
def test_ensemble_errors_are_the_votes(tmp_path):
    """--ensemble: the images shown are the first of those the vote gets wrong, with their labels."""
    from nnexp.ensemble import run_ensemble

    for seed in (1, 2, 3):
        make_run(tmp_path / "members", "fast", layers=FAST_CONV_LAYERS, seed=seed, checkpoint=True)
    text = write_report([str(tmp_path / "members"), "--ensemble"], tmp_path / "r.html")
    shown = page_data(text)["ensemble"]
    result, _ = run_ensemble([str(tmp_path / "members")])
    wrong = result.wrong
    assert shown["errors"] == result.errors and len(shown["wrong"]) == min(100, len(wrong))
    assert [w["index"] for w in shown["wrong"]] == wrong[:100].tolist()
    assert [w["true"] for w in shown["wrong"]] == result.test.test.y[wrong[:100]].tolist()
    assert [w["predicted"] for w in shown["wrong"]] == result.predictions[wrong[:100]].tolist()
    first = _png_pixels(shown["wrong"][0]["src"])
    expected = np.round(255 * (1 - np.asarray(result.test.test.x[wrong[0]]).reshape(28, 28)))
    assert np.abs(first.astype(int) - expected).max() <= 1
    assert text.count('class="digit"') == len(shown["wrong"])


@needs_mnist
def test_the_vote_of_trained_members_marks_the_books_wrong_digits():
    """On MNIST's test set the vote's wrong digits that the book's vote got wrong too are
    marked, and the section says how many: the two dropout members committed under results/
    (real nets) give the same counts as `nnexp ensemble`."""
    from nnexp.ensemble import BOOK_ERRORS, run_ensemble

    members = str(ROOT / "results" / "ch6_ladder-20261203-075515" / "dropout,seed=*")
    opts = report.Options([members], ensemble=True)
    data, _, _, _ = report.gather(opts)
    result, _ = run_ensemble([members])
    overlap = result.against_book()
    shown = data["ensemble"]
    assert len(shown["wrong"]) == result.errors <= report.ERRORS_SHOWN  # every wrong digit is shown
    book = {index for index, _, _ in BOOK_ERRORS}
    assert [w["book"] for w in shown["wrong"]] == [w["index"] in book for w in shown["wrong"]]
    assert sum(w["book"] for w in shown["wrong"]) == overlap.shared > 0
    section = report._ensemble_section(data)
    assert section.count('class="digit book"') == overlap.shared
    said = f"Of the book's 33 wrong digits, {overlap.shared} are among this vote's {result.errors} wrong"
    assert html.escape(said) in section


def test_search_has_its_history_and_sampled_values(tmp_path):
    """Per trial, in the search's order: its best validation accuracy (not test), its status and
    sampled values, the running best; one chart per sampled key, log for log-uniform, the
    choices as categories in the order given."""
    sweep = search_sweep(tmp_path / "runs")
    other = make_run(tmp_path / "runs", "shallow", val=[0.99])  # not a search's: no section of its own
    data = page_data(write_report([str(sweep), str(other.path)], tmp_path / "r.html"))
    assert len(data["searches"]) == 1
    search = data["searches"][0]
    assert search["name"] == "shallow-search"
    trials = search["trials"]
    assert [t["id"] for t in trials] == ["t001", "t002", "t003", "t004"]
    assert [t["number"] for t in trials] == [1, 2, 3, 4]
    assert [t["status"] for t in trials] == ["completed", "pruned", "diverged", "completed"]
    assert [t["value"] for t in trials] == pytest.approx([0.93, 0.80, 0.50, 0.96])  # t001's test 0.98 is not it
    assert [t["best"] for t in trials] == pytest.approx([0.93, 0.93, 0.93, 0.96])
    assert [t["x"] for t in trials] == [{"training.eta": eta, "training.batch_size": str(batch)}
                                        for _, eta, batch, *_ in SEARCH_TRIALS]
    assert trials[1]["values"] == {"training.eta": "1.5", "training.batch_size": "10"}
    assert trials[0]["run"] == "shallow-search/t001"
    assert search["params"] == [
        {"key": "training.eta", "kind": "log-uniform", "log": True, "categories": None},
        {"key": "training.batch_size", "kind": "choice", "log": False, "categories": ["10", "20"]}]
    # a trial --where leaves out is not in the history; the others keep their numbers
    data = page_data(write_report([str(sweep), "--where", "training.eta<1"], tmp_path / "w.html"))
    assert [(t["id"], t["number"]) for t in data["searches"][0]["trials"]] == [("t001", 1), ("t004", 4)]
    # a grid sweep and loose runs: no search section
    text = write_report([str(write_manifest(mixed_runs(tmp_path / "grid-1-2"))), str(other.path)], tmp_path / "g.html")
    assert page_data(text)["searches"] == []
    assert 'class="search"' not in text


# --- in a browser ----------------------------------------------------------------------------


def _chromium_ready(wait: float = 180.0) -> str | None:
    """None when Playwright and Debian's chromium are there (waiting a while for an apt
    install still under way), else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return 'playwright is not installed (pip install -e ".[browser]")'
    deadline = time.monotonic() + wait
    while True:
        if os.access(CHROMIUM, os.X_OK):
            probe = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                return None
        busy = subprocess.run(["pgrep", "-x", "apt-get"], capture_output=True).returncode == 0 \
            if shutil.which("pgrep") else False
        if not busy or time.monotonic() > deadline:
            return f"no working chromium at {CHROMIUM} (CI installs Debian's chromium package)"
        time.sleep(5)


@pytest.fixture(scope="module")
def browser():
    why = _chromium_ready()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The mixed runs' report grouped and with --no-group, and compare's JSON rows of each."""
    root = tmp_path_factory.mktemp("browser")
    runs = mixed_runs(root / "runs")
    out = {}
    for name, options in (("grouped", []), ("single", ["--no-group"])):
        write_report([str(runs), *options], root / f"{name}.html")
        compared = json.loads(runner.invoke(app, ["compare", str(runs), *options, "-f", "json"]).stdout)
        out[name] = (root / f"{name}.html", compared)
    return out


def _hover(page, chart: str, point: dict) -> str:
    """The hover label `chart` shows with the mouse brought onto `point` (page x, y) from nearby."""
    page.mouse.move(point["x"] - 30, point["y"] - 30)
    page.mouse.move(point["x"], point["y"], steps=5)
    label = page.locator(f"{chart} .hoverlayer .hovertext")
    label.first.wait_for(timeout=10_000)
    return label.first.text_content()


def _open(browser, path: Path, **context):
    """A loaded page whose charts are all drawn, with its console errors and the requests it made."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 900}, **context)
    page = ctx.new_page()
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_function("window.nnexpReady === true", timeout=60_000)
    return page, problems, requests


def _traces(page) -> dict:
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('#charts .chart'))
        .map(gd => [gd.dataset.key, gd.data.map(t => ({name: t.name, kind: t.meta.kind, row: t.meta.row === undefined ? null : t.meta.row,
                                                        visible: t.visible, x: t.x, y: t.y}))]))""")


def test_page_draws_one_curve_per_row_without_errors(browser, pages):
    for name, (path, compared) in pages.items():
        page, problems, _ = _open(browser, path)
        try:
            assert problems == []
            assert page.locator("#compare tbody tr").count() == len(compared)
            assert not page.locator("#plot-error").is_visible()
            charts = _traces(page)
            assert {"validation_accuracy", "test_accuracy", "validation_cost", "test_cost", "eta",
                    "train_accuracy", "train_cost"} <= set(charts)
            data = page_data(path.read_text())
            labels = [r["label"] for r in data["rows"]]
            for key, traces in charts.items():
                curves = [t for t in traces if t["kind"] == "curve"]
                # every row with a value of the key (training's: only η 0.5 monitored it)
                having = [i for i, row in enumerate(data["rows"])
                          if any(v is not None for k in row["runs"] for v in data["runs"][k]["metrics"].get(key, []))]
                if key.startswith("train_"):
                    assert [compared[i]["training.eta"] for i in having] == [0.5]
                assert [t["row"] for t in curves] == having, (name, key)
                assert [t["name"] for t in curves] == [labels[i] for i in having]
            bands = [t for t in charts["validation_accuracy"] if t["kind"] == "band"]
            stars = [t for t in charts["validation_accuracy"] if t["kind"] == "best"]
            if name == "single":  # one curve per run, and one trace of the runs' best epochs
                assert len(charts["validation_accuracy"]) == len(compared) + 1 == 6
                assert bands == []
                assert stars[0]["x"] == [c["best_epoch"] for c in compared if c["best_epoch"] is not None]
                assert stars[0]["y"] == pytest.approx([100 * c["best_validation_accuracy"] for c in compared
                                                       if c["best_epoch"] is not None])
            else:  # the two seeds of η 1.0: a mean line and its min-max band
                group = next(i for i, row in enumerate(compared) if row["n"] == 2)
                assert [b["row"] for b in bands] == [group]
                curve = next(t for t in charts["validation_accuracy"] if t["kind"] == "curve" and t["row"] == group)
                assert curve["y"] == pytest.approx([81.0, 86.5])
                assert sorted(bands[0]["y"]) == pytest.approx(sorted([82.0, 88.0, 85.0, 80.0]))
        finally:
            page.context.close()


def test_search_charts_are_drawn(browser, tmp_path):
    """The history (a point per trial with a validation accuracy, its status's symbol, and the
    running best) and a chart per sampled key with its axis type, without console errors."""
    sweep = search_sweep(tmp_path / "runs")
    path = tmp_path / "search.html"
    write_report([str(sweep)], path)
    page, problems, _ = _open(browser, path)
    try:
        assert problems == []
        assert not page.locator("#plot-error").is_visible()
        charts = page.evaluate("""() => Array.from(document.querySelectorAll('#search-0 .chart')).map(gd => ({
            kind: gd.dataset.kind, key: gd.dataset.key || null, xtype: gd._fullLayout.xaxis.type,
            traces: gd.data.map(t => ({kind: t.meta.kind, x: t.x, y: t.y, symbol: t.marker && t.marker.symbol}))}))""")
        assert [(c["kind"], c["key"], c["xtype"]) for c in charts] == [
            ("history", None, "linear"), ("param", "training.eta", "log"), ("param", "training.batch_size", "category")]
        history = {t["kind"]: t for t in charts[0]["traces"]}
        assert history["trials"]["x"] == [1, 2, 3, 4]
        assert history["trials"]["y"] == pytest.approx([93, 80, 50, 96])
        assert history["trials"]["symbol"] == ["circle", "x", "triangle-up", "circle"]
        assert history["running best"]["y"] == pytest.approx([93, 93, 93, 96])
        eta, batch = (c["traces"][0] for c in charts[1:])
        assert eta["x"] == pytest.approx([0.05, 1.5, 2.9, 0.3]) and eta["y"] == pytest.approx([93, 80, 50, 96])
        assert batch["x"] == ["20", "10", "10", "20"]
        # hovering the pruned trial t002 (trial 2, 80%) names it, its status and its values
        page.locator("#search-0 .chart").first.scroll_into_view_if_needed()
        point = page.evaluate("""() => {
            const gd = document.querySelector('#search-0 .chart[data-kind=history]');
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            return {x: box.left + L._size.l + L.xaxis.l2p(2), y: box.top + L._size.t + L.yaxis.l2p(80)};
        }""")
        text = _hover(page, "#search-0 .chart[data-kind=history]", point)
        assert "t002" in text and "pruned" in text and "80.00%" in text
        assert "training.eta = 1.5" in text and "training.batch_size = 10" in text
    finally:
        page.context.close()


def test_clicking_a_header_sorts_and_typing_filters(browser, pages):
    path, compared = pages["single"]
    page, problems, _ = _open(browser, path)
    try:
        def ids():
            return [page_row["id"] for page_row in (page_data(path.read_text())["rows"][int(i)] for i in
                    page.eval_on_selector_all("#compare tbody tr", "rs => rs.map(r => r.dataset.row)"))]

        assert ids() == [c["id"] for c in compared]  # compare's order to begin with
        page.click("#compare th:text-is('test %')")
        with_test = sorted((c for c in compared if c["test_accuracy"] is not None), key=lambda c: -c["test_accuracy"])
        expected = [c["id"] for c in with_test] + [c["id"] for c in compared if c["test_accuracy"] is None]
        assert ids() == expected
        page.click("#compare th:text-is('test %')")  # again: lowest first, no value still last
        assert ids() == [c["id"] for c in reversed(with_test)] + expected[len(with_test):]
        page.fill("#filter", "diverged")
        visible = page.eval_on_selector_all("#compare tbody tr", "rs => rs.filter(r => !r.hidden).length")
        assert visible == 1
        assert problems == []
    finally:
        page.context.close()


def test_hover_shows_run_epoch_and_value(browser, pages):
    path, compared = pages["single"]
    page, _, _ = _open(browser, path)
    try:
        # the η 0.5 run's epoch 2, 96.00% validation accuracy: no other point is near it
        point = page.evaluate("""() => {
            const gd = document.querySelector('#charts .chart[data-key=validation_accuracy]');
            const t = gd.data.findIndex(t => t.meta.kind === 'curve' && t.y.some(v => Math.abs(v - 96) < 1e-9));
            const i = gd.data[t].y.findIndex(v => Math.abs(v - 96) < 1e-9);
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            return {name: gd.data[t].name, epoch: gd.data[t].x[i],
                    x: box.left + L._size.l + L.xaxis.l2p(gd.data[t].x[i]),
                    y: box.top + L._size.t + L.yaxis.l2p(gd.data[t].y[i])};
        }""")
        text = _hover(page, "#charts .chart[data-key=validation_accuracy]", point)
        assert f"epoch {point['epoch']}" in text and "96.00%" in text
        assert point["name"] in text
    finally:
        page.context.close()


def test_legend_click_hides_a_row_in_every_chart(browser, pages):
    path, _ = pages["grouped"]
    page, problems, _ = _open(browser, path)
    try:
        first = page.locator("#charts .chart[data-key=validation_accuracy] .legend .traces").first
        first.click()
        page.wait_for_function("""() => Array.from(document.querySelectorAll('#charts .chart'))
            .every(gd => gd.data.filter(t => t.meta.row === 0).every(t => t.visible === 'legendonly'))""", timeout=10_000)
        charts = _traces(page)
        for traces in charts.values():
            assert all(t["visible"] is True for t in traces if t["row"] != 0 and t["kind"] != "best")
        stars = [t for t in charts["validation_accuracy"] if t["kind"] == "best"][0]
        assert len(stars["x"]) == len(page_data(path.read_text())["rows"]) - 1  # its star is gone too
        assert "off" in page.locator("#compare tbody tr").first.get_attribute("class")
        first.click()
        page.wait_for_function("""() => Array.from(document.querySelectorAll('#charts .chart'))
            .every(gd => gd.data.every(t => t.visible === true || t.visible === undefined))""", timeout=10_000)
        assert problems == []
    finally:
        page.context.close()


def test_page_works_offline_and_asks_for_nothing(browser, pages):
    path, compared = pages["grouped"]
    asked = []

    page_ctx = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
    page_ctx.route("**/*", lambda route: (asked.append(route.request.url), route.continue_()
                   if route.request.url.startswith("file:") else route.abort()))
    page = page_ctx.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(path.as_uri())
        page.wait_for_function("window.nnexpReady === true", timeout=60_000)
        assert [u for u in asked if not u.startswith("file:")] == []
        assert asked == [path.as_uri()]  # the page itself, and nothing else
        assert problems == []
        assert len(_traces(page)["validation_accuracy"]) > len(compared) - 1
    finally:
        page_ctx.close()


def test_screenshot_is_not_blank(browser, pages, tmp_path):
    from PIL import Image

    path, _ = pages["grouped"]
    page, _, _ = _open(browser, path)
    try:
        page.locator("#charts").scroll_into_view_if_needed()
        shot = page.screenshot()
    finally:
        page.context.close()
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.size == (1200, 900)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # curves, bands, text: a blank or unstyled page has a handful


# --- --watch -------------------------------------------------------------------------------


def _watcher(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "nnexp.cli", "report", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s")


def _epochs_in(out: Path) -> list[int] | None:
    try:
        data = page_data(out.read_text(encoding="utf-8"))
    except (OSError, AssertionError, ValueError):
        return None
    return data["runs"][0]["metrics"]["epoch"]


def test_watch_follows_a_run_until_it_is_final(tmp_path):
    run = make_run(tmp_path / "runs", "live", val=[0.90, 0.92, 0.93], status="running")
    out = tmp_path / "live.html"
    with run.lock():  # a training process holds a running run
        watcher = _watcher([str(run.path), "-o", str(out), "--watch", "1"])
        try:
            _wait_for(lambda: _epochs_in(out) == [1, 2, 3], 60, "the first report")
            assert page_data(out.read_text())["watch"] == 1  # the page reloads itself meanwhile
            run.append_metrics({"epoch": 4, "eta": 0.1, "validation_cost": 0.04, "validation_accuracy": 0.9444,
                                "test_cost": 0.05, "test_accuracy": 0.9333, "seconds": 2.0, "best": True})
            appended = time.monotonic()
            _wait_for(lambda: _epochs_in(out) == [1, 2, 3, 4], 5, "the new epoch in the report")
            assert time.monotonic() - appended <= 5
            assert watcher.poll() is None  # still watching: the run still trains
            summary = run.read_summary()
            run.write_summary({**summary, "status": "completed", "epochs_run": 4, "best_epoch": 4,
                               "best_validation_accuracy": 0.9444, "test_accuracy": 0.9333})
        except BaseException:
            watcher.kill()
            raise
    try:
        stdout, stderr = watcher.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        watcher.kill()
        raise AssertionError("the watcher did not stop once the run was final")
    assert watcher.returncode == 0, stderr
    assert stdout.strip() == str(out)  # the path, once
    assert "final" in stderr
    data = page_data(out.read_text())
    assert data["watch"] is None and data["rows"][0]["status"] == "completed"
    assert "location.reload" in out.read_text()  # the script is there, but without a period it never runs
    assert not report.beacon_path(out).exists()  # the watcher's beacon goes with it


def test_watch_ends_cleanly_on_ctrl_c(tmp_path):
    run = make_run(tmp_path / "runs", "live", val=[0.90, 0.92], status="running")
    out = tmp_path / "live.html"
    with run.lock():
        watcher = _watcher([str(run.path), "-o", str(out), "--watch", "1"])
        try:
            _wait_for(lambda: _epochs_in(out) == [1, 2], 60, "the first report")
            watcher.send_signal(signal.SIGINT)
            stdout, stderr = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
    assert watcher.returncode == 0, stderr
    assert "stopped watching" in stderr and "Traceback" not in stderr
    assert stdout.strip() == str(out)
    text = out.read_text()
    assert text.rstrip().endswith("</html>")
    assert page_data(text)["watch"] is None  # left complete and still
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_watch_of_settled_runs_writes_once_and_stops(tmp_path):
    runs = mixed_runs(tmp_path / "runs")
    result = runner.invoke(app, ["report", str(runs), "-o", str(tmp_path / "r.html"), "--watch", "5"])
    assert result.exit_code == 0, result.output
    assert page_data((tmp_path / "r.html").read_text())["watch"] is None
    assert "final" in result.stderr


def test_watch_writes_the_page_when_it_changes_and_the_beacon_every_check(tmp_path):
    """In process, with the sleeps counted instead of slept: an unchanged run leaves the page as
    it was (no rewrite, so no reload) while the beacon names it at every check; an epoch makes a
    new page and a new stamp; the run's end makes the final page, whose stamp is the beacon's
    last word before it goes."""
    run = make_run(tmp_path / "runs", "live", val=[0.90, 0.92], status="running")
    out = tmp_path / "live.html"
    opts = report.Options([str(run.path)])
    seen = []  # (stamp written in the page, the beacon's text) after each check

    def sleep(seconds):
        seen.append((page_data(out.read_text())["stamp"], report.beacon_path(out).read_text()))
        if len(seen) == 3:
            run.append_metrics({"epoch": 3, "eta": 0.1, "validation_cost": 0.04, "validation_accuracy": 0.93,
                                "test_cost": 0.05, "test_accuracy": 0.92, "seconds": 2.0, "best": True})
        if len(seen) == 5:
            lock.close()
            run.write_summary({**run.read_summary(), "status": "completed", "epochs_run": 3})

    writes = []
    with contextlib.ExitStack() as lock:  # held as training holds it, let go at the fifth check
        lock.enter_context(run.lock())
        made = report.watch(opts, out, 2, on_write=lambda r, n: writes.append(r.stamp), sleep=sleep)
    stamps = [stamp for stamp, _ in seen]
    assert stamps[0] == stamps[1] == stamps[2] != stamps[3] == stamps[4]  # rewritten once, for the epoch
    assert all(json.dumps(stamp) in beacon for stamp, beacon in seen)  # the beacon names the page
    assert writes == [stamps[0], stamps[3], made.stamp] and made.stamp != stamps[3]  # then the final page
    assert seen[-1][0] == made.stamp and json.dumps(made.stamp) in seen[-1][1]  # during the grace period
    assert page_data(out.read_text())["watch"] is None
    assert not report.beacon_path(out).exists()


def test_a_sweep_being_run_keeps_the_watch_live(tmp_path):
    """Between two points no run may hold a lock, but the sweep's process holds the sweep's."""
    sweep = tmp_path / "sweep-20261201-120000"
    make_run(sweep, "point", val=[0.9, 0.91])
    write_manifest(sweep)
    opts = report.Options([str(sweep)])
    assert report.build(opts).live is False
    with Run(sweep).lock():
        assert report.build(opts).live is True


def test_live_page_reloads_when_the_beacon_changes_keeping_what_was_hidden(browser, tmp_path):
    """A watched page loads the watcher's beacon twice a second and reloads itself only when it
    names another file; rows hidden by a legend click stay hidden, and the scroll position and
    the filter stay as they were. With the beacon gone it reloads once, then stops asking."""
    runs = mixed_runs(tmp_path / "runs")
    live = make_run(runs, "live", val=[0.7, 0.8], status="running")
    out = tmp_path / "live.html"
    with live.lock():
        made = report.write(report.Options([str(runs)]), out, watch=3)
    assert page_data(out.read_text())["watch"] == 3
    report.write_beacon(out, made.stamp)
    page, problems, requests = _open(browser, out)
    try:
        page.wait_for_function("document.getElementById('checked').textContent.startsWith(', checked ')")
        page.locator("#charts .chart[data-key=validation_accuracy] .legend .traces").first.click()
        page.fill("#filter", "completed")
        page.evaluate("window.scrollTo(0, 400); window.beforeReload = true")
        time.sleep(1.5)  # three checks of an unchanged beacon: no reload
        assert page.evaluate("window.beforeReload") is True
        live.append_metrics({"epoch": 3, "eta": 0.1, "validation_cost": 0.04, "validation_accuracy": 0.85,
                             "test_cost": 0.05, "test_accuracy": 0.84, "seconds": 2.0, "best": True})
        with live.lock():  # as a watcher does: the page, then the beacon naming it
            again = report.write(report.Options([str(runs)]), out, watch=3)
        assert again.stamp != made.stamp
        report.write_beacon(out, again.stamp)
        page.wait_for_function("window.beforeReload === undefined && window.nnexpReady === true", timeout=30_000)
        assert page.evaluate("""() => document.querySelector('#charts .chart').data
            .filter(t => t.meta.row === 0).every(t => t.visible === 'legendonly')""")
        assert page.evaluate("""() => document.querySelector('#charts .chart').data
            .filter(t => t.meta.row === 1).every(t => t.visible === true)""")
        assert page.input_value("#filter") == "completed"
        assert abs(page.evaluate("window.scrollY") - 400) < 2
        assert page.evaluate("JSON.parse(document.getElementById('nnexp-data').textContent).stamp") == again.stamp
        assert problems == []
        assert not [r for r in requests if r.startswith(("http:", "https:"))]  # the beacon is a file beside it
        # the watcher gone: one reload into the file as it is, then no more checks
        report.beacon_path(out).unlink()
        page.evaluate("window.beforeReload = true")
        page.wait_for_function("window.beforeReload === undefined && window.nnexpReady === true", timeout=30_000)
        page.wait_for_function("document.getElementById('checked').textContent === '; the watcher has stopped'")
        page.evaluate("window.beforeReload = true")
        time.sleep(1.2)
        assert page.evaluate("window.beforeReload") is True
    finally:
        page.context.close()
