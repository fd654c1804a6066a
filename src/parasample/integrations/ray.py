"""Benchmark sweeps on Ray: ``--ray local`` starts a Ray instance on this machine,
``--ray HOST:PORT`` (or ``ray://HOST:PORT``) joins a running cluster.

Each unit of a sweep runs as a Ray task; a worker process loads its model once (the loaders are
cached per process) and keeps it for the next unit it runs. Results stream back to the driver,
which owns the resumable CSVs (:mod:`parasample.bench.executor`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from parasample.errors import InputError

__all__ = ["RayExecutor", "check_address", "RAY_INSTALL"]

RAY_INSTALL = "pip install ray"


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail within ``timeout`` seconds, with a message, when nothing answers at ``address``
    (``ray.init`` itself would retry for a minute or more)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address!r}: give 'local' or HOST:PORT of a running Ray "
                         "cluster (e.g. 127.0.0.1:6379, or ray://HOST:10001).")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); "
                         "start one with `ray start --head`, or use --ray local.") from None


def _run(fn: Callable, threads: int, args: tuple, reports=None, wants: tuple = ()) -> Any:
    """Run one unit in a Ray worker; the callbacks named in ``wants`` (``progress``, ``log``)
    send its ticks and log lines to the ``reports`` actor."""
    import torch

    torch.set_num_threads(threads)
    if reports is None:
        return fn(*args)
    import ray

    last = []

    def progress(n: int) -> None:
        last[:] = [reports.add.remote(n)]

    def log(message: str) -> None:
        last[:] = [reports.say.remote(message)]

    callbacks = {"progress": progress, "log": log}
    result = fn(*args, **{name: callbacks[name] for name in wants})
    if last:  # one caller's actor calls run in order: every report is in before the result
        ray.get(last[0])
    return result


class _Reports:
    """A Ray actor that collects the progress ticks and log lines of every running unit for the
    driver to take."""

    def __init__(self):
        self.n, self.lines = 0, []

    def add(self, n: int) -> None:
        self.n += n

    def say(self, message: str) -> None:
        self.lines.append(message)

    def take(self) -> tuple[int, list[str]]:
        taken = self.n, self.lines
        self.n, self.lines = 0, []
        return taken


class RayExecutor:
    """Runs each unit as a Ray task (1 CPU each) and yields the results in submission order;
    with ``progress`` (``log``), each unit's ticks (log lines) reach the driver's ``progress``
    (``log``) while it runs."""

    name = "ray"

    #: seconds a cancelled unit has to stop by itself (a training step and a state save)
    cancel_grace_s = 60.0
    #: seconds between two reads of the running units' progress ticks and log lines
    poll_s = 1.0

    def __init__(self, address: str, threads: int = 1, num_cpus: int | None = None):
        ray = _ray()
        if address != "local":
            check_address(address)
        self.started = not ray.is_initialized()
        if self.started:
            kw = {"num_cpus": num_cpus} if address == "local" and num_cpus else {}
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False, **kw)
        self.ray, self.threads = ray, threads
        self._task = ray.remote(num_cpus=1)(_run)
        self._reports = ray.remote(num_cpus=0)(_Reports)

    def map(self, fn: Callable, items: Iterable[tuple],
            progress: Callable[[int], None] | None = None,
            log: Callable[[str], None] | None = None) -> Iterator[Any]:
        """The units start in sweep order: at most one per CPU of the cluster is submitted at a
        time, the next one when one finishes. (Ray does not start queued tasks in submission
        order: a unit retried after its worker was killed, e.g. by Ray's memory monitor, goes
        behind every queued unit.) So an interrupted sweep has run a prefix of its units, as a
        plain run has: the same seeds for every sampler."""
        items = list(items)
        wants = tuple(name for name, f in (("progress", progress), ("log", log)) if f)
        reports = self._reports.remote() if wants else None
        width = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        futures: list = []  # the submitted units, in sweep order
        running: set = set()
        got = 0

        def top_up() -> None:  # submit the next units while fewer than `width` run
            if running:
                done, _ = self.ray.wait(list(running), num_returns=len(running), timeout=0)
                running.difference_update(done)
            while len(running) < width and len(futures) < len(items):
                futures.append(self._task.remote(fn, self.threads, items[len(futures)],
                                                 reports, wants))
                running.add(futures[-1])

        try:
            while got < len(items):
                top_up()
                # in order: a later unit that finished first waits its turn
                ready, _ = self.ray.wait([futures[got]], timeout=self.poll_s)
                if reports is not None:  # the running units' ticks and lines so far
                    n, lines = self.ray.get(reports.take.remote())
                    for line in lines:
                        log(line)
                    if progress:
                        progress(n)
                if ready:
                    result = self.ray.get(futures[got])
                    got += 1  # before yielding: a consumer that stops here cancels nothing
                    top_up()  # the next units run while the consumer handles this result
                    yield result
        except BaseException:  # Ctrl-C, or the driver stopped early: cancel what is left
            self._cancel(futures[got:])
            raise

    def _cancel(self, futures: list) -> None:
        """Stop the units not yet yielded. A running unit first gets a KeyboardInterrupt (Ray's
        non-forced cancel), as Ctrl-C would give it in a plain run: a training run finishes its
        optimiser step and saves its state, so a rerun resumes there instead of at its last
        evaluation. A unit still running after ``cancel_grace_s`` (or a second Ctrl-C) is
        killed; only those, since force-cancelling a task that finished could kill the worker's
        next task."""
        for f in futures:
            self.ray.cancel(f)
        pending = futures
        try:
            _, pending = self.ray.wait(futures, num_returns=len(futures),
                                       timeout=self.cancel_grace_s)
        finally:
            for f in pending:
                self.ray.cancel(f, force=True)

    def close(self) -> None:
        """Stop the Ray instance this executor started (a cluster it joined keeps running)."""
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
