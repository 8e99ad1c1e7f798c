"""Who is in the story: named characters, unnamed ones, their aliases, and who "she" is.

The steps, each batched across the whole story:

1. **Names** — FLAIR NER person spans in every sentence.
2. **Unnamed characters** — noun phrases headed by a character noun ("a wise old owl", "the
   little giraffe"), plus any noun the text makes speak ("said the frog").
3. **Ties from the text** — "Ginger the giraffe", "Ginger was a tall giraffe", "a mouse called
   Pip": the name and the noun are one character (model-free, high precision).
4. **Confirmation and kind** — NLI confirms that each unnamed candidate is a living being;
   extractive QA ("What kind of animal or person is Ginger?") and, failing an answer, zero-shot
   NLI give each named character a kind. A named character's kind ties it to the unnamed
   phrases with that head noun when the text's own kind answer says so.
5. **Groups** — named characters together ("Pip and Tom") and plural phrases headed by a
   character noun ("the three bears", "the robbers") are characters too, of gender "group";
   a group of named characters lists them as its members (model-free).
6. **Gender and number** — gendered nouns, then zero-shot NLI, plus the pronouns that follow
   a character's lone mentions; used to attribute pronouns.
7. **Pronouns** — each he/she/it goes to the most recent compatible character within a few
   sentences, and each they/them/their to the most recent group, so a page that only says
   "she" or "they" still knows who is on it.
8. **Ranking** — by mentions (names, phrases and pronouns); the leading ones are main characters.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from fairytale.lexicon import (
    CHARACTER_NOUNS,
    DETERMINERS,
    FEMALE_NOUNS,
    GROUP_OPENERS,
    MALE_NOUNS,
    PEOPLE,
    PHRASE_STOPWORDS,
    PRONOUNS,
    SPEECH_VERBS,
    singular,
)
from fairytale.nlp import Choice, PlannerModels, Premise, Question
from fairytale.pages import Sentence

MentionKind = Literal["name", "phrase", "pronoun"]

#: Unnamed candidates outside the lexicon need this NLI confidence and this many mentions.
CONFIRM_UNKNOWN_NOUN = 0.6
CONFIRM_MIN_MENTIONS = 2
#: Lexicon nouns are refused only when NLI is this sure they are not a living being.
REJECT_KNOWN_NOUN = 0.15
#: A "name" longer than this (words or characters) is a tagging slip, not a name; questions
#: built from it would also crowd the models' inputs.
MAX_NAME_WORDS = 4
MAX_NAME_CHARS = 40
#: A run of more names than this is a list, not a group that acts together.
MAX_GROUP_NAMES = 8
#: How many sentences back a pronoun may look for its character.
PRONOUN_WINDOW = 3
#: A zero-shot answer is used only above this probability.
ZERO_SHOT_MIN = 0.5
#: Gender is set only when NLI and the pronouns agree at least this much (two options).
GENDER_MIN = 0.65
#: This many pronouns of one gender, and none of the other, settle it without NLI.
SETTLED_BY_PRONOUNS = 2

_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ’'-]*")
_QUOTES = "\"'“”‘’«»"


@dataclass(frozen=True)
class Mention:
    """Where the text refers to a character: absolute offsets into the story text."""

    start: int
    end: int
    text: str
    sentence: int
    how: MentionKind


@dataclass
class CastMember:
    """A character being assembled from the text."""

    key: str
    name: str
    named: bool
    names: set[str] = field(default_factory=set)
    phrases: set[str] = field(default_factory=set)
    heads: set[str] = field(default_factory=set)
    kind: str | None = None
    gender: str | None = None
    mentions: list[Mention] = field(default_factory=list)
    #: For a group of named characters ("Pip and Tom"): the keys of its members.
    members: list[str] = field(default_factory=list)

    @property
    def is_group(self) -> bool:
        return self.gender == "group"

    @property
    def reference(self) -> str:
        """How questions about the character name them: "Ginger", "the owl", "the three bears"."""
        if self.named or self.is_group:
            return self.name
        return f"the {next(iter(sorted(self.heads)))}"

    def sentence_ids(self) -> list[int]:
        return sorted({m.sentence for m in self.mentions})


@dataclass(frozen=True)
class _Phrase:
    start: int
    end: int
    text: str
    head: str
    sentence: int
    known: bool


# --------------------------------------------------------------------------- 1. names


#: A tagged span that is a name and its noun: "Ginger the Giraffe", "Milo, the Little Monkey".
_NAME_AND_NOUN = re.compile(r"(?P<name>.+?),?\s+(?:the|The|THE)\s+(?:\S+\s+){0,2}(?P<noun>[^\W\d_]+)")


def _clean_name(text: str) -> str:
    text = text.strip(_QUOTES + " ,.;:!?")
    for suffix in ("’s", "'s"):
        text = text.removesuffix(suffix)
    # NER tags a title-case "Ginger the Giraffe" as one name; the name is "Ginger", and the text
    # ties her to "giraffe" (see text_ties). Kept whole, the giraffe inside it became a second
    # character, drawn beside her.
    both = _NAME_AND_NOUN.fullmatch(text)
    if both and both.group("noun").lower() in CHARACTER_NOUNS:
        text = both.group("name")
    return text.strip()


def _preferred_spelling(mentions: Sequence[Mention]) -> str:
    """How a character's name is written: the most used spelling of it, not a shouted "GINGER"
    when the story also writes "Ginger" (ties: the first used)."""
    counts = Counter(m.text for m in mentions)
    order = {text: index for index, text in reversed(list(enumerate(m.text for m in mentions)))}
    quiet = [text for text in counts if not (text.isupper() and len(text) > 1)] or list(counts)
    return min(quiet, key=lambda text: (-counts[text], order[text]))


def find_names(sentences: Sequence[Sentence], models: PlannerModels) -> list[Mention]:
    """Person-name mentions from NER, cleaned of quotes and possessives."""
    mentions = []
    for index, (sentence, spans) in enumerate(zip(sentences, models.names.persons([s.text for s in sentences]), strict=True)):
        for span in spans:
            name = _clean_name(span.text)
            if not name or not name[0].isupper() or name.lower() in PRONOUNS:
                continue
            if len(name) > MAX_NAME_CHARS or len(name.split()) > MAX_NAME_WORDS:
                continue
            offset = sentence.text.find(name, max(0, span.start - 1))
            start = sentence.start + (offset if offset >= 0 else span.start)
            mentions.append(Mention(start, start + len(name), name, index, "name"))
    return mentions


# --------------------------------------------------------------------------- 2. phrases


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def find_phrases(sentences: Sequence[Sentence]) -> list[_Phrase]:
    """Singular noun phrases headed by a character noun, and nouns that speak ("said the frog")."""
    found = []
    for index, sentence in enumerate(sentences):
        words = _words(sentence.text)
        for position, word in enumerate(words):
            if word.group().lower() not in DETERMINERS:
                continue
            for ahead in range(position + 1, min(position + 5, len(words))):
                gap = sentence.text[words[ahead - 1].end() : words[ahead].start()]
                token = words[ahead].group()
                lowered = token.lower().removesuffix("’s").removesuffix("'s")
                if gap.strip(" ,") or lowered in PHRASE_STOPWORDS:
                    break
                if lowered in CHARACTER_NOUNS:
                    next_word = words[ahead + 1].group().lower() if ahead + 1 < len(words) else ""
                    if singular(next_word) in CHARACTER_NOUNS and next_word not in PHRASE_STOPWORDS:
                        continue  # "the monkey king": the head is further on
                    start, end = sentence.start + word.start(), sentence.start + words[ahead].start() + len(lowered)
                    text = sentence.text[word.start() : words[ahead].start() + len(lowered)]
                    found.append(_Phrase(start, end, text, lowered, index, True))
                    break
                if singular(lowered) in CHARACTER_NOUNS:
                    break  # a plural: a group, not one character
                is_speaker = (position > 0 and words[position - 1].group().lower() in SPEECH_VERBS) or (
                    ahead + 1 < len(words) and words[ahead + 1].group().lower() in SPEECH_VERBS
                )
                if is_speaker and word.group().lower() == "the" and ahead == position + 1 and token.islower():
                    start, end = sentence.start + word.start(), sentence.start + words[ahead].end()
                    found.append(_Phrase(start, end, sentence.text[word.start() : words[ahead].end()], lowered, index, False))
                    break
    return found


def _plural_head(token: str) -> str | None:
    """``token`` lower-cased if it is the plural of a character noun ("bears", "mice"), else None."""
    lowered = token.lower().removesuffix("’s").removesuffix("'s").rstrip("’'")
    if lowered in CHARACTER_NOUNS or lowered in PHRASE_STOPWORDS:
        return None
    return lowered if singular(lowered) in CHARACTER_NOUNS else None


def find_group_phrases(sentences: Sequence[Sentence]) -> list[_Phrase]:
    """Plural noun phrases headed by a character noun: "the three bears", "two little mice"."""
    found = []
    for index, sentence in enumerate(sentences):
        words = _words(sentence.text)
        for position, word in enumerate(words):
            if word.group().lower() not in GROUP_OPENERS:
                continue
            if position and words[position - 1].group().lower() in GROUP_OPENERS:
                continue  # "three" in "the three bears": the phrase starts at "the"
            for ahead in range(position + 1, min(position + 5, len(words))):
                gap = sentence.text[words[ahead - 1].end() : words[ahead].start()]
                token = words[ahead].group()
                if gap.strip(" ,") or token.lower() in PHRASE_STOPWORDS or token.lower() in CHARACTER_NOUNS:
                    break  # the phrase ended, or it is one character ("the bear")
                head = _plural_head(token)
                if head is not None:
                    end = words[ahead].start() + len(head)
                    text = sentence.text[word.start() : end]
                    start = sentence.start + word.start()
                    found.append(_Phrase(start, sentence.start + end, text, head, index, True))
                    break
    return found


#: What may stand between the names of a group: "Pip and Tom", "Pip, Tom and Sam", "Pip & Tom".
_NAME_JOINER = re.compile(r",?\s+(?:and|&)\s+|,\s*")


def find_named_groups(text: str, names: Sequence[Mention]) -> list[tuple[list[Mention], Mention]]:
    """Named characters together in one phrase: each run of two or more names joined by commas
    and a final "and" ("Pip and Tom", "Ann, Bo and Cy"), as (the names, the whole phrase)."""
    ordered = sorted(names, key=lambda m: m.start)
    groups, run = [], ordered[:1]

    def close(run: list[Mention]) -> None:
        if 1 < len(run) <= MAX_GROUP_NAMES:
            last_gap = text[run[-2].end : run[-1].start]
            if re.search(r"\b(?:and)\b|&", last_gap):
                start, end = run[0].start, run[-1].end
                whole = Mention(start, end, text[start:end], run[0].sentence, "name")
                groups.append((list(run), whole))

    for mention in ordered[1:]:
        previous = run[-1]
        joined = _NAME_JOINER.fullmatch(text[previous.end : mention.start])
        if mention.sentence == previous.sentence and joined:
            run.append(mention)
        else:
            close(run)
            run = [mention]
    close(run)
    return groups


def _join_names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _add_groups(
    cast: dict[str, CastMember], text: str, sentences: Sequence[Sentence], name_mentions: Sequence[Mention]
) -> None:
    """Add the story's groups to ``cast`` (see :func:`find_named_groups` and :func:`find_group_phrases`)."""
    owner_of_name = {name: member for member in cast.values() for name in member.names}
    for names, whole in find_named_groups(text, name_mentions):
        owners = list(dict.fromkeys(owner_of_name[m.text].key for m in names if m.text in owner_of_name))
        if len(owners) < 2:
            continue  # "Pip and Pip": one character
        key = "&" + "&".join(sorted(owners))
        name = _join_names([cast[owner].name for owner in owners])
        group = cast.setdefault(
            key, CastMember(key=key, name=name, named=True, gender="group", members=owners)
        )
        group.names.add(whole.text)
        group.mentions.append(whole)
    by_head: dict[str, list[_Phrase]] = defaultdict(list)
    for phrase in find_group_phrases(sentences):
        by_head[phrase.head].append(phrase)
    for head, phrases in sorted(by_head.items()):
        texts = [p.text[0].lower() + p.text[1:] for p in phrases]
        name = max(dict.fromkeys(texts), key=lambda t: len(t.split()))  # the first fullest: "the three bears"
        key = f"~{head}"
        group = CastMember(key=key, name=name, named=False, kind=singular(head), gender="group", heads={head})
        group.phrases.update(texts)
        group.mentions += [Mention(p.start, p.end, p.text, p.sentence, "phrase") for p in phrases]
        cast[key] = group


# --------------------------------------------------------------------------- 3. ties from the text


@dataclass(frozen=True)
class Tie:
    """The text says a name and a noun are one character: "Ginger the giraffe"."""

    name: str
    head: str
    alias: str


_COPULAS = ("was", "is")
_ARTICLES = ("a", "an", "the")


def _noun_after(words: Sequence[str]) -> int | None:
    """Index of the character noun that heads ``words`` (article + up to 3 modifiers + noun)."""
    if not words or words[0] not in _ARTICLES:
        return None
    for index in range(1, min(len(words), 5)):
        word = words[index]
        if word in PHRASE_STOPWORDS:
            return None
        if word in CHARACTER_NOUNS:
            return index
    return None


def text_ties(text: str, names: Sequence[Mention]) -> list[Tie]:
    """Every place the text equates a name with a character noun.

    "Ginger the giraffe", "Ginger, a tall giraffe", "Ginger was a tall giraffe",
    "a little mouse called Pip".
    """
    ties = []
    for mention in names:
        after = text[mention.end : mention.end + 80]
        appositive = bool(re.match(r",?\s+(?:the|a|an)\s", after, re.IGNORECASE))
        words = [w.lower() for w in _WORD.findall(after)][:7]
        if words and words[0] in _COPULAS and not appositive:
            words = words[1:]
        head = _noun_after(words)
        if head is not None:
            alias = ""
            if appositive:  # "Ginger the giraffe" is itself a way to name her
                tail = re.match(r",?\s+" + r"\W+".join(_WORD.findall(after)[: head + 1]), after)
                alias = " ".join(f"{mention.text}{tail.group()}".split()) if tail else ""
            ties.append(Tie(mention.text, words[head], alias))
        before = [w.lower() for w in _WORD.findall(text[max(0, mention.start - 60) : mention.start])][-6:]
        if len(before) >= 3 and before[-1] in ("called", "named"):
            article = max((i for i, w in enumerate(before[:-2]) if w in _ARTICLES), default=None)
            if article is not None and _noun_after(before[article:-1]) == len(before) - 2 - article:
                ties.append(Tie(mention.text, before[-2], ""))
    return ties


# --------------------------------------------------------------------------- helpers


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "character"


def _context(sentences: Sequence[Sentence], ids: Sequence[int], limit: int = 600) -> str:
    """The sentences at ``ids`` and the one after each, in story order, up to ``limit`` characters."""
    chosen = sorted({i for i in ids} | {i + 1 for i in ids if i + 1 < len(sentences)})
    text = ""
    for index in chosen:
        if len(text) + len(sentences[index].text) > limit and text:
            break
        text += sentences[index].text + " "
    return text.strip()


def _premise_at(sentences: Sequence[Sentence], phrase: _Phrase) -> Premise:
    """The sentence of ``phrase``, focused on it (a long sentence is cut around the phrase)."""
    sentence = sentences[phrase.sentence]
    return Premise(sentence.text, phrase.start - sentence.start, phrase.end - sentence.start)


def _kind_options(premise: str, accepted: set[str]) -> tuple[str, ...]:
    """Kinds worth asking NLI about: the character nouns near the name, else people words."""
    near = [word for word in _WORD.findall(premise.lower()) if singular(word) in accepted]
    options = dict.fromkeys([singular(word) for word in near][:4] + ["girl", "boy", "woman", "man"])
    return tuple(options)


def _kind_from_answer(answer: str | None) -> str | None:
    if not answer:
        return None
    for word in reversed(_WORD.findall(answer.lower())):
        if word in CHARACTER_NOUNS:
            return word
    return None


# --------------------------------------------------------------------------- the whole cast


def find_characters(text: str, sentences: Sequence[Sentence], models: PlannerModels) -> list[CastMember]:
    """All characters of the story, most mentioned first (see the module docstring)."""
    # 1. names
    name_mentions = find_names(sentences, models)
    cast: dict[str, CastMember] = {}
    for mention in name_mentions:
        key = mention.text.casefold()
        member = cast.setdefault(key, CastMember(key=key, name=mention.text, named=True))
        member.names.add(mention.text)
        member.mentions.append(mention)
    for member in cast.values():
        member.name = _preferred_spelling(member.mentions)
    _merge_partial_names(cast)

    # 2. unnamed candidates; 3. ties the text states
    phrases = find_phrases(sentences)
    owner_of_name = {name: member for member in cast.values() for name in member.names}
    tied_heads: dict[str, set[str]] = defaultdict(set)
    for tie in text_ties(text, name_mentions):
        member = owner_of_name[tie.name]
        member.heads.add(tie.head)
        member.kind = member.kind or tie.head
        if tie.alias:
            member.names.add(tie.alias)
        tied_heads[tie.head].add(member.key)
    name_ends = sorted(m.end for m in name_mentions)

    # 4. confirm unnamed candidates (NLI) and find kinds of named characters (QA, then NLI)
    by_head: dict[str, list[_Phrase]] = defaultdict(list)
    for phrase in phrases:
        by_head[phrase.head].append(phrase)
    candidates = sorted(by_head)
    confirm = models.judge.entailment(
        [
            (_premise_at(sentences, by_head[head][0]), f"The {head} is a person or an animal.")
            for head in candidates
        ]
    )
    accepted = set()
    for head, probability in zip(candidates, confirm, strict=True):
        group = by_head[head]
        if group[0].known:
            keep = probability >= REJECT_KNOWN_NOUN
        else:
            keep = probability >= CONFIRM_UNKNOWN_NOUN and len(group) >= CONFIRM_MIN_MENTIONS
        if keep or head in tied_heads:
            accepted.add(head)

    untyped = [member for member in cast.values() if member.kind is None]
    answers = models.reader.answer_all(
        [
            Question(f"What kind of animal or person is {m.name}?", _context(sentences, m.sentence_ids()))
            for m in untyped
        ]
    )
    still_untyped = []
    for member, answer in zip(untyped, answers, strict=True):
        member.kind = _kind_from_answer(answer.text if answer else None)
        if member.kind is None:
            still_untyped.append(member)
    guesses = models.judge.choose(
        [
            Choice(Premise.around(premise, m.name), f"{m.name} is a {{}}.", _kind_options(premise, accepted))
            for m in still_untyped
            for premise in [_context(sentences, m.sentence_ids()[:2], 240)]
        ]
    )
    for member, guess in zip(still_untyped, guesses, strict=True):
        best = max(guess, key=guess.get)
        if guess[best] >= ZERO_SHOT_MIN:
            member.kind = best

    # ...a named character's kind claims the phrases with that head, when only one has that kind
    holders: dict[str, list[CastMember]] = defaultdict(list)
    for member in cast.values():
        for head in member.heads | ({member.kind} if member.kind else set()):
            holders[head].append(member)
    for head in sorted(accepted):
        owners = tied_heads.get(head) or {m.key for m in holders.get(head, [])}
        if len(owners) == 1:
            owner = cast[next(iter(owners))]
        else:
            key = f"~{head}"
            owner = cast.setdefault(key, CastMember(key=key, name=f"the {head}", named=False, kind=head))
        owner.heads.add(head)
        for phrase in by_head[head]:
            owner.phrases.add(phrase.text[0].lower() + phrase.text[1:])
            # "Ginger the giraffe" is one mention of Ginger, not two.
            # (bisection: a long story has thousands of names and phrases)
            before = bisect.bisect_right(name_ends, phrase.start) - 1
            right_after_name = before >= 0 and phrase.start - name_ends[before] <= 3
            if not right_after_name:
                owner.mentions.append(Mention(phrase.start, phrase.end, phrase.text, phrase.sentence, "phrase"))

    # 5. groups
    _add_groups(cast, text, sentences, name_mentions)
    members = list(cast.values())
    # 6. gender and number
    _assign_genders(members, sentences, models)
    # 7. pronouns
    _attribute_pronouns(members, sentences)
    # 8. rank
    for member in members:
        member.mentions.sort(key=lambda m: m.start)
    members.sort(key=lambda m: (-len(m.mentions), m.mentions[0].start if m.mentions else 0))
    return [m for m in members if m.mentions]


def _merge_partial_names(cast: dict[str, CastMember]) -> None:
    """"Rosa" and "Grandma Rosa" are one character when the longer name is the only match."""
    for key in sorted(cast, key=len):
        short = cast.get(key)
        if short is None:
            continue
        words = set(key.split())
        longer = [k for k in cast if k != key and words < set(k.split())]
        if len(longer) == 1:
            target = cast[longer[0]]
            target.names |= short.names
            target.mentions += short.mentions
            del cast[key]


def _pronoun_evidence(member: CastMember, members: Sequence[CastMember], sentences: Sequence[Sentence]) -> Counter[str]:
    """Pronoun genders in the sentence after each sentence that mentions only ``member``."""
    others = {m.sentence for other in members if other is not member for m in other.mentions}
    evidence: Counter[str] = Counter()
    for index in member.sentence_ids():
        if index in others or index + 1 >= len(sentences):
            continue
        for word in _WORD.findall(sentences[index + 1].text):
            gender = PRONOUNS.get(word.lower())
            if gender in ("female", "male"):
                evidence[gender] += 1
                break
    return evidence


def _assign_genders(members: Sequence[CastMember], sentences: Sequence[Sentence], models: PlannerModels) -> None:
    """Gender from gendered nouns; else from the pronouns when they agree at least twice; else NLI
    (with the pronouns as evidence)."""
    options = ("female", "male")
    asked = []
    for member in members:
        if member.is_group:
            continue  # a group is "they", whatever its members are
        nouns = member.heads | ({member.kind} if member.kind else set())
        evidence = _pronoun_evidence(member, members, sentences)
        if nouns & FEMALE_NOUNS:
            member.gender = "female"
        elif nouns & MALE_NOUNS:
            member.gender = "male"
        elif len(evidence) == 1 and sum(evidence.values()) >= SETTLED_BY_PRONOUNS:
            member.gender = next(iter(evidence))
        else:
            asked.append(member)
    choices = [
        Choice(
            Premise.around(_context(sentences, m.sentence_ids()[:1], 240), m.reference.removeprefix("the ")),
            f"{m.reference.capitalize()} is {{}}.",
            options,
        )
        for m in asked
    ]
    for member, scores in zip(asked, models.judge.choose(choices), strict=True):
        # NLI's verdict, averaged with the pronouns the text uses right after the character.
        evidence = _pronoun_evidence(member, members, sentences)
        total = sum(evidence.values())
        combined = {g: (scores[g] + evidence[g] / total) / 2 if total else scores[g] for g in options}
        best = max(combined, key=combined.get)
        if combined[best] >= GENDER_MIN:
            member.gender = best
        elif not (member.heads | {member.kind or ""}) & PEOPLE:
            member.gender = "neutral"  # an animal nobody calls he or she: "it"


def _compatible(member: CastMember, pronoun_gender: str) -> bool:
    if pronoun_gender == "group":
        return member.gender == "group"
    if pronoun_gender == "neutral":
        return member.gender in (None, "neutral") and not (member.heads | {member.kind or ""}) & PEOPLE
    return member.gender in (pronoun_gender, None, "neutral")


def _attribute_pronouns(members: Sequence[CastMember], sentences: Sequence[Sentence]) -> None:
    explicit: dict[int, list[tuple[int, CastMember]]] = defaultdict(list)
    for member in members:
        for mention in member.mentions:
            explicit[mention.sentence].append((mention.start, member))
    recent: list[tuple[int, int, CastMember]] = []  # (sentence, offset, member), in reading order
    for index, sentence in enumerate(sentences):
        events = [(offset, member, None) for offset, member in explicit.get(index, [])]
        for word in _WORD.finditer(sentence.text):
            gender = PRONOUNS.get(word.group().lower())
            if gender:
                events.append((sentence.start + word.start(), None, (word, gender)))
        for offset, member, pronoun in sorted(events, key=lambda e: e[0]):
            if member is not None:
                recent.append((index, offset, member))
                continue
            word, gender = pronoun
            for seen_index, _, candidate in reversed(recent):
                if index - seen_index > PRONOUN_WINDOW:
                    break
                if _compatible(candidate, gender):
                    mention = Mention(offset, offset + len(word.group()), word.group(), index, "pronoun")
                    candidate.mentions.append(mention)
                    recent.append((index, offset, candidate))
                    break
