"""Looks and scenes: no invented answers, carried-over settings, presence by pronoun."""

from __future__ import annotations

from fairytale.characters import find_characters
from fairytale.pages import split_pages
from fairytale.scenes import describe, find_looks, find_scenes
from tests.fakes import fake_models

STORY = (
    "Ginger was a tall giraffe with orange spots. Every morning she wore her red scarf.\n\n"
    "She walked to the sparkling river. She drank and drank happily.\n\n"
    "She looked at the sky. It was getting late.\n\n"
    "That night she slept under the stars."
)
QA = {
    r"What does Ginger look like": "a tall giraffe with orange spots",
    r"What is Ginger wearing": "her red scarf",
    r"Where does this happen": "the sparkling river",
    r"What does Ginger do": "drank and drank happily",
}
NLI = [
    (r"That night", r"It is night", 4.0),
    (r"every|Every morning", r"It is morning", 4.0),
    (r"", r"moment is happy", 3.0),  # only pages with a feeling word are asked
]


def scenes_of(story, models, words_per_page=10):
    sentences, spans = split_pages(story, words_per_page)
    members = find_characters(story, sentences, models)
    return members, find_scenes(spans, sentences, story, members, {m.key for m in members[:1]}, models), sentences


def test_looks_are_read_not_invented():
    models = fake_models(names=("Ginger",), qa_rules=QA)
    members, _, sentences = scenes_of(STORY, models)
    (looks,) = find_looks(members, sentences, models)
    assert looks == {"looks": "a tall giraffe with orange spots", "clothes": "a red scarf"}  # no colour answer: none
    assert describe(members[0], looks) == "a tall giraffe with orange spots, wearing a red scarf"


def test_description_without_any_answer_is_only_the_kind():
    models = fake_models(names=("Ginger",))
    members, _, sentences = scenes_of(STORY, models)
    (looks,) = find_looks(members, sentences, models)
    assert looks == {}
    assert describe(members[0], looks) == "a giraffe"


def test_scenes_carry_setting_and_time_and_follow_pronouns():
    models = fake_models(names=("Ginger",), qa_rules=QA, nli_rules=NLI)
    _, scenes, _ = scenes_of(STORY, models)
    assert len(scenes) == 4
    assert [s.characters for s in scenes] == [["ginger"]] * 4  # pages 2–4 only say "she"
    assert scenes[0].time_of_day == "morning"
    assert scenes[1].setting == "the sparkling river" and scenes[1].action == "drank and drank happily"
    assert scenes[2].setting == "the sparkling river"  # nothing new said: carried over
    assert scenes[2].time_of_day == "morning"  # likewise
    assert scenes[3].time_of_day == "night"
    assert scenes[0].mood is None  # no feeling word yet: nothing asked, nothing invented
    assert [s.mood for s in scenes[1:]] == ["happy"] * 3  # "happily" on page 2, then carried over


def test_main_character_stays_when_nli_says_so():
    story = "Ginger walked to the river.\n\nThe water was cold and clear."
    stays = fake_models(names=("Ginger",), nli_rules=[(r"water", r"Ginger is here", 3.0)])
    _, scenes, _ = scenes_of(story, stays, words_per_page=5)
    assert scenes[1].characters == ["ginger"]
    leaves = fake_models(names=("Ginger",), nli_rules=[(r"water", r"Ginger is here", -3.0)])
    _, scenes, _ = scenes_of(story, leaves, words_per_page=5)
    assert scenes[1].characters == []


def test_time_and_mood_are_asked_only_where_the_text_has_a_cue():
    models = fake_models(names=("Ginger",), qa_rules=QA, nli_rules=NLI)
    scenes_of(STORY, models)
    asked = models.judge.pipe.pairs_seen
    time_premises = {p for p, h in asked if h.startswith("It is ")}
    mood_premises = {p for p, h in asked if h.startswith("This moment is ")}
    # pages 1 ("Every morning") and 4 ("That night") name a time; only page 2 ("happily") a feeling
    assert len(time_premises) == 2 and all(("morning" in p) or ("night" in p) for p in time_premises)
    assert len(mood_premises) == 1 and "happily" in next(iter(mood_premises))
    assert all(len(p.split()) <= 16 for p in time_premises | mood_premises)  # short premises: NLI is costly


def test_mood_from_valence_and_arousal():
    story = "Ginger smiled at the sun.\n\nThen the storm came and Ginger was afraid."
    nli = [
        (r"smiled", r"moment is happy", 3.0),
        (r"smiled", r"moment is exciting", -3.0),
        (r"afraid", r"moment is happy", -3.0),
        (r"afraid", r"moment is exciting", 3.0),
    ]
    _, scenes, _ = scenes_of(story, fake_models(names=("Ginger",), nli_rules=nli), words_per_page=5)
    assert [s.mood for s in scenes] == ["happy", "scary"]
    judge = fake_models(nli_rules=[("", "yes", 5.0), ("", "no", -5.0)]).judge
    yes, no, unsure = judge.lean([("p", "yes"), ("p", "no"), ("p", "maybe")])
    assert yes > 0.95 and no < -0.95 and unsure == 0.0


def test_they_puts_the_group_and_its_members_on_the_page(tmp_path):
    from fairytale.planner import plan_story
    from tests.fakes import word_count

    story = tmp_path / "story.txt"
    story.write_text("Pip and Tom went out to play.\n\nThey jumped in the big river.")
    plan = plan_story(story, models=fake_models(names=("Pip", "Tom")), count_tokens=word_count, seed=1, words_per_page=6)
    pair = plan.character("pip-and-tom")
    assert (pair.gender, pair.members, pair.main) == ("group", ["pip", "tom"], False)
    assert set(plan.pages[1].characters) == {"pip-and-tom", "pip", "tom"}  # "They jumped": the pair is there
    assert plan.pages[1].prompt.count("Pip and Tom") == 0  # drawn as its members, not a third figure


def test_a_much_mentioned_group_leaves_the_main_cast_to_individuals(tmp_path):
    from fairytale.planner import plan_story
    from tests.fakes import word_count

    bears = " ".join(["The three bears ate. The bears slept. They woke."] * 6)
    story = tmp_path / "story.txt"
    story.write_text(f"Goldilocks came in. Goldilocks sat down. {bears} Goldilocks ran home.")
    plan = plan_story(story, models=fake_models(names=("Goldilocks",)), count_tokens=word_count, seed=1)
    assert plan.characters[0].id == "three-bears" and not plan.characters[0].main  # most mentioned
    assert plan.character("goldilocks").main  # 3 mentions against the bears' 36: still the heroine


class CountedMentions(list):
    """A character's mentions that count how often they are read through."""

    reads = 0

    def __iter__(self):
        CountedMentions.reads += 1
        return super().__iter__()


def test_presence_reads_each_characters_mentions_once_not_once_a_page():
    # Every page scanned every mention of every character: quadratic (a 20,000-word story of 50
    # names planned in 1.14 s with the models stubbed, 0.40 s now).
    story = "\n\n".join(f"Ginger met Milo by the mill. She smiled at him. Day {i} ended." for i in range(60))
    models = fake_models(names=("Ginger", "Milo"))
    sentences, spans = split_pages(story, 10)
    members = find_characters(story, sentences, models)
    for member in members:
        member.mentions = CountedMentions(member.mentions)
    CountedMentions.reads = 0
    scenes = find_scenes(spans, sentences, story, members, set(), models)
    assert len(scenes) > 50 and all({"ginger", "milo"} <= set(s.characters) for s in scenes)
    assert CountedMentions.reads <= 4 * len(members)  # not pages × characters


def test_grim_answers_are_not_painted():
    # "cut open the wolf's belly" went from the story into the prompt: the safety checker only
    # catches nudity, so nothing stopped the picture.
    story = (
        "The hunter saw the wolf asleep by the bloody cottage. The hunter took his knife and cut open the wolf's belly.\n\n"
        "The hunter wore a green coat. The hunter walked home through the dark forest."
    )
    qa = {
        r"Where does this happen": "the bloody cottage",
        r"What does the hunter do": "cut open the wolf's belly",
        r"What does the hunter look like": "a tall man with a knife",
        r"What is the hunter wearing": "a green coat",
    }
    models = fake_models(qa_rules=qa)
    members, scenes, sentences = scenes_of(story, models, words_per_page=10)
    assert len(scenes) >= 2 and all((s.setting, s.action) == (None, None) for s in scenes)
    hunter = next(m for m in members if m.name == "the hunter")
    looks = find_looks(members, sentences, models)[members.index(hunter)]
    assert looks == {"clothes": "a green coat"}  # the knife is left out, the coat kept


def test_ordinary_words_near_grim_ones_are_kept():
    # "wound" is also the path that wound through the hills
    models = fake_models(names=("Ginger",), qa_rules={r"Where does this happen": "where the path wound through the hills"})
    _, scenes, _ = scenes_of("Ginger walked where the path wound through the hills.", models)
    assert scenes[0].setting == "where the path wound through the hills"
