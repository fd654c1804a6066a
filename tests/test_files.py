"""``atomic_path``: the target is replaced only by a complete file, and no temporary is left."""

from __future__ import annotations

import pytest

from parasample.files import atomic_path


def test_a_completed_block_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "state.pt"  # the folder is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing is visible before the block completes
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["state.pt"]


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "rows.csv"
    target.write_text("old")
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error), atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
        assert target.read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]
