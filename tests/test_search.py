"""`nnexp search`: sample specs, reproducible draws, one ordinary run per trial, and bad input
refused before anything trains."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnexp import search
from nnexp import sweepplan as sweeps
from nnexp.cli import app
from nnexp.errors import UserError

from conftest import needs_mnist


def test_parse_and_draw_within_bounds():
    eta = search.parse_sample("training.eta=log-uniform:1e-6:1e-2")
    opt = search.parse_sample("training.optimizer=choice:sgd, adam")
    assert eta == search.Sample("training.eta", "log-uniform", (1e-6, 1e-2))
    assert opt.args == ("sgd", "adam")
    draws = search.plan([eta, opt], 400, seed=3)
    etas = np.log10([d["training.eta"] for d in draws])
    assert etas.min() >= -6 and etas.max() <= -2
    # log-uniform: each decade about equally often (a plain uniform would put ~99% in the last)
    counts = np.histogram(etas, bins=4, range=(-6, -2))[0]
    assert counts.min() > 60
    assert {d["training.optimizer"] for d in draws} == {"sgd", "adam"}
    assert search.plan([eta, opt], 5, seed=3) == draws[:5]  # same seed, same trials
    assert search.plan([eta, opt], 5, seed=4) != draws[:5]


def test_overrides_keep_every_digit_and_read_back_as_numbers():
    from nnexp.yamlio import parse_yaml

    values = {"training.eta": 1.2345678901234e-05, "training.optimizer": "adam",
              "training.early_stopping.patience": None, "training.monitor_train": True, "name": "1e3"}
    sets = sweeps.overrides(values)  # how a search's draws reach the configs
    assert sets[0] == "training.eta=1.2345678901234e-05"
    assert {s.split("=", 1)[0]: parse_yaml(s.split("=", 1)[1]) for s in sets} == values


@pytest.mark.parametrize("spec,words", [
    ("training.eta", "expected KEY=DISTRIBUTION:ARGS"),
    ("training.eta=normal:0:1", "unknown distribution 'normal'"),
    ("training.eta=uniform:1", "LOW:HIGH"),
    ("training.eta=uniform:2:1", "LOW < HIGH"),
    ("training.eta=uniform:a:b", "two numbers"),
    ("training.eta=log-uniform:0:1", "LOW > 0"),
    ("training.eta=choice:", "at least one value"),
    ("training.eta=choice:[", "not valid YAML"),
    ("training.eta=uniform:1:[", "two numbers"),
])
def test_bad_sample_specs(spec, words):
    with pytest.raises(UserError, match=words):
        search.parse_sample(spec)


def test_a_key_sampled_twice_is_refused():
    s = search.parse_sample("training.eta=uniform:0.1:0.2")
    with pytest.raises(UserError, match="sampled twice"):
        search.plan([s, s], 2, 0)


def small_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"train_size": 200},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 1, "eta": 0.1}}))
    return path


@needs_mnist
def test_search_trains_one_run_per_trial_and_ranks_them(tmp_path, cached_data):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["search", str(small_config(tmp_path)), "--trials", "3",
                                      "--sample", "training.eta=log-uniform:0.01:1",
                                      "--sample", "training.batch_size=choice:10,20",
                                      "--runs-dir", str(runs), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    (sweep_dir,) = runs.iterdir()
    assert sweep_dir.name.startswith("tiny-search-") and (sweep_dir / "sweep.json").is_file()
    made = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in made] == ["t001", "t002", "t003"]
    expected = search.plan([search.parse_sample("training.eta=log-uniform:0.01:1"),
                            search.parse_sample("training.batch_size=choice:10,20")], 3, seed=0)
    for path, values in zip(made, expected):
        cfg = yaml.safe_load((path / "config.yaml").read_text())
        assert cfg["training"]["eta"] == values["training.eta"]
        assert cfg["training"]["batch_size"] == values["training.batch_size"]
        assert (path / "summary.json").exists()
    assert "trial t003" in result.output and "training.eta" in result.output  # the ranking table
    assert result.stdout.strip().splitlines()[-1] == str(sweep_dir)


@needs_mnist
def test_a_diverging_trial_does_not_end_the_search(tmp_path, cached_data):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["search", str(small_config(tmp_path)), "--trials", "2",
                                      "--sample", "training.eta=choice:1e9", "--set", "model.init=large",
                                      "--set", "model.layers.0.activation=linear", "--runs-dir", str(runs),
                                      "--jobs", "1"])
    assert "t001: diverged" in result.output and "t002: diverged" in result.output
    assert "2 of 2 points did not complete" in result.output
    assert result.exit_code == 1, result.output  # no trial completed
    (sweep_dir,) = runs.iterdir()
    assert len([p for p in sweep_dir.iterdir() if p.is_dir()]) == 2


@needs_mnist
def test_a_draw_the_data_rules_out_is_skipped_not_fatal(tmp_path, cached_data):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["search", str(small_config(tmp_path)), "--trials", "2",
                                      "--sample", "training.batch_size=choice:500,10",
                                      "--search-seed", "1", "--runs-dir", str(runs), "--jobs", "1"])
    draws = [d["training.batch_size"] for d in search.plan(
        [search.parse_sample("training.batch_size=choice:500,10")], 2, 1)]
    assert sorted(draws) == [10, 500], "the seed must draw both values for this test"
    assert result.exit_code == 1, result.output  # not every point completed
    assert "skipped" in result.output and "500 is larger than the training set (200 images)" in result.output
    (sweep_dir,) = runs.iterdir()
    assert len([p for p in sweep_dir.iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("args,words", [
    (["--sample", "training.etaa=uniform:0.1:0.2"], "training.etaa"),  # a key the config lacks
    (["--sample", "training.epochs=uniform:1:3"], "training.epochs"),  # a float for an integer
    (["--sample", "training.eta=uniform:3"], "LOW:HIGH"),
    ([], "Missing option '--sample'"),
])
def test_bad_searches_fail_before_any_run(tmp_path, args, words):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["search", str(small_config(tmp_path)), "--trials", "2",
                                      "--runs-dir", str(runs), *args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not runs.exists()
