"""Where the outputs of a run are merged: in this process, in local worker processes, or on Dask.

All executors offer one method, ``map_unordered(fn, tasks)``, yielding ``(task, result, error)``
as tasks finish; ``fn`` and the tasks are plain picklable data (see ``run.MergeTask``), so the
pipeline never knows where it runs.  A task's failure of any kind (an ``EngineError``, an
``OSError`` of the outside world, a bug, a worker process that died) comes back as its
``error``, an ``EngineError`` (``task_failure``), so one output's failure never stops the others.

- ``InlineExecutor``: one task after another in this process (``--jobs 1``).
- ``ProcessExecutor``: a pool of local processes.  Workers forward progress and their log
  records through a queue (``ProgressRelay``; ``engine.logbridge``), turn SIGTERM into an
  orderly ``Interrupted`` (so their temporary files are removed) and then exit, and send
  themselves that SIGTERM if the parent dies, even by SIGKILL: no orphan keeps writing, or waits
  forever for work.
- ``DaskExecutor``: tasks submitted to a Dask ``distributed`` scheduler (``dask://host:port``,
  or ``dask:local`` for a local cluster); workers need tmbmerge installed and the same paths.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from ..errors import (
    EngineError,
    ExecutorUnavailable,
    Interrupted,
    ParameterError,
    UsageError,
    world_error,
)
from ..interrupts import request_stop
from ..logbridge import deliver, forward_logs, parent_log_levels

log = logging.getLogger(__name__)
_worker_queue = None
PARENT_POLL_SECONDS = 0.1
DASK_CONNECT_TIMEOUT = "10s"


def task_failure(exc: Exception) -> EngineError:
    """Any exception a task raised, as the ``EngineError`` recorded for it (exit 1 for a bug)."""
    error = world_error(exc)
    if error is None:
        error = EngineError(f"internal error: {type(exc).__name__}: {exc}")
    return error


class InlineExecutor:
    """Runs tasks one after the other in this process."""

    jobs = 1

    def __init__(self, progress_queue=None):
        self.progress_queue = progress_queue

    def map_unordered(
        self, fn: Callable, tasks: Iterable
    ) -> Iterator[tuple[Any, Any, EngineError | None]]:
        """(task, result, error) of each task, in order."""
        for task in tasks:
            try:
                result = fn(task)
            except Exception as exc:  # noqa: BLE001 - recorded against this task; the others go on
                yield task, None, task_failure(exc)
            else:
                yield task, result, None


def _init_worker(queue, parent: int, log_levels: dict[str, int]) -> None:
    global _worker_queue
    _worker_queue = queue
    forward_logs(queue, log_levels)
    signal.signal(signal.SIGTERM, _terminate)
    stop_when_parent_dies(parent)


def stop_when_parent_dies(parent: int) -> None:
    """Start a watchdog that sends SIGTERM to this process's main thread once ``parent`` is gone."""
    threading.Thread(
        target=_watch_parent, args=(parent,), name="tmb-parent-watch", daemon=True
    ).start()


def _watch_parent(parent: int) -> None:
    """Stop this worker (SIGTERM to its *main thread*) once its parent is gone, even by SIGKILL.

    Not ``prctl(PR_SET_PDEATHSIG)``: that signal is process-directed, so the kernel may hand it
    to another thread (a queue feeder, a thread pool); the main thread, blocked reading the task
    queue, then never runs the handler and waits forever, and a main thread that blocks SIGTERM
    while it publishes an output is interrupted all the same.  A signal sent to the main thread
    interrupts its blocking call, and waits while that thread blocks it."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    main = threading.main_thread().ident
    assert main is not None  # the main thread is running: it started this one
    signal.pthread_kill(main, signal.SIGTERM)


_task_running = False  # worker side: inside a task, whose cleanup an Interrupted would run
_stopping = False  # worker side: SIGTERM received; take no further task


def _terminate(signum, frame):
    global _stopping
    if _stopping:
        return  # a second SIGTERM must not interrupt the cleanup the first one started
    _stopping = True
    if not _task_running:
        os._exit(Interrupted.exit_code)  # idle, or handing a result over: nothing to clean up
    request_stop(signum)  # raised inside a __del__ the exception is lost; the copy loop is not
    raise Interrupted("worker stopped by SIGTERM")


def _run_in_worker(fn: Callable, task: Any) -> Any:
    """Run one task in a worker process.  A worker stopped by SIGTERM (its parent was interrupted,
    or died and ``_watch_parent`` noticed) exits once the task has cleaned up, instead of handing a
    result to nobody and taking the next queued task: after its parent's death no worker may keep
    writing outputs, or wait forever for work.

    It exits only after the ``Interrupted`` is dropped: the frames its traceback holds may own
    objects that clean up when collected (a writer interrupted while it was being built removes
    its temporary file in ``__del__``), and ``os._exit`` would skip that.
    """
    global _task_running
    _task_running = True
    interrupted = False
    result = None
    try:
        result = fn(task)
    except Interrupted:
        interrupted = True
    finally:
        _task_running = False
    if interrupted or _stopping:
        gc.collect()
        os._exit(Interrupted.exit_code)
    return result


def worker_progress_queue():
    """The progress queue of this worker process (None outside a ``ProcessExecutor`` worker)."""
    return _worker_queue


class ProcessExecutor:
    """Runs tasks in ``jobs`` worker processes (spawned)."""

    def __init__(self, jobs: int, progress_queue=None):
        if jobs < 1:
            raise ParameterError("jobs must be at least 1", parameters=("jobs",))
        self.jobs = jobs
        self.progress_queue = progress_queue

    def map_unordered(
        self, fn: Callable, tasks: Iterable
    ) -> Iterator[tuple[Any, Any, EngineError | None]]:
        """(task, result, error) of each task, as they finish."""
        tasks = list(tasks)
        if not tasks:
            return
        context = multiprocessing.get_context("spawn")
        # progress and log records come back through the caller's relay, or one of our own
        own_relay = ProgressRelay(None, context) if self.progress_queue is None else None
        queue = own_relay.queue if own_relay is not None else self.progress_queue
        pool = ProcessPoolExecutor(
            min(self.jobs, len(tasks)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(queue, os.getpid(), parent_log_levels()),
        )
        futures = {pool.submit(_run_in_worker, fn, task): task for task in tasks}
        clean = False
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - a dead worker included (BrokenProcessPool)
                        yield futures[future], None, task_failure(exc)
                    else:
                        yield futures[future], result, None
            clean = True
        finally:
            if not clean:  # interrupted, or the consumer stopped: stop workers so they clean up
                for process in list(getattr(pool, "_processes", {}).values()):
                    if process.is_alive():
                        process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            if own_relay is not None:
                own_relay.close()


class DaskExecutor:
    """Runs tasks on a Dask cluster (a scheduler address, or ``local`` for one of its own)."""

    def __init__(self, address: str):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError(
                "the Dask executor needs the 'distributed' package (pip install tmbmerge[dask])"
            ) from None
        self._scratch = None
        self._cluster: LocalCluster | None = None  # ours to close, for "local"
        if address in ("local", ""):
            import dask

            # Dask's scheduler and workers make "dask-scratch-space/" in $TMPDIR and leave it there:
            # a folder of our own instead, removed by close()
            self._scratch = tempfile.TemporaryDirectory(prefix="tmbmerge-dask-")
            with dask.config.set({"temporary-directory": self._scratch.name}):
                self._cluster = LocalCluster(
                    n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
                )
            self.client = Client(self._cluster)
            log.info("Dask: a local cluster, scratch space in %s", self._scratch.name)
        else:
            try:
                self.client = Client(address, timeout=DASK_CONNECT_TIMEOUT)
            except (
                OSError,
                TimeoutError,
                ValueError,
            ) as exc:  # refused, unreachable, not an address
                raise ExecutorUnavailable(
                    f"cannot reach the Dask scheduler at {address}: "
                    f"{str(exc) or type(exc).__name__}"
                ) from None
        self.jobs = max(1, sum(self.client.nthreads().values()))
        self.progress_queue = None
        log.info("Dask: %d worker threads", self.jobs)

    def map_unordered(
        self, fn: Callable, tasks: Iterable
    ) -> Iterator[tuple[Any, Any, EngineError | None]]:
        """(task, result, error) of each task, as they finish."""
        from distributed import as_completed

        tasks = list(tasks)
        futures = {self.client.submit(fn, task, pure=False): task for task in tasks}
        try:
            for future in as_completed(list(futures)):
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker included
                    yield futures[future], None, task_failure(exc)
                else:
                    yield futures[future], result, None
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Close the client, and the cluster and scratch folder it made."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        if self._scratch is not None:
            self._scratch.cleanup()


def make_executor(jobs: int, *, executor: str | None = None, progress_queue=None):
    """``--executor`` value to an executor: None/'local' (processes, or inline for one job), 'dask://...'."""
    if executor and executor.startswith("dask:"):
        target = executor[len("dask:") :]
        return DaskExecutor(target[2:] if target.startswith("//") else target)
    if executor not in (None, "", "local"):
        raise UsageError(
            f"unknown executor {executor!r} (use local, dask:local or dask://HOST:PORT)"
        )
    if jobs <= 1:
        return InlineExecutor(progress_queue)
    return ProcessExecutor(jobs, progress_queue)


class ProgressRelay:
    """Parent side of worker progress and logs: a thread draining the queue into the display
    (``progress``, None for none) and, for log records, into the parent's ``logging``
    (``engine.logbridge.deliver``)."""

    def __init__(self, progress, context=None):
        self.progress = progress
        self.queue = (context or multiprocessing.get_context("spawn")).Queue()
        self._thread = threading.Thread(target=self._drain, name="tmb-progress", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            message = self.queue.get()
            if message is None:
                return
            if isinstance(message, logging.LogRecord):
                deliver(message)
            elif message[0] == "advance" and self.progress is not None:
                _, _, files, events, nbytes = message
                self.progress.advance(files=files, events=events, bytes=nbytes)

    def close(self) -> None:
        """Stop the relay once it has passed on every message queued."""
        self.queue.put(None)
        self._thread.join(timeout=5)
        self.queue.close()
