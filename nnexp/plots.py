"""Every figure nnexp draws, as PNG files: the plots readers of the book expect.

- `run_figure`: one run's learning curves (cost and accuracy per epoch, best epoch marked),
  and each hidden layer's speed of learning on a log axis when it was monitored (chapter 5)
- `comparison_figure`: validation accuracy and training cost of many runs or seed groups
- `errors_figure`: the grid of misclassified test digits (chapter 6), true label top right,
  the network's answer bottom right
- `filters_figure`: a conv layer's learned filters, one tile per filter

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot: no
display, no global figure state, safe in tests and on headless machines. Sizes are fixed
(`figsize` x `DPI`, no bbox cropping) so a figure's pixel size is predictable.

Non-goals: interactive plots, styling options. These figures are for looking at results.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from nnexp.errors import UserError
from nnexp.rundir import Run, best_record

DPI = 100
RUN_SIZE = (11.0, 4.5)  # inches: 1100 x 450 px
RUN_SIZE_WITH_SPEED = (16.0, 4.5)  # a third panel: 1600 x 450 px
COMPARISON_SIZE = (12.0, 5.0)  # 1200 x 500 px
TILE = 1.0  # inches per digit or filter tile
GRID_COLUMNS = 10
TITLE_BAND = 0.6  # inches above a tile grid for its (up to two-line) title
MIN_GRID_WIDTH = 4.0  # inches: room for the title above a grid of only a few tiles


def _new(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"{out}: figures are written as PNG; give a file name ending in .png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=DPI, format="png")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def _series(metrics: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the records that have `key`; non-finite values become gaps."""
    pairs = [(r["epoch"], r[key]) for r in metrics if key in r and "epoch" in r]
    if not pairs:
        return np.array([]), np.array([])
    epochs, values = zip(*pairs)
    values = np.array([v if isinstance(v, (int, float)) else np.nan for v in values], dtype=float)
    return np.array(epochs), np.where(np.isfinite(values), values, np.nan)


def _epoch_axis(ax) -> None:
    # epochs are whole numbers; min_n_ticks=1 keeps that true for one epoch, whose axis
    # (0.945 to 1.055) holds a single integer
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)


def _marker(n: int) -> str | None:
    """Dots on short curves, so a run with one epoch still shows up."""
    return "." if n < 30 else None


def _best_of_run(metrics: list[dict], summary: dict | None) -> dict | None:
    """The record of the best-validation epoch: the summary's, else recomputed (ties later)."""
    epoch = (summary or {}).get("best_epoch")
    if epoch:
        for record in metrics:
            if record.get("epoch") == epoch:
                return record
    return best_record(metrics)


# --- one run ----------------------------------------------------------------------------------


def run_figure(metrics: list[dict], summary: dict | None = None, title: str = "") -> Figure:
    """Cost and accuracy (%) per epoch for validation, test and, when monitored, training data.
    The best-validation epoch is marked, with the test accuracy there: the number the book
    reports, shown where it comes from."""
    speeds = [(r["epoch"], r["layer_speed"]) for r in metrics
              if isinstance(r.get("layer_speed"), list) and "epoch" in r]
    fig = _new(RUN_SIZE_WITH_SPEED if speeds else RUN_SIZE)
    cost_ax, acc_ax, *speed_ax = fig.subplots(1, 3 if speeds else 2)
    if speeds:
        _speed_panel(speed_ax[0], speeds)
    styles = [("train", "tab:green"), ("validation", "tab:blue"), ("test", "tab:orange")]
    for split, colour in styles:
        epochs, cost = _series(metrics, f"{split}_cost")
        if len(epochs):
            cost_ax.plot(epochs, cost, color=colour, label=split, marker=_marker(len(epochs)))
        epochs, acc = _series(metrics, f"{split}_accuracy")
        if len(epochs):
            acc_ax.plot(epochs, 100 * acc, color=colour, label=split, marker=_marker(len(epochs)))
    best = _best_of_run(metrics, summary)
    acc_title = "accuracy"
    if best is not None:
        for ax in (cost_ax, acc_ax):
            ax.axvline(best["epoch"], color="grey", linestyle="--", linewidth=1, label="best validation")
        test = best.get("test_accuracy")
        if isinstance(test, (int, float)) and math.isfinite(test):
            acc_title = f"accuracy: best validation at epoch {best['epoch']}, test {100 * test:.2f}%"
            acc_ax.plot([best["epoch"]], [100 * test], marker="o", color="tab:orange")
            # the label goes on the roomier side of the marker
            left_half = best["epoch"] < (metrics[0]["epoch"] + metrics[-1]["epoch"]) / 2
            acc_ax.annotate(f"test {100 * test:.2f}%", xy=(best["epoch"], 100 * test),
                            xytext=(6 if left_half else -6, -6), textcoords="offset points",
                            ha="left" if left_half else "right", va="top", fontsize=9, color="tab:orange",
                            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    cost_ax.set(title="cost", xlabel="epoch", ylabel="cost")
    acc_ax.set(title=acc_title, xlabel="epoch", ylabel="accuracy (%)")
    for ax in (cost_ax, acc_ax):
        _epoch_axis(ax)
        ax.legend(loc="best", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _speed_panel(ax, speeds: list[tuple[int, list]]) -> None:
    """Each hidden layer's speed of learning per epoch, log scale: chapter 5's picture, where
    the early layers learn orders of magnitude slower than the later ones."""
    for layer in range(max(len(values) for _, values in speeds)):
        points = [(epoch, values[layer]) for epoch, values in speeds if layer < len(values)
                  and isinstance(values[layer], (int, float)) and values[layer] > 0]
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, label=f"hidden layer {layer + 1}", marker=_marker(len(epochs)))
    ax.set_yscale("log")
    ax.set(title="speed of learning: ||mean dC/db||", xlabel="epoch (measured as it starts)",
           ylabel="speed (log scale)")
    _epoch_axis(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9)


def plot_run(path: str | Path, out: str | Path | None = None) -> Path:
    """`RUN/curves.png` (or `out`) from a run directory's metrics.jsonl and summary.json."""
    run = Run.open(path)
    metrics = [r for r in run.read_metrics() if isinstance(r, dict)]
    if not metrics:
        raise UserError(f"{run.path} has no completed epoch yet (metrics.jsonl is empty); nothing to plot")
    summary = run.read_summary()
    status = (summary or {}).get("status", "no summary")
    fig = run_figure(metrics, summary, title=f"{run.name} ({status})")
    return _save(fig, out or run.path / "curves.png")


# --- many runs --------------------------------------------------------------------------------


def _band(runs: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, min, max) over the runs at each epoch some run reached: runs stopped
    early simply stop contributing."""
    by_epoch: dict[int, list[float]] = {}
    for metrics in runs:
        for epoch, value in zip(*_series(metrics, key)):
            if np.isfinite(value):
                by_epoch.setdefault(int(epoch), []).append(float(value))
    epochs = np.array(sorted(by_epoch))
    vals = [by_epoch[e] for e in epochs]
    return (epochs, np.array([np.mean(v) for v in vals]), np.array([min(v) for v in vals]),
            np.array([max(v) for v in vals]))


LEGEND_WRAP = 45  # characters per legend line: labels are folded, never cut
LEGEND_COLUMNS = 3
LEGEND_LINE = 0.17  # inches per line of legend text at its font size
LOG_RATIO = 100  # curves' typical costs this many times apart: a log axis, or all but one look flat


def _wrapped(label: str) -> str:
    return "\n".join(textwrap.wrap(label, LEGEND_WRAP, break_long_words=False, break_on_hyphens=False)) or label


def _cost_title(monitored: int, total: int) -> tuple[str, str]:
    """(cost key, title): the training cost only if every run monitored it, since one panel
    mixing training and validation costs would compare different things; the title says
    how many did."""
    if total and monitored == total:
        return "train_cost", "training cost"
    if monitored == 0:
        return "validation_cost", "validation cost (training cost not monitored)"
    return "validation_cost", f"validation cost (training cost monitored by only {monitored} of {total} runs)"


def comparison_figure(curves: list[tuple[str, list[list[dict]]]]) -> Figure:
    """Validation accuracy and cost per epoch, one line per run or seed group.

    A group is drawn as its mean with a shaded min-max band. The legend sits under both
    panels, its labels folded, the figure as much taller as it needs: never cut, whatever
    the labels. The cost axis is logarithmic where the curves' typical costs are more than
    LOG_RATIO apart.
    """
    all_runs = [m for _, runs in curves for m in runs if m]
    monitored = sum(1 for m in all_runs if any("train_cost" in r for r in m))
    cost_key, cost_title = _cost_title(monitored, len(all_runs))
    labels = [label if len(runs) == 1 or "seed" in label else f"{label} (n={len(runs)})" for label, runs in curves]
    labels = [_wrapped(label) for label in labels]
    ncol = max(1, min(LEGEND_COLUMNS, len(curves)))
    rows = [labels[i:i + ncol] for i in range(0, len(labels), ncol)]
    lines = sum(max(label.count("\n") + 1 for label in row) for row in rows)
    width, height = COMPARISON_SIZE  # room for one line of legend; each further line adds its own
    fig = _new((width, height + (lines - 1) * LEGEND_LINE))
    fig.set_layout_engine("constrained")
    acc_ax, cost_ax = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(curves))]
    typical = []
    for (_, runs), label, colour in zip(curves, labels, colours):
        for ax, key, scale in ((acc_ax, "validation_accuracy", 100.0), (cost_ax, cost_key, 1.0)):
            epochs, mean, low, high = _band(runs, key)
            if not len(epochs):
                continue
            ax.plot(epochs, scale * mean, color=colour, marker=_marker(len(epochs)),
                    label=label if ax is acc_ax else None)
            if len(runs) > 1:
                ax.fill_between(epochs, scale * low, scale * high, color=colour, alpha=0.2, linewidth=0)
            if ax is cost_ax and np.any(mean > 0):
                typical.append(float(np.median(mean[mean > 0])))
    acc_ax.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy (%)")
    log = len(typical) > 1 and max(typical) > LOG_RATIO * min(typical)
    cost_ax.set(title=cost_title, xlabel="epoch", ylabel="cost (log scale)" if log else "cost")
    if log:
        cost_ax.set_yscale("log")
    for ax in (acc_ax, cost_ax):
        _epoch_axis(ax)
    if acc_ax.get_legend_handles_labels()[0]:
        fig.legend(*acc_ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol,
                   fontsize=8 if len(curves) > 6 else 9, frameon=False)
    return fig


def plot_comparison(curves: list[tuple[str, list[list[dict]]]], out: str | Path) -> Path:
    return _save(comparison_figure(curves), out)


# --- tile grids -------------------------------------------------------------------------------


def grid_size(n: int, columns: int = GRID_COLUMNS) -> tuple[int, int]:
    """(rows, columns) of a tile grid for n tiles."""
    cols = max(1, min(n, columns))
    return max(1, math.ceil(n / cols)), cols


def grid_pixels(n: int, columns: int = GRID_COLUMNS) -> tuple[int, int]:
    """(width, height) in pixels of a tile-grid figure: what tests check the PNG against."""
    rows, cols = grid_size(n, columns)
    return round(max(cols * TILE, MIN_GRID_WIDTH) * DPI), round((rows * TILE + TITLE_BAND) * DPI)


PAD = 0.08  # gap between tiles, as a fraction of a tile
PAD_SHADE = 0.12  # the gaps' grey level on the Greys colormap: visible, but lighter than ink


def mosaic(tiles: np.ndarray, columns: int = GRID_COLUMNS) -> tuple[np.ndarray, int]:
    """Tiles (n, h, w) with values in [0, 1] laid out as one image, and the gap in pixels.

    One image on one axes, rather than one axes per tile: a hundred axes take matplotlib
    seconds to draw, one image takes milliseconds, and the picture is the same.
    """
    n, h, w = tiles.shape
    rows, cols = grid_size(n, columns)
    gap = max(1, round(PAD * max(h, w)))
    image = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), PAD_SHADE)  # (H, W)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        image[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = tile
    return image, gap


def _grid_figure(tiles: np.ndarray, title: str):
    """A figure of `grid_pixels(len(tiles))` pixels: the title band on top, the mosaic below."""
    rows, cols = grid_size(len(tiles))
    width, height = max(cols * TILE, MIN_GRID_WIDTH), rows * TILE + TITLE_BAND
    fig = _new((width, height))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - TITLE_BAND / height - 0.01))
    image, gap = mosaic(tiles)
    ax.imshow(image, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig, ax, gap


# The frame around digits `errors_figure` marks: a colour of neither label (blue, red), named
# in the figure's title.
MARK_COLOUR, MARK_COLOUR_NAME = "tab:orange", "orange"


def errors_figure(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, title: str,
                  limit: int = 100, marked: np.ndarray | None = None) -> Figure:
    """The misclassified digits as in Nielsen's chapter 6: true label at the top right of each
    digit, the network's answer at the bottom right. `images` are (N, 1, 28, 28) or (N, 28, 28).
    `marked` (N,) bools: the digits to frame in MARK_COLOUR, in the gap around the digit so
    that no pixel of it is covered."""
    shown = min(len(images), limit)
    if shown == 0:
        raise UserError("no misclassified test images: nothing to draw")
    if shown < len(images):
        title += f" (first {shown} of {len(images)})"
    tiles = np.asarray(images[:shown], dtype=float).reshape(shown, *np.shape(images)[-2:])  # (n, 28, 28)
    fig, ax, gap = _grid_figure(np.clip(tiles, 0, 1), title)
    _, cols = grid_size(shown)
    h, w = tiles.shape[1:]
    for i, (t, p) in enumerate(zip(true[:shown], predicted[:shown])):
        r, c = divmod(i, cols)
        right, top = gap + c * (w + gap) + w - 1.5, gap + r * (h + gap) - 0.5
        ax.text(right, top + 1, str(t), ha="right", va="top", color="tab:blue", fontsize=10, fontweight="bold")
        ax.text(right, top + h - 1, str(p), ha="right", va="bottom", color="tab:red", fontsize=10,
                fontweight="bold")
        if marked is not None and marked[i]:  # half a pixel out: neighbours' frames stay apart
            left = gap + c * (w + gap) - 0.5
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), w + 1, h + 1, fill=False, edgecolor=MARK_COLOUR,
                                   linewidth=1.5))
    return fig


def plot_errors(images, true, predicted, out: str | Path, title: str, limit: int = 100,
                marked: np.ndarray | None = None) -> Path:
    return _save(errors_figure(images, true, predicted, title, limit, marked), out)


# --- filters ----------------------------------------------------------------------------------


def conv_weights(path: str | Path, layer: int | None = None, checkpoint: str = "best") -> tuple[int, np.ndarray]:
    """(layer index, weights (filters, channels, k, k)) of a run's conv layer.

    The default is the first conv layer: the one whose filters look like strokes and blobs.
    Pointing at any other kind of layer is a UserError naming the layers there are.
    """
    run = Run.open(path)
    layers = run.spec().layers
    kinds = ", ".join(f"{i}: {l.type}" for i, l in enumerate(layers))
    conv = [i for i, l in enumerate(layers) if l.type == "conv"]
    if layer is None:
        if not conv:
            raise UserError(f"{run.path} has no conv layer (layers {kinds})")
        layer = conv[0]
    elif not 0 <= layer < len(layers):
        raise UserError(f"--layer {layer}: {run.path} has layers 0..{len(layers) - 1} ({kinds})")
    elif layer not in conv:
        raise UserError(f"--layer {layer} is a {layers[layer].type} layer, not conv "
                        f"(layers {kinds})")
    params, _, _ = run.load_checkpoint(checkpoint)
    weights = params.get(f"{layer}.w")
    if weights is None or weights.ndim != 4:
        raise UserError(f"the {checkpoint} checkpoint of {run.path} has no conv weights for layer {layer}")
    return layer, weights


def normalise_tiles(tiles: np.ndarray) -> np.ndarray:
    """Each tile scaled to [0, 1] by its own min and max (a constant tile becomes 0)."""
    low = tiles.min(axis=(1, 2), keepdims=True)
    span = tiles.max(axis=(1, 2), keepdims=True) - low
    return (tiles - low) / np.where(span > 0, span, 1.0)


def filters_figure(weights: np.ndarray, title: str, channel: int | None = None) -> Figure:
    """One tile per filter: input channel `channel`, or the mean over channels (None).

    Each tile is normalised to its own min..max: filters differ in scale, and one strong
    filter would otherwise wash out the rest. Dark is positive, as in the book's figures.
    """
    if channel is not None and not 0 <= channel < weights.shape[1]:
        raise UserError(f"channel {channel}: the layer has {weights.shape[1]} input channels")
    tiles = weights.mean(axis=1) if channel is None else weights[:, channel]  # (filters, k, k)
    fig, _, _ = _grid_figure(normalise_tiles(np.asarray(tiles, dtype=float)), title)
    return fig


def plot_filters(path: str | Path, layer: int | None = None, out: str | Path | None = None,
                 checkpoint: str = "best", channel: int | None = None) -> Path:
    """The filters of a run's conv layer as `RUN/filters-layer<N>.png` (or `out`)."""
    index, weights = conv_weights(path, layer, checkpoint)
    f, c, k, _ = weights.shape
    which = "mean over channels" if channel is None and c > 1 else f"channel {channel or 0}"
    title = f"{Path(path).name}\nlayer {index}: {f} filters {k}x{k} ({which})"
    return _save(filters_figure(weights, title, channel), out or Path(path) / f"filters-layer{index}.png")
