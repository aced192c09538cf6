"""The training loop: the one place that owns epochs.

Per epoch, top to bottom: shuffle -> (augment) -> the backend's pass over the mini-batches ->
evaluate -> keep the best -> early stopping / eta schedule -> checkpoint -> log. A backend
only ever sees one epoch at a time (`Model.train_epoch`).

Everything that can be wrong with the input is checked in `prepare`, before a run directory
exists, so bad input never leaves a half-made run behind.

The reported test accuracy is the one at the epoch of best validation accuracy, ties going
to the later epoch (as the book reports it). Early stopping counts epochs since the last
*strict* improvement.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from nnexp import backends
from nnexp.backends import Backend, Model, Objective, Optimizer
from nnexp.data import Dataset, load_dataset
from nnexp.errors import ConfigError, RunDirError, RunFailed
from nnexp.network import NetworkSpec, build_spec, init_params, penalty_scale
from nnexp.runs import Run, environment

ETA_FLOOR = 1 / 128  # halve-on-plateau stops once eta reaches eta0/128 (chapter 3)
PENDING_BEST = "best-pending"  # a new best checkpoint until last.npz has recorded its epoch
# summary.json's stop_reason, in words for people
STOP_REASONS = {"epochs": "all epochs run", "early-stopping": "stopped early",
                "eta-floor": "stopped: eta reached eta0/128", "diverged": "diverged",
                "time-limit": "paused at the time limit; nnexp resume continues it"}


@dataclass
class Experiment:
    """A validated config with everything it needs loaded: ready to train."""

    config: dict
    spec: NetworkSpec
    backend: Backend
    device: str
    dataset: Dataset


@dataclass
class LoopState:
    """Everything the loop itself must remember to continue after an interruption."""

    epoch: int = 0  # last completed epoch
    eta: float = 0.0
    best_epoch: int = 0
    best_validation_accuracy: float = -1.0
    test_accuracy: float | None = None  # at best_epoch
    bad_epochs: int = 0  # epochs since the last strict improvement
    wall_time_s: float = 0.0
    stop_reason: str | None = None  # epochs | early-stopping | eta-floor (time-limit is never saved)


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
    scale = penalty_scale(tr["l2"], n, tr["batch_size"])
    objective = Objective(tr["cost"], l2=tr["lambda"] * scale, l1=tr["l1"] * scale)
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


# --- starting and resuming ---------------------------------------------------------------------

# Keys a resumed run may change: they decide how far a run goes, not what it has done so far.
RESUMABLE_KEYS = ("training.epochs", "training.early_stopping.patience")


def execute(exp: Experiment, run: Run, reporter: Reporter | None = None, *,
            deadline: float | None = None, retry_failed: bool = False, extend: bool = False,
            continue_failed: bool = False) -> dict:
    """The one entry point for a run, shared by `train`, `resume`, `search` and every sweep
    executor: a prepared trial in, the run directory `run` brought as far as it can go, and
    its summary out. Idempotent: an empty directory starts, an interrupted or killed run
    resumes from its last epoch, a completed one is returned as it is, and a diverged or
    failed one is returned as it is unless `retry_failed`, which starts it over. `extend`
    continues a completed run under its config's new epochs or patience (RESUMABLE_KEYS);
    `continue_failed` resumes a failed run (one a full disk stopped) from its last epoch."""
    if not Run.is_run(run.path):
        return start(exp, run, reporter, deadline=deadline)
    summary = run.read_summary() or {}
    status = summary.get("status")
    if status == "completed":
        if not extend:
            return summary
        _check_same_config(run, exp.config)
        return resume(exp, run, reporter, deadline=deadline, extend=True)
    if status == "failed" and continue_failed and run.checkpoint_path("last").exists():
        _check_same_config(run, exp.config)
        return resume(exp, run, reporter, deadline=deadline)
    if status in ("diverged", "failed"):
        if not retry_failed:
            return summary
        with run.lock():  # no other process is training it while it is cleared
            run.clear()
        return start(exp, run, reporter, deadline=deadline)
    _check_same_config(run, exp.config)
    return resume(exp, run, reporter, deadline=deadline)


def _check_same_config(run: Run, cfg: dict) -> None:
    """A run resumes under the config it started with (apart from RESUMABLE_KEYS): anything
    else would continue one network as another."""
    from nnexp.config import resolve

    change = _config_change(resolve(run.read_config()), cfg)
    if change is not None:
        key, was, now = change
        raise RunDirError(f"{run.path} was started with {key} = {was!r}, not {now!r}; {change_reason(key)}")


FIXED_LENGTH = ("a cosine schedule is spread over training.epochs, so more epochs would change the η "
                "of those already run; train anew with more epochs")


def change_reason(key: str) -> str:
    """Why `_config_change` refuses a change of `key`."""
    return FIXED_LENGTH if key == "training.epochs" else "a run resumes under its own config"


def extendable(cfg: dict) -> bool:
    """Whether a completed run of `cfg` can go on under more epochs (RESUMABLE_KEYS)."""
    return (cfg.get("training") or {}).get("schedule") != "cosine"


def _config_change(then: dict, now: dict) -> tuple[str, object, object] | None:
    """(dotted key, value then, value now) of the first key in which config `now` would
    change what a run trained under `then` has done, or None: how far it goes
    (RESUMABLE_KEYS), its name and the book's number may change; nothing else may."""
    from nnexp.runset import flatten

    a, b = flatten(then), flatten(now)
    for key in sorted(set(a) | set(b)):
        resumable = key in RESUMABLE_KEYS and (key != "training.epochs" or extendable(then))
        if resumable or key == "name" or key.startswith("reference"):
            continue
        if a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return None


def start(exp: Experiment, run: Run, reporter: Reporter | None = None, *,
          deadline: float | None = None) -> dict:
    """Train a new run in the (fresh) directory `run`; return its summary.

    `deadline` (a `time.monotonic()` value) pauses the run, resumable, before an epoch that
    would end after it, e.g. to fit a cluster job's or a GPU lease's wall time."""
    try:
        run.write_config(exp.config)
        run.write_env({**environment(), "data": exp.dataset.source})
        run.log(f"nnexp run {run.name}: {exp.config['name']} on {exp.backend.name}/{exp.device}, "
                f"{exp.spec.n_params:,} parameters")
        for layer in exp.spec.layers:
            run.log(f"  layer {layer.index}: {layer.describe()}")
        with run.lock():
            return _from_scratch(exp, run, reporter, deadline)
    except KeyboardInterrupt:
        # Ctrl-C before the loop took over (building the network, its first summary): the
        # run still says it was interrupted, as the loop would have
        if Run.is_run(run.path) and (run.read_summary() or {}).get("status") in (None, "running"):
            run.write_summary(_summary(exp, run, LoopState(eta=exp.config["training"]["eta"]), "interrupted"))
        raise


def _from_scratch(exp: Experiment, run: Run, reporter: Reporter | None, deadline: float | None) -> dict:
    seeds = Seeds.from_seed(exp.config["seed"])
    model_cfg = exp.config["model"]
    params = init_params(exp.spec, model_cfg["init"], seeds.init, model_cfg["init_std"])
    model = build_model(exp, params, seeds)
    state = LoopState(eta=exp.config["training"]["eta"])
    return _loop(exp, run, model, state, seeds, reporter or SilentReporter(), deadline)


def resume(exp: Experiment, run: Run, reporter: Reporter | None = None, *,
           deadline: float | None = None, extend: bool = False) -> dict:
    """Continue `run` from its last completed epoch, exactly where it stopped: parameters,
    optimiser buffers, every RNG stream and the loop's counters come from last.npz. With
    `extend`, a completed run's stop is forgotten: its config's epochs and patience decide."""
    with run.lock():
        run.remove_stale_temp_files()  # what a killed process left half-written
        run.add_resume_to_env(environment())
        if not run.checkpoint_path("last").exists():
            done = run.read_metrics(strict=False)
            # a kill between an epoch's record and its checkpoint leaves one record more than
            # last.npz holds (the first epoch's, here); more is a history without its checkpoint,
            # never to be discarded silently
            if len(done) > 1:
                raise RunDirError(f"{run.path} has {len(done)} epochs in metrics.jsonl but no "
                                  f"checkpoints/last.npz to continue them from; restore that file, "
                                  f"or train anew")
            # stopped before its first epoch ended: nothing to lose
            run.checkpoint_path("last").parent.mkdir(exist_ok=True)
            run.truncate_metrics(0)
            run.log("resumed before the first epoch completed: starting over")
            return _from_scratch(exp, run, reporter, deadline)
        params, meta, arrays = run.load_checkpoint("last")
        _check_checkpoint(run, exp, params, meta)
        seeds = Seeds.from_seed(exp.config["seed"])
        model = build_model(exp, params, seeds)
        model.set_state({**arrays, **meta["model_state"]})
        seeds.order.bit_generator.state = meta["order_rng"]
        seeds.augment.bit_generator.state = meta["augment_rng"]
        state = LoopState(**meta["loop"])
        if extend:
            state.stop_reason = None
        _settle_pending_best(run, state)
        run.truncate_metrics(state.epoch)  # drop records written after the checkpoint
        run.log(f"resumed after epoch {state.epoch}")
        return _loop(exp, run, model, state, seeds, reporter or SilentReporter(), deadline)


def _check_checkpoint(run: Run, exp: Experiment, params: dict, meta: dict) -> None:
    """last.npz must be the network config.yaml describes: a config edited after the run
    started would continue one network as another (another width, another activation)."""
    for name, shape in exp.spec.param_shapes().items():
        if name not in params or tuple(params[name].shape) != tuple(shape):
            raise RunDirError(f"{run.checkpoint_path('last')} does not match {run.path / 'config.yaml'} "
                              f"(parameter {name}); was the config edited after the run started?")
    saved = meta.get("config")
    change = _config_change(saved, exp.config) if isinstance(saved, dict) else None  # older: none saved
    if change is not None:
        key, was, now = change
        raise RunDirError(f"{run.path / 'config.yaml'} says {key} = {now!r}, but the run was trained "
                          f"with {was!r}; {change_reason(key)}")


def _settle_pending_best(run: Run, state: LoopState) -> None:
    """A process killed between saving a new best and promoting it leaves it pending. Keep it
    if last.npz already counts it as the best epoch; drop it if that epoch is to be re-run
    (on a GPU the re-run need not reproduce it)."""
    pending = run.checkpoint_path(PENDING_BEST)
    if not pending.exists():
        return
    _, meta, _ = run.load_checkpoint(PENDING_BEST)
    if meta.get("epoch") == state.best_epoch:
        run.promote_checkpoint(PENDING_BEST, "best")
    else:
        pending.unlink()


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


def _summary(exp: Experiment, run: Run, state: LoopState, status: str) -> dict:
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


def _loop(exp: Experiment, run: Run, model: Model, state: LoopState, seeds: Seeds,
          reporter: Reporter, deadline: float | None = None) -> dict:
    tr = exp.config["training"]
    eta0, patience = tr["eta"], tr["early_stopping"]["patience"]
    x, y = exp.dataset.train.x, exp.dataset.train.y
    n, m = len(y), tr["batch_size"]
    augment = exp.config["data"]["augment"]
    speed_n = tr["monitor_layer_speed"]
    run.write_summary(_summary(exp, run, state, "running"))
    saved = replace(state)  # the state last.npz holds: what an interruption may claim
    # the last epoch's duration, the estimate of the next one's (a resumed run's from its record)
    done = run.read_metrics(strict=False) if state.epoch else []
    last_seconds = float(done[-1].get("seconds", 0.0)) if done else 0.0
    try:
        while state.epoch < tr["epochs"] and state.stop_reason is None:
            if deadline is not None and time.monotonic() + last_seconds > deadline:
                saved.stop_reason = "time-limit"  # the next epoch would not end in time
                run.write_summary(_summary(exp, run, saved, "interrupted"))
                run.log(f"paused after epoch {saved.epoch} at the time limit; "
                        f"continue with: nnexp resume {run.path}")
                return _summary(exp, run, saved, "interrupted")
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
                run.write_summary(_summary(exp, run, state, "diverged"))
                run.log(f"epoch {epoch}: the cost is not finite; stopped")
                raise RunFailed(f"training diverged at epoch {epoch} (the cost became "
                                f"{record['validation_cost']}); try a smaller training.eta "
                                f"(now {state.eta:g}). Run directory: {run.path}")

            if speeds is not None:
                record["layer_speed"] = speeds
            improved = record["validation_accuracy"] > state.best_validation_accuracy
            record["best"] = record["validation_accuracy"] >= state.best_validation_accuracy
            if record["best"]:  # ties: the later epoch wins
                state.best_epoch = epoch
                state.best_validation_accuracy = record["validation_accuracy"]
                state.test_accuracy = record["test_accuracy"]
                # promoted to best.npz only once last.npz records this epoch (see resume)
                run.save_checkpoint(PENDING_BEST, model.get_params(), {"epoch": epoch})
            state.bad_epochs = 0 if improved else state.bad_epochs + 1
            if patience and state.bad_epochs >= patience:
                state.bad_epochs = 0
                if tr["schedule"] == "halve-on-plateau":
                    state.eta /= 2
                    if state.eta <= eta0 * ETA_FLOOR * (1 + 1e-9):
                        state.stop_reason = "eta-floor"
                else:
                    state.stop_reason = "early-stopping"

            line = epoch_line(record, tr["epochs"])
            run.append_metrics(record)  # before the checkpoint: resume trims any excess
            _save_last(run, model, state, seeds, exp.config)
            saved, last_seconds = replace(state), record["seconds"]
            if record["best"]:
                run.promote_checkpoint(PENDING_BEST, "best")
            run.write_summary(_summary(exp, run, state, "running"))
            run.log(line)
            reporter.epoch_finished(record, line)
    except KeyboardInterrupt:
        # Only what last.npz holds counts: an epoch interrupted after its metrics line but
        # before its checkpoint is re-run on resume, so the summary must not claim it.
        run.write_summary(_summary(exp, run, saved, "interrupted"))
        run.log(f"interrupted during epoch {saved.epoch + 1}; resume with: nnexp resume {run.path}")
        raise
    except RunFailed:
        raise
    except Exception as exc:  # a bug or an environment failure (disk full): say so on disk too
        failed = _summary(exp, run, saved, "failed")
        try:
            run.write_summary(failed)
            run.log(f"failed during epoch {state.epoch + 1}: {type(exc).__name__}: {exc}")
        except OSError:  # the disk is full: no room for a new file, but the old one can be reused
            run.overwrite_summary_in_place(failed)
        raise
    state.stop_reason = state.stop_reason or "epochs"
    summary = _summary(exp, run, state, "completed")
    run.write_summary(summary)
    run.log(f"done: best validation {100 * state.best_validation_accuracy:.2f}% at epoch "
            f"{state.best_epoch}, test {100 * state.test_accuracy:.2f}% ({STOP_REASONS[state.stop_reason]})")
    return summary
