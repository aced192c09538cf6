"""The book's 33 wrong digits (`ensemble.BOOK_ERRORS`) and a vote's comparison with them:
the counting on made-up votes, the table against MNIST's real test labels, the line
`nnexp ensemble` prints and the frames its figure draws, on MNIST and on Fashion-MNIST."""

from __future__ import annotations

import os

import matplotlib.image
import numpy as np
import pytest
from conftest import needs_mnist
from runfactory import FAST_CONV_LAYERS, make_run
from typer.testing import CliRunner

from nnexp import plots
from nnexp.cli import app
from nnexp.data import Dataset, Split, load_dataset
from nnexp.data.mnist import FASHION_MNIST_DIR, MNIST_MD5
from nnexp.ensemble import (BOOK_ERRORS, BookOverlap, EnsembleResult, Member, book_overlap, on_mnist_test_set,
                            plot_ensemble_errors, run_ensemble)
from nnexp.render import book_overlap_line

BOOK = {index: (true, said) for index, true, said in BOOK_ERRORS}


def answers_of_the_book() -> tuple[np.ndarray, np.ndarray]:
    """Made-up test labels (10,000) agreeing with the book's table, and a vote that is right
    on every image."""
    labels = np.arange(10_000) % 10
    for index, (true, _) in BOOK.items():
        labels[index] = true
    return labels, labels.copy()


def test_a_vote_wrong_on_none_of_the_books_digits():
    labels, predictions = answers_of_the_book()
    wrong = [3, 17, 9999]  # none of them the book's
    predictions[wrong] = (labels[wrong] + 1) % 10
    assert book_overlap(wrong, predictions) == BookOverlap(book=33, vote=3, shared=0, same_answer=0)


def test_a_vote_wrong_on_all_the_books_digits_with_the_books_answers():
    labels, predictions = answers_of_the_book()
    for index, (_, said) in BOOK.items():
        predictions[index] = said
    wrong = sorted(BOOK) + [12]
    predictions[12] = (labels[12] + 1) % 10
    assert book_overlap(wrong, predictions) == BookOverlap(book=33, vote=34, shared=33, same_answer=33)


def test_a_shared_digit_with_another_wrong_answer_is_shared_but_not_the_same_answer():
    labels, predictions = answers_of_the_book()
    # 445: true 6, the book said 0; 947: true 8, the book said 9; 2130: true 4, the book said 9
    predictions[445] = 0  # the book's answer
    predictions[947] = 3  # wrong too, but not the book's answer
    predictions[2130] = 9  # the book's answer
    predictions[5] = (labels[5] + 1) % 10
    wrong = np.flatnonzero(predictions != labels)
    assert wrong.tolist() == [5, 445, 947, 2130]
    assert book_overlap(wrong, predictions) == BookOverlap(book=33, vote=4, shared=3, same_answer=2)


def test_an_empty_vote_and_a_made_up_book():
    _, predictions = answers_of_the_book()
    assert book_overlap([], predictions) == BookOverlap(book=33, vote=0, shared=0, same_answer=0)
    predictions[[1, 2]] = [7, 5]
    # a book of two digits, 1 (true 3, it said 7) and 2 (true 4, it said 6): this vote said 7 and 5
    assert book_overlap([1, 2], predictions, book=((1, 3, 7), (2, 4, 6))) == BookOverlap(2, 2, 2, 1)


def test_a_vote_on_fewer_images_than_mnists_test_set_is_refused():
    with pytest.raises(ValueError, match="not a vote on MNIST's 10,000 test images"):
        book_overlap([0], np.zeros(9000, int))


def test_the_line_says_the_counts():
    assert book_overlap_line(BookOverlap(33, 31, 19, 12)) == (
        "of the book's 33 wrong digits, 19 are among this vote's 31 wrong (12 with the book's wrong answer)")
    assert book_overlap_line(BookOverlap(33, 9330, 1, 0)) == (
        "of the book's 33 wrong digits, 1 is among this vote's 9,330 wrong (0 with the book's wrong answer)")


def test_the_table_is_the_books_33_distinct_digits_in_test_set_order():
    assert len(BOOK_ERRORS) == 33 == len(BOOK)  # 99.67% of 10,000 right
    indices = [index for index, _, _ in BOOK_ERRORS]
    assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] < 10_000  # the figure's order
    assert all(true != said and 0 <= true <= 9 and 0 <= said <= 9 for _, true, said in BOOK_ERRORS)


@needs_mnist
def test_the_table_agrees_with_mnists_test_labels():
    test = load_dataset("mnist").test
    assert {index: int(test.y[index]) for index in BOOK} == {index: true for index, (true, _) in BOOK.items()}


def made_up(name: str, md5: dict) -> Dataset:
    labels, _ = answers_of_the_book()
    images = np.zeros((10_000, 1, 28, 28), np.float32)
    empty = Split(images[:1], labels[:1])
    return Dataset(name, empty, empty, Split(images, labels), 10, {"md5": md5})


MNIST_TEST_MD5 = {name: MNIST_MD5[name] for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def test_only_mnists_own_test_files_are_mnists_test_set():
    assert on_mnist_test_set(made_up("mnist", MNIST_TEST_MD5))
    assert on_mnist_test_set(made_up("mnist-expanded", MNIST_TEST_MD5))  # MNIST's test set
    assert not on_mnist_test_set(made_up("fashion-mnist", MNIST_TEST_MD5))
    look_alike = {**MNIST_TEST_MD5, "t10k-labels-idx1-ubyte": "0" * 32}  # a fake directory's
    assert not on_mnist_test_set(made_up("mnist", look_alike))
    assert not on_mnist_test_set(made_up("mnist", {}))
    assert not on_mnist_test_set(None)


def vote(dataset: Dataset, wrong: dict[int, int]) -> EnsembleResult:
    """A made-up vote on `dataset`'s test set, wrong on the images `wrong` maps to its answers."""
    predictions = dataset.test.y.copy()
    for index, answer in wrong.items():
        predictions[index] = answer
    errors = len(wrong)
    return EnsembleResult([Member("a", 0.9, 1000, 0.9)], 1 - errors / 10_000, errors, 10_000, predictions,
                          dataset, 0.9)


def orange_pixels(path) -> int:
    rgb = matplotlib.image.imread(path)[..., :3]
    return int(np.sum(np.abs(rgb - np.array([1.0, 0x7F / 255, 0x0E / 255])).max(axis=2) < 0.03))


def test_the_figure_frames_the_books_digits_on_mnist_only(tmp_path, monkeypatch):
    wrong = {3: 4, 445: 0, 947: 3, 5000: 1, 9792: 9}  # 445, 947, 9792 are the book's
    on_mnist = vote(made_up("mnist", MNIST_TEST_MD5), wrong)
    on_fashion = vote(made_up("fashion-mnist", {}), wrong)
    assert on_mnist.against_book() == BookOverlap(33, 5, 3, 2)
    assert on_fashion.against_book() is None

    framed = plot_ensemble_errors(on_mnist, tmp_path / "mnist.png")
    plain = plot_ensemble_errors(on_fashion, tmp_path / "fashion.png")
    assert orange_pixels(framed) > 0 and orange_pixels(plain) == 0

    calls = []
    monkeypatch.setattr(plots, "plot_errors", lambda *args: calls.append(args))
    plot_ensemble_errors(on_mnist, tmp_path / "again.png")
    plot_ensemble_errors(on_fashion, tmp_path / "again.png")
    (_, _, _, _, title, _, marked), (_, _, _, _, plain_title, _, unmarked) = calls
    assert marked.tolist() == [False, True, True, False, True] and unmarked is None
    assert "orange frame: wrong in the book's vote too" in title and "book" not in plain_title


def test_errors_figure_frames_exactly_the_marked_digits():
    images = np.zeros((4, 28, 28))
    fig = plots.errors_figure(images, np.arange(4), np.arange(4) + 1, "t",
                              marked=np.array([True, False, True, False]))
    orange = pytest.approx((1.0, 0x7F / 255, 0x0E / 255), abs=0.01)
    frames = [p for p in fig.axes[0].patches if tuple(p.get_edgecolor()[:3]) == orange]
    assert len(frames) == 2
    # A frame lies in the gap around its digit: the first tile's pixels span 1.5..29.5 in the
    # mosaic (a gap of 2 before it), so its frame runs between -0.5 and 1.5, and 29.5 and 31.5.
    x, y = frames[0].get_xy()
    for start, size in ((x, frames[0].get_width()), (y, frames[0].get_height())):
        assert -0.5 <= start < 1.5 and 29.5 < start + size <= 31.5
    assert frames[1].get_xy()[0] > x + 2 * 28  # the third digit's
    assert len(plots.errors_figure(images, np.arange(4), np.arange(4) + 1, "t").axes[0].patches) == 0


@needs_mnist
def test_nnexp_ensemble_on_mnist_says_how_many_of_the_books_digits_it_gets_wrong(tmp_path):
    runs = [make_run(tmp_path, f"conv{s}", layers=FAST_CONV_LAYERS, seed=s, checkpoint=True) for s in (1, 2)]
    result, _ = run_ensemble([str(r.path) for r in runs])
    shared = [i for i, (true, _) in BOOK.items() if result.predictions[i] != true]
    same = [i for i, (_, said) in BOOK.items() if result.predictions[i] == said]
    expected = (f"of the book's 33 wrong digits, {len(shared)} {'is' if len(shared) == 1 else 'are'} among "
                f"this vote's {result.errors:,} wrong ({len(same)} with the book's wrong answer)")

    cli = CliRunner().invoke(app, ["ensemble", *(str(r.path) for r in runs), "--errors", str(tmp_path / "e.png")])
    assert cli.exit_code == 0, cli.output
    assert expected in cli.stdout.splitlines()
    # random networks get most digits wrong, the book's among them
    assert result.errors > 5000 and len(shared) > 20


@pytest.mark.skipif(not (os.environ.get("NNEXP_FASHION_MNIST_DIR") or FASHION_MNIST_DIR.exists()),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_nnexp_ensemble_on_fashion_mnist_says_nothing_of_the_book(tmp_path):
    runs = [make_run(tmp_path, f"f{s}", layers=FAST_CONV_LAYERS, seed=s, checkpoint=True,
                     sets={"data.dataset": "fashion-mnist"}) for s in (1, 2)]
    cli = CliRunner().invoke(app, ["ensemble", *(str(r.path) for r in runs), "--errors", str(tmp_path / "e.png")])
    assert cli.exit_code == 0, cli.output
    assert "ensemble of 2" in cli.stdout and "book" not in cli.output
    assert orange_pixels(tmp_path / "e.png") == 0
