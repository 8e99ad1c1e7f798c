"""`fairytale edit`: a new description recomposes the composed prompts of its pages and keeps the
ones a person wrote (with --prompt or in a text editor), saying so; --reset-prompt composes one
again; a bad edit is one line and changes nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fairytale.cli import app
from fairytale.plan import load_plan
from fairytale.planner import compose_prompt
from tests.render_support import make_plan, write_plan

runner = CliRunner()


@pytest.fixture()
def plan_file(tmp_path):
    plan = make_plan(4)
    for page in plan.pages:  # composed prompts, as `fairytale plan` writes them
        page.action = f"picture {page.number}"
        page.set_composed_prompt(compose_prompt(plan, page, lambda text: len(text.split())))
    return write_plan(tmp_path, plan)


def edit(plan_file, tiny_sd, *args: str):
    return runner.invoke(app, ["edit", str(plan_file), "--model", str(tiny_sd), *args])


def test_a_description_keeps_prompts_written_by_hand_and_says_how_to_compose_them(plan_file, tiny_sd):
    data = json.loads(plan_file.read_text(encoding="utf-8"))
    data["pages"][2]["prompt"] = "Zoë climbs the winding stairs"  # edited in a text editor
    plan_file.write_text(json.dumps(data, indent=2), encoding="utf-8")

    result = edit(plan_file, tiny_sd, "--describe", "zoe=a girl in a yellow raincoat")
    assert result.exit_code == 0, result.output
    assert "new composed prompts on pages 1" in result.output
    assert "page 3 keeps the prompt you wrote" in result.output and "--reset-prompt 3" in result.output
    plan = load_plan(plan_file)
    assert "yellow raincoat" in plan.pages[0].prompt
    assert plan.pages[2].prompt == "Zoë climbs the winding stairs"

    result = edit(plan_file, tiny_sd, "--reset-prompt", "3")
    assert result.exit_code == 0, result.output
    assert "yellow raincoat" in load_plan(plan_file).pages[2].prompt


def test_a_prompt_given_with_prompt_survives_a_later_description(plan_file, tiny_sd):
    result = edit(plan_file, tiny_sd, "--prompt", "2=Father bakes croissants at dawn")
    assert result.exit_code == 0, result.output
    result = edit(plan_file, tiny_sd, "-d", "father=a tall man with a flour-dusted apron")
    assert result.exit_code == 0, result.output
    assert "page 2 keeps the prompt you wrote" in result.output
    plan = load_plan(plan_file)
    assert plan.pages[1].prompt == "Father bakes croissants at dawn"
    assert "flour-dusted apron" in plan.pages[3].prompt


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Nothing to edit"),
        (["--describe", "zoe"], "--describe takes CHARACTER=TEXT"),
        (["--describe", "nobody=x"], "No character 'nobody'"),
        (["--prompt", "two=x"], "with a page number"),
        (["--reset-prompt", "9"], "No page 9"),
    ],
)
def test_bad_edits_are_one_line_and_change_nothing(plan_file, tiny_sd, args, message):
    before = plan_file.read_bytes()
    result = edit(plan_file, tiny_sd, *args)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert plan_file.read_bytes() == before


def test_a_missing_tokenizer_is_one_line_before_anything_changes(plan_file):
    before = plan_file.read_bytes()
    result = runner.invoke(app, ["edit", str(plan_file), "-d", "zoe=a girl in a yellow raincoat"])
    assert result.exit_code != 0 and "Missing model" in result.output and "fairytale models pull" in result.output
    assert "Traceback" not in result.output
    assert plan_file.read_bytes() == before
    # a prompt of your own needs no model
    result = runner.invoke(app, ["edit", str(plan_file), "-p", "1=Zoë at the café door"])
    assert result.exit_code == 0, result.output
    assert load_plan(plan_file).pages[0].prompt == "Zoë at the café door"
