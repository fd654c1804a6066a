"""``atomic_path`` / ``atomic_dir``: the target is replaced (a file) or made (a folder) only when
complete, and no temporary is left."""

from __future__ import annotations

import pytest

from parasample.files import atomic_dir, atomic_path


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


def test_a_folder_appears_only_complete_and_the_first_one_made_stays(tmp_path):
    target = tmp_path / "models" / "dense"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("first")
        assert not target.exists()
    assert (target / "config.json").read_text() == "first"
    with atomic_dir(target) as tmp:  # another process finished first: its folder stays
        (tmp / "config.json").write_text("second")
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["dense"]


def test_a_failed_folder_leaves_nothing(tmp_path):
    target = tmp_path / "dense"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
