"""Experiment configs: schema, defaults, loading (through `yamlio`), `--set` overrides, validation.

A config file lists only what differs from the defaults below; `resolve` fills in the rest and
returns a plain nested dict (what `nnexp show-config` prints and what a run directory keeps).
Every mistake is reported as a `ConfigError` carrying the dotted key path
(``model.layers.2.units``) and, for misspelt names, a did-you-mean suggestion.

Non-goals: no interpolation, no includes, no per-experiment Python code in configs.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nnexp.data import DATASETS
from nnexp.data.augment import check_augment_spec
from nnexp.errors import ConfigError
from nnexp.network import build_spec
from nnexp.yamlio import TYPE_NAMES, Refused, describe, parse_yaml, quote, read_yaml_file

REQUIRED = object()  # marker default: the key must be given

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
COSTS = ("log-likelihood", "cross-entropy", "quadratic")
INITS = ("network3", "network2", "large", "xavier", "he", "small")
L2_FORMS = ("network3", "network2", "plain")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
# halve-on-plateau: chapter 3's rule; step: eta * step_factor every step_every epochs;
# cosine: from eta to nearly 0 over training.epochs (after any warm-up), so it depends on them
SCHEDULES = ("constant", "halve-on-plateau", "step", "cosine")
OPTIMIZER_SETTINGS = {"momentum": ("momentum", "nesterov"), "rmsprop_decay": ("rmsprop",),
                      "beta1": ("adam",), "beta2": ("adam",)}  # key -> the optimisers using it
DEVICES = ("auto", "cpu", "cuda")
# Where a max-pool window's gradient goes when several inputs tie for its maximum (a blank
# patch convolves to the bias everywhere): the first one (torch, cuDNN), or all of them, each
# the whole gradient (Theano's, so network3's)
POOL_TIES = ("first", "all")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Field:
    """One leaf of the schema: its type, default and allowed values."""

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    nullable: bool = False


def _fraction() -> Field:
    return Field(float, 0.0, min=0.0, max=1.0, max_exclusive=True)


SCHEMA: dict[str, Any] = {
    "name": Field(str, "run"),
    "seed": Field(int, 0, min=0),
    "backend": Field(str, "numpy"),  # checked against the backend registry at build time
    "device": Field(str, "auto", choices=DEVICES),
    "dtype": Field(str, "float32", choices=DTYPES),
    "deterministic": Field(bool, False),
    "data": {
        "dataset": Field(str, "mnist", choices=DATASETS),
        "train_size": Field(int, None, min=1, nullable=True),
        "path": Field(str, None, nullable=True),
        "expanded_seed": Field(int, 0, min=0),
        "augment": Field(dict, None, nullable=True),
    },
    "model": {
        "init": Field(str, "network3", choices=INITS),
        "init_std": Field(float, 0.01, min=0.0, min_exclusive=True),
        "layers": Field(list, REQUIRED),
    },
    "training": {
        "cost": Field(str, "log-likelihood", choices=COSTS),
        "epochs": Field(int, 60, min=1),
        "batch_size": Field(int, 10, min=1),
        "eta": Field(float, 0.1, min=0.0, min_exclusive=True),
        "lambda": Field(float, 0.0, min=0.0),
        "l1": Field(float, 0.0, min=0.0),
        "l2": Field(str, "network3", choices=L2_FORMS),
        "optimizer": Field(str, "sgd", choices=OPTIMIZERS),
        "momentum": Field(float, 0.9, min=0.0, max=1.0, max_exclusive=True),
        "rmsprop_decay": Field(float, 0.99, min=0.0, max=1.0, max_exclusive=True),
        "beta1": Field(float, 0.9, min=0.0, max=1.0, max_exclusive=True),
        "beta2": Field(float, 0.999, min=0.0, max=1.0, max_exclusive=True),
        "schedule": Field(str, "constant", choices=SCHEDULES),
        "step_every": Field(int, None, min=1, nullable=True),  # schedule step: epochs per step
        "step_factor": Field(float, 0.1, min=0.0, max=1.0, min_exclusive=True),
        "warmup_epochs": Field(int, 0, min=0),  # eta rises linearly over these first epochs
        "shuffle": Field(bool, True),
        "early_stopping": {"patience": Field(int, 10, min=1, nullable=True)},
        "monitor_train": Field(bool, False),
        "monitor_layer_speed": Field(int, None, min=1, nullable=True),
    },
    "reference": Field(dict, None, nullable=True),  # checked against REFERENCE_SCHEMA
    # the config file's reference, kept aside when an override changed the experiment: compare
    # says why a run has no book column, and which keys took it away
    "reference_dropped": Field(dict, None, nullable=True),  # checked against DROPPED_SCHEMA
}

# A published number a config reproduces (`reference:`). It never changes training: compare
# reads it to set the book's value beside ours, chosen the book's way.
SELECTIONS = ("best-of-seeds", "single", "peak-test")
REFERENCE_SCHEMA: dict[str, Field] = {
    "source": Field(str, REQUIRED),  # book, chapter, section, in words
    "chapter": Field(int, REQUIRED, min=1),
    "metric": Field(str, "test_accuracy", choices=("test_accuracy", "validation_accuracy")),
    "value": Field(float, REQUIRED, min=0.0, max=100.0, min_exclusive=True),  # percent
    # best-of-seeds: the seed with the best validation accuracy (the book's "best of 3");
    # single: one run (ours: the seed group's mean); peak-test: the highest test accuracy
    # over the epochs, as the book's chapter 3 reports it
    "selection": Field(str, "single", choices=SELECTIONS),
    "tolerance": Field(float, None, min=0.0, nullable=True),  # points; default by chapter
}
DROPPED_SCHEMA: dict[str, Field] = {
    "source": Field(str, None, nullable=True),
    "value": Field(float, REQUIRED),  # percent, as the reference said
    "by": Field(list, REQUIRED),  # the overridden keys that changed the experiment
}
REFERENCE_TOLERANCE = {6: 0.15}  # chapter -> points; any other chapter: DEFAULT_TOLERANCE
DEFAULT_TOLERANCE = 1.5


def reference_tolerance(reference: dict) -> float:
    if reference.get("tolerance") is not None:
        return reference["tolerance"]
    return REFERENCE_TOLERANCE.get(reference["chapter"], DEFAULT_TOLERANCE)


LAYER_SCHEMAS: dict[str, dict[str, Field]] = {
    "dense": {
        "units": Field(int, REQUIRED, min=1),
        "activation": Field(str, "sigmoid", choices=ACTIVATIONS),
        "dropout": _fraction(),
        "batch_norm": Field(bool, False),
    },
    "conv": {
        "filters": Field(int, REQUIRED, min=1),
        "size": Field(int, REQUIRED, min=1),
        "pool": Field(int, 1, min=1),
        "pad": Field(int, 0, min=0),
        "stride": Field(int, 1, min=1),
        "activation": Field(str, "sigmoid", choices=ACTIVATIONS),
        "batch_norm": Field(bool, False),
        "pool_ties": Field(str, "first", choices=POOL_TIES),
    },
    "pool": {"size": Field(int, REQUIRED, min=1), "pool_ties": Field(str, "first", choices=POOL_TIES)},
    "softmax": {"units": Field(int, REQUIRED, min=1), "dropout": _fraction()},
}

# ---------------------------------------------------------------------------------------------
# Loading and overrides


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a dict; `name` defaults to the file's stem."""
    if Path(path).is_dir():
        raise ConfigError("", f"{path} is a directory, not a config file")
    if not Path(path).is_file():
        raise ConfigError("", f"config file not found: {path}")
    raw = read_yaml_file(path)
    if raw.get("name") is None:
        raw["name"] = Path(path).stem
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``300``, ``null``, ``[..]``).

    List items are addressed by index (``model.layers.2.units=300``). A key that does not
    exist yet may be set on a mapping (validation then judges it); a list index must exist.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("", f"--set expects key.path=value, got {quote(item)}")
        try:
            value = parse_yaml(text) if text.strip() else None
        except Refused as exc:  # well-formed, but more than nnexp reads: not "invalid YAML"
            digits = text.strip().lstrip("+-")
            if re.fullmatch(r"[0-9]+", digits):  # Python reads at most 4,300 digits
                raise ConfigError(key, f"--set value {quote(text)} is an integer of {len(digits):,} "
                                       f"digits, too large to read") from None
            raise ConfigError(key, f"--set value {quote(text)} is refused: {exc}") from None
        except yaml.YAMLError:
            raise ConfigError(key, f"--set value {quote(text)} is not valid YAML") from None
        parts = key.split(".")
        node: Any = raw
        for depth, part in enumerate(parts):
            here = ".".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(here, f"no list item {part} (the list has {len(node)} items)")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(here, f"cannot set a key inside {describe(node)}")
    return raw


# ---------------------------------------------------------------------------------------------
# Validation


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_field(path: str, field: Field, value: Any) -> Any:
    if value is None:
        if field.nullable:
            return None
        raise ConfigError(path, "must not be null")
    types = field.type if isinstance(field.type, tuple) else (field.type,)
    # YAML's `true` is an int to Python; a boolean is never a number here.
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(path, f"expected {TYPE_NAMES[types[0]]}, got a boolean ({value})")
    if float in types and isinstance(value, int):
        value = float(value)
    if not isinstance(value, types):
        # YAML reads only .nan and .inf as numbers: `nan` or `inf` arrives as a string
        wanted = "a finite number" if float in types and _spells_non_finite(value) else TYPE_NAMES[types[0]]
        raise ConfigError(path, f"expected {wanted}, got {describe(value)} ({quote(value)})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(path, f"must be a finite number, got {value}")
    if field.choices is not None and value not in field.choices:
        raise ConfigError(path, f"unknown value {quote(value)}; valid: {', '.join(field.choices)}"
                          + _suggest(value, field.choices))
    if field.min is not None and (value < field.min or (field.min_exclusive and value == field.min)):
        op = ">" if field.min_exclusive else ">="
        raise ConfigError(path, f"must be {op} {field.min:g}, got {quote(value)}")
    if field.max is not None and (value > field.max or (field.max_exclusive and value == field.max)):
        op = "<" if field.max_exclusive else "<="
        raise ConfigError(path, f"must be {op} {field.max:g}, got {quote(value)}")
    return value


def _spells_non_finite(value: Any) -> bool:
    """Whether a string is NaN or an infinity as Python or JSON writes it (nan, -Infinity)."""
    try:
        return isinstance(value, str) and len(value) < 20 and not math.isfinite(float(value))
    except ValueError:
        return False


def _check_mapping(path: str, schema: dict[str, Any], raw: Any) -> dict:
    """Validate `raw` against a (nested) schema; return it with every default filled in."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping, got {describe(raw)}")
    for key in raw:
        if key not in schema:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, "unknown key" + _suggest(key, schema)
                              + f"; valid keys here: {', '.join(schema)}")
    out = {}
    for key, sub in schema.items():
        where = f"{path}.{key}" if path else key
        if isinstance(sub, dict):
            if key in raw and raw[key] is None:  # `early_stopping: null` must not mean "defaults"
                raise ConfigError(where, f"expected a mapping of {', '.join(sub)}, got null")
            out[key] = _check_mapping(where, sub, raw.get(key))
        elif key in raw:
            out[key] = _check_field(where, sub, raw[key])
        elif sub.default is REQUIRED:
            raise ConfigError(where, "is required")
        else:
            out[key] = copy.deepcopy(sub.default)
    return out


def _check_layers(layers: list) -> list[dict]:
    if not layers:
        raise ConfigError("model.layers", "must list at least one layer")
    out = []
    for i, layer in enumerate(layers):
        path = f"model.layers.{i}"
        if not isinstance(layer, dict):
            raise ConfigError(path, f"expected a mapping like {{type: dense, units: 100}}, got {describe(layer)}")
        kind = layer.get("type")
        if kind is None:
            raise ConfigError(f"{path}.type", f"is required; valid: {', '.join(LAYER_SCHEMAS)}")
        if not isinstance(kind, str) or kind not in LAYER_SCHEMAS:
            raise ConfigError(f"{path}.type", f"unknown layer type {quote(kind)}; valid: "
                              f"{', '.join(LAYER_SCHEMAS)}" + _suggest(kind, LAYER_SCHEMAS))
        body = {k: v for k, v in layer.items() if k != "type"}
        out.append({"type": kind, **_check_mapping(path, LAYER_SCHEMAS[kind], body)})
    return out


def _check_consistency(cfg: dict) -> None:
    """Checks across keys: the output layer must suit the cost; a schedule needs a plateau rule."""
    # A setting the chosen init or optimiser would ignore is an error, not a silent no-op.
    # Only a value other than the default counts: a resolved config (a run's config.yaml)
    # spells out every default, and must resolve again.
    training = cfg["training"]
    if cfg["model"]["init_std"] != SCHEMA["model"]["init_std"].default and cfg["model"]["init"] != "small":
        raise ConfigError("model.init_std", f"only the small init uses it, not "
                          f"{cfg['model']['init']!r}; set model.init: small")
    for key, users in OPTIMIZER_SETTINGS.items():
        if training[key] != SCHEMA["training"][key].default and training["optimizer"] not in users:
            raise ConfigError(f"training.{key}", f"only {' and '.join(users)} "
                              f"use{'s' if len(users) == 1 else ''} it, not {training['optimizer']!r}")
    if training["schedule"] == "halve-on-plateau" and training["early_stopping"]["patience"] is None:
        raise ConfigError("training.schedule", "halve-on-plateau halves eta after "
                          "training.early_stopping.patience epochs without improvement; set a patience")
    if (training["schedule"] == "step") != (training["step_every"] is not None):
        raise ConfigError("training.step_every", "the step schedule needs training.step_every (epochs)"
                          if training["schedule"] == "step" else
                          f"only the step schedule uses it, not {training['schedule']!r}")
    if training["step_factor"] != SCHEMA["training"]["step_factor"].default and training["schedule"] != "step":
        raise ConfigError("training.step_factor", f"only the step schedule uses it, not {training['schedule']!r}")
    if training["warmup_epochs"] >= training["epochs"]:
        raise ConfigError("training.warmup_epochs", f"{training['warmup_epochs']} warm-up epochs leave "
                          f"none of the {training['epochs']} epochs at the full eta")
    layers = cfg["model"]["layers"]
    cost = cfg["training"]["cost"]
    for i, layer in enumerate(layers[:-1]):
        if layer["type"] == "softmax":
            raise ConfigError(f"model.layers.{i}.type", "a softmax layer can only be the last layer")
    last, where = layers[-1], f"model.layers.{len(layers) - 1}"
    if last["type"] not in ("softmax", "dense"):
        raise ConfigError(f"{where}.type", f"the last layer must be the output layer "
                          f"(softmax or dense), got {last['type']!r}")
    if cost == "log-likelihood" and last["type"] != "softmax":
        raise ConfigError("training.cost", "log-likelihood needs a softmax output layer "
                          f"({where} is {last['type']})")
    if cost == "cross-entropy" and not (last["type"] == "dense" and last["activation"] == "sigmoid"):
        raise ConfigError("training.cost", "cross-entropy needs a dense sigmoid output layer "
                          f"({where}); use log-likelihood with softmax")
    if cost == "quadratic" and last["type"] != "dense":
        raise ConfigError("training.cost", f"quadratic needs a dense output layer ({where})")


NAME_LIMIT = 100  # characters: a run directory's name adds a timestamp, and file systems stop at 255 bytes


def resolve(raw: dict) -> dict:
    """Validate a raw config dict and return the fully resolved config (defaults filled in)."""
    cfg = _check_mapping("", SCHEMA, raw)
    if len(cfg["name"]) > NAME_LIMIT or not cfg["name"].strip():
        raise ConfigError("name", f"must be 1 to {NAME_LIMIT} characters, got {len(cfg['name'])}")
    cfg["model"]["layers"] = _check_layers(cfg["model"]["layers"])
    cfg["data"]["augment"] = check_augment_spec(cfg["data"]["augment"]) or None
    if cfg["reference"] is not None:
        cfg["reference"] = _check_mapping("reference", REFERENCE_SCHEMA, cfg["reference"])
    if cfg["reference_dropped"] is not None:
        cfg["reference_dropped"] = _check_mapping("reference_dropped", DROPPED_SCHEMA, cfg["reference_dropped"])
    _check_consistency(cfg)
    build_spec(cfg["model"]["layers"])  # raises ConfigError on impossible shapes
    return cfg


# Overrides that leave the experiment as the book ran it: where and how it runs, its seed.
SAME_EXPERIMENT_KEYS = ("name", "seed", "backend", "device", "dtype", "deterministic", "data.path")


def changes_experiment(keys) -> bool:
    """Whether overriding these dotted keys makes another experiment than the config's."""
    return any(key not in SAME_EXPERIMENT_KEYS and key.split(".")[0] != "reference" for key in keys)


def override_keys(overrides: list[str]) -> list[str]:
    return [item.partition("=")[0].strip() for item in overrides]


def apply_experiment_overrides(raw: dict, overrides: list[str]) -> dict:
    """`apply_overrides`, dropping the config's `reference:` when an override changes the
    experiment (another eta, fewer epochs): the book's number belongs to the book's setting,
    and a verdict against it would mislead. What was dropped, and by which keys, is kept in
    `reference_dropped`, so `train` and `compare` can say why there is no book column."""
    raw = apply_overrides(raw, overrides)
    changed = [key for key in override_keys(overrides) if changes_experiment([key])]
    if not changed:
        return raw
    ref, dropped = raw.get("reference"), raw.get("reference_dropped")
    if isinstance(ref, dict) and ref.get("value") is not None:
        raw["reference"] = None
        raw["reference_dropped"] = {"source": ref.get("source"), "value": ref["value"],
                                    "by": list(dict.fromkeys(changed))}
    elif isinstance(dropped, dict) and isinstance(dropped.get("by"), list):  # dropped before: add these keys
        raw["reference_dropped"] = {**dropped, "by": list(dict.fromkeys([*dropped["by"], *changed]))}
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read, override and validate a config file."""
    return resolve(apply_experiment_overrides(load_yaml(path), overrides or []))


def dump(cfg: dict) -> str:
    """The resolved config as YAML, keys in schema order."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=100)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as dotted keys: ``{"model.layers.2.units": 100, ...}``.

    List items are addressed by index, as `--set` addresses them, so two layer lists of
    different lengths differ exactly in the keys of the extra layers.
    """
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None or not value:  # a leaf, or an empty container (kept, so it can differ)
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, sub in items:
        out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out
