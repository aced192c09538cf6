"""The Python entry point (`nnexp.train`), `resume --set` extending a completed run, and the
command line's small promises (--version, flags shown as flags)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

import nnexp
from nnexp.cli import app
from nnexp.errors import ConfigError
from nnexp.runs import Run

from conftest import needs_mnist

TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 2, "eta": 0.5}}


def write(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def metrics(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in Run(path).read_metrics()]


@needs_mnist
def test_nnexp_train_from_python_is_the_cli_s_run(tmp_path):
    run = nnexp.train(write(tmp_path), runs_dir=tmp_path / "py", epochs=3, **{"training.eta": 0.25})
    assert run.summary["status"] == "completed" and len(run.metrics) == 3
    assert run.config["training"]["eta"] == 0.25 and run.path.parent == tmp_path / "py"
    cli = CliRunner().invoke(app, ["train", str(write(tmp_path)), "training.epochs=3", "training.eta=0.25",
                                   "--runs-dir", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert metrics(run.path) == metrics(cli.stdout.strip())
    try:
        nnexp.train(write(tmp_path), runs_dir=tmp_path / "bad", training__etaa=1)
    except ConfigError as exc:
        assert "training.etaa" in str(exc)
    else:
        raise AssertionError("an unknown key must be refused")
    assert not (tmp_path / "bad").exists()


@needs_mnist
def test_resume_set_epochs_extends_a_completed_run_to_what_a_longer_run_gives(tmp_path):
    runner = CliRunner()
    short = runner.invoke(app, ["train", str(write(tmp_path)), "--runs-dir", str(tmp_path / "a")]).stdout.strip()
    longer = runner.invoke(app, ["train", str(write(tmp_path)), "training.epochs=4",
                                 "--runs-dir", str(tmp_path / "b")]).stdout.strip()
    extended = runner.invoke(app, ["resume", short, "--set", "training.epochs=4"])
    assert extended.exit_code == 0, extended.output
    assert metrics(short) == metrics(longer)
    assert yaml.safe_load((Run(short).path / "config.yaml").read_text())["training"]["epochs"] == 4
    refused = runner.invoke(app, ["resume", short, "--set", "model.layers.0.units=20"])
    assert refused.exit_code == 2 and "model.layers.0.units: cannot change when resuming" in refused.output


def test_version_and_flags_read_as_flags():
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"nnexp {nnexp.__version__}"
    help_text = runner.invoke(app, ["expand-mnist", "--help"], terminal_width=120).stdout
    line = next(line for line in help_text.splitlines() if "--force" in line)
    assert "<bool>" not in line and "BOOLEAN" not in line


@needs_mnist
def test_square_brackets_in_paths_and_values_print_as_they_are(tmp_path):
    runner = CliRunner()
    runs = tmp_path / "[red]x[/]"
    made = runner.invoke(app, ["train", str(write(tmp_path)), "--runs-dir", str(runs)])
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().startswith(str(runs) + "/") and (tmp_path / "[red]x[/]").is_dir()
    missing = runner.invoke(app, ["show-config", str(tmp_path / "[/]nope.yaml")])
    assert missing.exit_code == 2 and "[/]nope.yaml" in missing.output and "Traceback" not in missing.output
    value = runner.invoke(app, ["show-config", str(write(tmp_path)), "--set", "training.cost=[bold]x"])
    assert value.exit_code == 2 and "[bold]x" in value.output


def test_errors_name_the_users_file_not_the_temporary_one_written_through():
    from nnexp.cli import _users_path

    assert _users_path("/out/.expanded.npz.4242.0a1b2c3d.tmp") == "/out/expanded.npz"
    assert _users_path("/out/plain.npz") == "/out/plain.npz"


def test_train_refuses_nan_and_infinity_as_a_finite_number_needed(tmp_path):
    # json.dumps wrote them as NaN / Infinity, which came back as strings: "expected a
    # number, got a string ('NaN')"
    for value in (float("nan"), float("-inf"), [0.1, float("inf")]):
        with pytest.raises(ConfigError, match="training.eta: must be a finite number"):
            nnexp.train(write(tmp_path), runs_dir=tmp_path / "runs", eta=value)
    assert not (tmp_path / "runs").exists()
