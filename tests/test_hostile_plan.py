"""Hostile plan files and story inputs: each ends in one clear line, and nothing is lost.

Issue 11, 3.9 and 3.11: deeply nested JSON, huge numbers, booleans posing as numbers, files
that never end (/dev/zero, a FIFO, a 256 MB sparse file), and `-o` naming the story itself.
"""

from __future__ import annotations

import json
import os
import tracemalloc

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.errors import FairytaleError, PlanError
from fairytale.plan import MAX_PLAN_BYTES, dump_plan, load_plan, parse_plan
from fairytale.story import MAX_BYTES, read_story
from tests.conftest import STORIES
from tests.test_plan import make_plan

STORY = STORIES / "ginger_giraffe.txt"


@pytest.fixture(scope="module")
def tiny_args(tiny_ner, tiny_qa, tiny_nli, tiny_sd):
    return [
        "--ner-model",
        str(tiny_ner),
        "--qa-model",
        str(tiny_qa),
        "--nli-model",
        str(tiny_nli),
        "--model",
        str(tiny_sd),
    ]


def _one_line(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and len(message) < 300


def _plan_data() -> dict:
    return json.loads(dump_plan(make_plan()))


def test_deeply_nested_json_is_one_line():
    for text in ("[" * 100_000 + "]" * 100_000, '{"title": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        with pytest.raises(PlanError, match="nested too deeply") as info:
            parse_plan(text)
        assert _one_line(str(info.value))


def test_a_number_of_100000_digits_is_one_line():
    text = dump_plan(make_plan()).replace('"seed": 42', '"seed": ' + "9" * 100_000, 1)
    with pytest.raises(PlanError, match="too many digits") as info:
        parse_plan(text)
    assert _one_line(str(info.value))


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d.update(seed=True), "seed"),
        (lambda d: d["pages"][0].update(seed=False), "pages.0.seed"),
        (lambda d: d["pages"][0].update(number=True), "pages.0.number"),
        (lambda d: d["pages"][0].update(seed=1.0), "pages.0.seed"),
        (lambda d: d["pages"][0].update(seed="7"), "pages.0.seed"),
        (lambda d: d["characters"][0].update(mentions=True), "characters.0.mentions"),
        (lambda d: d["characters"][0].update(main="yes"), "characters.0.main"),
        (lambda d: d["characters"][0].update(main=1), "characters.0.main"),
    ],
)
def test_numbers_and_flags_are_strict(mutate, where):
    data = _plan_data()
    mutate(data)
    with pytest.raises(PlanError) as info:
        parse_plan(json.dumps(data))
    assert f"{where}:" in str(info.value) and _one_line(str(info.value))


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_devices_and_fifos_are_refused_before_reading(tmp_path, special):
    path = special if special.startswith("/") else tmp_path / "story.fifo"
    if special == "fifo":
        os.mkfifo(path)  # nobody writes to it: opening it the usual way would wait forever
    with pytest.raises(FairytaleError, match="not a regular file"):
        read_story(path)
    with pytest.raises(PlanError, match="not a regular file"):
        load_plan(path)


def test_a_huge_file_is_not_read_whole(tmp_path):
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as handle:  # sparse: 256 MB that take no disk
        handle.truncate(256 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(FairytaleError, match="too long"):
            read_story(huge)
        with pytest.raises(PlanError, match="too large"):
            load_plan(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * max(MAX_BYTES, MAX_PLAN_BYTES)  # the limit and one byte, not the file


def test_plan_refuses_to_overwrite_its_own_story(tmp_path, tiny_args):
    story = tmp_path / "same.txt"
    original = STORY.read_bytes()
    story.write_bytes(original)
    (tmp_path / "link.txt").symlink_to(story)
    os.link(story, tmp_path / "hard.txt")
    runner = CliRunner()
    for output in (story, tmp_path / "." / "same.txt", tmp_path / "link.txt", tmp_path / "hard.txt"):
        result = runner.invoke(app, ["plan", str(story), "-o", str(output), "--force", *tiny_args])
        assert result.exit_code == 1, result.output
        assert "is the story file itself" in result.output and "Traceback" not in result.output
        assert story.read_bytes() == original


def test_book_refuses_to_overwrite_its_own_story(tmp_path, tiny_args):
    """book writes the PDF and, in the book folder, plan.json and manifest.json: none of them may
    be the story."""
    original = STORY.read_bytes()
    runner = CliRunner()
    (tmp_path / "b").mkdir()
    for story, output in ((tmp_path / "s.pdf", tmp_path / "s.pdf"), (tmp_path / "b" / "plan.json", tmp_path / "b.pdf")):
        story.write_bytes(original)
        result = runner.invoke(app, ["book", str(story), "-o", str(output), "--force", "--steps", "1", *tiny_args])
        assert result.exit_code == 1, result.output
        assert "is the story file itself" in result.output and "Traceback" not in result.output
        assert story.read_bytes() == original


def test_plan_output_names_are_printed_as_written(tmp_path, tiny_args):
    out = tmp_path / "plan [draft].json"
    result = CliRunner().invoke(app, ["plan", str(STORY), "-o", str(out), "--seed", "1", *tiny_args])
    assert result.exit_code == 0, result.output
    assert "plan [draft].json" in result.output.replace("\n", "")
    assert load_plan(out).seed == 1


def test_the_same_file_is_refused_before_asking_for_force(tmp_path, tiny_args):
    story = tmp_path / "same.txt"
    story.write_bytes(STORY.read_bytes())
    result = CliRunner().invoke(app, ["plan", str(story), "-o", str(story), *tiny_args])
    assert (
        result.exit_code == 1
        and "is the story file itself" in result.output
        and "--force" not in result.output
    )


def test_plan_of_dev_zero_is_one_line(tmp_path, tiny_args):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", "/dev/zero", "-o", str(out), *tiny_args])
    assert result.exit_code == 1 and "not a regular file" in result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("picture", ["../../../etc/passwd", "/tmp/x", "ABCDEF" * 6, "0" * 31])
def test_a_locked_pages_picture_names_only_a_cache_key(picture):
    """A shared plan cannot point a locked page at a file outside the book's cache."""
    data = _plan_data()
    data["pages"][0].update(locked=True, picture=picture)
    with pytest.raises(PlanError) as info:
        parse_plan(json.dumps(data))
    assert "pages.0.picture:" in str(info.value) and _one_line(str(info.value))
    data["pages"][0]["picture"] = "0123456789abcdef" * 2
    assert parse_plan(json.dumps(data)).pages[0].picture == "0123456789abcdef" * 2


def test_a_manifest_that_is_not_text_is_one_line(tmp_path):
    from fairytale.render import load_manifest

    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(FairytaleError, match="not a valid manifest: not UTF-8 text") as info:
        load_manifest(tmp_path)
    assert _one_line(str(info.value))


def test_names_that_are_not_utf8_are_refused_before_any_work(tmp_path, tiny_args):
    """Linux names may hold any bytes; plans, manifests and PDFs hold text: one line, up front."""
    from fairytale.files import check_output_path

    odd = tmp_path / os.fsdecode(b"bad\xff")
    odd.mkdir()
    story = odd / "s.txt"
    story.write_bytes(STORY.read_bytes())
    result = CliRunner().invoke(app, ["plan", str(story), "-o", str(tmp_path / "p.json"), *tiny_args])
    assert result.exit_code == 1 and "bad\\xff/s.txt: the name is not valid UTF-8 text" in result.output
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(FairytaleError, match="not valid UTF-8 text"):
        check_output_path(odd / "book.pdf")
    with pytest.raises(FairytaleError, match="not valid UTF-8 text"):
        load_plan(odd / "plan.json")
