"""Finding characters: names, unnamed characters, aliases, kinds, genders and pronouns.

Behaviour is tested with rule-driven fakes behind the real Reader/Judge (see tests/fakes.py),
so the assertions are what a good model would give, never what a random one happens to.
"""

from __future__ import annotations

from fairytale.characters import find_characters, find_phrases, text_ties
from fairytale.pages import split_pages
from fairytale.story import read_story
from tests.conftest import STORIES
from tests.fakes import fake_models


def cast_of(text, models):
    sentences, _ = split_pages(text)
    return {m.name: m for m in find_characters(text, sentences, models)}, sentences


def test_ginger_story_cast():
    text = read_story(STORIES / "ginger_giraffe.txt").text
    cast, _ = cast_of(text, fake_models(names=("Ginger", "Milo")))
    ginger, owl, milo = cast["Ginger"], cast["the owl"], cast["Milo"]
    assert ginger.kind == "giraffe" and "a tall giraffe" in ginger.phrases  # "Ginger was a tall giraffe"
    assert milo.kind == "monkey" and "Milo the monkey" in milo.names  # "Milo the monkey"
    assert owl.kind == "owl" and not owl.named and "a wise old owl" in owl.phrases
    assert "the giraffe" not in {m.name for m in cast.values()}  # merged into Ginger, not a second giraffe
    assert list(cast)[0] == "Ginger"  # ranked by mentions
    assert ginger.gender == "female" and owl.gender == "male"  # from "She lived…", "He had grey feathers"


def test_pronouns_go_to_the_most_recent_compatible_character():
    text = "Ginger was a tall giraffe. She looked left. A wise old owl sat in a tree. He blinked. She drank."
    cast, sentences = cast_of(text, fake_models(names=("Ginger",)))
    ginger, owl = cast["Ginger"], cast["the owl"]
    pronoun_sentences = lambda member: sorted(m.sentence for m in member.mentions if m.how == "pronoun")  # noqa: E731
    assert pronoun_sentences(ginger) == [1, 4]  # "She looked left", "She drank" (skipping the male owl)
    assert pronoun_sentences(owl) == [3]


def test_aliases_merge_partial_names():
    text = "Grandma Rosa baked bread. Rosa sang. Then Grandma Rosa slept. Rosa woke up."
    cast, _ = cast_of(text, fake_models(names=("Grandma Rosa", "Rosa")))
    assert list(cast) == ["Grandma Rosa"]
    assert cast["Grandma Rosa"].names == {"Grandma Rosa", "Rosa"}


def test_kind_from_question_answering_links_unnamed_phrases():
    text = "Finn swam fast. The smallest dolphin was Finn, and he laughed. The dolphin jumped."
    qa = {r"What kind of animal or person is Finn": "The smallest dolphin"}
    cast, _ = cast_of(text, fake_models(names=("Finn",), qa_rules=qa))
    assert list(cast) == ["Finn"]
    assert cast["Finn"].kind == "dolphin" and "the dolphin" in cast["Finn"].phrases


def test_no_answer_leaves_kind_unknown_unless_nli_is_sure():
    text = "Kofi smiled. Kofi ran home."
    unsure, _ = cast_of(text, fake_models(names=("Kofi",)))
    assert unsure["Kofi"].kind is None  # neither QA nor a confident NLI: nothing invented
    sure, _ = cast_of(text, fake_models(names=("Kofi",), nli_rules=[("", r"^Kofi is a boy", 4.0)]))
    assert sure["Kofi"].kind == "boy"


def test_unknown_nouns_need_nli_confirmation():
    text = "“Brr,” said the snowman. The snowman shivered. “Hello,” said the snowman."
    phrases = find_phrases(split_pages(text)[0])
    assert {p.head for p in phrases} == {"snowman"} and not phrases[0].known
    confirmed, _ = cast_of(text, fake_models(nli_rules=[("", "snowman is a person or an animal", 3.0)]))
    assert "the snowman" in confirmed
    refused, _ = cast_of(text, fake_models(nli_rules=[("", "snowman is a person or an animal", -3.0)]))
    assert refused == {}


def test_plural_groups_and_stopwords_are_not_characters():
    sentences = split_pages("The zebras ran. The elephants and the little gazelles followed her to the river.")[0]
    assert find_phrases(sentences) == []


def test_ties_from_the_text():
    from fairytale.characters import Mention

    text = "Pip was a little penguin. Rosa, a clever puffin, ate. He was an old man called Tom. Ivy is kind."
    names = [Mention(text.index(n), text.index(n) + len(n), n, 0, "name") for n in ("Pip", "Rosa", "Tom", "Ivy")]
    assert {(t.name, t.head) for t in text_ties(text, names)} == {("Pip", "penguin"), ("Rosa", "puffin"), ("Tom", "man")}


def test_identical_nli_questions_are_computed_once():
    text = read_story(STORIES / "ginger_giraffe.txt").text
    models = fake_models(names=("Ginger", "Milo"))
    cast_of(text, models)
    cast_of(text, models)
    pipe = models.judge.pipe
    assert len(pipe.pairs_seen) == len(set(pipe.pairs_seen))  # the second run hit the cache only
    assert models.judge.counters.asked == 2 * models.judge.counters.computed


def test_named_characters_together_are_a_group_that_they_refers_to():
    from fairytale.characters import find_named_groups, find_names

    text = "Pip and Tom went out. They jumped in the river. Ann, Bo & Cy sang. Pip, Tom saw Ann."
    sentences = split_pages(text)[0]
    names = find_names(sentences, fake_models(names=("Pip", "Tom", "Ann", "Bo", "Cy")))
    groups = [(tuple(m.text for m in run), whole.text) for run, whole in find_named_groups(text, names)]
    assert groups == [(("Pip", "Tom"), "Pip and Tom"), (("Ann", "Bo", "Cy"), "Ann, Bo & Cy")]  # a list needs "and"
    cast, _ = cast_of("Pip and Tom went out. They jumped in the river.", fake_models(names=("Pip", "Tom")))
    pair = cast["Pip and Tom"]
    assert pair.gender == "group" and pair.members == ["pip", "tom"]
    assert [(m.text, m.sentence, m.how) for m in pair.mentions] == [("Pip and Tom", 0, "name"), ("They", 1, "pronoun")]
    assert all(m.how != "pronoun" for m in cast["Pip"].mentions + cast["Tom"].mentions)


def test_plural_phrases_are_groups_and_take_plural_pronouns():
    from fairytale.characters import find_group_phrases

    text = "The three bears lived in a wood. Goldilocks came by. They were out. Two little mice and the robbers hid."
    sentences = split_pages(text)[0]
    assert [(p.text, p.head) for p in find_group_phrases(sentences)] == [
        ("The three bears", "bears"),
        ("Two little mice", "mice"),
        ("the robbers", "robbers"),
    ]
    cast, _ = cast_of(text, fake_models(names=("Goldilocks",)))
    bears = cast["the three bears"]
    assert (bears.gender, bears.kind, bears.members) == ("group", "bear", [])
    assert [m.text for m in bears.mentions if m.how == "pronoun"] == ["They"]  # past Goldilocks, who is "she"
    assert cast["the robbers"].gender == "group" and cast["two little mice"].kind == "mouse"


def test_singular_pronouns_never_go_to_a_group():
    text = "The three bears came home. It was late. He sat down."
    cast, _ = cast_of(text, fake_models())
    assert [m.how for m in cast["the three bears"].mentions] == ["phrase"]


def test_overlong_names_are_tagging_slips():
    blob = "Zz" + "z" * 300
    text = f"{blob} sat. Ginger Ann Lee May Roe ran. Pip laughed."
    cast, _ = cast_of(text, fake_models(names=(blob, "Ginger Ann Lee May Roe", "Pip")))
    assert list(cast) == ["Pip"]  # questions about a 300-letter "name" would crowd out the context


def test_a_name_tagged_with_its_noun_is_one_character():
    # NER tags a title-case "Ginger the Giraffe" as one name: the giraffe inside it was a second
    # character, drawn beside Ginger on every page.
    text = "Ginger the Giraffe walked to the river. Ginger ate leaves. Milo, The Little Monkey, waved."
    cast, _ = cast_of(text, fake_models(names=("Ginger the Giraffe", "Ginger", "Milo, The Little Monkey")))
    assert list(cast) == ["Ginger", "Milo"]
    assert cast["Ginger"].kind == "giraffe" and "Ginger the Giraffe" in cast["Ginger"].names
    assert cast["Milo"].kind == "monkey"


def test_a_shouted_name_is_not_the_characters_name():
    text = "“GINGER!” shouted Milo. Ginger the giraffe turned. Ginger's scarf was red. Ginger smiled."
    cast, _ = cast_of(text, fake_models(names=("GINGER", "Ginger", "Milo")))
    assert list(cast) == ["Ginger", "Milo"]  # one character, written as the story mostly writes her
    assert cast["Ginger"].names >= {"GINGER", "Ginger"} and len(cast["Ginger"].mentions) >= 4
