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

A diverged or failed run is never started over in its own directory: a sweep's
--retry-failed sets it aside (kept, hidden) and STARTs its point anew.

`resume_intent` is the policy of `nnexp resume`: which intent a run's status and the
requested changes call for, and what is refused. A run always continues under the config it
started with, apart from RESUMABLE_KEYS: `config_change` says which key an edit would change.
A change of those is checked against the run's history (`extension_state`): it may let the
run go further, never change what it has done, so an extended run equals one started with
the new setting. Nothing is written before the run is locked and its checkpoint checked:
a refused resume leaves the run as it was.

Resuming is exact: parameters, optimiser buffers, every RNG stream and the loop's counters
come from checkpoints/last.npz, so a resumed run's metrics are those
of an uninterrupted one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

from nnexp import config as configs
from nnexp.errors import ConfigError, RunDirError, UserError
from nnexp.network import init_params
from nnexp.provenance import environment
from nnexp.rundir import NOTES, LoopState, Notes, Run, Status, is_finite_number, is_sweep_dir
from nnexp.training import (PENDING_BEST, Experiment, Reporter, Seeds, SilentReporter, build_model, prepare,
                            replay_stops, run_epochs, stop_signals_ignored, summary_of)


class Intent(StrEnum):
    START = "start"
    CONTINUE = "continue"
    RESUME = "resume"
    EXTEND = "extend"


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
        return resume(exp, run, reporter, deadline=deadline, intent=intent)
    if status == Status.PRUNED and intent == Intent.CONTINUE:
        return summary  # its search decided it; `nnexp resume` (RESUME, EXTEND) continues it
    if status == Status.FAILED and intent == Intent.RESUME and run.checkpoint_path("last").exists():
        return resume(exp, run, reporter, deadline=deadline, intent=intent)
    if status in (Status.DIVERGED, Status.FAILED):
        return summary
    return resume(exp, run, reporter, deadline=deadline, intent=intent)


def new_run(cfg: dict, runs_dir: str | Path, data_dir=None, *, notes: Notes | None = None) -> tuple[Experiment, Run]:
    """A checked experiment and a fresh run directory for it, in that order: bad input never
    leaves a half-made run behind. `nnexp train` and `nnexp.train` then execute it (START).
    `notes` (--note, --tag) are written as the directory is made, so a run that fails in its
    first epoch still says why it was started."""
    exp = prepare(cfg, data_dir=data_dir)
    run = Run.create(runs_dir, cfg["name"])
    if notes is not None:
        try:
            run.write_notes(notes)
        except OSError as exc:  # a full disk: no run directory without the notes it was asked for
            shutil.rmtree(run.path, ignore_errors=True)
            raise RunDirError(f"cannot write {run.path / NOTES}: {exc.strerror or exc}") from None
    return exp, run


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
    if summary.get("status") == Status.DIVERGED:
        raise RunDirError(f"{run.path} diverged; resuming would diverge again. Train anew "
                          "with a smaller training.eta")
    stopped = _stop_under(run, current, cfg, summary)
    if summary.get("status") == Status.COMPLETED:
        # still stopped where it stopped: a run started with the new setting would stop there too
        return (None if cfg == current or stopped else Intent.EXTEND), cfg
    return Intent.RESUME, cfg


def _stop_under(run: Run, current: dict, cfg: dict, summary: dict) -> str | None:
    """Where `nnexp resume` changes RESUMABLE_KEYS: the stop the run's recorded epochs reach
    under `cfg` (`extension_state`), or None. A first look, without the lock, so that a
    refusal comes before anything is prepared; `resume` checks again, holding the run,
    against last.npz (and a history it cannot read here)."""
    done = summary.get("epochs_run")
    if cfg == current or not isinstance(done, int) or isinstance(done, bool):
        return None
    records = [r for r in run.read_metrics(strict=False) if r["epoch"] <= done]
    if not _whole(records, done):
        return None
    return extension_state(current, cfg, records, LoopState(epoch=done)).stop_reason


def _whole(records: list[dict], epochs: int) -> bool:
    """Whether `records` are epochs 1..`epochs`, each with its validation accuracy: a history
    `extension_state` can replay."""
    return [r["epoch"] for r in records] == list(range(1, epochs + 1)) and all(
        is_finite_number(r.get("validation_accuracy")) for r in records)


def nothing_to_do(run: Run, cfg: dict) -> str:
    """What `nnexp resume` says of a completed run it leaves as it is (under `cfg`): why,
    and what would take it further."""
    summary = run.read_summary() or {}
    stop = _stop_under(run, run.config(), cfg, summary) or summary.get("stop_reason")
    if stop == "early-stopping":
        return ("it stopped early, and would stop at the same epoch with this setting; a larger "
                "--set training.early_stopping.patience=N extends it")
    if stop == "eta-floor":
        return ("η reached η₀/128, where halve-on-plateau stops whatever training.epochs says; "
                "train anew to go further")
    return "--set training.epochs=N extends it"


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


def check_same_config(run: Run, cfg: dict, trained: dict | None = None) -> None:
    """A run resumes under the config it started with (apart from RESUMABLE_KEYS): anything
    else would continue one network as another. `trained` is the config last.npz was trained
    with, where there is one: it tells a config.yaml edited since (the run is to be left as it
    is: say which value is the original) from a request to continue it under another."""
    on_disk = run.config()
    if trained is not None:
        edit = config_change(trained, on_disk)
        if edit is not None:
            key, was, now = edit
            anew = (f"move {run.path} aside and `nnexp sweep {run.path.parent}` trains the point anew"
                    if is_sweep_dir(run.path.parent) else "train anew with `nnexp train`")
            raise RunDirError(f"{run.path / 'config.yaml'} says {key} = {now!r}, but the run was trained "
                              f"with {was!r}; to continue it, restore {key}: {was!r} in that file, or {anew}")
    change = config_change(trained if trained is not None else on_disk, cfg)
    if change is not None:
        key, was, now = change
        if trained is None:  # no record of what it trained with: config.yaml is all there is to go by
            raise RunDirError(f"{run.path / 'config.yaml'} says {key} = {was!r}, but the run is to be "
                              f"continued with {now!r}; {change_reason(key)}")
        raise RunDirError(f"{run.path} was started with {key} = {was!r}, not {now!r}; {change_reason(key)}")


def trained_config(run: Run, meta: dict) -> dict | None:
    """The config last.npz (its `meta`) was trained with, resolved as `Run.config` resolves
    config.yaml (keys added to nnexp since read as their defaults); None where it holds none
    (older nnexp) or one this nnexp no longer reads."""
    saved = meta.get("config")
    if not isinstance(saved, dict):
        return None
    try:
        return configs.resolve(saved)
    except UserError:
        return None


def extension_state(trained: dict, cfg: dict, records: list[dict], state: LoopState) -> LoopState:
    """`state` (a run's after its recorded epochs `records`, trained under config `trained`)
    as it continues under `cfg`, which may change RESUMABLE_KEYS: the count of epochs
    without improvement and the stop are what a run started with `cfg` would hold, replayed
    over the same validation accuracies. A setting under which the run would have stopped
    before its last epoch, or trained an epoch at another η (halve-on-plateau's patience
    decides when η halves), would change what it has done: a ConfigError."""
    patience, tr = "training.early_stopping.patience", cfg["training"]
    if records and records[-1]["epoch"] > tr["epochs"]:
        raise ConfigError("training.epochs", f"the run has already trained {records[-1]['epoch']} epochs; "
                                             f"a run can be extended, not shortened")
    before, after = replay_stops(trained["training"], records), replay_stops(tr, records)
    new = tr["early_stopping"]["patience"]
    for then, now in zip(before[:-1], after[:-1]):  # the η after epoch k is epoch k+1's
        if now.eta != then.eta:
            raise ConfigError(patience, f"with {new}, epoch {now.epoch + 1} would have trained at η {now.eta:g}, "
                                        f"not {then.eta:g}: under halve-on-plateau the patience decides when "
                                        f"η halves, so it would change the epochs already run; train anew with it")
        if now.stop_reason is not None:
            raise ConfigError(patience, f"with {new} the run would have stopped after epoch {now.epoch}, but "
                                        f"it has trained {records[-1]['epoch']}; a run can be extended, not shortened")
    if not after:  # no epoch recorded: nothing counted yet
        return replace(state, bad_epochs=0, stop_reason=None)
    last = after[-1]  # halve-on-plateau's η for the next epoch, as a fresh run would have halved it
    return replace(state, bad_epochs=last.bad_epochs, stop_reason=last.stop_reason,
                   eta=last.eta if tr["schedule"] == "halve-on-plateau" else state.eta)


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
        with stop_signals_ignored():  # a second Ctrl-C cannot break off this write either
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
           deadline: float | None = None, intent: Intent = Intent.RESUME) -> dict:
    """Continue `run` from its last completed epoch, exactly where it stopped, under
    exp.config, which may change RESUMABLE_KEYS (`extension_state`). Under EXTEND a completed
    run goes on as far as its new setting takes it. Under RESUME and EXTEND (`nnexp resume
    --set`), config.yaml then says the new setting and train.log why: written only once the
    run is held and its checkpoint checked, so a refused resume leaves nothing untrue."""
    with run.lock():
        run.remove_stale_temp_files()  # what a killed process left half-written
        if not run.checkpoint_path("last").exists():
            done = run.read_metrics(strict=False)
            # a kill between an epoch's record and its checkpoint leaves one record more than
            # last.npz holds (the first epoch's, here); more is a history without its checkpoint,
            # never to be discarded silently
            if len(done) > 1:
                raise RunDirError(f"{run.path} has {len(done)} epochs in metrics.jsonl but no "
                                  f"checkpoints/last.npz to continue them from; restore that file, "
                                  f"or train anew")
            check_same_config(run, exp.config)
            # stopped before its first epoch ended: nothing to lose
            run.add_resume_to_env(environment())
            _record_change(run, exp.config, intent)
            run.checkpoint_path("last").parent.mkdir(exist_ok=True)
            run.truncate_metrics(0)
            run.log("resumed before the first epoch completed: starting over")
            return _from_scratch(exp, run, reporter, deadline)
        params, meta, arrays = run.load_checkpoint("last")  # checked: a damaged one is refused
        _check_params(run, exp, params)
        trained = trained_config(run, meta)
        check_same_config(run, exp.config, trained)
        seeds = Seeds.from_seed(exp.config["seed"])
        model = build_model(exp, params, seeds)
        try:  # what a backend keeps in model_state only it can judge
            model.set_state({**arrays, **meta["model_state"]})
        except (KeyError, ValueError, TypeError, IndexError, OverflowError, RuntimeError) as exc:
            raise RunDirError(f"checkpoint {run.checkpoint_path('last')} is damaged and was not loaded "
                              f"(its model state: {type(exc).__name__}: {exc})") from None
        seeds.order.bit_generator.state = meta["order_rng"]
        seeds.augment.bit_generator.state = meta["augment_rng"]
        state = LoopState(**meta["loop"])
        trained = trained if trained is not None else run.config()
        if intent == Intent.EXTEND or _resumable(trained) != _resumable(exp.config):
            state = extension_state(trained, exp.config, _history(run, state.epoch), state)
            if intent == Intent.EXTEND and state.stop_reason is not None:
                return run.read_summary() or {}  # it would stop where it stopped: nothing changes
        run.add_resume_to_env(environment())
        _record_change(run, exp.config, intent)
        settle_pending_best(run, state)
        run.truncate_metrics(state.epoch)  # drop records written after the checkpoint
        run.log(f"resumed after epoch {state.epoch}")
        return run_epochs(exp, run, model, state, seeds, reporter or SilentReporter(), deadline)


def _resumable(cfg: dict) -> dict:
    flat = configs.flatten(cfg)
    return {key: flat.get(key) for key in RESUMABLE_KEYS}


def _history(run: Run, epochs: int) -> list[dict]:
    """The records of epochs 1..`epochs` (what last.npz holds), for `extension_state` to
    replay; a history with gaps cannot show what a new setting would have done."""
    records = [r for r in run.read_metrics(strict=True) if r["epoch"] <= epochs]
    if not _whole(records, epochs):
        raise RunDirError(f"{run.path / 'metrics.jsonl'} does not hold epochs 1 to {epochs}, which "
                          f"checkpoints/last.npz has trained: without them a changed "
                          f"{' or '.join(RESUMABLE_KEYS)} cannot be checked against what the run has done")
    return records


def _record_change(run: Run, cfg: dict, intent: Intent) -> None:
    """`nnexp resume --set` (RESUME, EXTEND): config.yaml now says how far the run is meant
    to go, and train.log what changed."""
    if intent not in (Intent.RESUME, Intent.EXTEND):
        return
    then, now = _resumable(run.config()), _resumable(cfg)
    changed = [f"{key}={now[key]} (was {then[key]})" for key in RESUMABLE_KEYS if now[key] != then[key]]
    if changed:
        run.write_config(cfg)
        run.log(f"extended: {', '.join(changed)}")


def _check_params(run: Run, exp: Experiment, params: dict) -> None:
    """last.npz must be the network config.yaml describes: a config edited after the run
    started would continue one network as another (another width, another activation).
    `check_same_config` then names the key, where last.npz records its config."""
    for name, shape in exp.spec.param_shapes().items():
        if name not in params or tuple(params[name].shape) != tuple(shape):
            raise RunDirError(f"{run.checkpoint_path('last')} does not match {run.path / 'config.yaml'} "
                              f"(parameter {name}); was the config edited after the run started?")


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
