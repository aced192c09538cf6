"""Figures: each command writes a real PNG of the expected pixel size, and refuses bad input
with a UserError. Pixel sizes are fixed by design (figsize x DPI, no cropping)."""

from __future__ import annotations

import numpy as np
import pytest
from runfactory import CONV_LAYERS, make_run, png_size
from typer.testing import CliRunner

from nnexp import comparison as cmp
from nnexp import plots
from nnexp.cli import app
from nnexp.errors import UserError

RUN_PX = (round(plots.RUN_SIZE[0] * plots.DPI), round(plots.RUN_SIZE[1] * plots.DPI))
COMPARISON_PX = (round(plots.COMPARISON_SIZE[0] * plots.DPI), round(plots.COMPARISON_SIZE[1] * plots.DPI))


def test_plot_run_writes_curves_png(tmp_path):
    run = make_run(tmp_path, "shallow", val=[0.9, 0.95, 0.94], sets={"training.monitor_train": True})
    out = plots.plot_run(run.path)
    assert out == run.path / "curves.png"
    assert png_size(out) == RUN_PX == (1100, 450)


def test_run_figure_marks_the_best_epoch_and_its_test_accuracy():
    metrics = [{"epoch": 1, "validation_accuracy": 0.9, "test_accuracy": 0.89, "validation_cost": 0.5,
                "test_cost": 0.6},
               {"epoch": 2, "validation_accuracy": 0.95, "test_accuracy": 0.948, "validation_cost": 0.3,
                "test_cost": 0.35}]
    fig = plots.run_figure(metrics)
    cost_ax, acc_ax = fig.axes[:2]
    assert "epoch 2" in acc_ax.get_title() and "94.80%" in acc_ax.get_title()
    assert {line.get_label() for line in acc_ax.get_lines()} >= {"validation", "test", "best validation"}
    assert "train" not in {line.get_label() for line in cost_ax.get_lines()}  # not monitored
    assert acc_ax.get_ylabel() == "accuracy (%)"


def test_run_figure_adds_a_log_scale_layer_speed_panel_when_monitored():
    metrics = [{"epoch": e, "validation_accuracy": 0.9, "test_accuracy": 0.9, "validation_cost": 0.5,
                "test_cost": 0.5, "layer_speed": [0.003 * e, 0.017 * e, 0.28]} for e in (1, 2, 3)]
    metrics[1]["layer_speed"][0] = None  # a non-finite value saved as null leaves a gap
    fig = plots.run_figure(metrics)
    assert len(fig.axes) == 3
    speed_ax = fig.axes[2]
    assert speed_ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in speed_ax.get_lines()}
    assert set(lines) == {"hidden layer 1", "hidden layer 2", "hidden layer 3"}
    assert list(lines["hidden layer 1"].get_xdata()) == [1, 3]
    assert list(lines["hidden layer 2"].get_ydata()) == pytest.approx([0.017, 0.034, 0.051])
    assert (fig.get_figwidth(), fig.get_figheight()) == plots.RUN_SIZE_WITH_SPEED
    assert len(plots.run_figure([{k: v for k, v in r.items() if k != "layer_speed"}
                                 for r in metrics]).axes) == 2


def test_plot_run_without_epochs_is_a_user_error(tmp_path):
    run = make_run(tmp_path, "new", val=[], status=None)
    with pytest.raises(UserError, match="no completed epoch"):
        plots.plot_run(run.path)


def test_comparison_plot_one_legend_entry_per_row_and_cost_panel_title(tmp_path):
    for seed in (1, 2, 3):
        make_run(tmp_path, "shallow", seed=seed, val=[0.9, 0.9 + seed / 100])
    make_run(tmp_path, "deep", sets={"training.eta": 0.5}, val=[0.92, 0.97, 0.98])
    comparison, _ = cmp.compare([tmp_path])
    fig = plots.comparison_figure(cmp.curves(comparison))
    acc_ax, cost_ax = fig.axes
    legend = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend, under both panels
    assert len(legend) == 2 and any("[seeds 1, 2, 3]" in t for t in legend)
    assert len(acc_ax.collections) == 1  # one min-max band, for the group
    assert cost_ax.get_title() == "validation cost (training cost not monitored)"
    out = plots.plot_comparison(cmp.curves(comparison), tmp_path / "cmp.png")
    assert png_size(out) == COMPARISON_PX


def test_comparison_plot_uses_training_cost_when_every_run_monitored_it(tmp_path):
    make_run(tmp_path, "a", sets={"training.monitor_train": True})
    make_run(tmp_path, "b", sets={"training.monitor_train": True, "training.eta": 0.3})
    comparison, _ = cmp.compare([tmp_path])
    assert plots.comparison_figure(cmp.curves(comparison)).axes[1].get_title() == "training cost"


def test_errors_grid_puts_true_label_top_right_and_answer_bottom_right():
    images = np.random.default_rng(0).random((23, 1, 28, 28))
    true, predicted = np.arange(23) % 10, (np.arange(23) + 1) % 10
    ax = plots.errors_figure(images, true, predicted, "errors").axes[0]
    (t, p), gap = ax.texts[:2], plots.mosaic(images[:, 0])[1]
    assert (t.get_text(), t.get_verticalalignment(), p.get_text(), p.get_verticalalignment()) == \
        ("0", "top", "1", "bottom")
    assert t.get_position()[1] < gap + 14 < p.get_position()[1]  # top half, bottom half (y points down)
    assert t.get_position()[0] > gap + 14 and p.get_position()[0] > gap + 14  # right half
    assert len(ax.texts) == 2 * 23


def test_mosaic_lays_tiles_out_in_rows_of_ten():
    tiles = np.arange(12, dtype=float).reshape(12, 1, 1) / 12
    image, gap = plots.mosaic(tiles)
    assert image.shape == (2 * (1 + gap) + gap, 10 * (1 + gap) + gap)
    assert image[gap, gap] == 0 and image[gap + 1 + gap, gap + 1 + gap] == pytest.approx(11 / 12)


def test_plot_errors_writes_png_of_grid_size(tmp_path):
    images = np.zeros((23, 28, 28))
    out = plots.plot_errors(images, np.zeros(23, int), np.ones(23, int), tmp_path / "e.png", "t")
    assert png_size(out) == plots.grid_pixels(23) == (1000, 360)
    with pytest.raises(UserError, match="no misclassified"):
        plots.plot_errors(images[:0], [], [], tmp_path / "none.png", "t")


def test_filters_default_to_the_first_conv_layer(tmp_path):
    run = make_run(tmp_path, "conv", layers=CONV_LAYERS, checkpoint=True)
    out = plots.plot_filters(run.path)
    assert out == run.path / "filters-layer0.png"
    assert png_size(out) == plots.grid_pixels(4) == (400, 160)


def test_filters_of_a_non_conv_layer_name_the_layer_types(tmp_path):
    run = make_run(tmp_path, "conv", layers=CONV_LAYERS, checkpoint=True)
    with pytest.raises(UserError, match=r"--layer 1 is a dense layer, not conv \(layers 0: conv, 1: dense, 2: softmax\)"):
        plots.plot_filters(run.path, layer=1)
    with pytest.raises(UserError, match="has layers 0..2"):
        plots.plot_filters(run.path, layer=7)
    dense = make_run(tmp_path, "dense", checkpoint=True)
    with pytest.raises(UserError, match="has no conv layer"):
        plots.plot_filters(dense.path)


def test_filters_are_normalised_per_filter():
    weights = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 100.0), np.full((3, 3), -5.0)])
    weights[0, 0, 0], weights[1, 0, 0] = 0.0, 50.0
    tiles = plots.normalise_tiles(weights)
    assert tiles[0, 0, 0] == 0 and tiles[0, 1, 1] == 1  # 0..1 scaled to 0..1
    assert tiles[1, 0, 0] == 0 and tiles[1, 1, 1] == 1  # 50..100 scaled to 0..1 as well
    assert np.all(tiles[2] == 0)  # a constant filter does not divide by zero
    fig = plots.filters_figure(weights[:, None], "t")
    assert fig.axes[0].get_images()[0].get_array().max() <= 1


def test_cli_plot_and_filters_print_the_png_path(tmp_path):
    runner = CliRunner()
    run = make_run(tmp_path, "conv", layers=CONV_LAYERS, checkpoint=True)
    result = runner.invoke(app, ["plot", str(run.path)])
    assert result.exit_code == 0 and result.stdout.strip() == str(run.path / "curves.png")
    out = tmp_path / "sub" / "f.png"
    result = runner.invoke(app, ["filters", str(run.path), "--layer", "0", "--out", str(out)])
    assert result.exit_code == 0 and result.stdout.strip() == str(out)
    assert png_size(out) == plots.grid_pixels(4)
    result = runner.invoke(app, ["filters", str(run.path), "--layer", "2"])
    assert result.exit_code == 2 and "softmax" in result.output
    result = runner.invoke(app, ["compare", str(tmp_path), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and png_size(tmp_path / "c.png") == COMPARISON_PX
