"""YAML in, hardened: one document or one file read within bounds, as a plain value.

PyYAML's safe loader, reading floats as YAML 1.2 does, refusing what a config never needs and
a hostile or broken file could use against the reader: more than MAX_YAML_BYTES, nesting
deeper than MAX_YAML_DEPTH, more than MAX_YAML_VALUES once aliases are expanded (an alias
bomb), a key given twice. Every refusal is a `yaml.YAMLError` of one line; `read_yaml_file`
turns any problem with a file into one error naming it.

Also here: how a value reads in an error message (`quote`, `describe`), shared with the
config's validation.

Non-goals: writing YAML (`config.dump`), knowing what a config means (`config`).
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

from nnexp.errors import ConfigError

# Bounds on what a YAML file may make: a config is a few kB, and without them a few hundred
# bytes of nested aliases (an alias bomb) expand to gigabytes, and deep brackets overflow the
# stack
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 100  # nested lists and mappings
MAX_YAML_VALUES = 100_000  # every value, each alias counted as often as it is used

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Refused(yaml.YAMLError):
    """YAML that parses but is refused: too large, too deep, a key given twice, a scalar
    that cannot be converted. Its message is one line; callers that catch YAMLError report
    it as they report bad YAML."""


def quote(value: Any, limit: int = 60) -> str:
    """`value` as an error message quotes it: its repr, cut short, since a value may be a
    megabyte of text or a structure that prints as one."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = limit
    short.maxlevel = 3
    try:
        text = short.repr(value)
    except ValueError:  # an integer too long for str() (over 4,300 digits)
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit + 5 else text[:limit] + "..."


TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
              list: "a list", dict: "a mapping"}


def describe(value: Any) -> str:
    """How a value reads in an error message."""
    if value is None:
        return "null"
    return TYPE_NAMES.get(type(value), type(value).__name__)


def _line(mark) -> str:
    return f"line {mark.line + 1}" if mark is not None else "an unknown line"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 does: ``1e-3`` is a number, not the
    string YAML 1.1 makes of it (1.1 wants ``1.0e-3``), which is how people write eta.

    It also refuses what a config never needs and a hostile or broken file can use to exhaust
    memory or the stack (see MAX_YAML_*), and a key given twice in one mapping, which PyYAML
    would silently let the second one win."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nesting = 0
        self._extent: dict[yaml.Node, tuple[int, int]] = {}  # node -> (values, depth), expanded

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if node not in self._extent:  # still being composed: the alias is inside its anchor
                raise Refused(f"alias *{event.anchor[:40]} ({_line(event.start_mark)}) "
                               "refers to a value that contains it")
            return node
        collection = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if collection:
            self._nesting += 1
            if self._nesting > MAX_YAML_DEPTH:
                raise Refused(f"nested more than {MAX_YAML_DEPTH} levels deep "
                               f"({_line(self.peek_event().start_mark)})")
        try:
            node = super().compose_node(parent, index)
        finally:
            if collection:
                self._nesting -= 1
        if isinstance(node, yaml.MappingNode):
            self._check_keys(node)
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        values = 1 + sum(self._extent[child][0] for child in children)
        depth = (1 if collection else 0) + max((self._extent[child][1] for child in children), default=0)
        if values > MAX_YAML_VALUES:
            raise Refused(f"more than {MAX_YAML_VALUES:,} values once its aliases are expanded "
                           f"({_line(node.start_mark)})")
        if depth > MAX_YAML_DEPTH:
            raise Refused(f"nested more than {MAX_YAML_DEPTH} levels deep once its aliases are "
                           f"expanded ({_line(node.start_mark)})")
        self._extent[node] = (values, depth)
        return node

    def construct_object(self, node, deep=False):
        """PyYAML's, with a scalar it cannot convert (an integer of 5,000 digits, the date
        2001-13-45) a YAMLError like any other bad YAML, not a bare ValueError."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            raise Refused(f"cannot read the {kind} at {_line(node.start_mark)}: "
                           f"{' '.join(str(exc).split())[:80]}") from None

    def _check_keys(self, node: yaml.MappingNode) -> None:
        """A key given twice in one mapping is a mistake (the first value would be silently
        lost); keys merged in with ``<<`` may be overridden, as merging is for."""
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            first = seen.setdefault(key, key_node.start_mark)
            if first is not key_node.start_mark:
                second = key_node.start_mark
                where = (f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
                         if first.line == second.line else f"lines {first.line + 1} and {second.line + 1}")
                raise Refused(f"key {quote(key)} is given twice ({where})")


_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str):
    """One YAML document, within the MAX_YAML_* bounds (a YAMLError beyond them)."""
    if len(text) > MAX_YAML_BYTES:
        raise Refused(f"larger than {MAX_YAML_BYTES:,} bytes")
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: str | Path, error=ConfigError) -> dict:
    """A YAML file whose top level is a mapping; any problem is one line, as `error`."""
    path = Path(path)
    fail = (lambda msg: error("", msg)) if error is ConfigError else error
    if not path.is_file():
        raise fail(f"file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)  # never more: the file may be huge, or growing
        if len(data) > MAX_YAML_BYTES:
            raise fail(f"{path}: larger than {MAX_YAML_BYTES:,} bytes; a config is a few kB")
        raw = parse_yaml(data.decode("utf-8"))
    except Refused as exc:
        raise fail(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or "invalid YAML").split())
        problem = problem if len(problem) <= 120 else problem[:117] + "..."  # it may quote a tag
        raise fail(f"{path}: YAML syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise fail(f"{path}: the top level must be a mapping of keys, not {describe(raw)}")
    return raw
