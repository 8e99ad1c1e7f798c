"""Atomic writes and output-path checks."""

from __future__ import annotations

import pytest

from fairytale.errors import FairytaleError
from fairytale.files import atomic_path, atomic_write_text, check_output_path, ensure_dir


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


def test_output_path_checks(tmp_path):
    with pytest.raises(FairytaleError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "book.pdf")
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
