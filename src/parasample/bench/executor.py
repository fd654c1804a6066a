"""Where a benchmark's independent units of work run: in this process, or as Ray tasks.

A sweep is a list of units (a decoding configuration, a sampler's draw, an Ising setting) whose
results depend only on the unit and the seed. The driver submits the units not yet in its CSVs
and writes each result as it comes back, **in sweep order** (later units may finish first; they
wait for the ones before them), so a sharded run writes the same file, row for row, as a
single-process one, and an interrupted one resumes the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

__all__ = ["Executor", "LocalExecutor", "make_executor"]


class Executor(Protocol):
    """Runs ``fn(*args)`` for each args tuple; yields the results in order. With ``progress``,
    runs ``fn(*args, progress=tick)`` instead, and every ``tick(n)`` a unit makes (n units of
    work done, wherever it runs) reaches ``progress(n)`` in the driver while the unit runs; with
    ``log``, likewise ``fn(..., log=say)``, each ``say(line)`` reaching ``log(line)``."""

    name: str

    def map(self, fn: Callable, items: Iterable[tuple],
            progress: Callable[[int], None] | None = None,
            log: Callable[[str], None] | None = None) -> Iterator[Any]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """This process, one unit after the other (the default)."""

    name = "local"

    def map(self, fn, items, progress=None, log=None):
        kw = {name: f for name, f in (("progress", progress), ("log", log)) if f}
        for args in items:
            yield fn(*args, **kw)

    def close(self):
        pass


def make_executor(ray: str | None, threads: int = 1) -> Executor:
    """``None``: this process. ``local``: a Ray instance started here. ``HOST:PORT`` or
    ``ray://HOST:PORT``: a running Ray cluster (checked to answer within seconds). Each Ray
    worker runs torch with ``threads`` threads."""
    if ray is None:
        return LocalExecutor()
    from parasample.integrations.ray import RayExecutor

    return RayExecutor(ray, threads=threads)
