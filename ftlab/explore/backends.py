"""Where tasks run: in this process, in local worker processes, or on a Dask cluster.

All three take the same tasks (`ftlab.explore.worker.run_task`) and hand back the same results,
so a campaign's outcome does not depend on the backend. Each has `submit(task) -> handle`,
`wait(handles) -> (done, not_done)` returning as soon as one is done, `result(handle)` and
`close(pending)` (cancelling the handles still pending).

- `SerialBackend`: runs a task when it is submitted; also the one that can run scenarios that
  are not in the catalog (tests pass their own).
- `ProcessBackend`: `concurrent.futures.ProcessPoolExecutor` with the `spawn` start method
  (nothing inherited from the parent but what a task carries; safe beside the progress bar's
  thread). Workers ignore SIGINT: Ctrl-C is the campaign's. A worker exits as soon as the
  campaign's process is gone, however it ended (`worker.watch_parent`).
- `DaskBackend`: a `distributed.Client` connected to `tcp://HOST:PORT` (any address form Dask
  accepts, see `parse_cluster_address`), with a short connect timeout; an address that does
  not parse, or does not answer, is bad input.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import signal
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
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:  # the resource tracker may be spawned here
            self.pool = cf.ProcessPoolExecutor(max_workers=workers,
                                               mp_context=multiprocessing.get_context("spawn"),
                                               initializer=init_worker)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def submit(self, task: tuple) -> cf.Future:
        # The pool spawns its workers here, on demand. SIGINT is blocked meanwhile, so that a
        # Ctrl-C (sent to the whole process group) cannot reach a worker before `init_worker`
        # ignores it, and waits in this process until the spawn is done (CPython's resource
        # tracker is started the same way).
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return self.pool.submit(run_task, task)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

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


def parse_cluster_address(address: str) -> str:
    """The scheduler address as Dask will connect to it, or `ExploreError` (bad input).

    Dask's own parsing decides (`distributed.comm.addressing`): `tcp://HOST:PORT`, `tls://`,
    `ws://`, `wss://`, `ucx://`, a bare `HOST:PORT` (tcp), IPv6 hosts in brackets
    (`tcp://[::1]:8786`). On top of it: a port in 1..65535 and a host that is an IP address or
    a DNS name, so that a typo is refused here and never looked up. Nothing is resolved or
    connected to. An `inproc://` address lives inside one process and cannot be reached."""
    text = address.strip()
    if not text:
        raise ExploreError("empty cluster address: expected tcp://HOST:PORT")
    bad = f"bad cluster address {address!r}"
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise ExploreError(f"{bad}: expected tcp://HOST:PORT")
    try:
        from distributed.comm import registry
        from distributed.comm.addressing import (
            parse_address, parse_host_port, unparse_address, unparse_host_port,
        )
    except ImportError:  # pragma: no cover - a dependency
        raise ExploreError("--cluster needs the 'distributed' package") from None
    try:
        scheme, loc = parse_address(text, strict=False)
    except ValueError as e:
        raise ExploreError(f"{bad}: {e}") from None
    if scheme == "inproc":
        raise ExploreError(f"{bad}: an inproc:// scheduler lives inside one process; use tcp://HOST:PORT")
    if scheme not in registry.backends:
        known = ", ".join(f"{s}://" for s in sorted(registry.backends) if s != "inproc")
        raise ExploreError(f"{bad}: unknown scheme {scheme!r} (Dask knows {known})")
    loc = loc.rstrip("/")
    try:
        host, port = parse_host_port(loc)
    except ValueError as e:
        raise ExploreError(f"{bad}: {e}") from None
    if not 1 <= port <= 65535:
        raise ExploreError(f"{bad}: port {port} is not from 1 to 65535")
    if not _is_host(host):
        raise ExploreError(f"{bad}: {host!r} is neither an IP address nor a host name")
    return unparse_address(scheme, unparse_host_port(host, port))


def _is_host(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if not host or len(host) > 253 or host.startswith("[") or host.replace(".", "").isdigit():
        return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return all(0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
               and all(c.isalnum() or c in "-_" for c in label) for label in labels)


class DaskBackend:
    name = "dask"

    def __init__(self, address: str, timeout: float = CONNECT_TIMEOUT) -> None:
        address = parse_cluster_address(address)
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
    if cluster is not None:
        return DaskBackend(cluster)
    if workers <= 1:
        return SerialBackend(scenarios)
    return ProcessBackend(workers)
