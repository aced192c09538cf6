"""Where a sweep's points run: in this process, or in a pool of local processes (Ray: `rayexec`).

Every executor runs the same function on each point, `run_task`, which calls the one entry
point for a run (`lifecycle.execute`) with the task's intent, with a data-set cache that lives as long as the process,
so a worker reads MNIST once however many points it trains. An executor reports what
happens through one callback, always called in the sweep's own process and thread:

    ("started", point_id, None)      a point began (or resumed)
    ("epoch", point_id, (record, epochs))   one of its epochs ended (local executors)
    ("finished", point_id, Outcome)

A sweep's time limit (`Task.deadline`, --time-limit) is passed to every point's training loop,
which pauses before an epoch that would end after it; a point is not started once the
deadline has passed, or is nearer than the longest epoch the sweep has run (`_StartGate`):
it stays planned.

A point may come as a `Deferred`, made into its Task only as it is about to run (a search
that learns proposes a trial once the trials before it have ended); every executor makes it
then, in the sweep's own process, and Ray gets such points --jobs at a time.

A point that diverges or fails returns an Outcome saying so; it never stops the others, nor
does a worker process that dies under its point. Ctrl-C or SIGTERM (KeyboardInterrupt in the
sweep's process) stops every running point at its last completed epoch, its run directory in
the sweep directory, before `run` re-raises it.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing import connection, resource_tracker
from typing import Callable, Protocol

from threadpoolctl import threadpool_limits

from nnexp import tblog
from nnexp.errors import NnexpError, RunFailed, UserError
from nnexp.lifecycle import Intent, execute
from nnexp.rundir import Run, Status
from nnexp.training import DataCache, SilentReporter, prepare

Event = tuple[str, str, object]
OnEvent = Callable[[Event], None]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Task:
    """One point to run, everything in it picklable: a process or a Ray worker gets it."""

    point: str
    config: dict  # resolved
    run_dir: str
    data_dir: str | None = None
    intent: Intent = Intent.CONTINUE
    threads: int = 1  # BLAS and torch threads for this point
    tensorboard: bool = False  # also write RUN/tensorboard/ event files as epochs end (tblog)
    hparams: dict | None = None  # what TensorBoard's HParams records for the point (tblog.sweep_hparams)
    trial: dict | None = None  # a search's study trial this point reports its epochs to (tuning.SearchStudy.ref)
    # the sweep's time limit, as a `time.time()` value: a task runs in another process, maybe
    # on another machine (Ray), whose `time.monotonic()` counts from its own boot, so only
    # the wall clock means the same moment there; and not as seconds left, which a task that
    # waits in a queue (a pool's, Ray's) would carry stale. `_run_task` turns it into the
    # worker's monotonic clock as the point starts, so a wall clock set back or forward while
    # it trains moves it no more.
    deadline: float | None = None


@dataclass(frozen=True)
class Deferred:
    """A point whose Task is made only as an executor is about to run it: a search that learns
    from its trials (`tuning`) proposes a trial's values once the trials before it have
    ended. `make` runs in the sweep's own process; it returns the Task, or the Outcome of a
    point that ended as it was made."""

    point: str
    run_dir: str
    intent: Intent
    make: Callable[[], "Task | Outcome"]
    deadline: float | None = None  # as Task's: checked before `make` asks a sampler for a trial


def _made(task: "Task | Deferred", on_event: OnEvent) -> "Task | None":
    """`task`, a Deferred made into its Task now; None for one that ended as it was made
    (reported here, as the executor reports a point's end)."""
    if not isinstance(task, Deferred):
        return task
    made = task.make()
    if isinstance(made, Outcome):
        on_event(("finished", made.point, made))
        return None
    return made


@dataclass(frozen=True)
class Outcome:
    point: str
    status: Status  # COMPLETED, INTERRUPTED, DIVERGED or FAILED; PENDING: not started, its deadline past
    summary: dict | None
    error: str | None = None
    seconds: float = 0.0  # wall time of run_task, data loading included


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- one point --------------------------------------------------------------------------------

_datasets = None  # this process's data-set cache (a train.DataCache), made on first use


def _cache():
    global _datasets
    if _datasets is None:
        _datasets = DataCache()
    return _datasets


def keep_datasets(cache) -> None:
    """Make `cache` this process's data-set cache (a sweep's checks loaded the data already)."""
    global _datasets
    _datasets = cache


class _EpochReporter(SilentReporter):
    """Forwards each finished epoch of a point to the sweep's process."""

    def __init__(self, point: str, epochs: int, send: Callable[[Event], None] | None):
        self.point, self.epochs, self.send = point, epochs, send

    def epoch_finished(self, record: dict, line: str) -> None:
        if self.send is not None:
            self.send(("epoch", self.point, (record, self.epochs)))


@contextlib.contextmanager
def _thread_limit(threads: int):
    """BLAS (and OpenMP) limited to `threads` for the block. Sums in float32 come out in
    another order with another thread count, so a point gets the same number of threads
    whichever executor runs it: that keeps its metrics identical everywhere."""
    with threadpool_limits(limits=threads):
        yield


def _torch_threads(threads: int) -> int | None:
    """Set torch's threads if a backend loaded torch; the previous number, to restore."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def run_task(task: Task, send: Callable[[Event], None] | None = None) -> Outcome:
    """Bring one point's run directory as far as it goes (`lifecycle.execute`), with
    `task.threads` threads."""
    with _thread_limit(task.threads):
        return _run_task(task, send)


def _run_task(task: Task, send: Callable[[Event], None] | None) -> Outcome:
    started = time.perf_counter()

    def outcome(status, summary, error=None):
        return Outcome(task.point, status, summary, error, round(time.perf_counter() - started, 3))

    deadline = None
    if task.deadline is not None:
        left = task.deadline - time.time()
        if left <= 0:  # it waited for a worker (a Ray task queued) past the time limit
            return outcome(Status.PENDING, None)
        deadline = time.monotonic() + left
    if send is not None:
        send(("started", task.point, None))
    run, torch_threads = Run(task.run_dir), None
    try:
        exp = prepare(task.config, data_dir=task.data_dir, datasets=_cache())
        torch_threads = _torch_threads(task.threads)  # the backend has imported torch by now
        run = Run.at(task.run_dir)
        reporter = _EpochReporter(task.point, task.config["training"]["epochs"], send)
        with tblog.live(run, reporter, task.tensorboard, task.hparams) as reporter:
            if task.trial is not None:  # lazily: Optuna is an optional extra
                from nnexp.tuning import execute_trial
                summary = execute_trial(exp, run, task.intent, reporter, task.trial, deadline)
            else:
                summary = execute(exp, run, task.intent, reporter, deadline=deadline)
        return outcome(summary["status"], summary)
    except RunFailed as exc:  # it diverged: its run directory says so too
        return outcome(Status.DIVERGED, _summary_or_none(run), str(exc))
    except NnexpError as exc:
        return outcome(Status.FAILED, _summary_or_none(run), str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug or the environment: this point fails, not the sweep
        return outcome(Status.FAILED, _summary_or_none(run), f"{type(exc).__name__}: {exc}")
    finally:
        if torch_threads is not None:
            _torch_threads(torch_threads)


def _summary_or_none(run) -> dict | None:
    try:
        return run.read_summary()
    except (UserError, OSError):
        return None


# --- executors --------------------------------------------------------------------------------


class Executor(Protocol):
    """Entered before a sweep directory is made (a Ray cluster is reached, or refused, then),
    left when the sweep ends."""

    description: str

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def run(self, tasks: list[Task], on_event: OnEvent) -> None: ...


class _StartGate:
    """Whether a sweep's time limit leaves room to start another point: not once its deadline
    has passed, nor when it is nearer than the longest epoch this sweep has run so far (a
    point started then would overrun it with its first epoch, which a fresh run always
    trains). The longest, not the mean: a point paused because its next epoch would not end
    in time leaves no room for another's, and the limit is there to be kept (a machine is
    needed elsewhere). Fed the executor's events; Ray's report no epochs, so there only the
    deadline itself counts."""

    def __init__(self, on_event: OnEvent):
        self.on_event, self.longest = on_event, 0.0

    def __call__(self, event: Event) -> None:
        if event[0] == "epoch":
            self.longest = max(self.longest, float(event[2][0].get("seconds", 0.0)))
        self.on_event(event)

    def allows(self, task: "Task | Deferred") -> bool:
        return task.deadline is None or time.time() + self.longest < task.deadline


class SerialExecutor:
    """Points one after another in this process."""

    def __init__(self, threads: int):
        self.jobs = 1
        self.description = f"1 job in this process, {threads} thread{'s' * (threads > 1)}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, tasks: list[Task], on_event: OnEvent) -> None:
        gate = _StartGate(on_event)
        for task in tasks:
            if not gate.allows(task):
                return  # this one and those after it stay planned
            task = _made(task, gate)
            if task is not None:
                gate(("finished", task.point, run_task(task, gate)))


@contextlib.contextmanager
def _thread_env(threads: int):
    """Set the BLAS/OpenMP thread counts for processes started inside the block (a spawned
    worker reads them when it loads NumPy and torch), and restore them afterwards."""
    saved = {var: os.environ.get(var) for var in THREAD_VARS}
    os.environ.update({var: str(threads) for var in THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


# A pool of its own rather than concurrent.futures': that one breaks as a whole when one worker
# dies (every point, running or queued, comes back lost) and cannot say which point the dead
# worker ran. Here each worker has a pipe of its own (no lock shared with the others that a
# killed worker could leave held), asks for one point at a time, and a dead one is replaced.

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pipe = None  # in a worker: its pipe to the sweep's process
_in_point = False  # in a worker: a stop signal now stops the point it trains
_sending = False  # ... but not in the middle of a message to the sweep's process
_deferred = False  # a stop signal that came while sending
_stop_next = False  # a stop signal that came between points: the next one does not start


def _stop_point(signum, frame) -> None:
    """A worker's SIGINT and SIGTERM: stop the point it trains at its last completed epoch.
    A Ctrl-C at a terminal reaches every process of the group, and the sweep's process
    forwards one too (for a signal sent to it alone): the second copy must not break off the
    clean-up the first started, which writes the point's summary. So only the first raises;
    `_in_point` stays False until the point has ended, and every copy meanwhile only says
    that no next point starts. (A SIGKILL after the sweep's grace period is the only way to
    end a worker mid-summary; a `kill -9` by hand too.) A worker sent the signal alone stops
    its point and goes on with the next."""
    global _in_point, _deferred, _stop_next
    if not _in_point:
        _stop_next = True  # the sweep's process, stopping too, gives no next point
    elif _sending:
        _deferred = True
    else:
        _in_point = False
        raise KeyboardInterrupt


def _send(event: Event) -> bool:
    """Send an event to the sweep's process; False if it is gone. A stop signal that comes
    meanwhile waits until the message is whole (half a message would break the pipe); a
    sweep's process that is gone (killed) stops the point as an interruption does."""
    global _sending, _deferred, _in_point
    _sending = True
    try:
        _pipe.send(event)
        sent = True
    except OSError:  # a broken pipe: nobody reads this worker's events any more
        sent = False
    finally:
        _sending = False
    if (_deferred or not sent) and _in_point:
        _deferred = _in_point = False
        raise KeyboardInterrupt
    _deferred = False
    return sent


def _work(pipe) -> None:
    """A pool worker: points one at a time, until the sweep's process says stop or is gone."""
    global _pipe, _in_point, _stop_next
    _pipe = pipe
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_point)
    if hasattr(signal, "pthread_sigmask"):  # held back by the sweep's process since this one started
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if not _send(("ready", "", None)):
        return
    while True:
        try:
            task = pipe.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            _in_point = True
            if _stop_next:
                raise KeyboardInterrupt
            outcome = run_task(task, _send)
        except KeyboardInterrupt:  # the run directory says interrupted; so does the outcome
            outcome = Outcome(task.point, Status.INTERRUPTED, _summary_or_none(Run(task.run_dir)))
        finally:
            _in_point = _stop_next = False
        if not _send(("finished", task.point, outcome)):
            return


@contextlib.contextmanager
def _stop_signals_held():
    """SIGINT and SIGTERM held back for the block (Ctrl-C then arrives after it): a message
    half read from a worker's pipe or half written to it would break the pipe."""
    if not hasattr(signal, "pthread_sigmask"):  # not on POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_held(process) -> None:
    """Start `process` with SIGINT and SIGTERM held back until it sets its handlers: a Ctrl-C
    while a worker imports NumPy would print a traceback. A process inherits the mask."""
    if hasattr(signal, "pthread_sigmask"):
        # spawn starts multiprocessing's resource tracker first, which unblocks both signals
        # once it runs: start it before they are blocked
        resource_tracker.ensure_running()
    with _stop_signals_held():
        process.start()


def _death(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f"ended with exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode == getattr(signal, "SIGKILL", None):
        return f"killed by {name} (as the out-of-memory killer does to a process that needs too much memory)"
    return f"killed by {name}"


def _worker_died(task: Task, exitcode: int | None) -> Outcome:
    """A point whose worker process died under it is failed, in its run directory too: run
    again it would most likely die again (the out-of-memory killer), so only --retry-failed
    runs it again. Its completed epochs stay."""
    error = f"the worker process training it was {_death(exitcode)}; its run directory keeps its completed epochs"
    run = Run(task.run_dir)
    summary = _summary_or_none(run)
    if summary is not None:
        summary = {**summary, "status": Status.FAILED, "stop_reason": "worker-died"}
        with contextlib.suppress(UserError, OSError), run.lock():
            run.write_summary(summary)
            run.log(f"failed: {error}")
    return Outcome(task.point, Status.FAILED, summary, error)


class _Worker:
    """One process of a LocalPool, and the point it trains (None while it has none)."""

    def __init__(self, context, threads: int):
        self.pipe, there = context.Pipe()
        self.process = context.Process(target=_work, args=(there,), name="nnexp-worker")
        self.task: Task | None = None
        self.ready = False
        # the variables cover thread pools made before run_task limits them (OpenMP's)
        with _thread_env(threads):
            _start_held(self.process)
        there.close()

    def give(self, task: Task) -> bool:
        try:
            with _stop_signals_held():
                self.pipe.send(task)
        except OSError:  # it died: the loop sees it
            return False
        self.task = task
        return True

    def receive(self, on_event: OnEvent) -> bool:
        """Pass on what the worker sent; False once its pipe is closed (it died)."""
        try:
            while True:
                with _stop_signals_held():
                    if not self.pipe.poll():
                        break
                    kind, point, payload = self.pipe.recv()
                if kind == "ready":
                    self.ready = True
                    continue
                if kind == "finished":
                    self.task = None
                on_event((kind, point, payload))
        except (EOFError, OSError):
            return False
        return True

    def close(self, wait: float) -> None:
        """End the process: asked to (one with a point reads the request once its point has
        ended), given `wait` seconds, then killed."""
        if self.process.pid is None:
            return
        with contextlib.suppress(OSError):
            self.pipe.send(None)
        self.process.join(wait)
        self.kill()

    def kill(self) -> None:
        if self.process.pid is not None and self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pipe.close()


# How long the workers get to end once the sweep ends, or once a second Ctrl-C says stop now: a
# worker stopping its point needs a moment to write the point's summary, and one killed in the
# middle leaves the point `killed` and a temporary file behind.
STOP_GRACE = 10.0


def _end_workers(workers: list[_Worker], grace: float) -> None:
    """End every worker, all of them within `grace` seconds; a worker still alive then is
    killed (its point resumes from its last checkpoint). Another stop signal meanwhile kills
    them at once: the sweep is never unkillable."""
    deadline = time.monotonic() + grace
    try:
        for worker in workers:
            worker.close(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        for worker in workers:
            worker.kill()
        raise


class LocalPool:
    """N points at once on this machine, one process each. A worker killed mid-point (the
    out-of-memory killer) fails that point and is replaced; a stop signal to one worker stops
    its point only; Ctrl-C or SIGTERM to the sweep stops every point at its last epoch."""

    MAX_FAILED_STARTS = 3  # workers that die before they are ready: the environment is broken

    def __init__(self, jobs: int, threads: int):
        self.jobs, self.threads = jobs, threads
        self.description = f"{jobs} local processes, {self.threads} thread{'s' * (self.threads > 1)} each"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, tasks: list[Task], on_event: OnEvent) -> None:
        # spawn, not fork: torch and BLAS thread pools do not survive a fork, and a fresh
        # process reads the thread counts set for it
        context = multiprocessing.get_context("spawn")
        waiting = collections.deque(tasks)
        workers: list[_Worker] = []
        try:
            for _ in range(min(self.jobs, len(tasks))):
                workers.append(_Worker(context, self.threads))
            self._serve(workers, waiting, on_event, context)
        except BaseException:
            # Ctrl-C or SIGTERM, or the sweep cannot go on (its manifest cannot be written): no
            # point starts any more, and each running one stops at its last completed epoch.
            # A signal sent to this process alone (`kill -INT PID`, a scheduler's SIGTERM) has
            # not reached the workers, so it is passed on. One sent to the process group (Ctrl-C
            # at a terminal, `timeout -s INT`, `kill -INT -PGID`) has, and this process cannot
            # tell the two apart (both come as the same SIGINT), so a worker may get a second
            # copy: it ignores every stop signal once its point is stopping (`_stop_point`), so
            # the copy cannot break off the point's summary as it is written.
            waiting.clear()
            for worker in workers:
                if worker.task is not None:
                    with contextlib.suppress(OSError):
                        os.kill(worker.process.pid, signal.SIGINT)
            self._serve(workers, waiting, on_event, context)
            raise
        finally:
            # A second stop signal while the points stop (a user's second Ctrl-C, or the second
            # copy `timeout` sends, to this process and to its group) ends the wait for their
            # outcomes: the workers get STOP_GRACE seconds to finish writing their summaries,
            # then are killed; a third ends them at once.
            _end_workers(workers, STOP_GRACE)

    def _serve(self, workers: list[_Worker], waiting, on_event: OnEvent, context) -> None:
        """Give out points and pass events on until no worker has a point left to finish."""
        failed_starts = 0
        on_event = gate = _StartGate(on_event)
        while True:
            for worker in workers:
                while worker.ready and worker.task is None and waiting:
                    if not gate.allows(waiting[0]):  # the time limit: the rest stay planned
                        waiting.clear()
                        break
                    waiting[0] = _made(waiting[0], on_event)  # made once: a failed give retries it
                    if waiting[0] is None:
                        waiting.popleft()
                        continue
                    if worker.give(waiting[0]):
                        waiting.popleft()
                    break
            starting = [w for w in workers if not w.ready]
            if not waiting and not any(w.task for w in workers):
                return
            watched = [w for w in workers if w.task is not None] + starting
            connection.wait([w.pipe for w in watched] + [w.process.sentinel for w in watched], timeout=1.0)
            for worker in list(workers):
                dead = not worker.process.is_alive()  # first: what it wrote before dying is in the pipe
                if worker.receive(on_event) and not dead:
                    continue
                workers.remove(worker)
                worker.close(0)
                if worker.task is not None:
                    on_event(("finished", worker.task.point, _worker_died(worker.task, worker.process.exitcode)))
                elif not worker.ready:
                    failed_starts += 1
                    if failed_starts >= self.MAX_FAILED_STARTS:
                        raise NnexpError(f"the local pool's worker processes end as they start "
                                         f"({_death(worker.process.exitcode)})")
                if waiting:
                    workers.append(_Worker(context, self.threads))
