"""Where tasks run: in this process, in local worker processes, or on a Dask cluster.

All three take the same tasks (`ftlab.explore.worker.run_task`) and hand back the same results,
so a campaign's outcome does not depend on the backend. Each has `submit(task) -> handle`,
`wait(handles) -> (done, not_done)` returning as soon as one is done, `result(handle)` and
`close(pending)` (cancelling the handles still pending).

- `SerialBackend`: runs a task when it is submitted; also the one that can run scenarios that
  are not in the catalog (tests pass their own).
- `ProcessBackend`: `concurrent.futures.ProcessPoolExecutor` with the `spawn` start method
  (nothing inherited from the parent but what a task carries; safe beside the progress bar's
  thread). Workers ignore SIGINT: Ctrl-C is the campaign's.
- `DaskBackend`: a `distributed.Client` connected to `tcp://HOST:PORT`, with a short connect
  timeout; an address that does not answer is bad input.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import re
from typing import Any, Mapping

from ftlab.explore.portfolio import ExploreError
from ftlab.explore.worker import init_worker, run_task

CONNECT_TIMEOUT = 3.0


class _Done:
    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class SerialBackend:
    name = "serial"
    workers = 1

    def __init__(self, scenarios: Mapping[str, Any] | None = None) -> None:
        self.scenarios = scenarios

    def submit(self, task: tuple) -> _Done:
        return _Done(run_task(task, self.scenarios))

    def wait(self, handles):
        return set(handles), set()

    def result(self, handle: _Done) -> list:
        return handle.value

    def close(self, pending=()) -> None:
        pass


class ProcessBackend:
    name = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = cf.ProcessPoolExecutor(max_workers=workers,
                                           mp_context=multiprocessing.get_context("spawn"),
                                           initializer=init_worker)

    def submit(self, task: tuple) -> cf.Future:
        return self.pool.submit(run_task, task)

    def wait(self, handles):
        done, not_done = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return done, not_done

    def result(self, handle: cf.Future) -> list:
        return handle.result()

    def close(self, pending=()) -> None:
        """Shut the pool down; with `pending`, cancel what has not started (a running task
        finishes: tasks are short)."""
        for f in pending:
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=bool(pending))


_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s/:]+(:\d{1,5})?/?$")


class DaskBackend:
    name = "dask"

    def __init__(self, address: str, timeout: float = CONNECT_TIMEOUT) -> None:
        if not _ADDRESS.match(address):
            raise ExploreError(f"bad cluster address {address!r}: expected tcp://HOST:PORT")
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - a dependency
            raise ExploreError("--cluster needs the 'distributed' package") from None
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise ExploreError(f"cluster {address} does not answer ({type(e).__name__}"
                               f" after {timeout:g} s)") from None
        except Exception as e:  # distributed raises several types for a bad peer
            raise ExploreError(f"cannot use cluster {address}: {type(e).__name__}: {e}") from None
        info = self.client.scheduler_info()
        self.workers = max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def submit(self, task: tuple):
        return self.client.submit(run_task, task, pure=False)

    def wait(self, handles):
        from distributed import wait

        with self.client.as_current():
            res = wait(list(handles), return_when="FIRST_COMPLETED")
        return set(res.done), set(res.not_done)

    def result(self, handle) -> list:
        return handle.result()

    def close(self, pending=()) -> None:
        try:
            if pending:
                self.client.cancel(list(pending))
            self.client.close()
        except Exception:  # closing a client whose scheduler went away
            pass


def make_backend(workers: int, cluster: str | None, scenarios: Mapping[str, Any] | None = None):
    if cluster:
        return DaskBackend(cluster)
    if workers <= 1:
        return SerialBackend(scenarios)
    return ProcessBackend(workers)
