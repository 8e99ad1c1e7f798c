"""The book plan file: round trip, validation, and one-line errors for bad files."""

from __future__ import annotations

import json

import pytest

from fairytale.errors import PlanError
from fairytale.plan import BookPlan, Character, Embedding, Page, dump_plan, load_plan, parse_plan, save_plan


def make_plan(**overrides) -> BookPlan:
    fields = dict(
        title="Ginger the Giraffe",
        seed=42,
        characters=[Character(id="ginger", name="Ginger", aliases=["the giraffe"], kind="giraffe")],
        pages=[
            Page(number=1, text="Ginger was tall.", characters=["ginger"], prompt="a tall giraffe", seed=1),
            Page(number=2, text="The owl blinked.", prompt="an owl", seed=2),
        ],
    )
    fields.update(overrides)
    return BookPlan(**fields)


def test_round_trip_is_lossless_and_human_readable(tmp_path):
    plan = make_plan(title="Zoë’s “café”")
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    text = path.read_text(encoding="utf-8")
    assert "Zoë’s “café”" in text  # not \u-escaped: a person edits this file
    assert load_plan(path) == plan
    data = json.loads(text)
    assert data["version"] == 4 and data["pages"][0]["text"] and data["characters"][0]["aliases"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(version=5), "plan version 5"),
        (lambda d: d["pages"][0].update(composed="not a hash"), "pages.0.composed"),
        (lambda d: d.update(version=0), "plan version 0"),
        (lambda d: d.update(version=True), "plan version True"),
        (lambda d: d.update(version="2"), "plan version '2'"),
        (lambda d: d.update(book_id=""), "book_id"),
        (lambda d: d.update(book_id=7), "book_id"),
        (lambda d: d.pop("version"), "plan version None"),
        (lambda d: d["pages"][0].update(seed="abc"), "pages.0.seed"),
        (lambda d: d["pages"][0].update(characters=["nobody"]), "unknown characters"),
        (lambda d: d["pages"][1].update(number=5), "numbered 1..2"),
        (lambda d: d["pages"][0].update(promt="typo"), "pages.0.promt"),
        (lambda d: d.update(pages=[]), "pages"),
        (lambda d: d["characters"][0].update(token="<ginger>"), "no embedding file"),
    ],
)
def test_invalid_plans_are_one_line_errors(tmp_path, mutate, message):
    data = json.loads(dump_plan(make_plan()))
    mutate(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "expected a JSON object"), (b"\xff\xfe\x00binary", "not UTF-8")],
)
def test_unreadable_plans(tmp_path, content, message):
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(PlanError, match=message):
        load_plan(path)


def test_missing_plan_file(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        load_plan(tmp_path / "nope.json")


def test_tokens_need_embeddings():
    plan = make_plan(embeddings=[Embedding(token="<ginger>", path="ginger.safetensors", family="sd1")])
    plan.characters[0].token = "<ginger>"
    assert plan.character("ginger").token == "<ginger>"
    assert plan.negative_prompt(plan.pages[0]) == plan.style.negative_prompt


def test_version_1_plans_are_migrated(tmp_path):
    data = json.loads(dump_plan(make_plan()))
    data.pop("book_id")
    for page in data["pages"]:
        page.pop("alt_text")
        page.pop("composed")
    for character in data["characters"]:
        character.pop("members")
    for key in ("language", "back_cover_text"):
        data.pop(key)
    data["version"] = 1
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    migrated = load_plan(path)
    assert migrated.version == 4
    assert migrated == make_plan()  # the same book: prompts, seeds, characters unchanged


def test_a_version_3_plan_is_read_without_fingerprints_and_a_composed_prompt_keeps_one(tmp_path):
    from fairytale.plan import prompt_fingerprint

    plan = make_plan()
    plan.pages[0].set_composed_prompt("a giraffe")
    data = json.loads(dump_plan(plan))
    assert data["pages"][0]["composed"] == prompt_fingerprint("a giraffe") and data["pages"][1]["composed"] is None
    assert parse_plan(json.dumps(data)).pages[0].prompt_is_composed()
    # the same prompt edited in a text editor no longer matches its fingerprint: hand-written
    data["pages"][0]["prompt"] = "a giraffe in a red scarf"
    assert not parse_plan(json.dumps(data)).pages[0].prompt_is_composed()
    for page in data["pages"]:
        page.pop("composed")
    data["version"] = 3
    old = parse_plan(json.dumps(data))
    assert old.version == 4 and [p.composed for p in old.pages] == [None, None]
    assert old.pages[0].prompt == "a giraffe in a red scarf"


def test_a_plan_keeps_its_book_id_and_a_version_2_plan_gets_a_stable_one(tmp_path):
    from fairytale.plan import Source

    plan = make_plan(source=Source(story="ginger.txt", sha256="a" * 64))
    assert plan.book_id.startswith("urn:uuid:")
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    edited = load_plan(path)
    edited.title, edited.pages[0].text = "Ginger the Tall Giraffe", "Ginger was very tall."
    save_plan(edited, path)
    assert load_plan(path).book_id == plan.book_id  # edits keep the book's identity
    # a version-2 plan had no book_id: it gets one made from its title, author, seed and story
    # file, the same at every load and through an edit of its text
    data = json.loads(dump_plan(plan))
    data.pop("book_id")
    data["version"] = 2
    old = parse_plan(json.dumps(data))
    assert old.version == 4 and old.book_id == plan.book_id
    data["pages"][0]["text"] = "Ginger was very tall."
    assert parse_plan(json.dumps(data)).book_id == plan.book_id
    # another story, or another master seed, of the same title and author is another book
    assert make_plan(source=Source(sha256="b" * 64)).book_id != plan.book_id
    assert make_plan(seed=43, source=Source(sha256="a" * 64)).book_id != plan.book_id
    # a plan without a story file is told apart by its text
    assert (
        make_plan().book_id
        != make_plan(pages=[Page(number=1, text="Owls.", prompt="an owl", seed=1)]).book_id
    )


def _with_group(**group) -> dict:
    data = json.loads(dump_plan(make_plan()))
    data["characters"].append({"id": "tom", "name": "Tom"})
    data["characters"].append({"id": "pair", "name": "Ginger and Tom", "gender": "group", **group})
    return data


def test_groups_round_trip():
    plan = parse_plan(json.dumps(_with_group(members=["ginger", "tom"])))
    assert plan.character("pair").members == ["ginger", "tom"] and plan.character("pair").gender == "group"


@pytest.mark.parametrize(
    "group, message",
    [
        ({"members": ["ginger", "nobody"]}, r"unknown members \['nobody'\]"),
        ({"members": ["ginger", "pair"]}, "lists itself"),
        ({"members": ["ginger", "ginger"]}, "a member twice"),
        ({"members": ["ginger", "tom"], "gender": "male"}, "gender must be 'group'"),
    ],
)
def test_group_members_are_validated(group, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(json.dumps(_with_group(**group)))


def test_groups_of_groups_are_refused():
    data = _with_group(members=["ginger", "tom"])
    data["characters"].append({"id": "all", "name": "Everyone", "gender": "group", "members": ["pair", "tom"]})
    with pytest.raises(PlanError, match="groups among its members"):
        parse_plan(json.dumps(data))


def _as_version_1(data: dict) -> dict:
    """Plan JSON as version 1 wrote it: without the fields versions 2, 3 and 4 added."""
    data = json.loads(json.dumps(data))
    data.pop("book_id")
    for page in data["pages"]:
        page.pop("alt_text")
        page.pop("composed")
    for character in data["characters"]:
        character.pop("members")
    for key in ("language", "back_cover_text"):
        data.pop(key)
    return {**data, "version": 1}


def test_a_version_1_plan_renders_the_same_pictures(tmp_path, tiny_sd, monkeypatch):
    # Pictures are named by their cache keys: same keys, same pictures, nothing repainted.
    import torch
    from transformers import CLIPTokenizer

    from fairytale.planner import plan_story
    from fairytale.prompts import clip_token_counter
    from fairytale.render import render_book
    from fairytale.render.backends import StableDiffusion14
    from tests.conftest import STORIES
    from tests.fakes import fake_models
    from tests.render_support import tiny_settings

    # The planner as `fairytale plan` runs it; rule-driven language models keep this fast.
    count = clip_token_counter(CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer"))
    models = fake_models(names=("Ginger", "Milo"), qa_rules={"Where does": "the river"})
    plan = plan_story(STORIES / "ginger_giraffe.txt", models=models, count_tokens=count, seed=5, words_per_page=60)
    v2 = tmp_path / "plan.json"
    save_plan(plan, v2)
    v1 = tmp_path / "plan-v1.json"
    v1.write_text(json.dumps(_as_version_1(json.loads(v2.read_text(encoding="utf-8")))), encoding="utf-8")
    settings = tiny_settings(tiny_sd, steps=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny UNet is slower on a busy second core (see render_support)
    try:
        new = render_book(v2, tmp_path / "book.pdf", settings, progress=False)
        monkeypatch.setattr(StableDiffusion14, "load", lambda *a, **k: pytest.fail("a cached picture was repainted"))
        old = render_book(v1, tmp_path / "book.pdf", settings, progress=False)  # the same book folder
    finally:
        torch.set_num_threads(threads)
    assert len(new.pages) >= 2 and new.painted == [p.number for p in new.pages]
    assert [p.key for p in old.pages] == [p.key for p in new.pages]
    assert old.painted == [] and old.reused == [p.number for p in new.pages]
