"""A run's lifecycle: what should happen to a run directory, and the one entry point that does it.

Every command that trains (`train`, `resume`, `sweep`, `search`) and the Python API say what
they want as an `Intent` and call `execute(exp, run, intent)`:

    START     a new run in a fresh directory                          nnexp train, nnexp.train
    CONTINUE  bring the run as far as it goes: start it if the         sweep and search points
              directory is empty, resume it from its last epoch if
              it stopped, leave it as it is if it is final
    RESUME    as CONTINUE, and a failed run with a last checkpoint     nnexp resume, and a sweep's
              (a full disk stopped it) continues from it               failed points
    EXTEND    a completed run goes on under its config's new epochs    nnexp resume --set
              or patience (RESUMABLE_KEYS)
    RETRY     a diverged or failed run starts over in its directory,   not sweeps: --retry-failed
              its epochs deleted; any other as CONTINUE               sets the old run aside and
                                                                      STARTs its point anew

`resume_intent` is the policy of `nnexp resume`: which intent a run's status and the
requested changes call for, and what is refused. A run always continues under the config it
started with, apart from RESUMABLE_KEYS: `config_change` says which key an edit would change.

Resuming is exact: parameters, optimiser buffers, every RNG stream and the loop's counters
come from checkpoints/last.npz, so a resumed run's metrics are those
of an uninterrupted one.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

from nnexp import config as configs
from nnexp.errors import ConfigError, RunDirError
from nnexp.network import init_params
from nnexp.provenance import environment
from nnexp.runs import Run, Status
from nnexp.training import (PENDING_BEST, Experiment, LoopState, Reporter, Seeds, SilentReporter, build_model,
                            prepare, run_epochs, summary_of)


class Intent(StrEnum):
    START = "start"
    CONTINUE = "continue"
    RESUME = "resume"
    EXTEND = "extend"
    RETRY = "retry"


# Keys a resumed run may change: they decide how far a run goes, not what it has done so far.
RESUMABLE_KEYS = ("training.epochs", "training.early_stopping.patience")
FIXED_LENGTH = ("a cosine schedule is spread over training.epochs, so more epochs would change the η "
                "of those already run; train anew with more epochs")


def execute(exp: Experiment, run: Run, intent: Intent = Intent.CONTINUE, reporter: Reporter | None = None, *,
            deadline: float | None = None) -> dict:
    """The one entry point for a run: a prepared trial in, the run directory `run` brought as
    far as `intent` says, and its summary out. Idempotent under CONTINUE: a final run
    (completed, diverged, failed) is returned as it is.

    `deadline` (a `time.monotonic()` value) pauses the run, resumable, before an epoch that
    would end after it, e.g. to fit a cluster job's or a GPU lease's wall time."""
    if not Run.is_run(run.path):
        if not Run.is_blank(run.path):  # never train into a run's remains: its epochs would mix
            raise RunDirError(f"{run.path} holds a run's files but no config.yaml: it is damaged; "
                              f"move it aside or delete it, then train anew")
        return start(exp, run, reporter, deadline=deadline)
    if intent == Intent.START:
        raise RunDirError(f"{run.path} already holds a run; continue it with: nnexp resume {run.path}")
    summary = run.read_summary() or {}
    status = summary.get("status")
    if status == Status.COMPLETED:
        if intent != Intent.EXTEND:
            return summary
        check_same_config(run, exp.config)
        return resume(exp, run, reporter, deadline=deadline, extend=True)
    if status == Status.FAILED and intent == Intent.RESUME and run.checkpoint_path("last").exists():
        check_same_config(run, exp.config)
        return resume(exp, run, reporter, deadline=deadline)
    if status in (Status.DIVERGED, Status.FAILED):
        if intent != Intent.RETRY:
            return summary
        with run.lock():  # no other process is training it while it is cleared
            run.clear()
        return start(exp, run, reporter, deadline=deadline)
    check_same_config(run, exp.config)
    return resume(exp, run, reporter, deadline=deadline)


def new_run(cfg: dict, runs_dir: str | Path, data_dir=None) -> tuple[Experiment, Run]:
    """A checked experiment and a fresh run directory for it, in that order: bad input never
    leaves a half-made run behind. `nnexp train` and `nnexp.train` then execute it (START)."""
    exp = prepare(cfg, data_dir=data_dir)
    return exp, Run.create(runs_dir, cfg["name"])


def deadline_after(minutes: float | None) -> float | None:
    """`--time-limit MINUTES` as the `time.monotonic()` deadline `execute` takes."""
    return None if minutes is None else time.monotonic() + 60 * minutes


# --- what `nnexp resume` may do ---------------------------------------------------------------


def resume_intent(run: Run, sets: list[str]) -> tuple[Intent | None, dict]:
    """`nnexp resume RUN [--set KEY=VALUE ...]`: the intent and the resolved config to run
    under; (None, config) when there is nothing to do (a completed run, nothing changed).
    Only RESUMABLE_KEYS may change, a run can be extended but not shortened, a cosine run
    not at all, and a diverged run is not resumed: each refusal is a UserError."""
    for key in configs.override_keys(sets):
        if key not in RESUMABLE_KEYS:
            raise ConfigError(key, f"cannot change when resuming (it would change what the run has "
                                   f"already done); only {' and '.join(RESUMABLE_KEYS)} can")
    current = run.config()
    if "training.epochs" in configs.override_keys(sets) and not extendable(current):
        raise ConfigError("training.epochs", f"cannot change when resuming: {FIXED_LENGTH}")
    summary = run.read_summary() or {}
    # extended past the book's setting, the run is no longer the book's experiment
    cfg = configs.resolve(configs.apply_experiment_overrides(current, sets))
    done = summary.get("epochs_run")
    if sets and isinstance(done, int) and cfg["training"]["epochs"] < done:
        raise ConfigError("training.epochs", f"the run has already trained {done} epochs; "
                                             f"a run can be extended, not shortened")
    if summary.get("status") == Status.COMPLETED:
        return (None if cfg == current else Intent.EXTEND), cfg
    if summary.get("status") == Status.DIVERGED:
        raise RunDirError(f"{run.path} diverged; resuming would diverge again. Train anew "
                          "with a smaller training.eta")
    return Intent.RESUME, cfg


def record_extension(run: Run, cfg: dict, sets: list[str]) -> None:
    """The run's config.yaml now says how far it is meant to go, and train.log why."""
    run.write_config(cfg)
    run.log(f"extended: {', '.join(sets)}")


def extendable(cfg: dict) -> bool:
    """Whether a completed run of `cfg` can go on under more epochs (RESUMABLE_KEYS)."""
    return (cfg.get("training") or {}).get("schedule") != "cosine"


def change_reason(key: str) -> str:
    """Why `config_change` refuses a change of `key`."""
    return FIXED_LENGTH if key == "training.epochs" else "a run resumes under its own config"


def config_change(then: dict, now: dict) -> tuple[str, object, object] | None:
    """(dotted key, value then, value now) of the first key in which config `now` would
    change what a run trained under `then` has done, or None: how far it goes
    (RESUMABLE_KEYS), its name and the book's number may change; nothing else may."""
    a, b = configs.flatten(then), configs.flatten(now)
    for key in sorted(set(a) | set(b)):
        resumable = key in RESUMABLE_KEYS and (key != "training.epochs" or extendable(then))
        if resumable or key == "name" or key.startswith("reference"):
            continue
        if a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return None


def check_same_config(run: Run, cfg: dict) -> None:
    """A run resumes under the config it started with (apart from RESUMABLE_KEYS): anything
    else would continue one network as another."""
    change = config_change(run.config(), cfg)
    if change is not None:
        key, was, now = change
        raise RunDirError(f"{run.path} was started with {key} = {was!r}, not {now!r}; {change_reason(key)}")


# --- starting and resuming --------------------------------------------------------------------


def start(exp: Experiment, run: Run, reporter: Reporter | None = None, *,
          deadline: float | None = None) -> dict:
    """Train a new run in the (fresh) directory `run`; return its summary."""
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
        if Run.is_run(run.path) and (run.read_summary() or {}).get("status") in (None, Status.RUNNING):
            run.write_summary(summary_of(exp, run, LoopState(eta=exp.config["training"]["eta"]),
                                         Status.INTERRUPTED))
        raise


def _from_scratch(exp: Experiment, run: Run, reporter: Reporter | None, deadline: float | None) -> dict:
    seeds = Seeds.from_seed(exp.config["seed"])
    model_cfg = exp.config["model"]
    params = init_params(exp.spec, model_cfg["init"], seeds.init, model_cfg["init_std"])
    model = build_model(exp, params, seeds)
    state = LoopState(eta=exp.config["training"]["eta"])
    return run_epochs(exp, run, model, state, seeds, reporter or SilentReporter(), deadline)


def resume(exp: Experiment, run: Run, reporter: Reporter | None = None, *,
           deadline: float | None = None, extend: bool = False) -> dict:
    """Continue `run` from its last completed epoch, exactly where it stopped. With
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
        settle_pending_best(run, state)
        run.truncate_metrics(state.epoch)  # drop records written after the checkpoint
        run.log(f"resumed after epoch {state.epoch}")
        return run_epochs(exp, run, model, state, seeds, reporter or SilentReporter(), deadline)


def _check_checkpoint(run: Run, exp: Experiment, params: dict, meta: dict) -> None:
    """last.npz must be the network config.yaml describes: a config edited after the run
    started would continue one network as another (another width, another activation)."""
    for name, shape in exp.spec.param_shapes().items():
        if name not in params or tuple(params[name].shape) != tuple(shape):
            raise RunDirError(f"{run.checkpoint_path('last')} does not match {run.path / 'config.yaml'} "
                              f"(parameter {name}); was the config edited after the run started?")
    saved = meta.get("config")
    change = config_change(saved, exp.config) if isinstance(saved, dict) else None  # older: none saved
    if change is not None:
        key, was, now = change
        raise RunDirError(f"{run.path / 'config.yaml'} says {key} = {now!r}, but the run was trained "
                          f"with {was!r}; {change_reason(key)}")


def settle_pending_best(run: Run, state: LoopState) -> None:
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
