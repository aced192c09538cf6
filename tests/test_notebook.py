"""docs/study.ipynb runs, top to bottom, in a fresh Jupyter kernel of this interpreter, and
says what its runs say: the notebook extra's promise that the Python API works where it is
meant to be used."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from nnexp.rundir import Run

from conftest import needs_mnist

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "study.ipynb"
KERNEL = "nnexp-test"
EXTRA_MISSING = 'the notebook extra is not installed: pip install -e ".[notebook]"'


def test_the_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def _texts(nb) -> list[str]:
    """Every output of every cell as text: streams, and each mime type a display holds."""
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output["text"])
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/"):
                    texts.append(value if isinstance(value, str) else "".join(value))
    return texts


@needs_mnist
def test_study_notebook_runs_headless_and_shows_its_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason=EXTRA_MISSING)
    nbclient = pytest.importorskip("nbclient", reason=EXTRA_MISSING)
    pytest.importorskip("ipykernel", reason=EXTRA_MISSING)
    pytest.importorskip("pandas", reason=EXTRA_MISSING)
    # A kernel of this very interpreter, declared in tmp_path: nothing is installed for the
    # user, and the kernel imports the nnexp under test (its checkout first on the path).
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nnexp test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.monotonic()
    nbclient.NotebookClient(nb, timeout=600, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(work)}}).execute()  # a failing cell raises
    seconds = time.monotonic() - started
    text = "\n".join(_texts(nb))

    runs = sorted(p for p in (work / "runs" / "study").iterdir() if Run.is_run(p))
    assert len(runs) == 3, runs  # the three trained runs (the sweep directory is no run)
    for path in runs:
        summary, notes = Run(path).read_summary(), Run(path).read_notes()
        assert summary["status"] == "completed" and summary["epochs_run"] == 2 and "study" in notes.tags
        assert f"{path.name}: {notes.note}, test {100 * summary['test_accuracy']:.2f}%" in text
    assert "<RunList: 3 runs (3 completed)>" in text and "<RunList: 1 run (1 completed)>" in text
    # the progress display was updated in place to the run's end, in the kernel's own display
    assert re.search(r"epoch</th>.*<td>2/2</td>", text) and "completed: best validation" in text
    sweep = [p for p in (work / "runs" / "study").iterdir() if (p / "sweep.json").is_file()]
    assert len(sweep) == 1 and str(sweep[0].name) in text
    assert sorted(p.name for p in sweep[0].iterdir() if Run.is_run(p)) == ["eta=0.1", "eta=0.5"]
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))
    print(f"notebook executed in {seconds:.1f} s")
