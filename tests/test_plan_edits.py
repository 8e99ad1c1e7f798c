"""Edits to a saved plan: descriptions recompose the prompts of their pages, hand prompts win,
learned tokens are listed and used, and a bad edit changes nothing."""

from __future__ import annotations

import pytest
import torch

from fairytale.embeddings import save_embedding
from fairytale.errors import FairytaleError, PlanError
from fairytale.plan import load_plan
from fairytale.plan_edits import add_learned_token, edit_plan, find_character
from tests.render_support import make_plan, write_plan


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture()
def plan_file(tmp_path):
    plan = make_plan(4)
    plan.characters[0].aliases = ["the girl"]
    return write_plan(tmp_path, plan)


def test_a_new_description_recomposes_only_that_characters_pages(plan_file):
    plan = edit_plan(plan_file, descriptions={"the girl": "a girl in a yellow raincoat"}, count_tokens=words)
    saved = load_plan(plan_file)
    assert saved == plan
    assert saved.character("zoe").description == "a girl in a yellow raincoat"
    for page in saved.pages:
        if "zoe" in page.characters:
            assert "a girl in a yellow raincoat" in page.prompt
        else:
            assert page.prompt == f"a girl and a lighthouse by the sea, picture {page.number}"


def test_a_hand_written_prompt_wins_over_recomposition(plan_file):
    plan = edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, prompts={1: "  my own prompt "}, count_tokens=words)
    assert plan.pages[0].prompt == "my own prompt"
    assert "yellow raincoat" in plan.pages[2].prompt


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (dict(prompts={9: "x"}), "No page 9"),
        (dict(prompts={1: " "}), "prompt of page 1 is empty"),
        (dict(descriptions={"nobody": "x"}), "No character 'nobody'"),
        (dict(descriptions={"zoe": ""}), "description of 'zoe' is empty"),
    ],
)
def test_bad_edits_are_refused_and_change_nothing(plan_file, edit, message):
    before = plan_file.read_bytes()
    with pytest.raises(PlanError, match=message):
        edit_plan(plan_file, count_tokens=words, **edit)
    assert plan_file.read_bytes() == before


def test_find_character_by_id_name_or_alias():
    plan = make_plan(1)
    plan.characters[0].aliases = ["the girl"]
    assert find_character(plan, "ZOE").id == "zoe"
    assert find_character(plan, "Zoë").id == "zoe"
    assert find_character(plan, "the GIRL").id == "zoe"
    assert find_character(plan, "father").id == "dad"


def test_a_learned_token_is_listed_and_drawn(plan_file, tmp_path):
    embedding = tmp_path / "tokens" / "zoe.safetensors"
    embedding.parent.mkdir()
    save_embedding(embedding, "<zoe>", torch.randn(1, 32), family="sd1")

    plan = add_learned_token(plan_file, embedding, character="zoe", count_tokens=words)
    assert plan.character("zoe").token == "<zoe>"
    assert [(e.token, e.path, e.family) for e in plan.embeddings] == [("<zoe>", "tokens/zoe.safetensors", "sd1")]
    assert all("<zoe>" in p.prompt for p in plan.pages if "zoe" in p.characters)

    # the same token again replaces its entry; a style token reaches every page
    style = tmp_path / "style.safetensors"
    save_embedding(style, "<book-style>", torch.randn(1, 32), family="sd1")
    plan = add_learned_token(plan_file, embedding, character="zoe", count_tokens=words)
    plan = add_learned_token(plan_file, style, count_tokens=words)
    assert [e.token for e in plan.embeddings] == ["<zoe>", "<book-style>"]
    assert plan.style.token == "<book-style>" and all("<book-style>" in p.prompt for p in plan.pages)


def test_a_missing_or_broken_embedding_changes_nothing(plan_file, tmp_path):
    before = plan_file.read_bytes()
    with pytest.raises(PlanError, match="Embedding file not found"):
        add_learned_token(plan_file, tmp_path / "none.safetensors", character="zoe", count_tokens=words)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a tensor file")
    with pytest.raises(FairytaleError):
        add_learned_token(plan_file, broken, character="zoe", count_tokens=words)
    assert plan_file.read_bytes() == before
