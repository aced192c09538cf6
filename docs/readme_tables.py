"""The README's `nnexp compare` tables, recomputed from the runs committed under results/.

Each table the README shows of committed runs follows a comment naming the command that
prints it, which the README's reader does not see:

    <!-- nnexp compare results/ch6-ladder-20261130 -f markdown -->

    python docs/readme_tables.py            # rewrite every such table from its runs
    python docs/readme_tables.py --check    # exit 1, naming the tables that differ

Run from the repository root. The test suite runs the check, so a change to compare's
output that would make the README's tables stale fails there rather than going unnoticed.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from typer.testing import CliRunner

from nnexp.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
# the comment, a blank line, then the table's lines (each starting with "|")
TABLE = re.compile(r"^<!-- nnexp compare (?P<args>[^\n]*?) -->\n\n(?P<table>(?:\|[^\n]*\n)+)", re.M)


def compare_markdown(args: str) -> str:
    result = CliRunner().invoke(app, ["compare", *shlex.split(args)])
    if result.exit_code != 0:
        raise RuntimeError(f"nnexp compare {args}: exit {result.exit_code}: {result.output.strip()}")
    return result.stdout if result.stdout.endswith("\n") else result.stdout + "\n"


def tables(text: str) -> list[tuple[str, str, str]]:
    """(args, the README's table, the table compare prints now) for each commented table."""
    return [(m["args"], m["table"], compare_markdown(m["args"])) for m in TABLE.finditer(text)]


def rewrite(text: str) -> str:
    return TABLE.sub(lambda m: f"<!-- nnexp compare {m['args']} -->\n\n{compare_markdown(m['args'])}", text)


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    if "--check" in argv:
        stale = [args for args, have, want in tables(text) if have != want]
        for args in stale:
            print(f"README table is stale: nnexp compare {args}", file=sys.stderr)
        return 1 if stale else 0
    new = rewrite(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
    print(f"{len(TABLE.findall(text))} tables, {'rewritten' if new != text else 'all current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
