"""Sweep points on Ray: each a Ray task on a cluster, or on a Ray started for the sweep.

The executor of `nnexp sweep --executor ray` (`RayExecutor`), beside the local ones in
`executors`, whose Task, Outcome and `run_task` it uses: a point's run directory travels to
its worker and back as bytes (`pack_dir`, `unpack_dir`), since workers need not share a file
system with the sweep. Ray itself is imported only when the executor is made (an optional
extra, and seconds to import).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from nnexp.errors import UserError
from nnexp.executors import (THREAD_VARS, Deferred, OnEvent, Outcome, Task, _made, _StartGate, _stop_signals_held,
                             _summary_or_none, available_cpus, run_task)
from nnexp.rundir import Run, Status


def pack_dir(path: Path, moved: tuple[str, str] | None = None) -> bytes:
    """A directory as gzip'd tar bytes (a run directory travelling to or from a Ray worker).
    With `moved` (old path, new path), train.log names the run directory by its new path: a
    Ray worker's scratch folder is not where the run lives."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(path.iterdir()):
            if child.name == ".lock":
                continue
            if moved is not None and child.name == "train.log":
                text = child.read_bytes().replace(moved[0].encode(), moved[1].encode())
                info = tar.gettarinfo(str(child), arcname=child.name)
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))
            else:
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
    got), is brought as far as it goes in a scratch directory, and goes back as bytes. A
    stopped sweep cancels the task (Ray raises KeyboardInterrupt in it): the point stops at
    its last completed epoch and goes back as far as it got."""
    with tempfile.TemporaryDirectory(prefix="nnexp-") as scratch:
        run_dir = Path(scratch) / task.point
        run_dir.mkdir()
        if archive:
            unpack_dir(archive, run_dir)
        try:
            outcome = run_task(replace(task, run_dir=str(run_dir)))
        except KeyboardInterrupt:  # the run directory says interrupted; so does the outcome
            outcome = Outcome(task.point, Status.INTERRUPTED, _summary_or_none(Run(run_dir)))
        # messages name the point's run directory in the sweep, not this folder, gone soon
        moved = (str(run_dir), task.run_dir)
        error = outcome.error.replace(*moved) if outcome.error else outcome.error
        return replace(outcome, error=error), pack_dir(run_dir, moved)


class RayExecutor:
    """Each point a Ray task on a cluster (`address`), or on a Ray started for the sweep.

    Workers need not share a file system with this machine: a task takes the point's run
    directory with it and returns it finished, and it lands in the sweep directory here. A
    worker lost mid-run is retried by Ray (`max_retries`) from the run directory as this
    machine last had it. Ctrl-C or SIGTERM stops every running point at its last completed
    epoch and brings its run directory back. Live epochs are not reported from Ray workers."""

    def __init__(self, address: str | None, jobs: int | None, threads: int, retries: int = 2):
        try:
            import ray  # lazily: Ray takes seconds to import, and only this executor needs it
        except ImportError:
            raise UserError('the ray executor needs Ray: pip install -e ".[ray]"') from None
        self.ray, self.address, self.threads, self.retries = ray, address, threads, retries
        self.jobs = jobs  # a local Ray gets jobs * threads CPUs; a cluster has its own
        self.started_here = False
        where = f"Ray at {address}" if address else "a local Ray started for this sweep"
        self.description = f"{where}, {threads} CPU{'s' * (threads > 1)} per point"

    def __enter__(self):
        """Reach the cluster (or start the local Ray) and check that it can run a point."""
        if not self.ray.is_initialized():
            self._connect()
            self.started_here = True
        try:
            self._check_fits()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.started_here:
            self.started_here = False
            self.ray.shutdown()

    def run(self, tasks: list[Task], on_event: OnEvent) -> None:
        with contextlib.ExitStack() as stack:
            if not self.ray.is_initialized():
                stack.enter_context(self)
            # Ray's driver prints worker notices ("(raylet) ...") to stdout, which is the
            # sweep directory's alone (SWEEP=$(nnexp sweep ...)): send them to stderr.
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            self._run(tasks, on_event)

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
        # ray.init makes SIGTERM end this process at once; nnexp's own handler stops every
        # point at its last epoch instead, as Ctrl-C does
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            # "local": a Ray of its own even where another runs on this machine (without an
            # address, Ray joins that one, and refuses num_cpus)
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, runtime_env={"env_vars": env},
                     **({} if self.address else {"num_cpus": (self.jobs or available_cpus()) * self.threads}))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()
            raise UserError(f"cannot start or reach Ray ({self.address or 'local'}): "
                            f"{first[0] if first else type(exc).__name__}") from None
        finally:
            if sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)

    def _check_fits(self) -> None:
        """A point asks for --threads CPUs: where no node has as many, Ray would keep it
        waiting for ever (its warning about that is silenced here)."""
        nodes = [node for node in self.ray.nodes() if node.get("Alive")]
        most = max((node.get("Resources", {}).get("CPU", 0) for node in nodes), default=0)
        if self.threads > most:
            raise UserError(f"--threads {self.threads}: each point asks for {self.threads} CPUs, and no node "
                            f"of the Ray cluster at {self.address or 'local'} has that many (the largest "
                            f"has {most:g}); use --threads {max(1, int(most))} or fewer")

    def _run(self, tasks: list[Task], on_event: OnEvent) -> None:
        ray = self.ray
        remote = ray.remote(_ray_point)
        pending = {}
        waiting = collections.deque(tasks)
        # points made as they run (a search that learns) are handed to Ray only as it can run
        # them, --jobs at a time (default: the cluster's CPUs): proposed all at once, a trial
        # would learn from none of the others
        if any(isinstance(task, Deferred) for task in tasks):
            cpus = int(ray.cluster_resources().get("CPU", 1))
            limit = self.jobs or max(1, cpus // self.threads)
        else:
            limit = len(tasks)
        gate = _StartGate(on_event)
        try:
            while waiting or pending:
                while waiting and len(pending) < limit:
                    if not gate.allows(waiting[0]):  # the time limit: the rest stay planned
                        waiting.clear()
                        break
                    task = _made(waiting.popleft(), on_event)
                    if task is None:
                        continue
                    gpus = 1 if task.config["device"] == "cuda" else 0
                    options = remote.options(num_cpus=self.threads, num_gpus=gpus, max_retries=self.retries)
                    path = Path(task.run_dir)
                    archive = pack_dir(path) if path.is_dir() and any(path.iterdir()) else None
                    pending[options.remote(task, archive)] = task
                    on_event(("started", task.point, None))
                if not pending:
                    continue
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    task = pending.pop(ref)
                    on_event(("finished", task.point, self._collect(ref, task)))
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: Ray raises KeyboardInterrupt in each running task, which
            # stops its point at the last completed epoch and returns its run directory;
            # a task not started yet is dropped, its point still to run
            for ref in pending:
                ray.cancel(ref)
            for ref, task in pending.items():
                outcome = self._collect(ref, task)
                if outcome is not None:
                    on_event(("finished", task.point, outcome))
            raise

    def _collect(self, ref, task: Task) -> Outcome | None:
        """The task's outcome, its run directory unpacked into the sweep; None for a task
        cancelled before it started."""
        try:
            outcome, archive = self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            return None
        except Exception as exc:  # noqa: BLE001 - a task that failed on Ray, retries spent
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError's str has colours and a traceback
            text = str(cause).strip().splitlines()
            return Outcome(task.point, Status.FAILED, None,
                           f"on Ray: {type(cause).__name__}: {text[-1] if text else ''}".rstrip(": "))
        path = Path(task.run_dir)
        summary = outcome.summary
        with _stop_signals_held():  # a Ctrl-C between its two renames would leave no point directory
            unpack_dir(archive, path)
            if summary is not None:  # it names the worker's scratch directory: name this one
                summary = {**summary, "run_dir": str(path)}
                Run(path).write_summary(summary)
        return replace(outcome, summary=summary)
