"""The three language models behind the planner, behind small batched interfaces.

* :class:`NameFinder` — FLAIR NER: person names in sentences.
* :class:`Reader` — extractive QA (SQuAD2): an answer span, or ``None`` when the model says the
  text holds no answer. Invented answers are never filled in.
* :class:`Judge` — NLI (MNLI): how strongly a premise entails a hypothesis, how far it leans
  from contradiction to entailment (one hypothesis answers a yes/no/unsure question), and
  zero-shot choices between options (the zero-shot-classification recipe: softmax over the
  entailment logits of one hypothesis per option).

Long inputs are cut the way each model was trained, never past its positions: the QA pipeline
windows a long context itself (SQuAD's ``max_seq_len`` 384 / ``doc_stride`` 128, so an answer
anywhere in it can be found), and the Judge cuts a premise that does not fit beside its
hypothesis to the window of tokens around what the question is about (a :class:`Premise`'s
focus: the character's mention, the cue word); the hypothesis is never cut.

Every call takes a whole batch of queries. Identical queries are answered once per run (a
cache keyed by the exact text), and unique ones go through the 🤗 pipeline in length-sorted
batches so padding stays small. The planner asks each phase's questions in one call.

Tests pass fakes with the same methods (see ``tests/fakes.py``); nothing here knows hub ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class NameSpan:
    """A person name found in a text: character offsets into that text."""

    start: int
    end: int
    text: str


class NameFinder:
    """Person names with a flair ``SequenceTagger`` (PER spans)."""

    def __init__(self, tagger: Any, batch_size: int = 32) -> None:
        self.tagger = tagger
        self.batch_size = batch_size
        self.label_type = getattr(tagger, "label_type", "ner")

    def persons(self, texts: Sequence[str]) -> list[list[NameSpan]]:
        """For each text, the PER spans the tagger finds."""
        from flair.data import Sentence

        sentences = [Sentence(text) for text in texts]
        nonempty = [sentence for sentence in sentences if len(sentence) > 0]
        if nonempty:
            self.tagger.predict(nonempty, mini_batch_size=self.batch_size, label_name=self.label_type)
        found = []
        for sentence in sentences:
            spans = [
                NameSpan(span.start_position, span.end_position, span.text)
                for span in sentence.get_spans(self.label_type)
                if span.get_label(self.label_type).value == "PER"
            ]
            found.append(spans)
        return found


# --------------------------------------------------------------------------- question answering


@dataclass(frozen=True)
class Question:
    question: str
    context: str


@dataclass(frozen=True)
class Answer:
    text: str
    score: float
    start: int
    end: int


@dataclass
class Counters:
    """What a run asked of its models, for the benchmark and the summary."""

    asked: int = 0
    computed: int = 0
    batches: int = 0


class Reader:
    """Extractive QA that may answer "no answer" (SQuAD2's null span)."""

    def __init__(self, pipe: Any, batch_size: int = 16, min_score: float = 0.05, max_answer_len: int = 24) -> None:
        self.pipe = pipe
        self.batch_size = batch_size
        self.min_score = min_score
        self.max_answer_len = max_answer_len
        self.counters = Counters()
        self._cache: dict[Question, Answer | None] = {}

    def _question_fits(self, question: str) -> bool:
        """Whether the pipeline can window a context beside ``question``: the question (never cut)
        must leave room for the stride the windows overlap by, as the pipeline computes it."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if tokenizer is None:
            return True
        window = min(tokenizer.model_max_length, 384)  # the pipeline's max_seq_len default
        room = window - min(window // 2, 128) - tokenizer.num_special_tokens_to_add(pair=True) - 1
        return len(tokenizer(question, add_special_tokens=False, verbose=False)["input_ids"]) <= room

    def answer_all(self, questions: Sequence[Question]) -> list[Answer | None]:
        """Answer every question; ``None`` where the model finds no answer in the context, and
        for a question too long to leave the model room for any context."""
        self.counters.asked += len(questions)
        todo = sorted({q for q in questions if q not in self._cache}, key=lambda q: len(q.context) + len(q.question))
        for question in [q for q in todo if not self._question_fits(q.question)]:
            self._cache[question] = None
            todo.remove(question)
        if todo:
            outputs = self.pipe(
                question=[q.question for q in todo],
                context=[q.context for q in todo],
                batch_size=self.batch_size,
                handle_impossible_answer=True,
                max_answer_len=self.max_answer_len,
            )
            if isinstance(outputs, dict):
                outputs = [outputs]
            self.counters.computed += len(todo)
            self.counters.batches += math.ceil(len(todo) / self.batch_size)
            for question, output in zip(todo, outputs, strict=True):
                text = (output.get("answer") or "").strip()
                if not text or output["score"] < self.min_score:
                    self._cache[question] = None  # SQuAD2 "no answer": keep it that way
                else:
                    self._cache[question] = Answer(text, float(output["score"]), output["start"], output["end"])
        return [self._cache[q] for q in questions]


# --------------------------------------------------------------------------- entailment


@dataclass(frozen=True)
class Premise:
    """An NLI premise and the span ``[start, end)`` of it the question is about.

    When the premise is too long for the model, the tokens around that span are kept; with an
    empty span (the default) the premise's opening is kept.
    """

    text: str
    start: int = 0
    end: int = 0

    @classmethod
    def around(cls, text: str, focus: str) -> Premise:
        """``text`` focused on the first occurrence of ``focus`` (case-insensitive), else its opening."""
        at = text.lower().find(focus.lower()) if focus else -1
        return cls(text, at, at + len(focus)) if at >= 0 else cls(text)


PremiseLike = str | Premise


@dataclass(frozen=True)
class Choice:
    """A zero-shot choice: which option fits the premise, through ``template.format(option)``."""

    premise: PremiseLike
    template: str
    options: tuple[str, ...]


#: RoBERTa-style models number positions after the padding index, so they read
#: ``max_position_embeddings - pad_token_id - 1`` tokens (512 of roberta-large-mnli's 514).
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text"}
)


def max_input_tokens(pipe: Any) -> int | None:
    """How many tokens (special ones included) the pipeline's model reads; None if unknown."""
    limits = []
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None and 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))  # tokenizers without a limit say 1e30
    config = getattr(getattr(pipe, "model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", None) in _OFFSET_POSITIONS:
            positions -= (getattr(config, "pad_token_id", None) or 0) + 1
        limits.append(positions)
    return min(limits) if limits else None


def fit_premise(tokenizer: Any, limit: int, premise: Premise, hypothesis: str) -> str:
    """``premise``'s text, cut to the tokens around its focus so that, with ``hypothesis`` (never
    cut) and the special tokens, it fits in ``limit`` tokens. Unchanged when it fits."""
    room = limit - tokenizer.num_special_tokens_to_add(pair=True)
    room -= len(tokenizer(hypothesis, add_special_tokens=False)["input_ids"])
    text = premise.text
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"]
    if len(offsets) <= room:
        return text
    if room < 8:
        from fairytale.errors import FairytaleError

        raise FairytaleError(f"NLI hypothesis too long for the model ({limit} tokens): {hypothesis[:80]!r}")
    if premise.end > premise.start:
        focus = [i for i, (a, b) in enumerate(offsets) if b > premise.start and a < premise.end]
        first, last = (focus[0], focus[-1]) if focus else (0, 0)
    else:
        first = last = 0  # no focus: keep the opening
    size = room
    while True:
        # Centre the window on the focus; a focus wider than the window keeps its own start.
        spare = max(0, size - (last - first + 1))
        begin = max(0, min(first - spare // 2, len(offsets) - size))
        window = text[offsets[begin][0] : offsets[begin + size - 1][1]]
        # Cut text may tokenize a little differently at its edges: shrink until it fits.
        excess = len(tokenizer(window, add_special_tokens=False, verbose=False)["input_ids"]) - room
        if excess <= 0 or size <= 1:
            return window
        size -= excess


@dataclass
class Judge:
    """NLI scores with a pair-classification pipeline returning raw logits."""

    pipe: Any
    batch_size: int = 16
    counters: Counters = field(default_factory=Counters)
    _cache: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = {name.lower(): name for name in self.pipe.model.config.id2label.values()}
        self._entail = next(name for low, name in labels.items() if low.startswith("entail"))
        self._neutral = next(name for low, name in labels.items() if low.startswith("neutral"))
        self._contra = next(name for low, name in labels.items() if low.startswith("contra"))
        self._limit = max_input_tokens(self.pipe)
        tokenizer = getattr(self.pipe, "tokenizer", None)
        # Cutting around a focus needs character offsets, which only fast tokenizers give.
        self._tokenizer = tokenizer if self._limit and getattr(tokenizer, "is_fast", False) else None

    def _fit(self, premise: PremiseLike, hypothesis: str) -> tuple[str, str]:
        premise = premise if isinstance(premise, Premise) else Premise(premise)
        if self._tokenizer is None:
            return premise.text, hypothesis
        return fit_premise(self._tokenizer, self._limit, premise, hypothesis), hypothesis

    def _logits(self, pairs: Sequence[tuple[PremiseLike, str]]) -> list[tuple[float, float, float]]:
        """(entailment, neutral, contradiction) logits of each (premise, hypothesis) pair."""
        self.counters.asked += len(pairs)
        pairs = [self._fit(premise, hypothesis) for premise, hypothesis in pairs]
        todo = sorted({p for p in pairs if p not in self._cache}, key=lambda p: len(p[0]) + len(p[1]))
        if todo:
            inputs = [{"text": premise, "text_pair": hypothesis} for premise, hypothesis in todo]
            # Premises already fit (see fit_premise); truncating only them is the last guard.
            limits = {"truncation": "only_first", "max_length": self._limit} if self._limit else {}
            outputs = self.pipe(
                inputs, batch_size=self.batch_size, top_k=None, function_to_apply="none", **limits
            )
            if outputs and isinstance(outputs[0], dict):
                outputs = [outputs]
            self.counters.computed += len(todo)
            self.counters.batches += math.ceil(len(todo) / self.batch_size)
            for pair, scores in zip(todo, outputs, strict=True):
                by_label = {row["label"]: row["score"] for row in scores}
                self._cache[pair] = tuple(float(by_label[k]) for k in (self._entail, self._neutral, self._contra))
        return [self._cache[p] for p in pairs]

    def entailment(self, pairs: Sequence[tuple[PremiseLike, str]]) -> list[float]:
        """P(entailment) against contradiction for each (premise, hypothesis) pair."""
        return [1.0 / (1.0 + math.exp(contra - entail)) for entail, _, contra in self._logits(pairs)]

    def lean(self, pairs: Sequence[tuple[PremiseLike, str]]) -> list[float]:
        """P(entailment) − P(contradiction) over all three labels: +1 yes, −1 no, 0 unsure."""
        leans = []
        for logits in self._logits(pairs):
            top = max(logits)
            entail, neutral, contra = (math.exp(v - top) for v in logits)
            leans.append((entail - contra) / (entail + neutral + contra))
        return leans

    def choose(self, choices: Sequence[Choice]) -> list[dict[str, float]]:
        """For each choice, a probability per option (they sum to 1)."""
        pairs = [(c.premise, c.template.format(option)) for c in choices for option in c.options]
        logits = self._logits(pairs)
        results, index = [], 0
        for choice in choices:
            entails = [logits[index + k][0] for k in range(len(choice.options))]
            index += len(choice.options)
            top = max(entails)
            weights = [math.exp(e - top) for e in entails]
            total = sum(weights)
            results.append({option: w / total for option, w in zip(choice.options, weights, strict=True)})
        return results


@dataclass
class PlannerModels:
    """The three models a plan needs; build with :func:`load_planner_models` or pass fakes."""

    names: Any
    reader: Any
    judge: Any
    ids: dict[str, str] = field(default_factory=dict)


def load_planner_models(
    ner_model: str | None = None,
    qa_model: str | None = None,
    nli_model: str | None = None,
    device: str | None = None,
) -> PlannerModels:
    """Load NER, QA and NLI through the registry (hub ids or local paths)."""
    from fairytale import registry

    ids = {
        "ner": registry.resolve("ner", ner_model, device).ref,
        "qa": registry.resolve("qa", qa_model, device).ref,
        "nli": registry.resolve("nli", nli_model, device).ref,
    }
    return PlannerModels(
        names=NameFinder(registry.load_ner(ner_model, device)),
        reader=Reader(registry.load_qa(qa_model, device)),
        judge=Judge(registry.load_nli(nli_model, device)),
        ids=ids,
    )
