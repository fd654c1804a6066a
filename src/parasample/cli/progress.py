"""The progress bar of every long command, and its plain lines where there is no terminal.

rich draws a live bar on a terminal; written to a file or a pipe (``nohup parasample bench rl
... > run.log``, CI) it shows only the last frame when the bar stops, so a log of a six-hour
run said nothing until it ended. There :class:`LoggedProgress` also prints one plain line per
task every :data:`LOG_EVERY_S` seconds: ``GRPO steps: 1215/7680 (16%), 0:41:10 elapsed, about
3:38:00 left`` (the time left at the rate since the task's first line).
"""

from __future__ import annotations

from datetime import timedelta
from time import monotonic

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["LOG_EVERY_S", "LoggedProgress", "make_progress"]

#: seconds between two plain progress lines of a task when the console is not a terminal
LOG_EVERY_S = 60.0


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else str(timedelta(seconds=round(seconds)))


class LoggedProgress(Progress):
    """rich's :class:`~rich.progress.Progress` that, on a console which is not a terminal,
    prints each task's state as a plain line at most every :data:`LOG_EVERY_S` seconds (the
    first one that long after the task starts, so short runs print nothing extra), with the
    time left at the rate since its first line."""

    def __init__(self, *columns, **kwargs):
        super().__init__(*columns, **kwargs)
        self._logged: dict[TaskID, float] = {}  # when each task's last line was printed
        self._first: dict[TaskID, tuple[float, float]] = {}  # (time, completed) at its first

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task = super().add_task(description, *args, **kwargs)
        self._logged[task] = monotonic()
        return task

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        now = monotonic()
        if self.console.is_terminal or now - self._logged.get(task_id, now) < LOG_EVERY_S:
            return
        self._logged[task_id] = now
        task = next(t for t in self.tasks if t.id == task_id)
        # the rate since this task's first line: a resumed run's finished work, ticked at once
        # in its first seconds, would otherwise promise an end minutes away
        t0, c0 = self._first.setdefault(task_id, (now, task.completed))
        rate = (task.completed - c0) / (now - t0) if now > t0 else 0.0
        if task.total is None:
            done, left = f"{task.completed:g}", ""
        else:
            done = f"{task.completed:g}/{task.total:g} ({task.percentage:.0f}%)"
            eta = (task.total - task.completed) / rate if rate > 0 else None
            left = f", about {_clock(eta)} left"
        self.console.print(f"{task.description}: {done}, {_clock(task.elapsed)} elapsed{left}",
                           highlight=False, markup=False)


def make_progress(console: Console) -> LoggedProgress:
    """The bar every long command shows (description, bar, done/total, elapsed)."""
    return LoggedProgress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console)
