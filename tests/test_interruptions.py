"""Long jobs stopped half-way, as users stop them: Ctrl-C (SIGINT), a killed process (SIGKILL),
a full disk. Each must keep every finished piece, leave no half-written file, free the book,
and let the same command go on from where it stopped.

The real-process tests run the CLI through :mod:`tests.interrupt_hook`, which holds the process
just before (or after) it puts a chosen file in place; the signal is sent once the hook says
so, never after a sleep.
"""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale.book_lock import book_is_busy
from fairytale.cli import app
from fairytale.files import TEMP_MARK
from tests.library_support import ROOT, cli_env
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    write_plan,
)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def render_args(plan: Path, pdf: Path, tiny_sd: Path) -> list[str]:
    return [
        "render", str(plan), "-o", str(pdf), "--model", str(tiny_sd), "--consistency", "seed",
        "--steps", "2", "--device", "cpu", "--batch-size", "1",
    ]  # fmt: skip


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


def finished_records(book_dir: Path) -> list[Path]:
    return sorted(p for p in (book_dir / "cache").glob("*.json") if not p.name.startswith("."))


def counts(stderr: str) -> tuple[int, int]:
    found = re.search(r"(\d+) painted, (\d+) reused", stderr)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def start_held(
    args: list[str], tmp_path: Path, *, at: str, nth: int = 1, after: bool = False, session: bool = False
) -> subprocess.Popen:
    """The CLI in a subprocess, held when it is about to put its ``nth`` file named like ``at``
    in place (or just after, with ``after``); returns once it is held there. With ``session``
    it leads a process group of its own, as a command started in a terminal does."""
    held = tmp_path / "held"
    env = cli_env(
        FAIRYTALE_TEST_BLOCK_AT=at, FAIRYTALE_TEST_BLOCK_NTH=str(nth), FAIRYTALE_TEST_BLOCKED=str(held),
        FAIRYTALE_TEST_BLOCK_AFTER="1" if after else "0",
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "interrupt_hook.py"), *args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=session,
    )  # fmt: skip
    # Wait for the hook's file (or for the process to end, which is a failure to show).
    while not held.exists():
        try:
            out, err = process.communicate(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the command ended before it was held (exit {process.returncode}): {err[-3000:]}")
    return process


# --------------------------------------------------------------------------- render, in-process


def test_ctrl_c_while_painting_says_how_many_pages_are_kept(tiny_sd, tmp_path, monkeypatch):
    """Ctrl-C after two of four pages: one line saying so, exit 130, the two pictures kept
    (records and all), no temporary file, the book free; the same command paints the rest."""
    from fairytale.render.page_store import PageStore

    plan = write_plan(tmp_path, make_plan(4))
    pdf = tmp_path / "out" / "zoe.pdf"
    put = PageStore.put
    calls = []

    def interrupted_on_the_third(self, stored, picture):
        calls.append(stored.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return put(self, stored, picture)

    monkeypatch.setattr(PageStore, "put", interrupted_on_the_third)
    stopped = run(*render_args(plan, pdf, tiny_sd))
    assert stopped.exit_code == 130, stopped.output
    last = stopped.stderr.strip().splitlines()[-1]
    assert last == "Stopped: 2 of 4 pages painted and kept; run the same command again to go on.", (
        stopped.stderr
    )
    assert "Traceback" not in stopped.output
    book = pdf.with_suffix("")
    assert len(finished_records(book)) == 2 and not temporaries(tmp_path)
    assert not pdf.exists() and not (book / "manifest.json").exists()
    assert not book_is_busy(book)

    monkeypatch.setattr(PageStore, "put", put)
    again = run(*render_args(plan, pdf, tiny_sd))
    assert again.exit_code == 0, again.output
    assert counts(again.stderr) == (2, 2)


def test_ctrl_c_after_painting_says_the_book_is_not_laid_out(tiny_sd, tmp_path, monkeypatch):
    import fairytale.render.book as book_module

    plan = write_plan(tmp_path, make_plan(2))
    pdf = tmp_path / "zoe.pdf"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(book_module, "_write_pdf", stop)
    stopped = run(*render_args(plan, pdf, tiny_sd))
    assert stopped.exit_code == 130
    assert "Stopped: all 2 pages are painted and kept, the book is not laid out yet;" in stopped.stderr


# --------------------------------------------------------------------------- render, real processes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("at", "nth", "after"),
    [
        ("[0-9a-f]*.json", 3, False),  # page 3's picture in place, its record not yet
        ("[0-9a-f]*.png", 3, False),  # page 3's picture written, not yet in place
        ("zoe.pdf", 1, False),  # every page painted, the PDF written, not yet in place
        ("zoe.pdf", 1, True),  # the PDF in place, the manifest not written
    ],
    ids=["before-a-record", "before-a-picture", "before-the-pdf", "before-the-manifest"],
)
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_stopped_render_goes_on_where_it_stopped(tiny_sd, tmp_path, how, at, nth, after):
    plan = write_plan(tmp_path, make_plan(4))
    pdf = tmp_path / "out" / "zoe.pdf"
    book = pdf.with_suffix("")
    args = render_args(plan, pdf, tiny_sd)
    process = start_held(args, tmp_path, at=at, nth=nth, after=after)
    records_then = len(finished_records(book))
    process.send_signal(how)
    out, err = process.communicate(timeout=120)
    if how == signal.SIGINT:
        assert process.returncode == 130, err[-3000:]
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("Stopped: "), err[-3000:]
        assert not temporaries(tmp_path)  # Ctrl-C: cleaned up at once
    else:
        assert process.returncode == -signal.SIGKILL
    assert len(finished_records(book)) == records_then  # nothing half-done counts as finished
    assert not book_is_busy(book)
    if not after:
        assert not (book / "manifest.json").exists()

    again = subprocess.run(
        [sys.executable, "-m", "fairytale", *args], env=cli_env(), cwd=ROOT, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert counts(again.stderr) == (4 - records_then, records_then)
    assert not temporaries(tmp_path)  # a killed run's leftovers are gone once their files are written
    manifest = json.loads((book / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["pages"]) == 4


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_while_painting_is_one_line_and_keeps_the_cache_consistent(
    tiny_sd, tmp_path, monkeypatch
):
    """The disk fills up as page 2's picture is written: one line naming the file and the
    cause, page 1 kept, no temporary file, and page 2 painted once there is room again."""
    from PIL import Image

    plan = write_plan(tmp_path, make_plan(3))
    pdf = tmp_path / "zoe.pdf"
    save = Image.Image.save
    saved = []

    def full_on_the_second(self, fp, *args, **kwargs):
        if isinstance(fp, Path) and "cache" in fp.parts:
            saved.append(fp)
            if len(saved) == 2:
                Path(fp).write_bytes(b"\x89PNG half")  # some bytes went out before the disk was full
                raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_on_the_second)
    full = run(*render_args(plan, pdf, tiny_sd))
    assert full.exit_code == 1
    lines = [line for line in full.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], full.stderr
    assert "Traceback" not in full.output
    assert len(finished_records(pdf.with_suffix(""))) == 1 and not temporaries(tmp_path)

    monkeypatch.setattr(Image.Image, "save", save)
    again = run(*render_args(plan, pdf, tiny_sd))
    assert again.exit_code == 0, again.output
    assert counts(again.stderr) == (2, 1)


# --------------------------------------------------------------------------- library


def running_in_group(group: int) -> list[str]:
    """The processes of process group ``group`` still running, as "PID command". Ended ones
    waiting to be reaped do not count, nor one that is ending (its memory, command line
    included, already given back): the resource tracker of the workers ends on its own once
    the library's process has ended, a moment after it."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        state, _, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == group and state not in ("Z", "X") and command:
            found.append(f"{stat.parent.name} {text[: text.rindex(')') + 1]}")
    return found


def planned_library(tmp_path: Path, sd: Path, ner: Path, qa: Path, nli: Path) -> tuple[Path, Path, list[str]]:
    """Three stories, a, b and c, planned already (these tests are about painting), and the
    arguments of a two-worker `fairytale library` making them on the tiny models."""
    stories, books = tmp_path / "stories", tmp_path / "books"
    stories.mkdir()
    for name in ("a", "b", "c"):
        (stories / f"{name}.txt").write_text("Zoë went to the sea.\n", encoding="utf-8")
        write_plan(books / name, make_plan(3))
    args = [
        "library", str(stories), "--out", str(books), "--workers", "2", "--model", str(sd),
        "--consistency", "seed", "--steps", "2", "--device", "cpu", "--batch-size", "1",
        "--ner-model", str(ner), "--qa-model", str(qa), "--nli-model", str(nli),
    ]  # fmt: skip
    return stories, books, args


def left_running_in_group(group: int, within: float = 30.0) -> list[str]:
    """:func:`running_in_group` once every process of the group has had ``within`` seconds to
    finish exiting. The exit status of the group's leader can be read while the kernel still
    lists it, running, for a moment (seen on a loaded machine: its memory already released);
    a worker left behind is still there when the time is up."""
    deadline = time.monotonic() + within
    while (found := running_in_group(group)) and time.monotonic() < deadline:
        time.sleep(0.05)  # polls a condition; no result depends on how long this takes
    return found


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [True, False], ids=["terminal-ctrl-c", "notebook-interrupt"])
def test_ctrl_c_stops_the_library_workers_and_a_rerun_goes_on(
    tiny_sd, tiny_ner, tiny_qa, tiny_nli, tmp_path, to_group
):
    """Ctrl-C while two workers make books: the command ends at once with one line (exit 130),
    no worker is left running, nothing is locked; the same command makes the rest. In a
    terminal the SIGINT reaches every process of the group; a notebook's interrupt (or
    ``kill -INT``) reaches the main process only, which then stops the workers itself."""
    import os

    from fairytale.library import make_library
    from fairytale.render import RenderSettings

    stories, books, args = planned_library(tmp_path, tiny_sd, tiny_ner, tiny_qa, tiny_nli)
    process = start_held(args, tmp_path, at=f"{books}/b/cache/*.json", session=True)  # b's first picture
    if to_group:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # before the fix, a notebook's interrupt waited for every book
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the library went on after Ctrl-C")
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    stopped = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"Stopped: \d of 3 books finished .*; run the same command again to go on\.", stopped
    ), err
    assert left_running_in_group(process.pid) == []
    assert not any(book_is_busy(books / name) for name in ("a", "b", "c"))
    assert not temporaries(books)
    finished = int(stopped.split()[1])

    settings = RenderSettings(model=str(tiny_sd), consistency="seed", steps=2, device="cpu", batch_size=1)
    report = make_library(stories, books, settings, workers=1, progress=False)
    statuses = sorted(book.status for book in report.books)
    assert statuses == sorted(["finished"] * finished + ["made"] * (3 - finished)), report.books


@pytest.mark.slow
def test_the_workers_end_when_the_library_process_is_killed(tiny_sd, tiny_ner, tiny_qa, tiny_nli, tmp_path):
    """kill -9 of the library's own process (the out-of-memory killer may pick it) while two
    workers make books: before, the workers stayed behind for good, waiting for books that
    would never come, their models (and a GPU's memory) held. Now each stops its book as Ctrl-C
    stops it and ends: nothing is locked, no temporary file is left."""
    import os

    stories, books, args = planned_library(tmp_path, tiny_sd, tiny_ner, tiny_qa, tiny_nli)
    process = start_held(args, tmp_path, at=f"{books}/b/cache/*.json", session=True)  # b's first picture
    process.kill()
    process.wait()  # (not communicate: workers left behind would hold its pipes open for good)
    process.stdout.close()
    process.stderr.close()
    left = left_running_in_group(process.pid, within=60)  # the workers look for their library every second
    for line in left:  # (not left behind by the test either)
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert left == []
    assert not any(book_is_busy(books / name) for name in ("a", "b", "c"))
    assert not temporaries(books)


# --------------------------------------------------------------------------- export


def test_ctrl_c_mid_export_leaves_the_previous_export_as_it_was(tmp_path, monkeypatch):
    """Ctrl-C while the KDP cover is drawn (the EPUB and the interior already made): the
    previous export's EPUB, interior, cover and preflight report are as they were, and no
    temporary file is left."""
    import fairytale.publish.book_export as book_export
    from tests.publish_support import fake_book

    book = fake_book(tmp_path)
    first = run("export", book, "--format", "epub", "--preset", "kdp", "--quiet")
    assert first.exit_code == 0, first.output
    made = {
        p: p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix in (".epub", ".pdf", ".txt")
    }
    assert len(made) == 4, sorted(made)

    def interrupted(path, *args, **kwargs):
        Path(path).write_bytes(b"%PDF-1.4 half a cover")
        raise KeyboardInterrupt

    monkeypatch.setattr(book_export, "write_cover_pdf", interrupted)
    stopped = run("export", book, "--format", "epub", "--preset", "kdp", "--quiet")
    assert stopped.exit_code == 130
    assert stopped.stderr.strip().startswith("Stopped: ") and "Traceback" not in stopped.output
    assert {p: p.read_bytes() for p in made} == made
    assert not temporaries(tmp_path)


@pytest.mark.slow
def test_a_worker_killed_while_making_one_book_fails_that_book_only(
    tiny_sd, tiny_ner, tiny_qa, tiny_nli, tmp_path
):
    """The worker making book b dies (SIGKILL, as the out-of-memory killer does) every time
    it paints b's first picture: b is reported failed, a and c are made all the same (a dead
    worker breaks the whole process pool, and every book in hand with it)."""
    from fairytale.files import sha256_file

    stories, books, library = planned_library(tmp_path, tiny_sd, tiny_ner, tiny_qa, tiny_nli)
    args = [str(ROOT / "tests" / "interrupt_hook.py"), *library]
    env = cli_env(FAIRYTALE_TEST_BLOCK_AT=f"{books}/b/cache/*.json", FAIRYTALE_TEST_BLOCK_KILL="1")
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stderr[-3000:]
    # (a worker killed with semaphores of its own makes Python's resource tracker warn after this)
    assert "\nError: 1 of 3 stories failed: b\n" in done.stderr, done.stderr[-3000:]
    assert "failed: its worker process was killed or crashed while making it" in done.stderr
    assert (books / "a.pdf").is_file() and (books / "c.pdf").is_file() and not (books / "b.pdf").exists()
    assert not any(book_is_busy(books / name) for name in ("a", "b", "c"))
    assert sha256_file(books / "a.pdf")  # a whole file, not a torn one


# --------------------------------------------------------------------------- train


def trainer(tmp_path: Path, tiny_sd: Path, checkpoint_every: int):
    """``train(output, *extra)``: a 4-step CLI training run of a character token on the tiny
    model, checkpoints every ``checkpoint_every`` steps."""
    from tests.training_fixtures import character_folder

    pictures = character_folder(tmp_path / "pictures")
    fast = ["--steps", "4", "--grad-accum", "1", "--no-gradient-checkpointing", "--checkpoint-every", str(checkpoint_every)]

    def train(output: Path, *extra: str):
        return run("train", "character", "--data", pictures, "--token", "<creature>", "--init", "cat",
                   "--model", tiny_sd, *fast, "-o", output, *extra)  # fmt: skip

    return train


def test_ctrl_c_while_training_keeps_the_checkpoint_and_says_to_resume(tmp_path, tiny_sd, monkeypatch):
    """Ctrl-C right after the step-2 checkpoint: "Stopped:" (not an error), exit 130, the
    checkpoint named with `--resume`; the same command with it ends the run from step 2, with
    the token an uninterrupted run makes."""
    import torch

    from fairytale.embeddings import read_embedding
    from training import checkpoint as ckpt

    train = trainer(tmp_path, tiny_sd, checkpoint_every=2)
    straight = train(tmp_path / "straight.safetensors")
    assert straight.exit_code == 0, straight.output

    save = ckpt.save_checkpoint

    def stopped_after_saving(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", stopped_after_saving)
    output = tmp_path / "creature.safetensors"
    stopped = train(output)
    assert stopped.exit_code == 130, stopped.output
    line = " ".join(stopped.stderr.split())
    assert line.endswith("is kept; add --resume to the same command to go on."), stopped.stderr
    assert "Stopped: the last checkpoint (" in line and "step-000002" in line
    assert "Error" not in stopped.output and "Traceback" not in stopped.output

    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    resumed = train(output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert torch.equal(
        read_embedding(output).vectors, read_embedding(tmp_path / "straight.safetensors").vectors
    )


def test_a_first_ctrl_c_while_training_keeps_the_step_under_way(tmp_path, tiny_sd, monkeypatch):
    """The first Ctrl-C lets the step under way finish and keeps it as a checkpoint, although
    no regular checkpoint was due (--checkpoint-every 1000): no trained step is lost, and
    `--resume` ends with the token an uninterrupted run makes."""
    import os
    import signal

    import torch

    from fairytale.embeddings import read_embedding
    from training import progress as training_progress

    train = trainer(tmp_path, tiny_sd, checkpoint_every=1000)
    straight = train(tmp_path / "straight.safetensors")
    assert straight.exit_code == 0, straight.output

    update = training_progress.TrainingProgress.update

    def ctrl_c_during_step_1(self, step, loss):  # as step 1's progress is drawn, before its end
        update(self, step, loss)
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(training_progress.TrainingProgress, "update", ctrl_c_during_step_1)
    output = tmp_path / "creature.safetensors"
    stopped = train(output)
    assert stopped.exit_code == 130, stopped.output
    assert "Stopping after this step" in stopped.output
    line = " ".join(stopped.stderr.split())
    assert "Stopped: the last checkpoint (" in line and "step-000001" in line, stopped.stderr
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    monkeypatch.setattr(training_progress.TrainingProgress, "update", update)
    resumed = train(output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert torch.equal(
        read_embedding(output).vectors, read_embedding(tmp_path / "straight.safetensors").vectors
    )


def test_a_full_disk_while_a_checkpoint_is_finished_is_one_line(tmp_path, monkeypatch):
    """The disk fills up just as a checkpoint is marked complete: a FairytaleError naming the
    file (one line in the CLI, not a traceback), and the checkpoint does not count as complete."""
    from fairytale.errors import FairytaleError
    from training import checkpoint as ckpt

    write_bytes, write_text = Path.write_bytes, Path.write_text

    def full(method):
        def write(self, data, *args, **kwargs):
            if self.name.startswith((ckpt.COMPLETE, f".{ckpt.COMPLETE}")):
                raise OSError(errno.ENOSPC, "No space left on device")
            return method(self, data, *args, **kwargs)

        return write

    monkeypatch.setattr(Path, "write_bytes", full(write_bytes))
    monkeypatch.setattr(Path, "write_text", full(write_text))
    with pytest.raises(FairytaleError, match="No space left on device"):
        ckpt.save_checkpoint(
            tmp_path, 2, {"step": 2}, {"data": None}, rank=0, is_main=True, barrier=lambda: None
        )
    assert ckpt.latest_checkpoint(tmp_path) is None and not temporaries(tmp_path)


def test_leftovers_of_killed_runs_are_removed_even_when_their_names_never_come_back(tiny_sd, tmp_path):
    """A run killed while writing the picture of a page that was then edited (so its key, and
    the file name, never come back) left a temporary file: the next render removes it, and
    keeps a live writer's and the user's own hidden files."""
    import os

    from fairytale.render import render_book
    from tests.render_support import tiny_settings

    plan = write_plan(tmp_path, make_plan(1))
    pdf = tmp_path / "zoe.pdf"
    book = pdf.with_suffix("")
    dead = 999999999
    leftovers = [
        book / "cache" / f".0123abcd.png{TEMP_MARK}{dead}-x.png",
        book / "pages" / f".page-09.png{TEMP_MARK}{dead}-y.png",
        book / "print" / f".0123abcd.jpg{TEMP_MARK}{dead}-z.jpg",
    ]
    kept = [book / "cache" / f".0123abcd.png{TEMP_MARK}{os.getpid()}-live.png", book / "cache" / ".notes"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    render_book(plan, pdf, tiny_settings(tiny_sd), progress=False)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)


def test_ctrl_c_while_planning_a_book_says_nothing_was_written(tiny_sd, tmp_path, monkeypatch):
    import types

    def plan_story(story_path, **options):
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "fairytale.planner", types.SimpleNamespace(plan_story=plan_story))
    monkeypatch.setattr("fairytale.model_check.plan_needs", lambda *args, **kwargs: [])
    story = tmp_path / "ginger.txt"
    story.write_text("Ginger the Giraffe\n\nGinger was tall.\n", encoding="utf-8")
    args = ["book", story, "-o", tmp_path / "out" / "ginger.pdf", "--model", tiny_sd, "--consistency", "seed"]
    stopped = run(*args)
    assert stopped.exit_code == 130
    last = stopped.stderr.strip().splitlines()[-1]
    assert (
        last
        == "Stopped: the story was not planned yet, nothing was written; run the same command again to go on."
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ginger.txt"]


def test_ctrl_c_in_a_one_process_library_counts_books_not_pages(tiny_sd, tmp_path, monkeypatch):
    """`fairytale library` without workers stops on Ctrl-C inside a book's render: the line
    counts the library's books (a finished one stays finished), not that book's pages."""
    from fairytale.errors import Interrupted
    from fairytale.library import make_library
    from fairytale.render import RenderSettings
    from fairytale.render.page_store import PageStore

    stories, books = tmp_path / "stories", tmp_path / "books"
    stories.mkdir()
    for name in ("a", "b"):
        (stories / f"{name}.txt").write_text("Zoë went to the sea.\n", encoding="utf-8")
        write_plan(books / name, make_plan(2))
    settings = RenderSettings(model=str(tiny_sd), consistency="seed", steps=2, device="cpu", batch_size=1)
    put = PageStore.put

    def stop_in_b(self, stored, picture):
        if self.book_dir.name == "b":
            raise KeyboardInterrupt
        return put(self, stored, picture)

    monkeypatch.setattr(PageStore, "put", stop_in_b)
    with pytest.raises(Interrupted) as stopped:
        make_library(stories, books, settings, workers=1, progress=False)
    assert stopped.value.kept == "1 of 2 books finished (the others keep the pictures they had painted)"
    assert not book_is_busy(books / "b")
