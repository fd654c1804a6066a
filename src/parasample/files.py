"""Writing a file so that an interruption never leaves half of it: :func:`atomic_path`.

Every file a long run resumes from (training states, pass@k chunks, RL run records, the CSVs,
the assembled model weights) is written to a temporary sibling and renamed over the target only
once it is complete; ``os.replace`` is atomic on POSIX and Windows within one file system, so
a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "TMP_MARK"]

#: what a temporary file's name adds to its target's: ``NAME.partial-PID``
TMP_MARK = ".partial-"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; when the block completes it replaces ``path``.
    If the block raises (a failed check, Ctrl-C), the temporary file is removed and ``path`` is
    left as it was. The temporary name carries the process id, so two processes writing the same
    target never write into one temporary file; the last to finish wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
