"""`fairytale library`: every story of a folder made into a book, here or on Ray; resumable, and
one broken story never stops the others."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.library import NOT_STARTED_DISK_FULL, LibraryBook, PlanOptions, is_finished, make_library
from fairytale.render import RenderSettings
from tests.library_support import book_contents, cache_times, local_ray, page_pictures, run_cli

STORIES = Path(__file__).parent / "data" / "stories"
GOOD = ("ginger_giraffe", "zoe_lighthouse")


def said(result) -> str:
    return " ".join(result.stderr.split())


def test_a_missing_stories_folder_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["library", str(tmp_path / "nowhere"), "--out", str(tmp_path / "books")])
    assert result.exit_code == 1
    assert "Stories folder not found" in said(result) and "Traceback" not in result.output


def test_a_folder_without_stories_is_one_line(tmp_path):
    (tmp_path / "notes.md").write_text("not a story", encoding="utf-8")
    result = CliRunner().invoke(app, ["library", str(tmp_path), "--out", str(tmp_path / "books")])
    assert result.exit_code == 1
    assert "No stories in" in said(result)


def test_painters_go_with_ray(tmp_path):
    result = CliRunner().invoke(app, ["library", str(STORIES), "--out", str(tmp_path), "--painters", "2"])
    assert result.exit_code == 1
    assert "--painters goes with --ray" in said(result)


def test_every_missing_model_is_named_before_the_first_story(tmp_path, monkeypatch):
    # Before, a default sd14 library started and each story failed on its own at its first
    # page showing a character (IP-Adapter missing), after minutes of planning.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    stories = tmp_path / "stories"
    stories.mkdir()
    shutil.copy(STORIES / "ginger_giraffe.txt", stories)
    result = CliRunner().invoke(app, ["library", str(stories), "--out", str(tmp_path / "books")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    text = said(result)
    assert "ip_adapter_sd15" in text and "ip_adapter_image_encoder" in text and "ner" in text, text
    assert "fairytale models pull" in text and not (tmp_path / "books" / "ginger_giraffe").exists()
    assert len([line for line in lines if "models pull" in line]) == 1


def test_a_book_is_finished_only_if_laid_out_after_its_plan_with_these_settings(tmp_path):
    book = LibraryBook(tmp_path / "a.txt", tmp_path / "out" / "a.pdf")
    settings = RenderSettings(steps=2)
    assert not is_finished(book, settings)
    book.book_dir.mkdir(parents=True)
    book.plan_file.write_text("{}", encoding="utf-8")
    book.pdf.write_bytes(b"%PDF")
    manifest = {
        "title": "A", "author": None, "plan": "plan.json", "pdf": str(book.pdf.resolve()), "backend": "sd14",
        "model": "m", "model_fingerprint": "f", "device": "cpu", "fairytale_version": "0", "created": "now",
        "cover_page": 1, "pdf_pages": 3, "pdf_bytes": 4, "pages": [],
        "settings": settings.as_dict() | {"width": 64, "height": 64, "guidance": 7.5, "consistency": "seed", "device": "cuda"},
    }  # fmt: skip
    (book.book_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert is_finished(book, settings)
    assert is_finished(book, settings.with_(device="cpu", batch_size=1))  # speed-only settings do not matter
    assert not is_finished(book, settings.with_(steps=3))
    assert not is_finished(book, settings.with_(trim="a4"))
    import os

    later = (book.book_dir / "manifest.json").stat().st_mtime_ns + 10**9
    os.utime(book.plan_file, ns=(later, later))  # the plan was edited after the book was made
    assert not is_finished(book, settings)


# --------------------------------------------------------------------------- end to end (slow)


def options(tiny_sd, tiny_ner, tiny_qa, tiny_nli) -> list:
    return [
        "--model", tiny_sd, "--consistency", "seed", "--ner-model", tiny_ner, "--qa-model", tiny_qa, "--nli-model", tiny_nli,
        "--steps", 2, "--device", "cpu", "--seed", 11, "--words-per-page", 60,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def library_case(tmp_path_factory, tiny_sd, tiny_ner, tiny_qa, tiny_nli):
    """Three stories (one broken: binary bytes) and the books `fairytale book` makes of the
    two good ones."""
    root = tmp_path_factory.mktemp("library")
    stories = root / "stories"
    stories.mkdir()
    for name in GOOD:
        shutil.copy(STORIES / f"{name}.txt", stories / f"{name}.txt")
    (stories / "broken.txt").write_bytes(bytes(range(256)) * 4)
    reference = root / "by-book"
    reference.mkdir()
    for name in GOOD:
        made = run_cli(
            "book",
            stories / f"{name}.txt",
            "-o",
            reference / f"{name}.pdf",
            *options(tiny_sd, tiny_ner, tiny_qa, tiny_nli),
            "--quiet",
        )
        assert made.returncode == 0, made.stderr[-3000:]
    return stories, reference


def check_library_run(done, out: Path, reference: Path) -> None:
    """The two good books are those of `fairytale book`; the broken story is named; exit 1."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 of 3 stories failed: broken" in said(done)
    assert "not a text file" in said(done)  # why, in the summary
    for name in GOOD:
        assert page_pictures(out / name) == page_pictures(reference / name)
        assert book_contents(out / f"{name}.pdf") == book_contents(reference / f"{name}.pdf")
        assert json.loads((out / name / "plan.json").read_text()) == json.loads(
            (reference / name / "plan.json").read_text()
        )
    assert not (out / "broken.pdf").exists()


def check_rerun_paints_nothing(rerun, out: Path, before: dict) -> None:
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    assert said(rerun).count("already finished") >= 2
    for name in GOOD:
        assert cache_times(out / name) == before[name]  # nothing repainted


@pytest.mark.slow
def test_library_here_makes_the_books_of_fairytale_book_and_resumes(
    library_case, tiny_sd, tiny_ner, tiny_qa, tiny_nli, tmp_path
):
    stories, reference = library_case
    out = tmp_path / "books"
    args = ["library", stories, "--out", out, *options(tiny_sd, tiny_ner, tiny_qa, tiny_nli)]
    done = run_cli(*args, "--workers", 2, "--threads", 1)  # two worker processes
    check_library_run(done, out, reference)
    assert "on 2 worker processes" in said(done)

    before = {name: cache_times(out / name) for name in GOOD}
    pdf_written = (out / "zoe_lighthouse.pdf").stat().st_mtime_ns
    rerun = run_cli(*args)
    check_rerun_paints_nothing(rerun, out, before)
    assert (out / "zoe_lighthouse.pdf").stat().st_mtime_ns == pdf_written  # skipped, not laid out again

    # An edited plan is kept and only the changed page is painted again.
    plan_file = out / "zoe_lighthouse" / "plan.json"
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    plan["pages"][0]["prompt"] = "a red lighthouse at night, edited by hand"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    edited = run_cli(*args)
    assert edited.returncode == 1
    assert json.loads(plan_file.read_text(encoding="utf-8"))["pages"][0]["prompt"].endswith("edited by hand")
    assert len(set(cache_times(out / "zoe_lighthouse")) - set(before["zoe_lighthouse"])) == 1
    assert cache_times(out / "ginger_giraffe") == before["ginger_giraffe"]


@pytest.mark.slow
def test_library_on_ray_makes_the_same_books(library_case, tiny_sd, tiny_ner, tiny_qa, tiny_nli, tmp_path):
    stories, reference = library_case
    out = tmp_path / "books"
    # No GPU: by default one actor per CPU, each making whole books.
    with local_ray(num_cpus=2) as address:
        args = [
            "library",
            stories,
            "--out",
            out,
            "--ray",
            address,
            *options(tiny_sd, tiny_ner, tiny_qa, tiny_nli),
        ]
        done = run_cli(*args, timeout=900)
        check_library_run(done, out, reference)
        assert "Ray (2 CPUs, 0 GPUs, 2 book makers)" in said(done)

        before = {name: cache_times(out / name) for name in GOOD}
        rerun = run_cli(*args, timeout=600)
        check_rerun_paints_nothing(rerun, out, before)

        # The stages split as on a cluster with GPUs: planning and layout as tasks on one CPU,
        # painting on an actor holding the other.
        split_out = tmp_path / "split"
        report = make_library(
            stories, split_out, RenderSettings(model=str(tiny_sd), steps=2, device="cpu", consistency="seed"),
            PlanOptions(seed=11, words_per_page=60, ner_model=str(tiny_ner), qa_model=str(tiny_qa), nli_model=str(tiny_nli)),
            ray_address=address, split_stages=True, progress=False,
        )  # fmt: skip
        assert report.where == "Ray (2 CPUs, 0 GPUs, 1 painter)"
        assert [book.name for book in report.failed] == ["broken"]
        for name in GOOD:
            assert page_pictures(split_out / name) == page_pictures(reference / name)


def test_a_plan_of_another_version_of_the_story_fails_that_story_only(tiny_sd, tmp_path):
    from fairytale.library import make_library
    from tests.render_support import make_plan, write_plan

    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "tale.txt").write_text("Once upon a time there was a fox.", encoding="utf-8")
    (tmp_path / "books" / "tale").mkdir(parents=True)
    plan = make_plan(pages=1)
    plan.source.sha256 = "0" * 64  # planned from some other text
    write_plan(tmp_path / "books" / "tale", plan)
    before = (tmp_path / "books" / "tale" / "plan.json").read_bytes()

    report = make_library(
        stories,
        tmp_path / "books",
        RenderSettings(model=str(tiny_sd), steps=2, device="cpu", consistency="seed"),
        progress=False,
    )
    (outcome,) = report.books
    assert outcome.status == "failed"
    assert "was planned from another version of tale.txt" in outcome.error
    assert (tmp_path / "books" / "tale" / "plan.json").read_bytes() == before  # kept as it was


def test_a_full_disk_stops_the_library_starting_books(tiny_sd, tmp_path, monkeypatch):
    """The disk fills up while book a paints: a fails naming the file, and b and c are not
    started (each would paint a picture only to fail the same way) but said to be waiting for
    space; nothing is locked, and the command's last line says the disk is full."""
    import errno

    from PIL import Image

    from fairytale.book_lock import book_is_busy
    from tests.render_support import make_plan, write_plan

    stories, books = tmp_path / "stories", tmp_path / "books"
    stories.mkdir()
    for name in "abc":
        (stories / f"{name}.txt").write_text("Zoë went to the sea.\n", encoding="utf-8")
        write_plan(books / name, make_plan(2))
    tried = []

    def full(self, fp, *args, **kwargs):
        tried.append(Path(fp).parent.parent.name)  # BOOKS/NAME/cache/picture
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    settings = RenderSettings(model=str(tiny_sd), steps=2, device="cpu", consistency="seed", batch_size=1)
    report = make_library(stories, books, settings, progress=False)
    assert set(tried) == {"a"}
    a, b, c = report.books
    assert (
        a.status == "failed" and "No space left on device" in a.error and a.error.startswith("Cannot write ")
    )
    assert (b.status, b.error) == (c.status, c.error) == ("failed", NOT_STARTED_DISK_FULL)
    assert not any(book_is_busy(books / name) for name in "abc")

    monkeypatch.setattr("fairytale.model_check.ensure", lambda *args, **kwargs: None)  # planned already
    args = ["library", stories, "--out", books, "--model", tiny_sd, "--steps", 2, "--device", "cpu"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--consistency", "seed", "--quiet"]])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert said(result).endswith(
        "3 of 3 stories failed: a, b, c (the disk is full: free some space, then run the same command again)"
    ), said(result)


def test_two_stories_that_would_make_one_book_are_refused(tmp_path):
    (tmp_path / "fox.txt").write_text("A fox.", encoding="utf-8")
    (tmp_path / "fox.TXT").write_text("Another fox.", encoding="utf-8")
    result = CliRunner().invoke(app, ["library", str(tmp_path), "--out", str(tmp_path / "books")])
    assert result.exit_code == 1
    assert "Two stories would make the same book: fox" in said(result)


def test_a_worker_told_one_thread_encodes_the_pictures_of_its_pdf_on_one_thread(
    tiny_sd, tmp_path, monkeypatch
):
    """`--threads 1` is one core's worth of work: the PDF's pictures are not scaled and encoded
    on a thread per CPU beside it."""
    import concurrent.futures

    from fairytale.files import sha256_file
    from fairytale.pdf import writer
    from tests.render_support import make_plan, write_plan

    pools = []

    class CountingPool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(writer, "ThreadPoolExecutor", CountingPool)
    monkeypatch.setattr(writer, "PICTURE_THREADS", writer.PICTURE_THREADS)  # restored afterwards
    monkeypatch.setattr("os.cpu_count", lambda: 4)  # as on a machine with more cores than threads asked
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave this test process's threads be
    stories = tmp_path / "stories"
    stories.mkdir()
    story = stories / "tale.txt"
    story.write_text("Once upon a time there was a fox.", encoding="utf-8")
    plan = make_plan(pages=2)
    plan.source.sha256 = sha256_file(story)  # planned already: only painting and layout run
    (tmp_path / "books" / "tale").mkdir(parents=True)
    write_plan(tmp_path / "books" / "tale", plan)

    report = make_library(
        stories,
        tmp_path / "books",
        RenderSettings(model=str(tiny_sd), steps=2, device="cpu", consistency="seed"),
        threads=1,
        progress=False,
    )
    assert [book.status for book in report.books] == ["made"], report.books
    assert pools and set(pools) == {1}


def test_a_pool_worker_ends_without_tearing_its_modules_down(tmp_path):
    """A worker process of `--workers N` ends as soon as its exit handlers ran: the library
    does not wait seconds for torch, flair and diffusers to be torn down module by module."""
    import subprocess
    import sys

    from tests.library_support import cli_env

    witness = tmp_path / "torn-down"
    child = (
        "import multiprocessing, sys\n"
        "from fairytale.library import PlanOptions, _start_worker\n"
        "from fairytale.render import RenderSettings\n"
        "class Witness:\n"
        "    def __del__(self, open=open, path=sys.argv[1]):  # builtins are gone by then\n"
        "        open(path, 'w').close()\n"
        "witness = Witness()  # deleted (and the file written) only if the interpreter tears down\n"
        "_start_worker(RenderSettings(device='cpu'), PlanOptions(), 1, multiprocessing.Value('i', 0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(witness)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not witness.exists()


def test_names_and_errors_holding_brackets_are_printed_as_they_are(capsys):
    """A story's name or error is the user's text: "[/b]" in it is printed, not read as markup
    (which raised and abandoned the books still to make)."""
    from fairytale.cli.library import print_report
    from fairytale.library import BookOutcome, LibraryProgress, LibraryReport

    failed = BookOutcome(
        "w[/b]", Path("w[/b].pdf"), "failed", error="page 1 lists an unknown character '[/b]'"
    )
    made = BookOutcome("a[red]b", Path("a[red]b.pdf"), "made", pages=2, painted=2)
    with LibraryProgress(2) as progress:
        progress.done(failed)
        progress.done(made)
    print_report(LibraryReport(books=[failed, made], seconds=1.0, where="here"))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "w[/b]: page 1 lists an unknown character '[/b]'" in text and "a[red]b" in text


def test_a_ray_address_where_nothing_answers_is_one_line_at_once():
    """Ray retries an unreachable cluster for many minutes; the library asks first (127.0.0.1 only)."""
    import socket

    from fairytale.errors import FairytaleError
    from fairytale.library_ray import _check_reachable

    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(
        FairytaleError, match=f"No Ray cluster at '127.0.0.1:{port}' \\(nothing answers there"
    ):
        _check_reachable(f"127.0.0.1:{port}")
    with socket.create_server(("127.0.0.1", 0)) as listening:
        _check_reachable(f"127.0.0.1:{listening.getsockname()[1]}")  # answers: Ray takes it from here
    _check_reachable("auto")


@pytest.mark.parametrize("painters", [0, -1])
def test_painters_must_be_at_least_one(painters, tmp_path):
    """No painter would leave every book waiting for one (0 was taken as "the default")."""
    from fairytale.errors import FairytaleError

    with pytest.raises(FairytaleError, match=f"--painters must be at least 1, not {painters}"):
        make_library(STORIES, tmp_path, RenderSettings(), ray_address="127.0.0.1:1", painters=painters)


def test_a_line_per_worker_names_its_book_and_pages_and_goes_when_the_book_is_done():
    """What `--workers N` shows while books are made: which book each worker is on, its pages
    painted so far, and nothing of a book once it is done (a worker's next book takes its line)."""
    import io

    from rich.console import Console

    from fairytale.library import BookOutcome, LibraryProgress

    screen = io.StringIO()
    with LibraryProgress(3, console=Console(file=screen, force_terminal=True, width=120)) as view:
        view.working(1, "ginger")
        view.working(2, "zoe")
        view.working(2, "zoe", 3, 12)
        assert view.in_hand == {1: "ginger", 2: "zoe: painting 3/12"}
        lines = [task.description for task in view._progress.tasks]
        assert lines == ["Books", "  worker 1 · ginger", "  worker 2 · zoe"]
        zoe = view._progress.tasks[2]
        assert (zoe.completed, zoe.total, zoe.fields["stages"]) == (3, 12, "painting pages")

        view.working(1, "tom")  # worker 1 took its next book before ginger's outcome was read
        view.done(BookOutcome("ginger", Path("ginger.pdf"), "made", pages=2, painted=2))
        assert view.in_hand == {1: "tom", 2: "zoe: painting 3/12"}
        view.done(BookOutcome("zoe", Path("zoe.pdf"), "failed", error="no"))
        assert view.in_hand == {1: "tom"}
        assert [task.description for task in view._progress.tasks] == ["Books", "  worker 1 · tom"]
    assert view._progress.tasks[0].description == "Books" and len(view._progress.tasks) == 1
    assert "worker 2 · zoe" in screen.getvalue()


def test_the_pool_workers_shared_ints_show_who_makes_which_book():
    """A pool worker writes, for the book it took, its number and its pages (painted, to paint);
    the library's process reads them into the view (no terminal needed)."""
    from fairytale.library import LibraryBook, LibraryProgress, page_counter, show_in_hand

    books = [LibraryBook(Path(f"{name}.txt"), Path(f"{name}.pdf")) for name in "abc"]
    flags = [0, 0, 0] * 3
    counter = page_counter(lambda painted, to_paint: flags.__setitem__(slice(4, 6), [painted, to_paint]))
    flags[3] = 2  # worker 2 took b
    counter.start_pages(5)
    counter.pages_done(2, 1.0)
    counter.pages_done(1, 1.0)
    flags[6] = 1  # worker 1 took c: not painting yet
    view = LibraryProgress(3, show=False)
    show_in_hand(flags, list(enumerate(books)), view)
    assert view.in_hand == {2: "b: painting 3/5", 1: "c"}


def test_the_worker_of_this_process_says_which_book_it_makes_and_its_pages(tiny_sd, tmp_path, monkeypatch):
    from fairytale.library import LibraryProgress
    from tests.render_support import make_plan, write_plan

    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "tale.txt").write_text("Once upon a time there was a fox.", encoding="utf-8")
    plan = make_plan(pages=2)
    plan.source.sha256 = ""
    write_plan(tmp_path / "books" / "tale", plan)
    seen: list[dict[int, str]] = []
    working, done = LibraryProgress.working, LibraryProgress.done

    def spy_working(self, *args):
        working(self, *args)
        seen.append(dict(self.in_hand))

    def spy_done(self, outcome):
        done(self, outcome)
        seen.append(dict(self.in_hand))

    monkeypatch.setattr(LibraryProgress, "working", spy_working)
    monkeypatch.setattr(LibraryProgress, "done", spy_done)
    report = make_library(
        stories,
        tmp_path / "books",
        RenderSettings(model=str(tiny_sd), steps=2, device="cpu", consistency="seed"),
        progress=False,
    )
    assert [book.status for book in report.books] == ["made"], report.books
    painted = report.books[0].painted
    assert seen[0] == {1: "tale"}
    assert {1: f"tale: painting {painted}/{painted}"} in seen
    assert seen[-1] == {}  # the book is done: no line left


@pytest.mark.slow
def test_pool_workers_lines_name_their_books_and_none_is_left(tiny_sd, tmp_path, monkeypatch):
    """Two worker processes: every line the view got names a worker (1 or 2) and one of the books;
    once they are made, no line is left. (Which states the view catches depends on timing.)"""
    from fairytale.library import LibraryProgress
    from tests.render_support import make_plan, write_plan

    stories = tmp_path / "stories"
    stories.mkdir()
    for name in ("a", "b", "c"):
        (stories / f"{name}.txt").write_text("Once upon a time there was a fox.", encoding="utf-8")
        plan = make_plan(pages=2)
        plan.source.sha256 = ""
        write_plan(tmp_path / "books" / name, plan)
    calls: list[tuple] = []
    views: list[LibraryProgress] = []
    working = LibraryProgress.working

    def spy_working(self, *args):
        working(self, *args)
        calls.append(args)
        views.append(self)

    monkeypatch.setattr(LibraryProgress, "working", spy_working)
    report = make_library(
        stories,
        tmp_path / "books",
        RenderSettings(model=str(tiny_sd), steps=2, device="cpu", consistency="seed"),
        workers=2,
        threads=1,
        progress=False,
    )
    assert [book.status for book in report.books] == ["made"] * 3, report.books
    assert all(worker in (1, 2) and book in ("a", "b", "c") for worker, book, *_ in calls)
    assert all(view.in_hand == {} for view in views)
