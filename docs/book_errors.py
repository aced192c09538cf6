"""Derive `nnexp.ensemble.BOOK_ERRORS` from the book's figure of its vote's 33 wrong digits.

At the end of chapter 6 of Nielsen's *Neural Networks and Deep Learning*, five dropout nets
vote and get 33 MNIST test images wrong; the book shows them in a figure but never says which
test images they are. This script finds them, from the figure alone:

1. the 33 cells are the square frames of the figure's subplots, read row by row;
2. each frame's inside is averaged down to 28x28 and compared by normalised correlation with
   all 10,000 MNIST test images (unrestricted by label), leaving out the corners where the
   labels are written: a first match for every cell;
3. where matplotlib put the image in its frame (offset and size, the same in every cell) is
   fitted to those first matches; then every test image is drawn that way into each frame and
   compared with it pixel for pixel: the match, its correlation and the runner-up's;
4. the matched digit is taken away from its frame, leaving the two labels (true top right,
   the vote's answer bottom right), and each is read by correlation with the digits 0-9 drawn
   in matplotlib's default font (DejaVu Sans: the book's Bitstream Vera under a new name).

It prints that, cell by cell, then the table, and exits 1 unless every match is clear-cut
(correlation at least MIN_CORRELATION, MIN_MARGIN above the runner-up), both passes agree,
MNIST's label of every match is the figure's top-right label, every answer differs from it,
and the table equals the one nnexp ships.

The figure is `images/ensemble_errors_original.png` (800x600) of the book's site source,
github.com/mnielsen/nnadl_site; the page shows `images/ensemble_errors.png`, the same figure
scaled down to 580x435, on which the script finds the same 33 test images, but two matches
fall just short of MIN_MARGIN (0.089, 0.098) and one small label (a bottom-right 1) is misread.
The figure is not part of nnexp (the book's licence is non-commercial), so the tests do not
run this; the tests check the table against MNIST's labels instead. Takes a minute:

    python docs/book_errors.py path/to/ensemble_errors_original.png [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

# A match is clear-cut when the best correlation is high and far above the runner-up's.
MIN_CORRELATION, MIN_MARGIN = 0.9, 0.1


def gray(path: str) -> np.ndarray:
    """The figure as ink in [0, 1] (0 white, 1 black), composited on white."""
    import matplotlib.image

    rgba = matplotlib.image.imread(path)
    rgb = rgba[..., :3] if rgba.ndim == 3 else rgba[..., None]
    alpha = rgba[..., 3:4] if rgba.ndim == 3 and rgba.shape[2] == 4 else 1.0
    return 1.0 - (rgb * alpha + (1.0 - alpha)).mean(axis=2)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-d mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def frames(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The inside (top, bottom, left, right; bottom and right exclusive) of each subplot's
    frame, row by row. A frame's top and bottom edges are the longest horizontal runs of ink
    in the figure (a digit inside spans at most 20 of its 28 pixels). An edge is a line a
    pixel or so wide, antialiased: its core is dark, and the rows or columns beside it that
    are faintly inked from end to end (unlike any handwritten digit) are its fringe."""
    dark = ink > 0.3
    runs = [(y, x0, x1) for y in range(ink.shape[0]) for x0, x1 in _runs(dark[y])]
    longest = max(x1 - x0 for _, x0, x1 in runs)
    edges: dict[tuple[int, int], list[int]] = {}  # (x0, x1) of a frame -> rows of its edges
    for y, x0, x1 in runs:
        if x1 - x0 >= 0.9 * longest:
            key = next((k for k in edges if abs(k[0] - x0) <= 3 and abs(k[1] - x1) <= 3), (x0, x1))
            edges.setdefault(key, []).append(y)

    def fringe(line: np.ndarray) -> bool:
        return np.mean(line > 0.05) >= 0.9

    cells = []
    for (x0, x1), rows in edges.items():
        breaks = [k for k in range(1, len(rows)) if rows[k] > rows[k - 1] + 1]
        lines = [(rows[i], rows[j - 1]) for i, j in zip([0] + breaks, breaks + [len(rows)])]
        if len(lines) % 2:
            raise SystemExit(f"frame edges at x {x0}..{x1} do not pair up: rows {lines}")
        for (_, top), (bottom, _) in zip(lines[::2], lines[1::2]):
            top, bottom = top + 1, bottom  # the rows between the edges' cores
            span = slice(x0 + 3, x1 - 3)
            while fringe(ink[top, span]):
                top += 1
            while fringe(ink[bottom - 1, span]):
                bottom -= 1
            solid = [x for x in range(x0 - 3, x1 + 3) if np.mean(dark[top:bottom, x]) > 0.9]
            left = max(x for x in solid if x < x0 + 4) + 1
            right = min(x for x in solid if x > x1 - 5)
            while fringe(ink[top:bottom, left]):
                left += 1
            while fringe(ink[top:bottom, right - 1]):
                right -= 1
            cells.append((int(top), int(bottom), int(left), int(right)))
    height = np.median([b - t for t, b, _, _ in cells])
    return sorted(cells, key=lambda c: (round(c[0] / height), c[2]))


def coverage(n_out: int, start: float, span: float, n_in: int = 28) -> np.ndarray:
    """(n_out, n_in): how much of figure pixel j (covering [j, j+1)) each of `n_in` image
    pixels covers, when the image spans [start, start + span) along that axis. Rendering an
    image is then `C_rows @ image @ C_cols.T`: each figure pixel the area-weighted mean of the
    image pixels under it, which is what an antialiased nearest-neighbour imshow draws."""
    edges = start + np.arange(n_in + 1) * span / n_in
    j = np.arange(n_out)[:, None]
    w = np.clip(np.minimum(j + 1, edges[None, 1:]) - np.maximum(j, edges[None, :-1]), 0, None)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`image` averaged (or spread) onto `shape` pixels covering the same area."""
    rows = coverage(shape[0], 0, shape[0], image.shape[0])
    return rows @ image @ coverage(shape[1], 0, shape[1], image.shape[1]).T


def normalised(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=-1, keepdims=True)
    return centred / np.linalg.norm(centred, axis=-1, keepdims=True)


def compared(shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a frame's inside that are compared: not where the labels are written (the
    right fifth, in the top 22% and from 66% to 92% of the height: the glyphs with a margin),
    nor the outermost pixel rows and columns, which the frame's edges overlap."""
    h, w = shape
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    label = (cols >= 0.8 * w) & ((rows < 0.22 * h) | ((rows >= 0.66 * h) & (rows < 0.92 * h)))
    edge = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
    return ~(label | edge)


def rendered(images: np.ndarray, shape: tuple[int, int], geometry: tuple[float, float, float]) -> np.ndarray:
    """`images` (N, 28, 28) drawn into a frame's inside of `shape`, the image's top left at
    (y0, x0) of the inside and its side `span` figure pixels: (N, h, w)."""
    y0, x0, span = geometry
    rows, cols = coverage(shape[0], y0, span), coverage(shape[1], x0, span)
    return np.einsum("ij,njk,lk->nil", rows, images, cols, optimize=True)


def fit_geometry(insides: list[np.ndarray], images: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """The (y0, x0, span) that draws each image most like its frame's inside (by mean
    correlation), and that mean: where matplotlib put the image relative to the frame, the
    same in every subplot up to a fraction of a pixel. Coarse to fine: whole pixels, then
    quarters."""
    def score(geometry):
        total = 0.0
        for inside, image in zip(insides, images):
            keep = compared(inside.shape)
            total += normalised(rendered(image[None], inside.shape, geometry)[0][keep]) @ normalised(inside[keep])
        return total / len(insides)
    side = float(np.mean([inside.shape for inside in insides]))
    grid = [(y0, x0, span) for span in np.arange(round(side) - 3, round(side) + 8) for y0 in range(-5, 3)
            for x0 in range(-5, 3)]
    best = max(grid, key=score)
    fine = [(best[0] + dy, best[1] + dx, best[2] + ds) for dy in np.arange(-0.75, 0.8, 0.25)
            for dx in np.arange(-0.75, 0.8, 0.25) for ds in np.arange(-0.75, 0.8, 0.25)]
    best = max(fine, key=score)
    return best, score(best)


def glyph(labels: np.ndarray, corner: str) -> np.ndarray:
    """The label written in a frame's top-right or bottom-right corner, cropped to its ink.
    `labels` is the frame's inside with the handwritten digit taken away (`labels_only`),
    so what ink is left in the corner is the label, and perhaps a stray pixel or two of the
    frame's corners or of the digit's edges: the largest connected piece is the label."""
    h, w = labels.shape
    rows = slice(0, int(0.22 * h)) if corner == "top" else slice(int(0.66 * h), int(0.92 * h))
    region = labels[rows, int(0.8 * w):]
    pieces = _components(region > 0.25)
    if pieces.max() == 0:
        raise SystemExit(f"no label in the {corner} right corner of a frame")
    keep = pieces == np.bincount(pieces.ravel())[1:].argmax() + 1
    ys, xs = np.nonzero(keep)
    return np.where(keep, region, 0.0)[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def labels_only(inside: np.ndarray, drawn: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The inside less the handwritten digit: `drawn` (the matched test image as drawn into
    the frame) scaled and offset to fit the inside where it is compared (`keep`) by least
    squares, subtracted everywhere. The labels, drawn over the digit, are what is left, even
    where a stroke of the digit touches them."""
    a = np.stack([drawn[keep], np.ones(keep.sum())], axis=1)
    scale, offset = np.linalg.lstsq(a, inside[keep], rcond=None)[0]
    return np.clip(inside - (scale * drawn + offset), 0, 1)


def _components(mask: np.ndarray) -> np.ndarray:
    """Connected components (8-neighbourhood) of a small mask, numbered from 1."""
    labels = np.zeros(mask.shape, int)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        stack = [start]
        labels[start] = count
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    p = (y + dy, x + dx)
                    if 0 <= p[0] < mask.shape[0] and 0 <= p[1] < mask.shape[1] and mask[p] and not labels[p]:
                        labels[p] = count
                        stack.append(p)
    return labels


GLYPH_SHAPE = (14, 10)


def digit_templates() -> np.ndarray:
    """The digits 0-9 in matplotlib's default font, each cropped to its ink: (10, 14*10)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    templates = []
    for digit in range(10):
        fig = Figure(figsize=(1, 1), dpi=200)
        canvas = FigureCanvasAgg(fig)
        fig.text(0.5, 0.5, str(digit), fontsize=30, ha="center", va="center", family="DejaVu Sans")
        canvas.draw()
        ink = 1.0 - np.asarray(canvas.buffer_rgba())[..., :3].mean(axis=2) / 255.0
        ys, xs = np.nonzero(ink > 0.25)
        templates.append(resize(ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1], GLYPH_SHAPE).ravel())
    return normalised(np.array(templates))


def read_digit(glyph: np.ndarray, templates: np.ndarray) -> tuple[int, float, float]:
    """(digit, its correlation, the runner-up's)."""
    scores = templates @ normalised(resize(glyph, GLYPH_SHAPE).ravel())
    first, second = np.argsort(scores)[::-1][:2]
    return int(first), float(scores[first]), float(scores[second])


def best_two(scores: np.ndarray) -> tuple[int, int]:
    first, second = np.argsort(scores)[::-1][:2]
    return int(first), int(second)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", help="the book's ensemble_errors_original.png (800x600)")
    parser.add_argument("--data-dir", help="the MNIST IDX files (default: as nnexp finds them)")
    args = parser.parse_args(argv)

    from nnexp.data.mnist import load_idx_set
    from nnexp.ensemble import BOOK_ERRORS

    _, _, test_x, test_y, _ = load_idx_set("mnist", args.data_dir)
    test_x = test_x.astype(np.float32) / 255
    ink = gray(args.figure).astype(np.float32)
    cells = frames(ink)
    insides = [ink[top:bottom, left:right] for top, bottom, left, right in cells]
    print(f"{len(cells)} frames in {args.figure} ({ink.shape[1]}x{ink.shape[0]}), insides (h, w) "
          f"{sorted({inside.shape for inside in insides})}")

    # First pass: each inside averaged down to 28x28 as if the image filled it exactly.
    keep = compared((28, 28)).ravel()
    tests = normalised(test_x.reshape(len(test_x), -1)[:, keep])
    first = [best_two(tests @ normalised(resize(inside, (28, 28)).ravel()[keep]))[0] for inside in insides]
    # Where the image really lies in its frame, fitted to those matches; then every test
    # image is drawn that way into each frame and compared there, pixel for pixel.
    geometry, mean = fit_geometry(insides, test_x[first])
    print(f"images drawn at (y, x) = ({geometry[0]:+.2f}, {geometry[1]:+.2f}) of the inside, "
          f"{geometry[2]:.2f} pixels square (mean correlation of the first matches {mean:.3f})")

    templates = digit_templates()
    print(f"\n{'cell':>4} {'index':>5} {'corr':>6} {'runner-up':>12} {'margin':>6} {'MNIST':>6}  "
          f"top right read (corr, runner-up)  bottom right read (corr, runner-up)")
    derived, problems, drawn = [], [], {}
    for number, inside in enumerate(insides, 1):
        keep = compared(inside.shape)
        if inside.shape not in drawn:  # the frames differ by a pixel at most: a few shapes
            drawn[inside.shape] = normalised(rendered(test_x, inside.shape, geometry)[:, keep])
        scores = drawn[inside.shape] @ normalised(inside[keep])
        best, runner = best_two(scores)
        margin = scores[best] - scores[runner]
        labels = labels_only(inside, rendered(test_x[best][None], inside.shape, geometry)[0], keep)
        true, *true_scores = read_digit(glyph(labels, "top"), templates)
        said, *said_scores = read_digit(glyph(labels, "bottom"), templates)
        print(f"{number:>4} {best:>5} {scores[best]:6.3f} {scores[runner]:6.3f} ({runner:>4}) {margin:6.3f} "
              f"{test_y[best]:>6}  {true:>9} ({true_scores[0]:.2f} {true_scores[1]:.2f}) "
              f"{said:>12} ({said_scores[0]:.2f} {said_scores[1]:.2f})")
        if scores[best] < MIN_CORRELATION or margin < MIN_MARGIN:
            problems.append(f"cell {number}: the match is not clear-cut")
        if best != first[number - 1]:
            problems.append(f"cell {number}: the two passes disagree ({first[number - 1]}, {best})")
        if test_y[best] != true:
            problems.append(f"cell {number}: MNIST labels test image {best} {test_y[best]}, the figure {true}")
        if said == true:
            problems.append(f"cell {number}: the vote's answer reads as the true label")
        derived.append((best, int(test_y[best]), said))
    if len({index for index, _, _ in derived}) != len(derived):
        problems.append("two cells matched the same test image")
    print("\nBOOK_ERRORS = (")
    for i in range(0, len(derived), 4):
        print("    " + " ".join(f"({index}, {true}, {said})," for index, true, said in derived[i:i + 4]))
    print(")")
    if tuple(derived) != tuple(BOOK_ERRORS):
        problems.append("this differs from nnexp.ensemble.BOOK_ERRORS")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
