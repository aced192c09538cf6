"""The training loop: the one place that owns epochs.

Per epoch, top to bottom: shuffle -> (augment) -> the backend's pass over the mini-batches ->
evaluate -> keep the best -> early stopping / eta schedule -> checkpoint -> log. A backend
only ever sees one epoch at a time (`Model.train_epoch`).

Everything that can be wrong with the input is checked in `prepare`, before a run directory
exists, so bad input never leaves a half-made run behind. Whether a run starts, resumes or
is extended is decided in `lifecycle`, which hands `run_epochs` a model and a `LoopState`.

The reported test accuracy is the one at the epoch of best validation accuracy, ties going
to the later epoch (`rundir.is_new_best`, as the book reports it). Early stopping counts
epochs since the last *strict* improvement (`count_stop`); `replay_stops` runs that count
over a run's recorded epochs, for an extension to continue it as a fresh run would.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from nnexp import backends
from nnexp.backends import Backend, Model, Objective, Optimizer
from nnexp.data import Dataset, load_dataset
from nnexp.errors import ConfigError, RunFailed
from nnexp.network import NetworkSpec, build_spec
from nnexp.rundir import LoopState, Run, Status, is_new_best  # LoopState: what last.npz holds

ETA_FLOOR = 1 / 128  # halve-on-plateau stops once eta reaches eta0/128 (chapter 3)
PENDING_BEST = "best-pending"  # a new best checkpoint until last.npz has recorded its epoch
# summary.json's stop_reason, in words for people
STOP_REASONS = {"epochs": "all epochs run", "early-stopping": "stopped early",
                "eta-floor": "stopped: eta reached eta0/128", "diverged": "diverged",
                "time-limit": "paused at the time limit; nnexp resume continues it",
                # a sweep's worker process died under the point (the out-of-memory killer): run
                # again, it would most likely die again, so only --retry-failed runs it
                "worker-died": "its worker process died",
                # a search's pruner (nnexp search --pruner) stopped the trial: summary.json's
                # epochs_run is the epoch it was judged at; nnexp resume continues it
                "pruned": "pruned by the search: its validation accuracy lagged the other trials'"}


@dataclass
class Experiment:
    """A validated config with everything it needs loaded: ready to train."""

    config: dict
    spec: NetworkSpec
    backend: Backend
    device: str
    dataset: Dataset


@dataclass
class Seeds:
    """Independent streams from one seed. Weights, mini-batch order and CPU augmentation come
    from NumPy, so they are the same on every backend; dropout masks come from the backend's
    own generator, seeded from here."""

    init: np.random.Generator
    order: np.random.Generator
    augment: np.random.Generator
    dropout: int = field(default=0)

    @classmethod
    def from_seed(cls, seed: int) -> "Seeds":
        init, order, augment, dropout = np.random.SeedSequence(seed).spawn(4)
        return cls(np.random.default_rng(init), np.random.default_rng(order),
                   np.random.default_rng(augment), int(dropout.generate_state(1)[0]))


class Reporter(Protocol):
    """How the loop shows progress; the CLI supplies a terminal or plain-text one."""

    def epoch_started(self, epoch: int, num_batches: int) -> None: ...
    def batches_done(self, done: int) -> None: ...
    def evaluating(self) -> None: ...  # the mini-batches are done; validation and test are scored
    def epoch_finished(self, record: dict, line: str) -> None: ...


class SilentReporter:
    def epoch_started(self, epoch: int, num_batches: int) -> None:
        pass

    def batches_done(self, done: int) -> None:
        pass

    def evaluating(self) -> None:
        pass

    def epoch_finished(self, record: dict, line: str) -> None:
        pass


class DataCache:
    """Data sets by what identifies them, loaded once: whoever runs many trials in one
    process (a sweep worker, a search) passes one to `prepare`. The loop never changes the
    arrays, so trials can share them."""

    def __init__(self):
        self._sets: dict[tuple, Dataset] = {}

    def get(self, data: dict, data_dir=None) -> Dataset:
        where = data_dir or data["path"]
        key = (data["dataset"], str(where) if where else None, data["train_size"], data["expanded_seed"])
        if key not in self._sets:
            self._sets[key] = load_dataset(data["dataset"], data_dir=where, train_size=data["train_size"],
                                           expanded_seed=data["expanded_seed"])
        return self._sets[key]

    def __len__(self) -> int:
        return len(self._sets)


def prepare(cfg: dict, *, data_dir=None, datasets: DataCache | None = None,
            dataset: Dataset | None = None) -> Experiment:
    """Check everything that can be checked before training, and get the data: `dataset`
    as given (tests pass small synthetic ones), else from `datasets`, else loaded."""
    backend = backends.get(cfg["backend"])
    device = backend.resolve_device(cfg["device"])
    spec = build_spec(cfg["model"]["layers"])
    data = cfg["data"]
    if dataset is None:
        dataset = (datasets if datasets is not None else DataCache()).get(data, data_dir)
    n, m = len(dataset.train.y), cfg["training"]["batch_size"]
    if m > n:
        raise ConfigError("training.batch_size", f"{m} is larger than the training set ({n} images)")
    speed_n = cfg["training"]["monitor_layer_speed"]
    if speed_n is not None and speed_n > n:
        raise ConfigError("training.monitor_layer_speed",
                          f"{speed_n} images asked for, but the training set has {n}")
    if speed_n is not None and not any(layer.param_shapes() for layer in spec.layers[:-1]):
        raise ConfigError("training.monitor_layer_speed", "the network has no hidden layer to measure")
    if spec.num_classes != dataset.num_classes:
        raise ConfigError(f"model.layers.{len(spec.layers) - 1}.units",
                          f"the output layer has {spec.num_classes} units but {data['dataset']} "
                          f"has {dataset.num_classes} classes")
    return Experiment(cfg, spec, backend, device, dataset)


def build_model(exp: Experiment, params: dict[str, np.ndarray], seeds: Seeds) -> Model:
    tr = exp.config["training"]
    n = len(exp.dataset.train.y)
    objective = Objective.from_training(tr["cost"], tr["l2"], tr["lambda"], tr["l1"], n, tr["batch_size"])
    optimizer = Optimizer(tr["optimizer"], momentum=tr["momentum"], rmsprop_decay=tr["rmsprop_decay"],
                          beta1=tr["beta1"], beta2=tr["beta2"])
    return exp.backend.build(exp.spec, params, objective, optimizer,
                             dtype=exp.config["dtype"], device=exp.device, seed=seeds.dropout,
                             deterministic=exp.config["deterministic"])


def epoch_line(record: dict, epochs: int) -> str:
    """The plain one-line report of an epoch (printed off a terminal, and kept in train.log)."""
    parts = [f"epoch {record['epoch']:>3}/{epochs}",
             f"val {100 * record['validation_accuracy']:6.2f}%",
             f"test {100 * record['test_accuracy']:6.2f}%",
             f"val cost {record['validation_cost']:.4f}"]
    if "train_accuracy" in record:
        parts.append(f"train {100 * record['train_accuracy']:6.2f}%")
    if "layer_speed" in record:
        parts.append("speed " + " ".join(f"{v:.3g}" for v in record["layer_speed"]))
    parts += [f"η {record['eta']:g}", f"{record['seconds']:.1f}s"]
    if record.get("best"):
        parts.append("*best")
    return "  ".join(parts)


# --- the loop ---------------------------------------------------------------------------------


def _evaluate(exp: Experiment, model: Model, x_train: np.ndarray) -> dict:
    ds, out = exp.dataset, {}
    out["validation_cost"], out["validation_accuracy"] = model.evaluate(ds.validation.x, ds.validation.y)
    out["test_cost"], out["test_accuracy"] = model.evaluate(ds.test.x, ds.test.y)
    if exp.config["training"]["monitor_train"]:
        out["train_cost"], out["train_accuracy"] = model.evaluate(x_train, ds.train.y)
    return out


def layer_speeds(exp: Experiment, model: Model, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Nielsen's "speed of learning" of each hidden layer (chapter 5): the Euclidean norm of
    the mean of dC/db over the images x (dC/dbeta for a batch-normalised layer, whose beta is
    its bias). Dropout, where a net has it, uses fixed masks."""
    _, grads = model.loss_and_grads(x, y, dropout_seed=0)
    return [float(np.linalg.norm(grads[f"{layer.index}.{'beta' if layer.batch_norm else 'b'}"]))
            for layer in exp.spec.layers[:-1] if layer.param_shapes()]


def summary_of(exp: Experiment, run: Run, state: LoopState, status: Status) -> dict:
    cfg = exp.config
    return {
        "name": cfg["name"],
        "status": status,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch or None,
        "best_validation_accuracy": state.best_validation_accuracy if state.best_epoch else None,
        "test_accuracy": state.test_accuracy,
        "epochs_run": state.epoch,
        "epochs": cfg["training"]["epochs"],
        "final_eta": state.eta,
        "wall_time_s": round(state.wall_time_s, 3),
        "backend": exp.backend.name,
        "device": exp.device,
        "n_params": exp.spec.n_params,
        "seed": cfg["seed"],
        "dataset": cfg["data"]["dataset"],
        "train_size": len(exp.dataset.train.y),
        "run_dir": str(run.path),
    }


def _save_last(run: Run, model: Model, state: LoopState, seeds: Seeds, config: dict) -> None:
    # The model's state is arrays (optimiser buffers) plus JSON-able values (RNG states);
    # the config trained with goes along, for resume to check config.yaml against.
    model_state = model.get_state()
    arrays = {k: v for k, v in model_state.items() if isinstance(v, np.ndarray)}
    meta = {"epoch": state.epoch, "loop": asdict(state), "config": config,
            "model_state": {k: v for k, v in model_state.items() if k not in arrays},
            "order_rng": seeds.order.bit_generator.state,
            "augment_rng": seeds.augment.bit_generator.state}
    run.save_checkpoint("last", model.get_params(), meta, arrays)


def epoch_eta(tr: dict, epoch: int, plateau_eta: float) -> float:
    """The η epoch `epoch` (counted from 1) trains with, under `training.schedule`.

    A function of the epoch alone, so a resumed run continues the same schedule; only
    halve-on-plateau has state, the halved rate `plateau_eta` the loop keeps. Warm-up then
    scales the first `warmup_epochs` epochs by 1/(W+1), 2/(W+1), ...: large steps on the
    random initial network can wreck batch-normalised layers before their statistics settle.
    Step and cosine start after the warm-up, which rises to the undecayed η: cosine anneals
    from η down to nearly 0 in the last epoch, step multiplies η by the factor every
    `step_every` epochs counted from the warm-up's end.
    """
    eta0, schedule, warmup = tr["eta"], tr["schedule"], tr["warmup_epochs"]
    if schedule == "halve-on-plateau":
        eta = plateau_eta
    elif schedule == "step":
        # counted from the warm-up's end, as cosine is: decaying during it would scale an
        # already decayed η, and the warm-up would not rise (η 0.4, factor 0.5, every epoch,
        # W 3: 0.1, 0.1, 0.075 instead of 0.1, 0.2, 0.3)
        eta = eta0 * tr["step_factor"] ** (max(epoch - 1 - warmup, 0) // tr["step_every"])
    elif schedule == "cosine":
        progress = max(epoch - 1 - warmup, 0) / (tr["epochs"] - warmup)
        eta = eta0 * 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        eta = eta0
    return eta * epoch / (warmup + 1) if epoch <= warmup else eta


def count_stop(tr: dict, state: LoopState, improved: bool) -> None:
    """The end of an epoch's stopping rule: count the epochs since the last strict
    improvement; at `patience` of them halve-on-plateau halves η and counts afresh (stopping
    once η reaches η₀/128), any other schedule stops. An early stop keeps its count, so an
    extension with a larger patience counts on from it as a run started with it would."""
    patience = tr["early_stopping"]["patience"]
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    if patience and state.bad_epochs >= patience:
        if tr["schedule"] == "halve-on-plateau":
            state.bad_epochs = 0
            state.eta /= 2
            if state.eta <= tr["eta"] * ETA_FLOOR * (1 + 1e-9):
                state.stop_reason = "eta-floor"
        else:
            state.stop_reason = "early-stopping"


def replay_stops(tr: dict, records: list[dict]) -> list[LoopState]:
    """The loop's counting (best validation, epochs without improvement, halve-on-plateau's
    η, the stop) after each of a run's recorded epochs 1, 2, ..., had it trained them under
    `tr`: what a run started with `tr` would hold, for the same validation accuracies."""
    state, states = LoopState(eta=tr["eta"]), []
    for record in records:
        if tr["schedule"] != "halve-on-plateau":  # as the loop does: there state.eta is the halved base rate
            state.eta = epoch_eta(tr, record["epoch"], state.eta)
        accuracy = record["validation_accuracy"]
        improved = accuracy > state.best_validation_accuracy
        if is_new_best(accuracy, state.best_validation_accuracy):
            state.best_epoch, state.best_validation_accuracy = record["epoch"], accuracy
        state.epoch = record["epoch"]
        count_stop(tr, state, improved)
        states.append(replace(state))
    return states


@contextlib.contextmanager
def stop_signals_ignored():
    """SIGINT and SIGTERM ignored for the block: the interrupted summary's write. A stop
    signal often comes twice (`timeout -s INT` sends one to the process and one to its group;
    a user presses Ctrl-C again): the second, raised in the middle of the write, would leave
    the summary saying running (the run then reads as killed). The run is stopping already,
    so nothing is lost by ignoring it; the write takes milliseconds. Only the main thread can
    set handlers: elsewhere (a thread of the caller's) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(signum) for signum in stops]
    if None in previous:  # a handler set outside Python could not be put back
        yield
        return
    for signum in stops:
        signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in zip(stops, previous):
            signal.signal(signum, handler)


def run_epochs(exp: Experiment, run: Run, model: Model, state: LoopState, seeds: Seeds,
          reporter: Reporter, deadline: float | None = None) -> dict:
    tr = exp.config["training"]
    x, y = exp.dataset.train.x, exp.dataset.train.y
    n, m = len(y), tr["batch_size"]
    augment = exp.config["data"]["augment"]
    speed_n = tr["monitor_layer_speed"]
    run.write_summary(summary_of(exp, run, state, Status.RUNNING))
    saved = replace(state)  # the state last.npz holds: what an interruption may claim
    # the last epoch's duration, the estimate of the next one's (a resumed run's from its record)
    done = run.read_metrics(strict=False) if state.epoch else []
    last_seconds = float(done[-1].get("seconds", 0.0)) if done else 0.0
    try:
        while state.epoch < tr["epochs"] and state.stop_reason is None:
            if deadline is not None and time.monotonic() + last_seconds > deadline:
                saved.stop_reason = "time-limit"  # the next epoch would not end in time
                run.write_summary(summary_of(exp, run, saved, Status.INTERRUPTED))
                run.log(f"paused after epoch {saved.epoch} at the time limit; "
                        f"continue with: nnexp resume {run.path}")
                return summary_of(exp, run, saved, Status.INTERRUPTED)
            epoch, started = state.epoch + 1, time.perf_counter()
            order = seeds.order.permutation(n) if tr["shuffle"] else np.arange(n)
            batches = order[: n - n % m].reshape(-1, m)  # the last partial batch is dropped
            x_epoch = model.augment(x, augment, seeds.augment) if augment else x
            # measured on the weights the epoch starts from: epoch 1's is the initial network's
            speeds = layer_speeds(exp, model, x[:speed_n], y[:speed_n]) if speed_n else None
            reporter.epoch_started(epoch, len(batches))
            eta = epoch_eta(tr, epoch, state.eta)
            if tr["schedule"] != "halve-on-plateau":  # there state.eta is the halved base rate
                state.eta = eta
            model.train_epoch(x_epoch, y, batches, eta, reporter.batches_done)
            reporter.evaluating()
            record = {"epoch": epoch, "eta": eta, **_evaluate(exp, model, x)}
            record["seconds"] = round(time.perf_counter() - started, 3)
            state.epoch, state.wall_time_s = epoch, state.wall_time_s + record["seconds"]

            if not all(math.isfinite(v) for v in record.values()):
                run.append_metrics(record)
                state.stop_reason = "diverged"
                run.write_summary(summary_of(exp, run, state, Status.DIVERGED))
                run.log(f"epoch {epoch}: the cost is not finite; stopped")
                raise RunFailed(f"training diverged at epoch {epoch} (the cost became "
                                f"{record['validation_cost']}); try a smaller training.eta "
                                f"(now {state.eta:g}). Run directory: {run.path}")

            if speeds is not None:
                record["layer_speed"] = speeds
            improved = record["validation_accuracy"] > state.best_validation_accuracy
            record["best"] = is_new_best(record["validation_accuracy"], state.best_validation_accuracy)
            if record["best"]:
                state.best_epoch = epoch
                state.best_validation_accuracy = record["validation_accuracy"]
                state.test_accuracy = record["test_accuracy"]
                # promoted to best.npz only once last.npz records this epoch (see resume)
                run.save_checkpoint(PENDING_BEST, model.get_params(), {"epoch": epoch})
            count_stop(tr, state, improved)

            line = epoch_line(record, tr["epochs"])
            run.append_metrics(record)  # before the checkpoint: resume trims any excess
            _save_last(run, model, state, seeds, exp.config)
            saved, last_seconds = replace(state), record["seconds"]
            if record["best"]:
                run.promote_checkpoint(PENDING_BEST, "best")
            run.write_summary(summary_of(exp, run, state, Status.RUNNING))
            run.log(line)
            reporter.epoch_finished(record, line)
    except KeyboardInterrupt:
        # Only what last.npz holds counts: an epoch interrupted after its metrics line but
        # before its checkpoint is re-run on resume, so the summary must not claim it.
        with stop_signals_ignored():
            run.write_summary(summary_of(exp, run, saved, Status.INTERRUPTED))
            run.log(f"interrupted during epoch {saved.epoch + 1}; resume with: nnexp resume {run.path}")
        raise
    except RunFailed:
        raise
    except Exception as exc:  # a bug or an environment failure (disk full): say so on disk too
        failed = summary_of(exp, run, saved, Status.FAILED)
        try:
            run.write_summary(failed)
            run.log(f"failed during epoch {state.epoch + 1}: {type(exc).__name__}: {exc}")
        except OSError:  # the disk is full: no room for a new file, but the old one can be reused
            run.overwrite_summary_in_place(failed)
        raise
    state.stop_reason = state.stop_reason or "epochs"
    summary = summary_of(exp, run, state, Status.COMPLETED)
    run.write_summary(summary)
    run.log(f"done: best validation {100 * state.best_validation_accuracy:.2f}% at epoch "
            f"{state.best_epoch}, test {100 * state.test_accuracy:.2f}% ({STOP_REASONS[state.stop_reason]})")
    return summary
