"""Writing a file or a folder so that an interruption never leaves half of it:
:func:`atomic_path`, :func:`atomic_dir`.

Every file a long run resumes from (training states, pass@k chunks, RL run records, the CSVs,
the assembled model weights) is written to a temporary sibling and renamed over the target only
once it is complete; ``os.replace`` is atomic on POSIX and Windows within one file system, so
a reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "TMP_MARK"]

#: what a temporary file's name adds to its target's: ``NAME.partial-PID``
TMP_MARK = ".partial-"


def _sibling(path: Path) -> tuple[Path, Path]:
    """``path`` (its folder created) and this process's temporary name beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; when the block completes it replaces ``path``.
    If the block raises (a failed check, Ctrl-C), the temporary file is removed and ``path`` is
    left as it was. The temporary name carries the process id, so two processes writing the same
    target never write into one temporary file; the last to finish wins."""
    path, tmp = _sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block completes it becomes ``path``.
    Made once and never replaced (converted model files, each 15 s to minutes to make): where
    another process finished first, its folder stays and this one is dropped. If the block
    raises, the temporary folder is removed and ``path`` is left as it was."""
    path, tmp = _sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)  # a folder left by a killed process of this id
    try:
        tmp.mkdir()
        yield tmp
        with contextlib.suppress(OSError):  # a non-empty ``path``: another process won
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
