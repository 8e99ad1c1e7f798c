"""What characters look like and what each page shows.

* **Looks** — extractive QA over the sentences about a character: what they look like, their
  colour, what they wear, what kind of creature they are. A question the text cannot answer
  stays unanswered (SQuAD2's null answer): nothing is invented.
* **Presence** — a page shows the characters the text mentions on it (by name, phrase or
  pronoun; a group such as "Pip and Tom", or "they", brings its members); a main character
  from the previous page who is not mentioned stays if NLI agrees they are still in the scene.
* **Regions** — a page showing two or more characters gives each its own part of the picture,
  side by side in the order the text names them on the page (a group's members stand where the
  group is named; a character kept on the page without being named comes last). The plan
  records them (``pages[].regions``) so they can be seen and edited; portrait modes confine
  each character's portrait to its region.
* **Setting and action** — QA on the page text; with no answer the setting carries over from
  the previous page (a walk along the river stays at the river).
* **Time of day and mood** — zero-shot NLI, asked only of the words around a cue ("That
  night…", "…cried Pip"); a page with no cue keeps the previous page's value, as with the
  setting. Time of day is a choice between four options. Mood is read on two axes, as in the
  circumplex model of affect: one hypothesis for valence ("This moment is happy.") and one for
  arousal ("This moment is exciting."), each answered yes/no/unsure by the three NLI labels;
  together they give happy, calm, sad, exciting or scary.

Each step asks all its questions, for every character or page, in one batch. Premises are kept
short on purpose: the NLI model is RoBERTa-large, which reads only a few hundred tokens a second
on a laptop CPU, so asking six moods of every whole page would cost minutes per book.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fairytale.characters import CastMember
from fairytale.lexicon import MOOD_CUES, TIME_CUES, UNSUITABLE_FOR_PICTURES, UNSUITABLE_PHRASES
from fairytale.nlp import Answer, Choice, PlannerModels, Question
from fairytale.pages import PageSpan, Sentence
from fairytale.plan import Region

TIMES_OF_DAY = ("morning", "daytime", "evening", "night")
MOODS = ("happy", "calm", "sad", "exciting", "scary")
VALENCE = "This moment is happy."
AROUSAL = "This moment is exciting."
#: Zero-shot answers below this probability leave the field unknown (or carried over).
TIME_MIN = 0.45
#: A mood axis counts when NLI leans this far towards yes or no (−1…+1).
MOOD_LEAN = 0.3
#: NLI confidence that keeps a main character on a page that does not mention them.
PRESENCE_MIN = 0.7

LOOK_QUESTIONS = {
    "looks": "What does {ref} look like?",
    "colour": "What colour is {ref}?",
    "clothes": "What is {ref} wearing?",
}


@dataclass
class PageScene:
    """What one page's picture shows."""

    characters: list[str]
    setting: str | None
    action: str | None
    time_of_day: str | None
    mood: str | None
    #: the characters in the order the text names them on the page (see :func:`named_order`)
    named: list[str]


#: Looks are read for characters mentioned at least this often (others are drawn by their kind).
LOOKS_MIN_MENTIONS = 2


def _about(member: CastMember, sentences: Sequence[Sentence], limit: int = 400) -> str:
    text = ""
    for index in member.sentence_ids():
        if len(text) + len(sentences[index].text) > limit and text:
            break
        text += sentences[index].text + " "
    return text.strip()


def _plain(answer: str) -> str:
    """An answer as prompt text: no trailing punctuation, 'her red scarf' → 'a red scarf'."""
    answer = " ".join(answer.strip(" \t\n,.;:!?\"“”‘’").split())
    return re.sub(r"^(?:her|his|their|its|my|your)\s+", "a ", answer)


def suitable(answer: Answer | None) -> Answer | None:
    """``answer``, unless it holds a word no children's picture should be painted from (see
    :data:`~fairytale.lexicon.UNSUITABLE_FOR_PICTURES`): then no answer, as if the text were silent."""
    if answer is None:
        return None
    words = {word.lower().strip("’'") for word in re.findall(r"[^\W\d_]+(?:[’'-][^\W\d_]+)*", answer.text)}
    lowered = " ".join(answer.text.lower().split())
    if words & UNSUITABLE_FOR_PICTURES or any(phrase in lowered for phrase in UNSUITABLE_PHRASES):
        return None
    return answer


def find_looks(members: Sequence[CastMember], sentences: Sequence[Sentence], models: PlannerModels) -> list[dict[str, str]]:
    """For each character, the looks the text states, by aspect (missing when unanswered).

    Characters mentioned only once are not asked about: the text rarely describes them, and
    their kind is enough to draw them.
    """
    asked = [m for m in members if len(m.mentions) >= LOOKS_MIN_MENTIONS and not m.is_group]
    questions = [
        Question(template.format(ref=member.reference), _about(member, sentences))
        for member in asked
        for template in LOOK_QUESTIONS.values()
    ]
    answers = iter(suitable(answer) for answer in models.reader.answer_all(questions))
    looks: list[dict[str, str]] = []
    for member in members:
        found: dict[str, str] = {}
        for aspect in LOOK_QUESTIONS if member in asked else ():
            answer = next(answers)
            if answer is not None:
                text = _plain(answer.text)
                if text and text.lower() not in (v.lower() for v in found.values()):
                    found[aspect] = text
        looks.append(found)
    return looks


def describe(member: CastMember, looks: dict[str, str]) -> str:
    """A prompt description from kind and looks, without repeating what another part says.

    >>> m = CastMember(key="g", name="Ginger", named=True, kind="giraffe")
    >>> describe(m, {"looks": "a tall giraffe with orange spots", "colour": "orange", "clothes": "a red scarf"})
    'a tall giraffe with orange spots, wearing a red scarf'
    """
    parts: list[str] = []
    for aspect in ("looks", "colour", "clothes"):
        value = looks.get(aspect)
        if not value or any(value.lower() in part.lower() for part in parts):
            continue
        parts = [part for part in parts if part.lower() not in value.lower()]
        parts.append(f"wearing {value}" if aspect == "clothes" else value)
    kind = member.kind or (sorted(member.heads)[0] if member.heads else None)
    if kind and not any(kind in part.lower() for part in parts):
        parts.insert(0, f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    return ", ".join(parts)


#: Words of context kept around a cue word for the NLI premise.
CUE_WINDOW = 10


def _cue_sentence(sentences: Sequence[Sentence], cues: frozenset[str], window: int = CUE_WINDOW) -> str:
    """Up to ``window`` words around the first cue word on the page; empty if there is none."""
    for sentence in sentences:
        words = sentence.text.split()
        for index, word in enumerate(words):
            if cues & set(re.findall(r"[a-z]+", word.lower())):
                start = max(0, min(index - window // 2, len(words) - window))
                return " ".join(words[start : start + window])
    return ""


def _opening(sentences: Sequence[Sentence], words: int = 15) -> str:
    """The first sentences of a page, up to about ``words`` words."""
    text = ""
    for sentence in sentences:
        if text and len(text.split()) + sentence.words > words:
            break
        text += sentence.text + " "
    return text.strip()


def find_scenes(
    pages: Sequence[PageSpan],
    sentences: Sequence[Sentence],
    text: str,
    members: Sequence[CastMember],
    main_keys: set[str],
    models: PlannerModels,
) -> list[PageScene]:
    """Who is on each page, where and when it happens, what they do, and the mood."""
    page_texts = [" ".join(text[p.start : p.end].split()) for p in pages]
    page_sentences = [sentences[p.first_sentence : p.last_sentence] for p in pages]

    # 1. presence from mentions (looked up by bisection: a long story has thousands of both)
    starts = {member.key: sorted(m.start for m in member.mentions) for member in members}
    said_in = {member.key: {m.sentence for m in member.mentions} for member in members}
    present: list[list[str]] = []
    for page in pages:
        on_page = [
            member.key for member in members if _first_between(starts[member.key], page.start, page.end) is not None
        ]
        # "They jumped in the river": a group on the page brings its members.
        brought = [key for member in members if member.key in on_page for key in member.members]
        present.append(on_page + [key for key in dict.fromkeys(brought) if key not in on_page])

    # 2. presence of main characters carried from the previous page, if NLI agrees
    asks: list[tuple[int, CastMember]] = []
    for number in range(1, len(pages)):
        for member in members:
            if member.key in main_keys and member.key in present[number - 1] and member.key not in present[number]:
                asks.append((number, member))
    verdicts = models.judge.entailment(
        [(_opening(page_sentences[number]), f"{member.reference.capitalize()} is here.") for number, member in asks]
    )
    for (number, member), probability in zip(asks, verdicts, strict=True):
        if probability >= PRESENCE_MIN:
            present[number].append(member.key)

    # 3. setting and action (QA); time of day and mood (NLI on cue sentences); one batch each
    by_key = {member.key: member for member in members}
    questions = []
    for number, page_text in enumerate(page_texts):
        questions.append(Question("Where does this happen?", page_text))
        first = by_key[present[number][0]] if present[number] else None
        if first:
            # Only the sentences that mention them: what they do is said there, and it is cheaper.
            said = said_in[first.key]
            span = range(pages[number].first_sentence, pages[number].last_sentence)
            about = " ".join(sentences[i].text for i in span if i in said) or page_text
            verb = "do" if first.is_group else "does"
            questions.append(Question(f"What {verb} {first.reference} do?", about))
        else:
            questions.append(Question("What happens?", page_text))
    answers = [suitable(answer) for answer in models.reader.answer_all(questions)]
    time_cues = [_cue_sentence(group, TIME_CUES) for group in page_sentences]
    mood_cues = [_cue_sentence(group, MOOD_CUES) for group in page_sentences]
    time_iter = iter(models.judge.choose([Choice(cue, "It is {}.", TIMES_OF_DAY) for cue in time_cues if cue]))
    times = [next(time_iter) if cue else None for cue in time_cues]
    asked = [cue for cue in mood_cues if cue]
    leans = iter(models.judge.lean([(cue, hypothesis) for cue in asked for hypothesis in (VALENCE, AROUSAL)]))
    moods = [mood_from(next(leans), next(leans)) if cue else None for cue in mood_cues]

    scenes: list[PageScene] = []
    setting = time_of_day = mood = None
    for number in range(len(pages)):
        where, what = answers[2 * number], answers[2 * number + 1]
        setting = _plain(where.text) if where else setting  # nothing new said: still the old place
        time_of_day = _confident(times[number], TIME_MIN) or time_of_day
        mood = moods[number] or mood
        scenes.append(
            PageScene(
                characters=present[number],
                setting=setting,
                action=_plain(what.text) if what else None,
                time_of_day=time_of_day,
                mood=mood,
                named=named_order(present[number], members, pages[number], starts),
            )
        )
    return scenes


def _first_between(starts: Sequence[int], low: int, high: int) -> int | None:
    """The first of the sorted ``starts`` in ``[low, high)``, or None."""
    index = bisect.bisect_left(starts, low)
    return starts[index] if index < len(starts) and starts[index] < high else None


def named_order(
    keys: Sequence[str],
    members: Sequence[CastMember],
    page: PageSpan,
    starts: dict[str, list[int]] | None = None,
) -> list[str]:
    """``keys`` (characters on ``page``) in the order the page's text first names them. A
    group's members that the page does not name themselves stand where the group is named, in
    the group's order; characters the page does not name at all (kept from the page before)
    come last, in the order given. ``starts``: each character's sorted mention offsets, if known."""
    by_key = {member.key: member for member in members}
    if starts is None:
        starts = {key: sorted(m.start for m in by_key[key].mentions) for key in keys}
    position: dict[str, tuple[float, int, int]] = {}
    for index, key in enumerate(keys):
        named = _first_between(starts[key], page.start, page.end)
        position[key] = (named, 0, 0) if named is not None else (float("inf"), 0, index)
    for key in keys:
        if position[key][0] == float("inf"):
            continue
        for index, member in enumerate(by_key[key].members):
            if member in position and position[member][0] == float("inf"):
                position[member] = (position[key][0], 1, index)
    return sorted(keys, key=lambda key: position[key])


def side_by_side(characters: Sequence[str]) -> dict[str, Region] | None:
    """Automatic regions of a page: each character a full-height strip, as wide as the picture
    divided among them, left to right in the order given; None for fewer than two characters
    (one character has the whole picture). The same boxes the renderer computes for a plan
    without regions, when each of them has a portrait.

    >>> {k: r.box() for k, r in side_by_side(["pip", "tom"]).items()}
    {'pip': (0.0, 0.0, 0.5, 1.0), 'tom': (0.5, 0.0, 1.0, 1.0)}
    """
    if len(characters) < 2:
        return None
    count = len(characters)
    return {
        key: Region(left=index / count, top=0.0, right=(index + 1) / count, bottom=1.0)
        for index, key in enumerate(characters)
    }


def drawn_alone(characters: Sequence[str], groups: dict[str, Sequence[str]]) -> list[str]:
    """``characters`` less every group whose members are all among them: such a group is
    drawn as its members (as the prompt does), so it needs no region of its own."""
    shown = set(characters)
    return [key for key in characters if not (groups.get(key) and set(groups[key]) <= shown)]


def mood_from(valence: float, arousal: float) -> str | None:
    """A mood from the two axes (each −1…+1); ``None`` when NLI leans neither way.

    >>> mood_from(0.8, 0.1), mood_from(-0.7, 0.0), mood_from(0.5, 0.6), mood_from(-0.5, 0.6), mood_from(0.0, -0.5)
    ('happy', 'sad', 'exciting', 'scary', 'calm')
    >>> mood_from(0.1, 0.2) is None
    True
    """
    if max(abs(valence), abs(arousal)) < MOOD_LEAN:
        return None
    if arousal >= MOOD_LEAN:
        return "exciting" if valence >= 0 else "scary"
    if valence >= MOOD_LEAN:
        return "happy"
    if valence <= -MOOD_LEAN:
        return "sad"
    return "calm"


def _confident(scores: dict[str, float] | None, minimum: float) -> str | None:
    """The best option if its probability reaches ``minimum``."""
    if not scores:
        return None
    best = max(scores, key=scores.get)
    return best if scores[best] >= minimum else None


def refit_regions(
    regions: dict[str, Region] | None, characters: Sequence[str], groups: dict[str, Sequence[str]]
) -> dict[str, Region] | None:
    """A page's regions once its characters become ``characters`` (an edit). Automatic regions
    (side-by-side strips, as the planner writes them) are made again: the characters still shown
    keep their left-to-right order, new ones join on the right. Regions someone edited are kept
    for the characters still shown (a new character gets the renderer's default). A page
    without regions (a plan from before they were written) keeps none."""
    if regions is None:
        return None
    strips = side_by_side(list(regions)) or {}
    if sorted(r.box() for r in regions.values()) != sorted(r.box() for r in strips.values()):
        return {key: region for key, region in regions.items() if key in characters} or None
    shown = drawn_alone(characters, groups)
    left = {key: region.left for key, region in regions.items()}
    ordered = sorted(shown, key=lambda key: (key not in left, left.get(key, 0.0)))
    return side_by_side(ordered)
