"""Atomic writes and output-path checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fairytale.errors import FairytaleError
from fairytale.files import (
    TEMP_MARK,
    atomic_file_set,
    atomic_path,
    atomic_write_text,
    check_output_folder,
    check_output_path,
    ensure_dir,
    new_file_mode,
)

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "book.pdf"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".pdf"  # libraries that pick a format by extension still work
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.pdf"]


def test_a_file_set_appears_together_or_not_at_all(tmp_path):
    interior, cover = tmp_path / "book-interior.pdf", tmp_path / "book-cover.pdf"
    interior.write_text("old interior")
    cover.write_text("old cover")
    with pytest.raises(RuntimeError), atomic_file_set() as files:
        files.stage(interior).write_text("new interior")  # complete, but its cover is not
        files.stage(cover).write_text("half a cov")
        raise RuntimeError("the cover failed")
    assert (interior.read_text(), cover.read_text()) == ("old interior", "old cover")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book-cover.pdf", "book-interior.pdf"]
    with atomic_file_set() as files:
        staged = files.stage(interior)
        staged.write_text("new interior")
        files.stage(cover).write_text("new cover")
        assert interior.read_text() == "old interior"  # nothing moves before the set is complete
        assert files.final(staged) == interior
    assert (interior.read_text(), cover.read_text()) == ("new interior", "new cover")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book-cover.pdf", "book-interior.pdf"]
    assert interior.stat().st_mode & 0o777 == new_file_mode()


def test_output_path_checks(tmp_path):
    with pytest.raises(FairytaleError, match="is a folder"):
        check_output_path(tmp_path)
    existing = tmp_path / "x.pdf"
    existing.write_text("x")
    with pytest.raises(FairytaleError, match="--force"):
        check_output_path(existing, overwrite=False)
    assert check_output_path(tmp_path / "new.pdf") == tmp_path / "new.pdf"


def test_read_only_folder(read_only_folder):
    with pytest.raises(FairytaleError, match="not writable"):
        check_output_path(read_only_folder / "book.pdf")


def test_ensure_dir_over_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FairytaleError, match="a file of that name"):
        ensure_dir(tmp_path / "f")


def test_an_output_in_a_missing_folder_is_created_by_the_write(tmp_path):
    # `fairytale book story.txt -o out/ginger.pdf` on a fresh machine: the check passes without
    # creating anything, the write makes the folder.
    target = tmp_path / "out" / "deeper" / "ginger.pdf"
    assert check_output_path(target) == target
    assert not (tmp_path / "out").exists()
    atomic_write_text(target, "pdf")
    assert target.read_text() == "pdf"


def test_a_missing_folder_under_a_file_or_a_read_only_folder_is_refused(tmp_path, read_only_folder):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FairytaleError, match="is a file"):
        check_output_path(tmp_path / "f" / "sub" / "book.pdf")
    with pytest.raises(FairytaleError, match="not writable"):
        check_output_path(read_only_folder / "new" / "book.pdf")
    with pytest.raises(FairytaleError, match="Checkpoint folder is not writable"):
        check_output_folder(read_only_folder, "Checkpoint folder")
    with pytest.raises(FairytaleError, match="Cannot create folder"):
        ensure_dir(read_only_folder / "new")


def test_outputs_get_the_users_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert new_file_mode() == 0o644
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o002)
        assert new_file_mode() == 0o664
        with atomic_path(tmp_path / "b.pdf") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pdf").stat().st_mode & 0o777 == 0o664


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "book.pdf"
    target.write_text("old")
    killed = (
        "import os, signal, sys; from pathlib import Path; from fairytale.files import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run([sys.executable, "-c", killed, str(target)], cwd=ROOT)
    assert run.returncode == -signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".book.pdf")
    assert target.read_text() == "old"
    # Not ours (another file's temporary, a live writer's, a user's hidden file): kept.
    kept = [
        tmp_path / f".other.pdf{TEMP_MARK}999999999-x.pdf",
        tmp_path / f".book.pdf{TEMP_MARK}{os.getpid()}-inflight.pdf",
        tmp_path / ".book.pdf.backup",
    ]
    for path in kept:
        path.write_text("keep")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert not leftovers[0].exists()
    assert all(path.read_text() == "keep" for path in kept)


def test_a_full_disk_is_one_line_and_leaves_the_old_file(tmp_path):
    import errno

    target = tmp_path / "book.pdf"
    target.write_text("old")
    with pytest.raises(FairytaleError, match="No space left on device"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.pdf"]
