"""`fairytale library --ray` stopped half-way, as users stop it: Ctrl-C in the driver, an actor
killed (out of memory, a crash in native code). A private Ray instance on 127.0.0.1.

Each actor runs :mod:`tests.interrupt_hook` (Ray's worker setup hook), which holds it, or
kills it, when it is about to put a chosen file in place: the signal is sent once the hook says
so, never after a sleep.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairytale.book_lock import book_is_busy
from fairytale.files import TEMP_MARK
from tests.interrupt_hook import ray_job_with_hook
from tests.library_support import ROOT, cli_env, local_ray
from tests.render_support import make_plan, write_plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address():
    with local_ray(num_cpus=2) as address:
        yield address


def planned_library(tmp_path: Path, names: str = "abc") -> tuple[Path, Path]:
    """Stories whose books are planned already (the tests are about painting)."""
    stories, books = tmp_path / "stories", tmp_path / "books"
    stories.mkdir()
    for name in names:
        (stories / f"{name}.txt").write_text("Zoë went to the sea.\n", encoding="utf-8")
        write_plan(books / name, make_plan(3))
    return stories, books


def library_args(stories: Path, books: Path, address: str, tiny_sd: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fairytale", "library", str(stories), "--out", str(books), "--ray", address,
        "--model", str(tiny_sd), "--consistency", "seed", "--steps", "2", "--device", "cpu", "--batch-size", "1",
        *extra,
    ]  # fmt: skip


def actor_processes() -> list[str]:
    """This machine's processes running a library actor (Ray titles them ray::CLASS...)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith(("ray::BookMaker", "ray::Painter")):
            found.append(f"{cmdline.parent.name} {command}")
    return found


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


def test_ctrl_c_stops_the_ray_actors_keeps_what_is_finished_and_a_rerun_goes_on(
    ray_address, tiny_sd, tmp_path
):
    """Ctrl-C while two actors make books, one of them held on b's first picture: one line
    (exit 130) saying how many books are finished, no actor left, no book locked, nothing
    finished removed; the same command makes only the books not finished, and clears the
    temporary file of the picture the killed actor was writing."""
    stories, books = planned_library(tmp_path)
    held = tmp_path / "held"
    env = cli_env(
        **ray_job_with_hook(
            FAIRYTALE_TEST_BLOCK_AT=f"{books}/b/cache/*.json", FAIRYTALE_TEST_BLOCKED=str(held)
        )
    )
    process = subprocess.Popen(
        library_args(stories, books, ray_address, tiny_sd, "--painters", "2"),
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    while not held.exists():  # the hook's file, or the driver's end (a failure to show)
        try:
            _, err = process.communicate(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the library ended before b was held (exit {process.returncode}): {err[-3000:]}")
    kept = {p: p.read_bytes() for p in books.rglob("*") if p.is_file() and not p.name.startswith(".")}

    process.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the driver only: Ray's are elsewhere
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the library went on after Ctrl-C")
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    stopped = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"Stopped: [0-2] of 3 books finished .*; run the same command again to go on\.", stopped
    ), err
    finished = int(stopped.split()[1])
    assert not (books / "b.pdf").exists()
    assert all(p.read_bytes() == data for p, data in kept.items())  # nothing kept was removed or changed
    deadline = time.monotonic() + 60  # Ray ends the killed actors' processes on its own time
    while actor_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert actor_processes() == []
    assert not any(book_is_busy(books / name) for name in "abc")

    rerun = subprocess.run(
        library_args(stories, books, ray_address, tiny_sd), env=cli_env(), cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    said = " ".join(rerun.stderr.split())
    assert said.count("already finished") == finished, said
    assert all((books / f"{name}.pdf").is_file() for name in "abc")
    assert not temporaries(books)  # the file the killed actor was writing is gone too


def test_a_ray_actor_killed_while_making_one_book_fails_that_book_only(ray_address, tiny_sd, tmp_path):
    """The only actor dies (SIGKILL, as the out-of-memory killer does) while it paints b: b is
    reported failed and a fresh actor makes c, instead of c failing for want of an actor."""
    stories, books = planned_library(tmp_path)
    env = cli_env(
        **ray_job_with_hook(FAIRYTALE_TEST_BLOCK_AT=f"{books}/b/cache/*.json", FAIRYTALE_TEST_BLOCK_KILL="1")
    )
    done = subprocess.run(
        library_args(stories, books, ray_address, tiny_sd, "--painters", "1"), env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    said = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Error: 1 of 3 stories failed: b" in said, said
    assert "failed: its book maker died while working on it" in said, said
    assert (books / "a.pdf").is_file() and (books / "c.pdf").is_file() and not (books / "b.pdf").exists()
    assert json.loads((books / "c" / "manifest.json").read_text(encoding="utf-8"))["pages"]
    assert not any(book_is_busy(books / name) for name in "abc")
