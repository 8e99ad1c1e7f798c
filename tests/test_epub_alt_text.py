"""Alt text written from the plan: who is on the page, what they do, where; the plan's own wins."""

from __future__ import annotations

from fairytale.plan import Character
from fairytale.publish.alt_text import alt_text
from tests.render_support import make_plan


def test_who_what_where_and_when():
    plan = make_plan(2)
    page = plan.pages[0]
    page.characters = ["zoe", "dad"]
    page.action = "climb the winding stairs"
    page.setting = "the old lighthouse"
    page.time_of_day = "night"
    page.mood = "brave"
    assert alt_text(plan, page) == (
        "Zoë (a girl) and Father (a man) climb the winding stairs in the old lighthouse at night; the mood is brave."
    )


def test_a_setting_that_already_says_where_is_kept_and_a_kind_in_the_name_is_not_repeated():
    plan = make_plan(1)
    plan.characters.append(Character(id="owl", name="Old Owl", kind="owl"))
    page = plan.pages[0]
    page.characters = ["owl"]
    page.setting = "at the edge of the wood"
    assert alt_text(plan, page) == "Old Owl at the edge of the wood."


def test_with_nothing_but_the_text_the_words_are_quoted():
    plan = make_plan(1)
    page = plan.pages[0]
    page.characters = []
    description = alt_text(plan, page)
    assert description == "Picture for the words: “Zoë lived in a little café by the sea.”"
    page.characters = []
    page.setting = "a café by the sea"
    assert alt_text(plan, page).startswith("In a café by the sea, for the words “Zoë lived")


def test_the_plans_own_alt_text_wins_with_its_spaces_tidied():
    plan = make_plan(1)
    page = plan.pages[0]
    page.alt_text = "  Zoë waves\n from the   red door. "
    assert alt_text(plan, page) == "Zoë waves from the red door."
    page.alt_text = "   "
    assert alt_text(plan, page).startswith("Zoë (a girl)")
