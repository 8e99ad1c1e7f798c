"""Edits to a saved plan: descriptions recompose the prompts of their pages, hand prompts win
(now and in later edits, however they were written), learned tokens are listed and used, and a
bad edit changes nothing."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from fairytale.embeddings import save_embedding
from fairytale.errors import FairytaleError, PlanError
from fairytale.plan import load_plan
from fairytale.plan_edits import add_learned_token, edit_plan, find_character
from fairytale.planner import compose_prompt
from tests.render_support import make_plan, write_plan


def words(text: str) -> int:
    return len(text.split())


def composed_plan(pages: int = 4):
    """A plan whose prompts are all composed, as `fairytale plan` writes them."""
    plan = make_plan(pages)
    plan.characters[0].aliases = ["the girl"]
    for page in plan.pages:
        page.action = f"picture {page.number}"
        page.set_composed_prompt(compose_prompt(plan, page, words))
    return plan


def older_plan(pages: int = 4) -> dict:
    """The JSON of a composed plan as version 3 wrote it: prompts without fingerprints."""
    plan = make_plan(pages)
    plan.characters[0].aliases = ["the girl"]
    for page in plan.pages:
        page.action = f"picture {page.number}"
        page.prompt = compose_prompt(plan, page, words)
    data = json.loads(json.dumps(plan.model_dump(mode="json")))
    for page in data["pages"]:
        page.pop("composed", None)
    return {**data, "version": 3}


@pytest.fixture(params=["current", "version 3"])
def plan_file(request, tmp_path):
    """A plan of composed prompts: as this version writes it (with fingerprints), and as a
    plan of version 3 (without)."""
    if request.param == "current":
        return write_plan(tmp_path, composed_plan())
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(older_plan(), indent=2), encoding="utf-8")
    return path


#: The warning an edit gives for the pages that kept a hand-written prompt (a UserWarning).
KEPT = UserWarning


def edit_by_hand(plan_file, number: int, prompt: str) -> None:
    """Change a page's prompt as a person does in a text editor: only the prompt's text."""
    data = json.loads(plan_file.read_text(encoding="utf-8"))
    data["pages"][number - 1]["prompt"] = prompt
    plan_file.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_a_new_description_recomposes_only_that_characters_pages(plan_file):
    before = load_plan(plan_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing hand-written here: no warning
        plan = edit_plan(plan_file, descriptions={"the girl": "a girl in a yellow raincoat"}, count_tokens=words)
    saved = load_plan(plan_file)
    assert saved == plan
    assert saved.character("zoe").description == "a girl in a yellow raincoat"
    for page, old in zip(saved.pages, before.pages, strict=True):
        if "zoe" in page.characters:
            assert "a girl in a yellow raincoat" in page.prompt
        else:
            assert page.prompt == old.prompt


def test_a_hand_written_prompt_wins_over_recomposition(plan_file):
    plan = edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, prompts={1: "  my own prompt "}, count_tokens=words)
    assert plan.pages[0].prompt == "my own prompt"
    assert "yellow raincoat" in plan.pages[2].prompt


def test_a_prompt_given_in_an_earlier_edit_survives_a_new_description(plan_file):
    edit_plan(plan_file, prompts={1: "Zoë on the lighthouse stairs, lantern in hand"}, count_tokens=words)
    with pytest.warns(KEPT, match=r"Page 1 kept .*reset_prompts=\[1\]"):
        plan = edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, count_tokens=words)
    assert plan.pages[0].prompt == "Zoë on the lighthouse stairs, lantern in hand"
    assert "yellow raincoat" in plan.pages[2].prompt


def test_a_prompt_edited_in_a_text_editor_survives_a_new_description(plan_file):
    edit_by_hand(plan_file, 3, "Zoë climbs the winding stairs, watercolor")
    with pytest.warns(KEPT, match="Page 3 kept"):
        plan = edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, count_tokens=words)
    assert plan.pages[2].prompt == "Zoë climbs the winding stairs, watercolor"
    assert "yellow raincoat" in plan.pages[0].prompt


def test_reset_prompts_composes_a_hand_written_prompt_again(plan_file):
    edit_by_hand(plan_file, 1, "my own prompt")
    with pytest.warns(KEPT):
        edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, count_tokens=words)
    plan = edit_plan(plan_file, reset_prompts=[1], count_tokens=words)
    assert "yellow raincoat" in plan.pages[0].prompt
    with pytest.raises(PlanError, match="Page 2 is given a prompt and asked to compose one"):
        edit_plan(plan_file, prompts={2: "x"}, reset_prompts=[2], count_tokens=words)
    with pytest.raises(PlanError, match="No page 7"):
        edit_plan(plan_file, reset_prompts=[7], count_tokens=words)


def test_an_older_plan_keeps_its_hand_written_prompts_and_recomposes_the_composed_ones(tmp_path):
    # a version-3 plan has no fingerprints: page 1 is as composed, page 3 a person wrote
    data = older_plan()
    data["pages"][2]["prompt"] = "Zoë climbs the winding stairs"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(data), encoding="utf-8")
    with pytest.warns(KEPT, match="Page 3 kept"):
        plan = edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, count_tokens=words)
    assert plan.version == 4
    assert "yellow raincoat" in plan.pages[0].prompt and plan.pages[0].prompt_is_composed()
    assert plan.pages[2].prompt == "Zoë climbs the winding stairs" and not plan.pages[2].prompt_is_composed()


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


def test_the_kept_pages_warning_is_its_own_category(plan_file):
    from fairytale.plan_edits import HandWrittenPromptsKept

    edit_by_hand(plan_file, 1, "my own prompt")
    with pytest.warns(HandWrittenPromptsKept, match=r"reset_prompts=\[1\]"):
        edit_plan(plan_file, descriptions={"zoe": "a girl in a yellow raincoat"}, count_tokens=words)


def test_a_learned_token_leaves_hand_written_prompts_alone(plan_file, tmp_path):
    edit_by_hand(plan_file, 2, "Father bakes croissants at dawn")
    style = tmp_path / "style.safetensors"
    save_embedding(style, "<book-style>", torch.randn(1, 32), family="sd1")
    with pytest.warns(KEPT, match="Page 2 kept"):
        plan = add_learned_token(plan_file, style, count_tokens=words)
    assert plan.pages[1].prompt == "Father bakes croissants at dawn"
    assert all("<book-style>" in p.prompt for p in plan.pages if p.number != 2)


def test_a_missing_or_broken_embedding_changes_nothing(plan_file, tmp_path):
    before = plan_file.read_bytes()
    with pytest.raises(PlanError, match="Embedding file not found"):
        add_learned_token(plan_file, tmp_path / "none.safetensors", character="zoe", count_tokens=words)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a tensor file")
    with pytest.raises(FairytaleError):
        add_learned_token(plan_file, broken, character="zoe", count_tokens=words)
    assert plan_file.read_bytes() == before
