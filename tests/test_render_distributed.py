"""Slow: one book painted by two processes under `accelerate launch` on the CPU."""

from __future__ import annotations

import pytest

from fairytale.book_lock import book_lock
from fairytale.render.distributed import Team
from tests.library_support import accelerate_launch, page_pictures, run_cli
from tests.render_support import make_plan, write_plan


def test_a_team_of_one_does_everything_itself():
    team = Team()
    assert (team.size, team.index, team.is_main) == (1, 0, True)
    assert team.share([1, 2, 3]) == [1, 2, 3]
    assert team.gather("x") == ["x"]
    assert team.lead(lambda: 42) == 42


@pytest.mark.slow
def test_two_processes_paint_the_same_book_as_one(tiny_sd, tmp_path):
    # Both runs use the same folder (the first is moved aside after): reportlab names a placed
    # picture after its file path, so only books made at the same path can be the same bytes.
    book, alone = tmp_path / "book", tmp_path / "alone"
    options = ["--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--device", "cpu", "--batch-size", 2]
    book.mkdir()
    write_plan(book, make_plan(pages=5))
    one = run_cli("render", book / "plan.json", "-o", book / "book.pdf", *options)
    assert one.returncode == 0, one.stderr[-3000:]
    book.rename(alone)
    book.mkdir()
    write_plan(book, make_plan(pages=5))
    two = run_cli(
        "render", book / "plan.json", "-o", book / "book.pdf", *options, launcher=accelerate_launch(2)
    )
    assert two.returncode == 0, two.stderr[-3000:]

    # the pages were split (3 + 2), one process laid out the book and summarised it
    assert "5 pages to paint, shared by 2 processes (3 in this one)" in two.stderr
    assert two.stderr.count("5 painted, 0 reused") == 1
    # same pictures, bit for bit, and the same PDF, byte for byte (reportlab's invariant mode)
    assert page_pictures(book / "book") == page_pictures(alone / "book")
    assert len(page_pictures(book / "book")) == 5
    assert (book / "book.pdf").read_bytes() == (alone / "book.pdf").read_bytes()

    # run again: nothing left to paint, the book is laid out again
    again = run_cli(
        "render", book / "plan.json", "-o", book / "book.pdf", *options, launcher=accelerate_launch(2)
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 painted, 5 reused" in again.stderr


@pytest.mark.slow
def test_a_team_respects_another_jobs_lock(tiny_sd, tmp_path):
    plan_path = write_plan(tmp_path)
    with book_lock(tmp_path / "book"):  # another job is painting this book
        done = run_cli(
            "render", plan_path, "-o", tmp_path / "book.pdf", "--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--device", "cpu",
            launcher=accelerate_launch(2),
        )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("is being painted by another fairytale job") == 1  # said once, by process 0
    assert not (tmp_path / "book.pdf").exists()
    assert not (tmp_path / "book" / "cache").exists()


@pytest.mark.slow
def test_process_0_paints_the_portraits_the_team_paints_from(tiny_unclip, tiny_safety_checker, tmp_path):
    from fairytale.plan import load_plan

    options = [
        "--backend", "unclip", "--model", tiny_unclip, "--safety-model", tiny_safety_checker,
        "--steps", 2, "--device", "cpu", "--batch-size", 2,
    ]  # fmt: skip
    books = {}
    for name, launcher in (("alone", None), ("team", accelerate_launch(2))):
        folder = tmp_path / name
        folder.mkdir()
        write_plan(folder, make_plan(pages=4))
        done = run_cli("render", folder / "plan.json", "-o", folder / "book.pdf", *options, launcher=launcher)
        assert done.returncode == 0, done.stderr[-3000:]
        books[name] = (folder, done.stderr)

    (alone, _), (team, said) = books["alone"], books["team"]
    assert said.count("Painting reference portraits") == 1  # by process 0 only
    assert "4 pages to paint, shared by 2 processes" in said
    recorded = load_plan(team / "plan.json").character("zoe").reference
    assert recorded is not None and recorded == load_plan(alone / "plan.json").character("zoe").reference
    assert (team / "book" / "references" / "zoe.png").read_bytes() == (
        alone / "book" / "references" / "zoe.png"
    ).read_bytes()
    assert page_pictures(team / "book") == page_pictures(alone / "book")


@pytest.mark.slow
def test_every_pages_drift_scores_reach_the_manifest(tiny_sd, tiny_clip, tmp_path):
    """--drift-check in a team: each process scores and repaints its own pages; the manifest
    that process 0 writes holds every page's likeness scores and drift repaints, as one
    process alone writes them."""
    from fairytale.render import load_manifest

    options = [
        "--model", tiny_sd, "--consistency", "seed", "--steps", 2, "--device", "cpu", "--batch-size", 2,
        "--drift-check", 100, "--max-drift-repaints", 1, "--clip-model", tiny_clip,
    ]  # fmt: skip
    plan = make_plan(pages=4)
    plan.character("dad").main = True  # every page shows a character with a portrait
    manifests = {}
    for name, launcher in (("alone", None), ("team", accelerate_launch(2))):
        folder = tmp_path / name
        folder.mkdir()
        write_plan(folder, plan)
        done = run_cli("render", folder / "plan.json", "-o", folder / "book.pdf", *options, launcher=launcher)
        assert done.returncode == 0, done.stderr[-3000:]
        manifests[name] = load_manifest(folder / "book")
    team = manifests["team"]
    assert [p.number for p in team.pages if p.likeness] == [1, 2, 3, 4]  # pages of both processes
    assert all(p.drift_repaints == 1 for p in team.pages)  # nothing reaches 100: one repaint each
    assert sum("drifted from its portrait" in w for w in team.warnings) == 4
    for mine, alone in zip(team.pages, manifests["alone"].pages, strict=True):
        assert (mine.likeness, mine.drift_repaints, mine.key) == (alone.likeness, alone.drift_repaints, alone.key)
