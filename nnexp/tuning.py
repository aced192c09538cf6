"""Search that learns from its trials: Optuna's samplers and pruners on nnexp's executors.

`nnexp search CONFIG --sample ... --sampler tpe --pruner median` keeps an Optuna study in
the search's sweep directory, in a journal file (``optuna.journal``, Optuna's
JournalStorage on a JournalFileBackend: no database server, only a shared file system), so
the process running the search and the processes training its trials share one study:

    the search's process   asks the sampler for a trial's values as an executor is about to
                           run it (`executors.Deferred`), records them as the point's
                           overrides in sweep.json, and tells the study how the trial ended
    each trial's worker    reports the epoch's validation accuracy to its trial after every
                           epoch, through the reporter the training loop calls, and asks the
                           pruner whether to stop (`execute_trial`): a pruned run ends with
                           status ``pruned``, its run directory and metrics kept

The objective is a trial's best validation accuracy: the test set never reaches the sampler
or the pruner. Trial number k is the sweep's point k+1 (``t001`` is trial 0).

Reproducibility. Every trial is an ordinary run: its config.yaml holds its values and its
seed, and `nnexp train` on it gives the same metrics. The sampler is seeded afresh for each
trial from (--search-seed, trial number), so what it proposes depends only on the trials
the study has seen, not on how many proposals a process made before: with --jobs 1 a
search is repeated trial for trial, and a search continued after a kill proposes what an
uninterrupted one would have. (With more jobs, which trials have ended when another is
proposed depends on timing; each trial is still reproducible from its recorded values.)

Optuna is an optional extra: ``pip install "nnexp[optuna]"``. `--sampler random` without a
pruner is nnexp's own seeded draws (`search`) and needs no Optuna; `--sampler random` with a
pruner runs those same draws through the study.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nnexp.errors import UserError
from nnexp.rundir import Run, Status

SAMPLERS = ("random", "tpe", "cmaes", "qmc")
PRUNERS = ("none", "median", "asha", "hyperband")
JOURNAL = "optuna.journal"  # in the sweep directory, beside sweep.json
STUDY = "nnexp-search"
MISSING = 'this search needs Optuna (--sampler other than random, or --pruner): pip install "nnexp[optuna]"'


def uses_optuna(sampler: str, pruner: str) -> bool:
    return sampler != "random" or pruner != "none"


def check_choices(sampler: str, pruner: str) -> None:
    """One-line errors for an unknown sampler or pruner, or a missing Optuna, before anything
    is drawn or made (finding Optuna imports nothing)."""
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler {sampler!r}: unknown; valid: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UserError(f"--pruner {pruner!r}: unknown; valid: {', '.join(PRUNERS)}")
    if uses_optuna(sampler, pruner):
        require()
    if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise UserError("--sampler cmaes needs the cmaes package: pip install cmaes")


def require() -> None:
    if importlib.util.find_spec("optuna") is None:
        raise UserError(MISSING)


def check_samples(samples) -> None:
    """Values Optuna can record: a choice among lists or mappings cannot be a categorical."""
    for sample in samples:
        if sample.kind == "choice":
            for value in sample.args:
                if not (value is None or isinstance(value, (bool, int, float, str))):
                    raise UserError(f"--sample {sample.key}: choice value {value!r} is not a number, "
                                    f"a string, a boolean or null, which Optuna's samplers need")


def _optuna():
    require()
    import optuna  # lazily: seconds to import, and only a search that learns needs it

    optuna.logging.set_verbosity(logging.WARNING)  # not a line per trial on stderr
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _distributions(samples: list[str]) -> dict:
    from nnexp.search import parse_sample

    optuna = _optuna()
    out = {}
    for text in samples:
        sample = parse_sample(text)
        if sample.kind == "choice":
            out[sample.key] = optuna.distributions.CategoricalDistribution(list(sample.args))
        else:
            out[sample.key] = optuna.distributions.FloatDistribution(*sample.args, log=sample.kind == "log-uniform")
    return out


def _trial_seed(search_seed: int, number: int) -> int:
    """The sampler's seed for trial `number`: a function of the two alone (see the module's
    docstring), from a SeedSequence so neighbouring trials get unrelated streams."""
    return int(np.random.SeedSequence([search_seed, number]).generate_state(1)[0])


def _sampler(spec: dict, number: int):
    optuna = _optuna()
    name, seed = spec["sampler"], spec["search_seed"]
    if name == "tpe":
        # its first trials are random draws; Optuna's default of 10 would spend half of a
        # 20-trial search blind, so a quarter of the trials (2 to 10). Multivariate: η and λ
        # act together (a larger λ wants another η), which independent draws cannot see
        startup = max(2, min(10, spec["trials"] // 4))
        return optuna.samplers.TPESampler(seed=_trial_seed(seed, number), n_startup_trials=startup,
                                          multivariate=True)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=_trial_seed(seed, number))
    if name == "qmc":  # a sequence indexed by trial: one scramble seed for the whole search
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=_trial_seed(seed, number))  # random: values enqueued


def _pruner(spec: dict):
    """The pruners, sized in epochs. Median: a trial whose best validation so far is below the
    median of the finished trials' at the same epoch stops, once 3 trials have finished and
    after its first 2 epochs. ASHA (asynchronous successive halving): rungs at 1, 3, 9, ...
    epochs, each keeping the top third. Hyperband: brackets of successive halving up to the
    config's epochs."""
    optuna = _optuna()
    name, epochs = spec["pruner"], spec["epochs"]
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def _storage(journal: str | Path):
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal)))


def create_study(sweep_path: Path) -> None:
    """The search's study, in its sweep directory."""
    optuna = _optuna()
    optuna.create_study(study_name=STUDY, storage=_storage(sweep_path / JOURNAL), direction="maximize")


class SearchStudy:
    """The search's process's side of the study: it proposes trials and records how they end."""

    def __init__(self, sweep_path: Path, spec: dict):
        self.optuna = _optuna()
        self.journal = (sweep_path / JOURNAL).resolve()  # a Ray worker runs elsewhere
        if not self.journal.is_file():
            raise UserError(f"{sweep_path} is a search with a sampler or pruner but has no {JOURNAL}; "
                            f"it cannot be continued")
        self.spec = spec
        self.study = self.optuna.load_study(study_name=STUDY, storage=_storage(self.journal),
                                            pruner=_pruner(spec))
        self.distributions = _distributions(spec["samples"])

    def trials(self) -> list:
        return self.study.get_trials(deepcopy=False)

    def params(self, number: int, planned: dict[str, Any]) -> dict[str, Any]:
        """Trial `number`'s values: those the study holds for it (it was proposed before the
        search stopped), else a new trial's. With `planned` values (--sampler random: nnexp's
        own draws) the new trial takes them; else the sampler proposes them."""
        trials = self.trials()
        if number < len(trials):
            return dict(trials[number].params)
        if number != len(trials):  # proposed in order, one per point: `nnexp sweep DIR --only` skipped some
            raise UserError(f"a search that learns proposes its trials in order, and trial t{number + 1:03d} comes "
                            f"after {len(trials)} proposed so far; continue it whole: nnexp search {self.journal.parent}")
        self.study.sampler = _sampler(self.spec, number)
        if planned:
            self.study.enqueue_trial(planned)
        trial = self.study.ask(self.distributions)
        return dict(trial.params)

    def ref(self, number: int) -> dict:
        """What a worker needs to report to trial `number`."""
        return {"journal": str(self.journal), "number": number, "pruner": self.spec["pruner"],
                "epochs": self.spec["epochs"]}

    def tell(self, number: int, status: str, summary: dict | None) -> None:
        """How trial `number` ended, as its run directory says, unless the study knows already.
        Completed, pruned or diverged: its best validation accuracy is the objective (a
        diverged trial that reached no best counts 0: its values are a real, bad outcome the
        sampler should learn from). Failed (a config the data rules out, a full disk, a
        worker that died), interrupted or killed: nothing; the trial stays running in the
        study, for the sweep's rules decide whether it runs again (continued, or started over
        by --retry-failed) and then it reports to the same trial."""
        states = self.optuna.trial.TrialState
        trials = self.trials()
        if number >= len(trials) or trials[number].state != states.RUNNING:
            return
        best = (summary or {}).get("best_validation_accuracy")
        if status == Status.PRUNED:
            self.study.tell(number, state=states.PRUNED)
        elif status in (Status.COMPLETED, Status.DIVERGED):
            self.study.tell(number, float(best) if best is not None else 0.0)

    def settle(self, sweep) -> None:
        """A search continued after a kill: trials the study has as running whose run
        directories ended meanwhile (the process died before telling) are told now, so the
        sampler sees them before it proposes again. A trial whose run stopped part way goes
        on from its last epoch, as any sweep point does: resuming is exact, so the value it
        ends with, and every proposal after it, are those of an uninterrupted search."""
        for number, trial in enumerate(self.trials()):
            if number >= len(sweep.plan.points) or trial.state != self.optuna.trial.TrialState.RUNNING:
                continue
            point = sweep.plan.points[number]
            status = sweep.point_status(point)
            path = sweep.run_path(point)
            summary = Run(path).read_summary() if Run.is_run(path) and status != Status.DAMAGED else None
            self.tell(number, status, summary)


# --- in the worker ----------------------------------------------------------------------------


class Pruned(BaseException):
    """Raised through the training loop by the pruning reporter: not an Exception, so the loop
    does not record it as a failure; `execute_trial` records it as a prune."""

    def __init__(self, epoch: int):
        super().__init__(epoch)
        self.epoch = epoch


class _PruningReporter:
    """Passes every call on to `inner`; after each epoch reports its validation accuracy (never
    the test accuracy) to the trial and stops the run if the pruner says so."""

    def __init__(self, inner, trial, reported: set[int], run: Run):
        self.inner, self.trial, self.reported, self.run = inner, trial, reported, run

    def epoch_started(self, epoch: int, num_batches: int) -> None:
        # a trial continued after a kill between an epoch's checkpoint and its report: report
        # the recorded epochs the trial lacks and judge them, as the uninterrupted run did
        missing = [r for r in self.run.read_metrics(strict=False)
                   if r["epoch"] < epoch and r["epoch"] not in self.reported]
        for record in missing:
            self._report(record)
        if missing and self.trial.should_prune():
            raise Pruned(epoch - 1)
        self.inner.epoch_started(epoch, num_batches)

    def batches_done(self, done: int) -> None:
        self.inner.batches_done(done)

    def evaluating(self) -> None:
        self.inner.evaluating()

    def _report(self, record: dict) -> None:
        self.trial.report(float(record["validation_accuracy"]), step=int(record["epoch"]))
        self.reported.add(int(record["epoch"]))

    def epoch_finished(self, record: dict, line: str) -> None:
        self.inner.epoch_finished(record, line)
        if record["epoch"] not in self.reported:
            self._report(record)
        if self.trial.should_prune():
            raise Pruned(record["epoch"])


def execute_trial(exp, run: Run, intent, reporter, ref: dict, deadline: float | None = None) -> dict:
    """`lifecycle.execute` for one trial of a search, its epochs reported to the study and
    stopped when the pruner says: then summary.json says ``pruned`` and train.log after which
    epoch, and the run stays resumable (`nnexp resume RUN --set training.epochs=N`). A
    `deadline` (the search's time limit) pauses it as `execute`'s does."""
    from nnexp.lifecycle import execute

    optuna = _optuna()
    storage = _storage(ref["journal"])
    study = optuna.load_study(study_name=STUDY, storage=storage, pruner=_pruner(ref),
                              sampler=optuna.samplers.RandomSampler(seed=0))  # never samples here
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(STUDY),
                                                              ref["number"])
    trial = optuna.trial.Trial(study, trial_id)
    reported = set(storage.get_trial(trial_id).intermediate_values)
    try:
        return execute(exp, run, intent, _PruningReporter(reporter, trial, reported, run), deadline=deadline)
    except Pruned as pruned:
        return _mark_pruned(run, pruned.epoch, ref["pruner"])


def _mark_pruned(run: Run, epoch: int, pruner: str) -> dict:
    with run.lock():
        summary = {**(run.read_summary() or {}), "status": Status.PRUNED, "stop_reason": "pruned"}
        run.write_summary(summary)
        run.log(f"pruned after epoch {epoch} by the search's {pruner} pruner; "
                f"continue with: nnexp resume {run.path} --set training.epochs=N")
    return summary

