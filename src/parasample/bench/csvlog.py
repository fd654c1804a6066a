"""Resumable CSV output: one row appended and flushed as each run finishes.

An interrupted sweep loses at most the run in progress; rerunning it skips every run whose key
is already in the file.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from parasample.errors import InputError
from parasample.files import atomic_path

__all__ = ["ResumableCSV", "write_csv", "read_csv", "mean_se_cells", "TIMING_COLUMNS"]

#: Columns that measure time (or depend on it): they differ between two runs of the same sweep by
#: design. Every other column of every benchmark CSV is a function of the run's options and seed,
#: so an interrupted-then-resumed run writes the same values there as an uninterrupted one.
TIMING_COLUMNS = frozenset({
    "wall_s", "forward_s", "forward_share", "throughput", "tokens_per_s", "mean_wallclock",
    "amortized_wallclock", "ratio_vs_hf", "wall_vs_iid", "calls_per_s", "speedup",
    "speedup_vs_sequential", "wall_to_target_s", "elapsed_s", "seconds_to_target",
    "seconds_to_target_se", "seconds_per_call", "wall_ratio_to_iid", "wall_ratio_se",
    "wall_per_move_s", "speedup_vs_uncached", "quest_seconds_to_this_reward",
    "wall_ratio_to_quest", "wall_ratio_to_quest_final", "speedup_min", "speedup_max",
    "speedup_wall", "relative_to_target", "calls_timed"})


def mean_se_cells(xs: list[float], digits: int = 4) -> tuple[float | str, float | str]:
    """A summary's (mean, standard error over the units) cells: rounded, blank where undefined
    (no values; one value has no SE)."""
    if not xs:
        return "", ""
    mean = round(statistics.fmean(xs), digits)
    return mean, (round(statistics.stdev(xs) / math.sqrt(len(xs)), digits) if len(xs) > 1
                  else "")


def read_csv(path: Path) -> list[dict[str, str]]:
    """All rows of a CSV file as dicts (empty list if the file does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (only the ``header`` columns, in that order) atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


class ResumableCSV:
    """Append-only CSV whose rows are identified by the values of ``key`` columns."""

    def __init__(self, path: Path, header: list[str], key: list[str]):
        self.path, self.header, self.key = Path(path), header, key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = read_csv(self.path)
        if rows and list(rows[0].keys()) != header:
            raise InputError(f"{self.path} has other columns than this benchmark writes; move it "
                             "away or pass another --out.")
        self.rows = rows

    def _key(self, row: dict) -> tuple:
        return tuple(str(row[k]) for k in self.key)

    def done(self, row_key: dict) -> dict | None:
        """The finished row with these key values, if any."""
        want = self._key(row_key)
        return next((r for r in self.rows if self._key(r) == want), None)

    def append(self, row: dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.header, extrasaction="ignore",
                               lineterminator="\n")
            if new:
                w.writeheader()
            w.writerow(row)
            f.flush()
        self.rows.append({k: str(row[k]) for k in self.header})
