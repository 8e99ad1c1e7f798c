"""Slow: every story in tests/data made into a book by `fairytale book` with the tiny models,
the real planner included, and the PDF read back as a reader would."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.plan import load_plan
from tests.render_support import pdf_fonts, pdf_page_texts, pdf_pictures, squash

STORIES = sorted((Path(__file__).parent / "data" / "stories").glob("*.txt"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("story", STORIES, ids=[s.stem for s in STORIES])
def test_every_story_becomes_a_complete_book(story, tiny_ner, tiny_qa, tiny_nli, tiny_sd, tiny_ip_adapter, tmp_path):
    pdf = tmp_path / f"{story.stem}.pdf"
    args = [  # the default consistency mode of sd14: portraits through IP-Adapter (the tiny one)
        "book", story, "-o", pdf, "--model", tiny_sd, "--ner-model", tiny_ner, "--qa-model", tiny_qa,
        "--nli-model", tiny_nli, "--steps", 2, "--device", "cpu", "--seed", 11, "--quiet",
        "--adapter-model", tiny_ip_adapter, "--adapter-encoder", tiny_ip_adapter,
    ]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output

    plan = load_plan(tmp_path / story.stem / "plan.json")
    assert plan.seed == 11 and all(page.seed is not None for page in plan.pages)

    # cover + title page + one page per plan page, every word of the story on them, in order
    texts = pdf_page_texts(pdf)
    assert len(texts) == len(plan.pages) + 2
    printed = squash(" ".join(texts))  # a title taken from the first line is on the cover
    position = 0
    for word in story.read_text(encoding="utf-8").split():
        found = printed.find(word, position)
        assert found >= 0, f"{word!r} missing after character {position}"
        position = found + len(word)

    # fonts embedded; a picture on every story page, not blank
    assert all(embedded for _, _, embedded in pdf_fonts(pdf))
    pictures = pdf_pictures(pdf)
    for page_pictures in pictures[2:]:
        assert page_pictures, "a story page without its picture"
        assert all(p["std"] > 1 for p in page_pictures)

    # the mode recorded, and the portraits it painted from recorded in the plan
    from fairytale.render import load_manifest

    assert load_manifest(tmp_path / story.stem).settings["consistency"] == "adapter"
    assert all(c.reference is not None for c in plan.characters if c.main)
