import os
from pathlib import Path

import pytest

from advmir.io import OutputError, atomic_path, ensure_writable_dir, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_replaces_whole(tmp_path):
    target = tmp_path / "folder"
    target.mkdir()
    (target / "old").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    write_json(target / "a.json", {"a": 1})
    assert (target / "a.json").read_text().strip().endswith("}")


def test_unwritable_folder_is_named(tmp_path):
    """A folder nobody may write in: without write permission, or (as root, who ignores
    permissions, as in CI) on a filesystem that takes no new folders, /proc."""
    if os.geteuid() == 0:
        target = Path("/proc/advmir-test/results")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "sub"
    with pytest.raises(OutputError, match=f"cannot write to {target}"):
        ensure_writable_dir(target)
    assert not target.exists()


def test_output_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="writable `results` folder"):
        ensure_writable_dir(blocker / "results")
