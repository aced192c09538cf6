"""Config loading, defaults, --set overrides and validation errors (with key paths)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nnexp import config
from nnexp.cli import app
from nnexp.errors import ConfigError
from nnexp.network import build_spec

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml"))
SWEEP_FILES = [p for p in CONFIGS if "\nconfig:" in p.read_text()]
CONFIGS = [p for p in CONFIGS if p not in SWEEP_FILES]
BASE = {"model": {"layers": [{"type": "conv", "filters": 20, "size": 5, "pool": 2},
                             {"type": "dense", "units": 100},
                             {"type": "softmax", "units": 10}]}}


def with_changes(*changes: str) -> dict:
    return config.apply_overrides(BASE, list(changes))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_resolves_and_names_its_book_number(path):
    cfg = config.load(path)
    assert cfg["name"] == path.stem
    text = path.read_text()
    assert "Book:" in text or "Record:" in text, "each config carries the number it aims at in a comment"


def test_defaults_are_filled_in_and_dump_round_trips():
    cfg = config.resolve(BASE)
    assert cfg["training"]["batch_size"] == 10 and cfg["training"]["l2"] == "network3"
    assert cfg["model"]["layers"][0] == {"type": "conv", "filters": 20, "size": 5, "pool": 2,
                                         "pad": 0, "stride": 1, "activation": "sigmoid",
                                         "batch_norm": False, "pool_ties": "first"}
    assert cfg["model"]["layers"][1] == {"type": "dense", "units": 100, "activation": "sigmoid",
                                         "dropout": 0.0, "batch_norm": False}
    assert config.resolve(yaml.safe_load(config.dump(cfg))) == cfg


def test_set_overrides_nested_keys_and_list_items():
    raw = config.apply_overrides(BASE, ["training.eta=0.03", "model.layers.1.units=300",
                                        "data.train_size=null", "model.layers.1.activation=relu"])
    cfg = config.resolve(raw)
    assert cfg["training"]["eta"] == 0.03
    assert cfg["model"]["layers"][1]["units"] == 300 and cfg["model"]["layers"][1]["activation"] == "relu"
    assert BASE["model"]["layers"][1]["units"] == 100, "overrides never mutate their input"


def test_inferred_shapes():
    spec = build_spec(config.resolve(config.load_yaml(CONFIGS[0].parent / "conv2_relu.yaml"))["model"]["layers"])
    assert [layer.out_shape for layer in spec.layers] == [(20, 12, 12), (40, 4, 4), (100,), (10,)]
    assert spec.layers[2].n_in == 640
    assert spec.n_params == 20 * 25 + 20 + 40 * 20 * 25 + 40 + 640 * 100 + 100 + 100 * 10 + 10


# (changes, key path named in the error, words the message must contain)
BAD = [
    (["training.eta=-1"], "training.eta", "> 0"),
    (["training.eta=abc"], "training.eta", "expected a number"),
    (["training.epochs=0"], "training.epochs", ">= 1"),
    (["training.epochs=2.5"], "training.epochs", "expected an integer"),
    (["training.batch_size=true"], "training.batch_size", "boolean"),
    (["training.cost=log_likelihood"], "training.cost", "did you mean 'log-likelihood'"),
    (["training.l2=network4"], "training.l2", "valid: network3, network2, plain"),
    (["training.optimizer=adamw"], "training.optimizer", "did you mean 'adam'"),
    (["model.init_std=0.1"], "model.init_std", "only the small init uses it"),
    (["training.beta1=0.5"], "training.beta1", "only adam uses it, not 'sgd'"),
    (["training.optimizer=adam", "training.momentum=0.5"], "training.momentum", "only momentum and nesterov"),
    (["training.optimizer=adam", "training.rmsprop_decay=0.9"], "training.rmsprop_decay", "only rmsprop"),
    (["model.init=small", "model.init_std=0"], "model.init_std", "> 0"),
    (["model.layers.2.batch_norm=true"], "model.layers.2.batch_norm", "unknown key"),
    (["training.beta2=1.0"], "training.beta2", "< 1"),
    (["training.rmsprop_decay=-0.1"], "training.rmsprop_decay", ">= 0"),
    (["training.etaa=0.1"], "training.etaa", "did you mean 'eta'"),
    (["trainig.eta=0.1"], "trainig", "did you mean 'training'"),
    (["model.init=glorot"], "model.init", "unknown value"),
    (["model.layers.1.type=dense2"], "model.layers.1.type", "unknown layer type"),
    (["model.layers.1.activation=relu6"], "model.layers.1.activation", "valid: sigmoid"),
    (["model.layers.1.units=0"], "model.layers.1.units", ">= 1"),
    (["model.layers.1.dropout=1.0"], "model.layers.1.dropout", "< 1"),
    (["model.layers.0.dropout=0.5"], "model.layers.0.dropout", "unknown key"),
    (["model.layers.0.size=30"], "model.layers.0.size", "larger than its 28x28 input"),
    (["model.layers.0.pool=5"], "model.layers.0.pool", "does not divide"),
    (["model.layers.0.pad=-1"], "model.layers.0.pad", ">= 0"),
    (["model.layers.0.pad=1", "model.layers.0.pool=4"], "model.layers.0.pool", "does not divide the 26x26"),
    (["model.layers.0.filters=null"], "model.layers.0.filters", "must not be null"),
    (["model.layers=[]"], "model.layers", "at least one layer"),
    (["model.layers.1=5"], "model.layers.1", "expected a mapping"),
    (["model.layers.2.type=dense"], "training.cost", "needs a softmax output layer"),
    (["training.cost=cross-entropy"], "training.cost", "sigmoid output layer"),
    (["model.layers.1.type=softmax"], "model.layers.1.type", "only be the last layer"),
    (["data.dataset=cifar10"], "data.dataset", "valid: mnist"),
    (["data.train_size=0"], "data.train_size", ">= 1"),
    (["data.augment.spin=3"], "data.augment.spin", "unknown augmentation"),
    (["seed=-1"], "seed", ">= 0"),
    (["device=tpu"], "device", "valid: auto, cpu, cuda"),
    (["training.early_stopping.patience=0"], "training.early_stopping.patience", ">= 1"),
    (["model.layers.9.units=3"], "model.layers.9", "no list item"),
    (["model.layers.0.type=[conv]"], "model.layers.0.type", "unknown layer type"),
    (["name=null"], "name", "must not be null"),
    (["training.early_stopping=null"], "training.early_stopping", "expected a mapping of patience"),
    (["training.schedule=halve-on-plateau", "training.early_stopping.patience=null"],
     "training.schedule", "set a patience"),
]


@pytest.mark.parametrize("changes,path,words", BAD, ids=[c[0][0] for c in BAD])
def test_bad_values_name_their_key(changes, path, words):
    with pytest.raises(ConfigError) as info:
        config.resolve(with_changes(*changes))
    assert info.value.path == path
    assert words in str(info.value)


def test_conv_after_dense_is_rejected():
    raw = {"model": {"layers": [{"type": "dense", "units": 50}, {"type": "conv", "filters": 2, "size": 3},
                                {"type": "softmax", "units": 10}]}}
    with pytest.raises(ConfigError, match="model.layers.1.type: a conv layer cannot follow a dense"):
        config.resolve(raw)


def test_a_network_without_an_output_layer_is_rejected():
    raw = {"model": {"layers": [{"type": "conv", "filters": 2, "size": 5}, {"type": "pool", "size": 2}]}}
    with pytest.raises(ConfigError, match="model.layers.1.type: the last layer must be the output layer"):
        config.resolve(raw)


def test_floats_in_exponent_form_are_numbers(tmp_path):
    """YAML 1.1 would read 1e-3 as a string; people write eta that way."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE) + "training: {eta: 1e-3, lambda: 5E-1}\n")
    cfg = config.load(path, ["training.optimizer=momentum", "training.momentum=2.5e-1"])
    assert cfg["training"]["eta"] == 0.001 and cfg["training"]["lambda"] == 0.5
    assert cfg["training"]["momentum"] == 0.25


def test_a_null_name_falls_back_to_the_file_name(tmp_path):
    path = tmp_path / "my_experiment.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": None}))
    assert config.load(path)["name"] == "my_experiment"


def test_missing_required_key():
    with pytest.raises(ConfigError, match="model.layers: is required"):
        config.resolve({})


@pytest.mark.parametrize("text,words", [
    ("model: [unclosed", "YAML syntax error (line 1"),
    ("- just\n- a list\n", "top level must be a mapping"),
])
def test_bad_yaml_files(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml") as info:
        config.load(path)
    assert words in str(info.value)


runner = CliRunner()


@pytest.mark.parametrize("changes,path,words", BAD[:8] + BAD[14:18], ids=[c[0][0] for c in BAD[:8] + BAD[14:18]])
def test_cli_reports_bad_config_in_one_line_with_exit_2(tmp_path, changes, path, words):
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(BASE))
    runs = tmp_path / "runs"
    args = ["train", str(cfg_path), "--runs-dir", str(runs)]
    for change in changes:
        args += ["--set", change]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and path in lines[0], lines
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir()), "bad input must not leave a run behind"


@pytest.mark.parametrize("change,words", [
    ("training.epochs=" + "9" * 5000, "training.epochs: --set value '999"),  # was "not valid YAML"
    ("training.eta=nan", "training.eta: expected a finite number, got a string ('nan')"),
    ("training.eta=-Infinity", "training.eta: expected a finite number, got a string ('-Infinity')"),
    ("training.eta=.nan", "training.eta: must be a finite number, got nan"),
])
def test_cli_says_why_a_set_value_cannot_be_used(tmp_path, change, words):
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(BASE))
    result = runner.invoke(app, ["train", str(cfg_path), "--set", change, "--runs-dir", str(tmp_path / "runs")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and words in lines[0], result.output[-300:]
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
    if "9999" in change:
        assert "is an integer of 5,000 digits, too large to read" in lines[0] and len(lines[0]) < 200


def test_cli_missing_config_file(tmp_path):
    result = runner.invoke(app, ["show-config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_show_config_prints_the_resolved_config(tmp_path):
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(BASE))
    result = runner.invoke(app, ["show-config", str(cfg_path), "--set", "training.eta=0.5",
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown == config.load(cfg_path, ["training.eta=0.5", "seed=3"])


def test_the_reference_block_is_validated_and_never_changes_training():
    from nnexp import config as cfgmod

    base = {"model": {"layers": [{"type": "softmax", "units": 10}]}}
    ref = {"source": "Nielsen ch. 6", "chapter": 6, "value": 99.23, "selection": "best-of-seeds"}
    cfg = cfgmod.resolve({**base, "reference": ref})
    assert cfg["reference"] == {**ref, "metric": "test_accuracy", "tolerance": None}
    plain = cfgmod.resolve(base)
    assert plain["reference"] is None and {**cfg, "reference": None} == plain
    for bad, words in [({**ref, "value": 120}, "reference.value: must be <= 100"),
                       ({**ref, "selection": "best"}, "reference.selection: unknown value 'best'"),
                       ({k: v for k, v in ref.items() if k != "chapter"}, "reference.chapter: is required"),
                       ({**ref, "sorce": "x"}, "reference.sorce: unknown key (did you mean 'source'?)")]:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            cfgmod.resolve({**base, "reference": bad})


def test_every_shipped_config_with_a_book_number_carries_it():
    from nnexp import config as cfgmod

    missing = []
    for path in CONFIGS:
        text = path.read_text()
        if "% test accuracy" in text or "validation accuracy)" in text:
            if cfgmod.load(path)["reference"] is None:
                missing.append(path.name)
    assert not missing


def test_an_override_that_changes_the_experiment_drops_the_books_number():
    path = Path(__file__).resolve().parent.parent / "configs" / "conv2_relu.yaml"
    assert config.load(path)["reference"]["value"] == 99.23
    assert config.load(path, ["seed=3", "backend=torch", "device=cpu"])["reference"]["value"] == 99.23
    for change in ("training.eta=0.1", "training.epochs=1", "data.train_size=1000"):
        assert config.load(path, [change])["reference"] is None, change
