"""Where a sweep's points run: in this process, in a pool of local processes, or on Ray.

Every executor runs the same function on each point, `run_task`, which calls the one entry
point for a run (`lifecycle.execute`) with the task's intent, with a data-set cache that lives as long as the process,
so a worker reads MNIST once however many points it trains. An executor reports what
happens through one callback, always called in the sweep's own process and thread:

    ("started", point_id, None)      a point began (or resumed)
    ("epoch", point_id, (record, epochs))   one of its epochs ended (local executors)
    ("finished", point_id, Outcome)

A point that diverges or fails returns an Outcome saying so; it never stops the others.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import queue as queues
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

from threadpoolctl import threadpool_limits

from nnexp.errors import NnexpError, RunFailed, UserError
from nnexp.lifecycle import Intent, execute
from nnexp.runs import Run, Status
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
    intent: Intent = Intent.CONTINUE  # RETRY starts diverged and failed points over
    threads: int = 1  # BLAS and torch threads for this point


@dataclass(frozen=True)
class Outcome:
    point: str
    status: Status  # COMPLETED, INTERRUPTED, DIVERGED or FAILED; LOST where a worker died
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

    if send is not None:
        send(("started", task.point, None))
    run, torch_threads = Run(task.run_dir), None
    try:
        exp = prepare(task.config, data_dir=task.data_dir, datasets=_cache())
        torch_threads = _torch_threads(task.threads)  # the backend has imported torch by now
        run = Run.at(task.run_dir)
        reporter = _EpochReporter(task.point, task.config["training"]["epochs"], send)
        summary = execute(exp, run, task.intent, reporter)
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
    description: str

    def run(self, tasks: list[Task], on_event: OnEvent) -> None: ...


class SerialExecutor:
    """Points one after another in this process."""

    def __init__(self, threads: int):
        self.jobs = 1
        self.description = f"1 job in this process, {threads} thread{'s' * (threads > 1)}"

    def run(self, tasks: list[Task], on_event: OnEvent) -> None:
        for task in tasks:
            on_event(("finished", task.point, run_task(task, on_event)))


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


_events = None  # a worker's queue to the sweep's process


def _init_worker(events) -> None:
    global _events
    _events = events
    # the queue carries progress only (outcomes go back as results): a worker stopped by
    # SIGINT, which may land inside a put, must exit without waiting to flush it, or it
    # blocks the pool's shutdown for ever
    events.cancel_join_thread()
    signal.signal(signal.SIGINT, _interrupt_once)


def _interrupt_once(signum, frame) -> None:
    # Ctrl-C at a terminal reaches every process of the group, and the sweep's process also
    # forwards it to its workers (for a SIGINT sent to it alone, as `kill -INT` or a scheduler
    # does): the second copy must not break off the clean-up the first one started, which
    # writes the point's summary
    global _stopping
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a SIGINT between two points lands in the pool's own code, which swallows the
    # KeyboardInterrupt (it sends the last result back): the next point must not start anyway
    _stopping = True
    raise KeyboardInterrupt


_stopping = False  # this worker saw Ctrl-C: the tasks still queued to it end at once


def _pooled_task(task: Task) -> Outcome:
    global _stopping
    if _stopping:
        return Outcome(task.point, Status.INTERRUPTED, None, "not started: the sweep was interrupted")
    try:
        return run_task(task, _events.put)
    except KeyboardInterrupt:  # the run directory says interrupted; so does the outcome
        _stopping = True
        return Outcome(task.point, Status.INTERRUPTED, None, "interrupted")


class LocalPool:
    """N points at once on this machine, one process each."""

    def __init__(self, jobs: int, threads: int):
        self.jobs, self.threads = jobs, threads
        self.description = f"{jobs} local processes, {self.threads} thread{'s' * (self.threads > 1)} each"

    def run(self, tasks: list[Task], on_event: OnEvent) -> None:
        # spawn, not fork: torch and BLAS thread pools do not survive a fork, and a fresh
        # process reads the thread counts set just below
        context = multiprocessing.get_context("spawn")
        events = context.Queue()

        def drain():
            while True:
                try:
                    on_event(events.get_nowait())
                except queues.Empty:
                    return

        # the variables cover thread pools made before run_task limits them (OpenMP's)
        with _thread_env(self.threads), ProcessPoolExecutor(
                max_workers=min(self.jobs, len(tasks)) or 1, mp_context=context,
                initializer=_init_worker, initargs=(events,)) as pool:
            pending = {pool.submit(_pooled_task, task): task for task in tasks}
            try:
                while pending:
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    drain()
                    for future in done:
                        task = pending.pop(future)
                        try:
                            result = future.result()
                        except Exception as exc:  # noqa: BLE001 - a worker process died (out of memory, killed)
                            # "lost", not "failed": its run directory decides, and it resumes next time
                            result = Outcome(task.point, Status.LOST, None, f"worker lost: {type(exc).__name__}")
                        drain()
                        on_event(("finished", task.point, result))
            except BaseException:  # Ctrl-C, or the sweep cannot go on (its manifest cannot be written)
                # the workers end their points as interrupted and skip the rest; a Ctrl-C at a
                # terminal reached them already, a SIGINT sent to this process alone did not
                for worker in multiprocessing.active_children():
                    with contextlib.suppress(OSError):
                        os.kill(worker.pid, signal.SIGINT)
                pool.shutdown(wait=True, cancel_futures=True)
                drain()
                raise
        events.close()


# --- Ray --------------------------------------------------------------------------------------


def pack_dir(path: Path) -> bytes:
    """A directory as gzip'd tar bytes (a run directory travelling to or from a Ray worker)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(path.iterdir()):
            if child.name != ".lock":
                tar.add(child, arcname=child.name)
    return buf.getvalue()


def unpack_dir(data: bytes, path: Path) -> None:
    """Replace directory `path` by the archive's contents, atomically for readers: the new
    contents are unpacked beside it and renamed into place."""
    fresh = path.with_name(f".{path.name}.incoming")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links and paths out of `fresh`
            tar.extractall(fresh, filter="data")
        else:
            tar.extractall(fresh)  # noqa: S202 - archives nnexp itself packed
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    fresh.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _ray_point(task: Task, archive: bytes | None) -> tuple[Outcome, bytes]:
    """On a Ray worker: the point's run directory arrives as bytes (empty, or as far as it
    got), is brought as far as it goes in a scratch directory, and goes back as bytes."""
    with tempfile.TemporaryDirectory(prefix="nnexp-") as scratch:
        run_dir = Path(scratch) / task.point
        run_dir.mkdir()
        if archive:
            unpack_dir(archive, run_dir)
        outcome = run_task(replace(task, run_dir=str(run_dir)))
        return outcome, pack_dir(run_dir)


class RayExecutor:
    """Each point a Ray task on a cluster (`address`), or on a Ray started for the sweep.

    Workers need not share a file system with this machine: a task takes the point's run
    directory with it and returns it finished, and it lands in the sweep directory here. A
    worker lost mid-run is retried by Ray (`max_retries`) from the run directory as this
    machine last had it. Live epochs are not reported from Ray workers."""

    def __init__(self, address: str | None, jobs: int | None, threads: int, retries: int = 2):
        try:
            import ray  # lazily: Ray takes seconds to import, and only this executor needs it
        except ImportError:
            raise UserError('the ray executor needs Ray: pip install -e ".[ray]"') from None
        self.ray, self.address, self.threads, self.retries = ray, address, threads, retries
        self.jobs = jobs  # a local Ray gets jobs * threads CPUs; a cluster has its own
        where = f"Ray at {address}" if address else "a local Ray started for this sweep"
        self.description = f"{where}, {threads} CPU{'s' * (threads > 1)} per point"

    def run(self, tasks: list[Task], on_event: OnEvent) -> None:
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            self._connect()
        try:
            # Ray's driver prints worker notices ("(raylet) ...") to stdout, which is the
            # sweep directory's alone (SWEEP=$(nnexp sweep ...)): send them to stderr.
            with contextlib.redirect_stdout(sys.stderr):
                self._run(tasks, on_event)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self) -> None:
        ray, env = self.ray, {var: str(self.threads) for var in THREAD_VARS}
        if self.address is None:
            # a private Ray needs no token; the cluster's own settings rule otherwise
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        elif ":" in self.address and "://" not in self.address and self.address != "auto":
            # Ray retries an unreachable address for many minutes: fail fast instead
            host, _, port = self.address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot reach the Ray cluster at {self.address}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, runtime_env={"env_vars": env},
                     **({} if self.address else {"num_cpus": (self.jobs or available_cpus()) * self.threads}))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()
            raise UserError(f"cannot start or reach Ray ({self.address or 'local'}): "
                            f"{first[0] if first else type(exc).__name__}") from None

    def _run(self, tasks: list[Task], on_event: OnEvent) -> None:
        ray = self.ray
        remote = ray.remote(_ray_point)
        pending = {}
        for task in tasks:
            gpus = 1 if task.config["device"] == "cuda" else 0
            options = remote.options(num_cpus=self.threads, num_gpus=gpus, max_retries=self.retries)
            path = Path(task.run_dir)
            archive = pack_dir(path) if path.is_dir() and any(path.iterdir()) else None
            pending[options.remote(task, archive)] = task
            on_event(("started", task.point, None))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in done:
                task = pending.pop(ref)
                on_event(("finished", task.point, self._collect(ref, task)))

    def _collect(self, ref, task: Task) -> Outcome:
        try:
            outcome, archive = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a task that failed on Ray, retries spent
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError's str has colours and a traceback
            text = str(cause).strip().splitlines()
            return Outcome(task.point, Status.FAILED, None,
                           f"on Ray: {type(cause).__name__}: {text[-1] if text else ''}".rstrip(": "))
        path = Path(task.run_dir)
        unpack_dir(archive, path)
        summary = outcome.summary
        if summary is not None:  # it names the worker's scratch directory: name this one
            summary = {**summary, "run_dir": str(path)}
            Run(path).write_summary(summary)
        return replace(outcome, summary=summary)


def make_executor(kind: str, jobs: int | None, address: str | None, threads: int = 1) -> Executor:
    """`jobs` points at once (default: one per core, or as a Ray cluster schedules them),
    each with `threads` threads."""
    if kind not in EXECUTORS:
        raise UserError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    if kind == "ray":
        return RayExecutor(address, jobs, threads)
    if address:
        raise UserError("--address is for --executor ray")
    jobs = jobs or max(1, available_cpus() // threads)
    return SerialExecutor(threads) if jobs == 1 else LocalPool(jobs, threads)
