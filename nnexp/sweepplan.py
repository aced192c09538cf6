"""A sweep's plan: which runs make one experiment.

A sweep is one or more base configs and a list of points, each a set of config overrides:
the cartesian product of a grid with a list of seeds, or the random draws of a search. Each
point becomes an ordinary run directory named by the point's id inside the sweep directory
(`batch.SweepDir`, which keeps the plan in its manifest and runs the points). An id is a
plain folder name; `read_manifest` reads a plan back, checked, for batch and for runset.

A sweep file is YAML with a `config:` key (a path relative to the file, a list of paths, or
an inline mapping) and optionally `name:`, `set:`, `grid:`, `seeds:` and `variants:`, named
sets of overrides of one config, each its own base: an ablation changes one thing at a time,
which a grid (every combination) cannot say.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnexp import config
from nnexp.config import flatten
from nnexp.errors import ConfigError, RunDirError, UserError
from nnexp.yamlio import parse_yaml, read_yaml_file
SWEEP_FILE_KEYS = ("name", "config", "set", "grid", "seeds", "variants")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
ID_LIMIT = 80  # characters; longer ids are cut and made unique by a hash
MANIFEST_FORMAT = 1  # of sweep.json, which `batch.SweepDir` writes and `read_manifest` reads
PLAN_KINDS = ("grid", "search")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: overrides applied to one of the sweep's base configs."""

    id: str
    base: str  # key into Plan.bases
    overrides: dict[str, Any]


@dataclass
class Plan:
    """Everything that defines a sweep; `sweep.json` holds it, so a sweep directory alone
    is enough to run the sweep again."""

    name: str
    kind: str  # grid | search
    bases: dict[str, dict]  # raw configs (their --set already applied), by key
    points: list[Point]
    spec: dict = field(default_factory=dict)  # how the points were made (grid, seeds, samples)

    def config(self, point: Point) -> dict:
        """The point's resolved config; a bad value is a ConfigError naming the point."""
        raw = config.apply_experiment_overrides(self.bases[point.base], overrides(point.overrides))
        try:
            return config.resolve(raw)
        except ConfigError as exc:
            raise ConfigError(exc.path, f"{exc.message} (sweep point {point.id})") from None


def overrides(values: dict[str, Any]) -> list[str]:
    """Values as --set strings, written as JSON: JSON is YAML, null stays null, a string stays
    a string, and a float keeps every digit (1e-05 reads back as a number)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


# --- planning ---------------------------------------------------------------------------------


def parse_grid(items: list[str]) -> dict[str, list]:
    """``KEY=V1,V2,...`` (repeatable) -> {key: [values]}; each value is read as YAML."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UserError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. training.eta=0.025,0.25,2.5")
        try:
            values = [parse_yaml(v.strip()) for v in text.split(",") if v.strip()]
        except Exception:  # noqa: BLE001 - any YAML error: one line naming the option
            raise UserError(f"--grid {item!r}: a value is not valid YAML") from None
        if key in grid:
            raise UserError(f"--grid: {key} is given twice")
        grid[key] = values
    return grid


MAX_SEEDS = 10_000  # the most seeds a sweep takes: far past any experiment, short of minutes of planning
MAX_SEED = 2**63 - 1  # a signed 64-bit integer: NumPy's SeedSequence takes it, as does any reader of summary.json


def _shown(value: Any, limit: int = 40) -> str:
    """A value as an error quotes it: its repr, cut short (it may be thousands of digits)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_seeds(text: str | int | list | None, base_seed: int, where: str = "--seeds") -> list[int] | None:
    """``N`` -> N seeds counting up from the config's own; ``1,3,5`` or a YAML list -> those.

    Seeds are whole numbers 0..MAX_SEED, at most MAX_SEEDS of them: a list entry 1.5 is
    refused rather than read as 1, and a count of 3,000,000 rather than planned for seconds."""
    if text is None:
        return None
    if isinstance(text, str) and "," not in text:
        if re.fullmatch(r"[0-9]+", text.strip()) and len(text.strip().lstrip("0")) > len(str(MAX_SEEDS)):
            # before int(), which refuses 4,300 digits with a message about Python
            raise UserError(f"{where}: at most {MAX_SEEDS:,} seeds, got {_shown(text.strip())}")
        try:
            text = int(text)
        except ValueError:
            raise UserError(f"{where}: expected a count N or a list 1,3,5, got {_shown(text)}") from None
    if isinstance(text, bool):
        raise UserError(f"{where}: expected a count N or a list of seeds, got {text}")
    if isinstance(text, int):
        if text < 1:
            raise UserError(f"{where}: the number of seeds must be at least 1, got {_shown(text)}")
        if text > MAX_SEEDS:
            raise UserError(f"{where}: at most {MAX_SEEDS:,} seeds, got {_shown(text)}")
        seeds = list(range(base_seed, base_seed + text))
    else:
        parts = text.split(",") if isinstance(text, str) else text
        seeds = _whole_numbers(parts) if isinstance(parts, list) else None
        if not seeds:
            raise UserError(f"{where}: expected a count N or a list of whole-number seeds >= 0, "
                            f"got {_shown(text)}")
        if len(seeds) > MAX_SEEDS:
            raise UserError(f"{where}: at most {MAX_SEEDS:,} seeds, got {len(seeds):,}")
        if len(set(seeds)) != len(seeds):
            raise UserError(f"{where}: a seed is listed twice")
    if max(seeds) > MAX_SEED:
        start = f" (counting up from the config's seed {_shown(base_seed)})" if isinstance(text, int) else ""
        raise UserError(f"{where}: a seed must be at most 2**63 - 1 = {MAX_SEED}{start}")
    return seeds


def _whole_numbers(parts: list) -> list[int] | None:
    """Each part as a seed, an integer >= 0 or its digits ("1,3," as "1,3"); None if any part
    is not one: 1.5 is not seed 1, nor -2 a seed."""
    seeds = []
    for part in parts:
        if isinstance(part, str) and not part.strip():
            continue
        if isinstance(part, str) and re.fullmatch(r"[0-9]+", part.strip()):
            seeds.append(int(part))
        elif isinstance(part, int) and not isinstance(part, bool) and part >= 0:
            seeds.append(part)
        else:
            return None
    return seeds


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each key's last part (``training.eta`` -> ``eta``) where that is unambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def point_id(parts: list[tuple[str, Any]]) -> str:
    """A readable id that depends only on the point's values, so re-running the same sweep
    finds the same directories: ``eta=0.25,seed=1``. Unsafe characters become ``_``; an
    over-long id is cut and made unique with a hash of the whole."""
    text = ",".join(name if value is None else f"{name}={_value_text(value)}" for name, value in parts)
    safe = _ID_UNSAFE.sub("_", text) or "point"
    if len(safe) > ID_LIMIT or safe in (".", ".."):
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        safe = f"{safe[:ID_LIMIT - 9]}-{digest}"
    return safe


def id_problem(value: Any) -> str | None:
    """Why `value` cannot be a point's id, or None. An id is the name of the point's folder
    inside its sweep, so a plain name: a separator or `..` would put a run outside the sweep,
    an empty id or `.` into the sweep's own folder."""
    if not isinstance(value, str):
        return f"expected a folder name, got {type(value).__name__} {value!r}"
    if value in ("", ".", ".."):
        return f"{value!r} is not a folder of its own inside the sweep"
    if _ID_UNSAFE.search(value):
        return f"{value!r} is not a plain folder name (letters, digits and . _ + = , - only)"
    return None


def _check_names(plan: Plan) -> Plan:
    """A plan's folders are visible ones: `compare` and `ensemble` skip hidden folders (those
    are runs set aside), so a name starting with a dot would silently vanish from them."""
    if plan.name.startswith("."):
        raise UserError(f"the sweep's name {plan.name!r} starts with '.': its folder would be hidden, "
                        f"and compare and ensemble skip hidden folders; give another --name")
    for point in plan.points:
        if point.id.startswith("."):
            raise UserError(f"sweep point {point.id!r} starts with '.': its folder would be hidden, and "
                            f"compare and ensemble skip hidden folders; rename the config or variant "
                            f"it is named after")
    return plan


def grid_plan(name: str, bases: dict[str, dict], grid: dict[str, list], seeds: list[int] | None) -> Plan:
    """The cartesian product bases x grid values x seeds, in that nesting order."""
    for key, values in grid.items():
        if not values:
            raise UserError(f"grid: {key} has no values")
        for value in values:
            if not _finite(value):  # NaN would reach the config as the string 'NaN'
                raise UserError(f"grid: {key}: a value must be a finite number, got {_shown(value)}")
        if len({_same(v) for v in values}) != len(values):  # 1 and 1.0 are one point
            raise UserError(f"grid: {key} lists a value twice")
    if seeds is not None and "seed" in grid:
        raise UserError("give the seeds either as --seeds or as a grid over seed, not both")
    short = _short_names(list(grid))
    axes = [[(key, v) for v in values] for key, values in grid.items()]
    if seeds is not None:
        axes.append([("seed", s) for s in seeds])
    points = []
    for base in bases:
        for combo in itertools.product(*axes):
            parts = ([(base, None)] if len(bases) > 1 else []) + [(short.get(k, k), v) for k, v in combo]
            points.append(Point(point_id(parts) if parts else "run", base, dict(combo)))
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):  # values that differ only in unsafe characters
        points = [Point(f"{i:03d}-{p.id}", p.base, p.overrides) for i, p in enumerate(points, start=1)]
    spec = {"grid": grid, "seeds": seeds}
    return _check_names(Plan(name, "grid", bases, points, spec))


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a grid value (lists and mappings included)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, dict)):
        return all(_finite(v) for v in (value.values() if isinstance(value, dict) else value))
    return True


def _same(value: Any) -> Any:
    """A grid value as a hashable key equal for values that make the same config: numbers
    compare as numbers (1 == 1.0, as a float field reads them), booleans stay booleans."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, list):
        return ("list", tuple(_same(v) for v in value))
    if isinstance(value, dict):
        return ("mapping", frozenset((k, _same(v)) for k, v in value.items()))
    return ("text", value)


def search_plan(name: str, base: dict, draws: list[dict[str, Any]], spec: dict) -> Plan:
    """A random search as a sweep: one point per draw, ``t001``, ``t002``, ..."""
    width = max(3, len(str(len(draws))))
    points = [Point(f"t{k:0{width}d}", name, values) for k, values in enumerate(draws, start=1)]
    return _check_names(Plan(name, "search", {name: base}, points, spec))


def load_base(path: str | Path, sets: list[str]) -> dict:
    """A config file with --set applied, validated (so a typo fails before any point runs)."""
    raw = config.apply_experiment_overrides(config.load_yaml(path), sets)
    config.resolve(raw)
    return raw


def is_sweep_file(path: str | Path) -> bool:
    """A sweep file is YAML with a top-level `config:` key (no config has one)."""
    try:
        return Path(path).is_file() and "config" in read_yaml_file(path)
    except ConfigError:
        return False


def read_sweep_file(path: str | Path, *, sets: list[str], grid: dict[str, list],
                    seeds: str | None, name: str | None) -> Plan:
    """A sweep file, with the command line's --set appended and its --grid / --seeds taking
    precedence over the file's."""
    path = Path(path)
    raw = read_yaml_file(path)
    for key in raw:
        if key not in SWEEP_FILE_KEYS:
            raise ConfigError(str(key), f"unknown key in the sweep file {path}; valid keys: "
                              f"{', '.join(SWEEP_FILE_KEYS)}")
    sources = raw["config"] if isinstance(raw["config"], list) else [raw["config"]]
    if not sources:
        raise ConfigError("config", "lists no config")
    file_sets = raw.get("set") or {}
    if not isinstance(file_sets, dict):
        raise ConfigError("set", "expected a mapping of config keys to values")
    # `set: {training: {epochs: 5}}` means training.epochs, not a new training section
    all_sets = overrides(flatten(file_sets)) + sets
    bases: dict[str, dict] = {}
    for i, source in enumerate(sources):
        where = f"config.{i}" if isinstance(raw["config"], list) else "config"
        if isinstance(source, dict):
            base = config.apply_experiment_overrides({"name": path.stem, **source}, all_sets)
            config.resolve(base)
        elif isinstance(source, str) and source.strip():
            target = (path.parent / source).expanduser()
            if not target.is_file():
                raise ConfigError(where, f"config file not found: {target}")
            base = load_base(target, all_sets)
        else:
            raise ConfigError(where, "expected a config file's path or a config mapping")
        key = str(base["name"])
        if key in bases:
            raise ConfigError(where, f"two configs are named {key!r}; give them different names")
        bases[key] = base
    if raw.get("variants") is not None:
        bases = _variants(raw["variants"], bases)
    file_grid = raw.get("grid") or {}
    if not isinstance(file_grid, dict) or not all(isinstance(v, list) for v in file_grid.values()):
        raise ConfigError("grid", "expected a mapping of config keys to lists of values")
    for key in file_grid:
        if not isinstance(key, str):  # YAML reads `5:` as a number
            raise ConfigError("grid", f"key {_shown(key)} is not a config key (a dotted name like training.eta)")
    first = config.resolve(next(iter(bases.values())))
    chosen_seeds = parse_seeds(seeds if seeds is not None else raw.get("seeds"), first["seed"],
                               "--seeds" if seeds is not None else "seeds")
    sweep_name = name or str(raw.get("name") or path.stem)
    return grid_plan(sweep_name, bases, {**file_grid, **grid}, chosen_seeds)


def plan_sweep(target: str | Path, *, sets: list[str], grid: list[str] | dict[str, list],
               seeds: str | int | list | None, name: str | None) -> Plan:
    """`nnexp sweep TARGET --grid ... --seeds ... --set ...`: the plan of a sweep file, or of
    one config's grid x seeds. `grid` is --grid's KEY=V1,V2 strings, or (from Python) the
    values already: {key: [values]}."""
    grid_values = dict(grid) if isinstance(grid, dict) else parse_grid(grid)
    if is_sweep_file(target):
        return read_sweep_file(target, sets=sets, grid=grid_values, seeds=seeds, name=name)
    base = load_base(target, sets)
    first_seed = config.resolve(base)["seed"]
    return grid_plan(name or base["name"], {base["name"]: base}, grid_values, parse_seeds(seeds, first_seed))


def _variants(spec: Any, bases: dict[str, dict]) -> dict[str, dict]:
    """`variants: {name: {key: value, ...}, ...}` of the sweep's one config: one base per
    variant, named by it (an empty mapping is the config itself)."""
    if not isinstance(spec, dict) or not spec:
        raise ConfigError("variants", "expected a mapping of variant names to mappings of config keys")
    if len(bases) != 1:
        raise ConfigError("variants", "variants change one config; the sweep file lists several")
    (base,) = bases.values()
    out: dict[str, dict] = {}
    for name, sets in spec.items():
        where = f"variants.{name}"
        if not isinstance(name, str) or _ID_UNSAFE.search(name) or name.startswith("."):
            raise ConfigError(where, "a variant's name is part of a directory name: use letters, "
                              "digits and . _ + = , -, and do not start it with '.' (a hidden folder)")
        if not isinstance(sets, dict):
            raise ConfigError(where, "expected a mapping of config keys to values ({} for the config as it is)")
        try:
            variant = config.apply_experiment_overrides(copy.deepcopy(base), overrides(flatten(sets)))
            config.resolve(variant)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc.path}" if exc.path else where, exc.message) from None
        out[name] = {**variant, "name": f"{base['name']}-{name}" if sets else base["name"]}
    return out


# --- a sweep directory's manifest, read back -------------------------------------------------


def read_manifest(manifest: Path) -> tuple[Plan, dict]:
    """The plan in a sweep directory's manifest, and the whole record (the points' statuses
    and the rest are `batch.SweepDir`'s to check). Anything a plan cannot be (an unknown
    base, an id that is no plain folder name) is one RunDirError naming the file: the
    manifest decides which folders are trained and read."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{manifest} is damaged ({type(exc).__name__}: {exc})") from None

    def damaged(what: str) -> RunDirError:
        return RunDirError(f"{manifest} is damaged: {what}")

    if not isinstance(data, dict):
        raise damaged(f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != MANIFEST_FORMAT:
        raise RunDirError(f"{manifest} has format {data.get('format')!r}; this nnexp reads {MANIFEST_FORMAT}")
    name, kind, bases, spec, points = (data.get(k) for k in ("name", "kind", "bases", "spec", "points"))
    if not isinstance(name, str) or not name:
        raise damaged(f"name: expected the sweep's name, got {name!r}")
    if kind not in PLAN_KINDS:
        raise damaged(f"kind: expected {' or '.join(PLAN_KINDS)}, got {kind!r}")
    if not isinstance(bases, dict) or not bases or not all(isinstance(b, dict) for b in bases.values()):
        raise damaged("bases: expected a mapping of names to configs")
    if spec is not None and not isinstance(spec, dict):
        raise damaged(f"spec: expected a mapping, got {type(spec).__name__}")
    if not isinstance(points, list) or not points:
        raise damaged("points: expected a list of points")
    plan_points, seen = [], set()
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            raise damaged(f"points.{i}: expected an object with id, base and overrides")
        problem = id_problem(point.get("id"))
        if problem is not None:
            raise damaged(f"points.{i}.id: {problem}")
        if point["id"] in seen:
            raise damaged(f"points.{i}.id: {point['id']!r} is listed twice")
        seen.add(point["id"])
        if not isinstance(point.get("base"), str) or point["base"] not in bases:
            raise damaged(f"points.{i}.base: {point.get('base')!r} is not one of the bases "
                          f"({', '.join(map(str, bases))})")
        if not isinstance(point.get("overrides"), dict):
            raise damaged(f"points.{i}.overrides: expected a mapping of config keys to values")
        plan_points.append(Point(point["id"], point["base"], dict(point["overrides"])))
    return Plan(name, kind, dict(bases), plan_points, dict(spec or {})), data


def selected(plan: Plan, only: list[str] | None) -> list[Point]:
    """The points whose ids match any of the globs `only` (all points without it)."""
    if not only:
        return list(plan.points)
    chosen = [p for p in plan.points if any(fnmatch.fnmatchcase(p.id, g) for g in only)]
    if not chosen:
        raise UserError(f"--only {' '.join(only)} matches none of the sweep's points "
                        f"({', '.join(p.id for p in plan.points[:4])}{', ...' if len(plan.points) > 4 else ''})")
    return chosen
