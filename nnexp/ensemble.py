"""Majority vote of several trained networks, as at the end of Nielsen's chapter 6.

The book trains five networks and lets them vote: an image is classified as the digit most
networks chose. We add the one rule a vote needs and the book leaves open, ties: among the
classes with the most votes, the one with the largest output summed over all members wins
(a confident minority does not override the majority, but it does settle a draw).

Members may have different architectures; they must have been trained on one dataset's
test set, since the vote is taken image by image. The vote is taken on the validation set
too: that, never the test score, is what may choose between votes (which members, how many).

The book's own vote got 33 MNIST test images wrong, and shows them in a figure but never says
which they are: `BOOK_ERRORS` names them, and a vote on MNIST's test set is compared with them
(`book_overlap`), in `nnexp ensemble`'s output and its figure of errors.

Non-goals: weighted votes, averaging outputs as the primary rule, training the members.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnexp.runset import find_run_dirs
from nnexp.data import Dataset
from nnexp.data.mnist import MNIST_MD5
from nnexp.errors import UserError
from nnexp.evaluate import load_run_model, run_dataset
from nnexp.rundir import Run


def majority_vote(votes: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Each image's most-voted class; ties go to the tied class with the largest summed output.

    votes: (members, N) class indices; outputs: (members, N, classes) output activations.
    A tie in the summed outputs too (vanishingly rare with real outputs) goes to the lower
    class index, so the result is always deterministic.
    """
    votes = np.asarray(votes)
    outputs = np.asarray(outputs, dtype=np.float64)
    members, n, classes = outputs.shape
    if votes.shape != (members, n):
        raise ValueError(f"votes {votes.shape} do not match outputs {outputs.shape}")
    counts = np.zeros((n, classes), dtype=np.int64)  # (N, classes)
    np.add.at(counts, (np.broadcast_to(np.arange(n), votes.shape), votes), 1)
    tied = counts == counts.max(axis=1, keepdims=True)  # (N, classes): the classes in the lead
    summed = outputs.sum(axis=0)  # (N, classes)
    return np.where(tied, summed, -np.inf).argmax(axis=1)


@dataclass
class Member:
    name: str
    accuracy: float  # test
    errors: int  # test
    validation_accuracy: float


@dataclass
class EnsembleResult:
    members: list[Member]
    accuracy: float  # test
    errors: int  # test
    n: int  # test images
    predictions: np.ndarray  # (N,) the ensemble's answers on the test set
    test: Dataset  # whose .test split was voted on
    validation_accuracy: float  # the same vote on the validation set

    @property
    def wrong(self) -> np.ndarray:
        """Indices of the misclassified test images, in test-set order."""
        return np.flatnonzero(self.predictions != self.test.test.y)

    def against_book(self) -> BookOverlap | None:
        """This vote's wrong test images against the book's vote's; None unless the vote was
        taken on MNIST's test set."""
        return book_overlap(self.wrong, self.predictions) if on_mnist_test_set(self.test) else None

    def wrong_in_book(self) -> np.ndarray | None:
        """For each of `wrong`: whether the book's vote got that test image wrong too; None unless
        the vote was taken on MNIST's test set. What the figures of errors mark."""
        if not on_mnist_test_set(self.test):
            return None
        return np.isin(self.wrong, [index for index, _, _ in BOOK_ERRORS])


def _test_set_id(loaded) -> str:
    """Which test set a run was evaluated on: expanded MNIST shares MNIST's test set."""
    name = loaded.config["data"]["dataset"]
    return "mnist" if name == "mnist-expanded" else name


# The 33 MNIST test images the book's vote of 5 dropout nets gets wrong (chapter 6, 99.67%),
# as (test index, MNIST's label, the book's vote), in the order of the book's figure of them
# (images/ensemble_errors.png, at full size ensemble_errors_original.png, of the book's site
# source, github.com/mnielsen/nnadl_site), read row by row: test-set order, as it turned out.
# The book never lists them: docs/book_errors.py finds each digit of the figure among all
# 10,000 test images by normalised correlation (every match 0.95 to 0.99, the runner-up at
# least 0.108 lower) and reads both labels of each digit from the figure; MNIST's label of
# every match is the figure's top-right label. The figure itself is not part of nnexp.
BOOK_ERRORS: tuple[tuple[int, int, int], ...] = (
    (445, 6, 0), (674, 5, 3), (947, 8, 9), (1014, 6, 5),
    (1039, 7, 1), (1232, 9, 4), (1247, 9, 5), (1260, 7, 1),
    (1901, 9, 4), (2035, 5, 3), (2118, 6, 0), (2130, 4, 9),
    (2293, 9, 4), (2597, 5, 3), (2654, 6, 1), (3225, 7, 9),
    (3422, 6, 0), (4176, 2, 7), (4201, 1, 7), (4504, 2, 7),
    (4699, 6, 1), (4740, 3, 5), (4823, 9, 4), (4860, 4, 9),
    (5654, 7, 2), (5937, 5, 3), (5955, 3, 8), (6576, 7, 1),
    (6597, 0, 7), (8316, 7, 2), (8527, 4, 9), (9729, 5, 6),
    (9792, 4, 9),
)


@dataclass(frozen=True)
class BookOverlap:
    """A vote's wrong test images against the book's."""

    book: int  # the book's wrong images (33)
    vote: int  # this vote's
    shared: int  # wrong in both
    same_answer: int  # of the shared, those this vote gives the book's (wrong) answer too


def book_overlap(wrong, predictions, book=BOOK_ERRORS) -> BookOverlap:
    """Compare a vote's wrong test images (`wrong`: indices into MNIST's test set) and its
    answers (`predictions`: (10,000,) the answer for every test image) with `book`'s
    (index, true label, answer) triples."""
    predictions = np.asarray(predictions)
    if len(predictions) <= max(index for index, _, _ in book):
        raise ValueError(f"{len(predictions)} predictions: not a vote on MNIST's 10,000 test images")
    wrong = {int(i) for i in wrong}
    shared = [(index, said) for index, _, said in book if index in wrong]
    return BookOverlap(len(book), len(wrong), len(shared),
                       sum(int(predictions[index]) == said for index, said in shared))


def on_mnist_test_set(dataset: Dataset | None) -> bool:
    """Whether `dataset`'s test split is MNIST's 10,000 test images, file for file (the only
    test set the book's indices mean anything in): MNIST or its expansion, whose test set is
    MNIST's, loaded from files with MNIST's checksums (not a look-alike directory of tests)."""
    if dataset is None or dataset.name not in ("mnist", "mnist-expanded"):
        return False
    md5 = dataset.source.get("md5", {})
    return all(md5.get(name) == MNIST_MD5[name] for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


def run_ensemble(patterns: list[str | Path], *, checkpoint: str = "best", backend: str | None = None,
                 data_dir: str | Path | None = None,
                 runs_dir: str | Path | None = None) -> tuple[EnsembleResult, list[str]]:
    """Load every run's network, score it on the shared test set, and take the vote. With
    `runs_dir`, patterns may be run ids (`runset.resolve_run`).

    Returns (result, warnings): warnings name paths that matched no run.
    """
    paths, warnings = find_run_dirs(patterns, runs_dir)
    loaded = [load_run_model(Run.open(p), checkpoint=checkpoint, backend=backend) for p in paths]
    sets = {_test_set_id(l) for l in loaded}
    if len(sets) > 1:
        which = ", ".join(f"{l.run.name}: {_test_set_id(l)}" for l in loaded)
        raise UserError(f"the runs must share a test set to vote; they were trained on different "
                        f"datasets ({which})")
    dataset = run_dataset(loaded[0], data_dir=data_dir)
    # (members, N, classes) per split: one inference pass per member and split
    outputs = {split: np.stack([_predict(member, getattr(dataset, split).x, dataset.num_classes)
                                for member in loaded])
               for split in ("validation", "test")}
    answers = {split: outputs[split].argmax(axis=2) for split in outputs}  # (members, N)
    test_y, n = dataset.test.y, len(dataset.test.y)
    members = [Member(label, accuracy=float(np.mean(test_answers == test_y)),
                      errors=int(np.sum(test_answers != test_y)),
                      validation_accuracy=float(np.mean(val_answers == dataset.validation.y)))
               for label, test_answers, val_answers in zip(_labels(paths), answers["test"], answers["validation"])]
    vote = {split: majority_vote(answers[split], outputs[split]) for split in outputs}
    errors = int(np.sum(vote["test"] != test_y))
    return EnsembleResult(members, 1 - errors / n, errors, n, vote["test"], dataset,
                          validation_accuracy=float(np.mean(vote["validation"] == dataset.validation.y))), warnings


def _labels(paths: list[Path]) -> list[str]:
    """Each member's name in the table: its directory's, or parent/name where two members
    share a name (seed=1 of two sweeps)."""
    counts = Counter(path.name for path in paths)
    return [f"{path.parent.name}/{path.name}" if counts[path.name] > 1 else path.name for path in paths]


def _predict(member, x: np.ndarray, num_classes: int) -> np.ndarray:
    out = member.model.predict(x)  # (N, classes)
    if out.shape[1] != num_classes:
        raise UserError(f"{member.run.name} has {out.shape[1]} outputs, the data set {num_classes} classes")
    return out


def plot_ensemble_errors(result: EnsembleResult, out: str | Path, limit: int = 100) -> Path:
    """The grid of test digits the ensemble got wrong (true label top right, answer bottom right);
    on MNIST's test set, those the book's vote got wrong too are framed."""
    from nnexp.plots import MARK_COLOUR_NAME, plot_errors  # lazily: matplotlib takes a second to import

    wrong = result.wrong
    test = result.test.test
    title = (f"{result.errors} test images misclassified by a vote of {len(result.members)} "
             f"networks ({100 * result.accuracy:.2f}% correct)\ntop right: true label, bottom right: "
             f"the vote")
    marked = result.wrong_in_book()
    if marked is not None:  # frame the digits the book's vote got wrong too
        title += f"; {MARK_COLOUR_NAME} frame: wrong in the book's vote too"
    return plot_errors(test.x[wrong], test.y[wrong], result.predictions[wrong], out, title, limit, marked)
