"""The README's compare tables of committed runs are what `nnexp compare` prints of those runs
today (docs/readme_tables.py; `python docs/readme_tables.py` rewrites them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_tool():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "docs" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_commented_readme_table_is_what_compare_prints(monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name results/ relative to the repository
    tool = load_tool()
    found = tool.tables(tool.README.read_text(encoding="utf-8"))
    assert len(found) >= 8  # the tables of results/: none lost its comment
    stale = [args for args, have, want in found if have != want]
    assert not stale, f"stale README tables (python docs/readme_tables.py rewrites them): {stale}"


def test_the_check_sees_a_stale_table(monkeypatch):
    monkeypatch.chdir(ROOT)
    tool = load_tool()
    text = tool.README.read_text(encoding="utf-8")
    args, have, want = tool.tables(text)[0]
    edited = text.replace(have, have.replace("completed", "diverged", 1), 1)
    assert edited != text
    assert [a for a, h, w in tool.tables(edited) if h != w] == [args]
    assert tool.rewrite(edited) == text
