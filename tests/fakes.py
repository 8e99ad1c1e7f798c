"""Rule-driven stand-ins for the planner's models, shaped like the real backends.

The fakes replace only the expensive part, the 🤗 pipeline call: the real ``Reader`` and
``Judge`` wrap them, so batching, caching and the zero-shot arithmetic are the product's own.
Rules make a fake answer what a good model would for the test story, which lets tests check
the planner's *behaviour* (aliases, pronouns, carried-over settings) honestly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

from fairytale.nlp import Judge, NameSpan, PlannerModels, Reader


class FakeNames:
    """Finds exactly the given names (whole words) — a perfect NER for known names."""

    def __init__(self, *names: str) -> None:
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")

    def persons(self, texts):
        return [[NameSpan(m.start(), m.end(), m.group()) for m in self.pattern.finditer(t)] for t in texts]


@dataclass
class FakeQAPipe:
    """Answers a question matching a rule's pattern with the rule's text — only when that text
    is in the context (extractive, like the real model); otherwise SQuAD2's empty answer."""

    rules: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    def __call__(self, question, context, **kwargs):
        self.calls += 1
        out = []
        for q, c in zip(question, context, strict=True):
            answer = ""
            for pattern, text in self.rules.items():
                if re.search(pattern, q) and text in c:
                    answer = text
                    break
            start = c.find(answer) if answer else 0
            out.append({"answer": answer, "score": 0.9, "start": start, "end": start + len(answer)})
        return out


@dataclass
class FakeNLIPipe:
    """Entailment logits from rules ``(premise regex, hypothesis regex, logit)``; 0 when none fits."""

    rules: list[tuple[str, str, float]] = field(default_factory=list)
    pairs_seen: list[tuple[str, str]] = field(default_factory=list)
    model: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(
            config=SimpleNamespace(id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
        )
    )

    def __call__(self, inputs, **kwargs):
        assert kwargs.get("function_to_apply") == "none" and "top_k" in kwargs
        out = []
        for item in inputs:
            premise, hypothesis = item["text"], item["text_pair"]
            self.pairs_seen.append((premise, hypothesis))
            logit = next((v for p, h, v in self.rules if re.search(p, premise) and re.search(h, hypothesis)), 0.0)
            out.append(
                [
                    {"label": "ENTAILMENT", "score": logit},
                    {"label": "NEUTRAL", "score": 0.0},
                    {"label": "CONTRADICTION", "score": -logit},
                ]
            )
        return out


def fake_models(names=(), qa_rules=None, nli_rules=None) -> PlannerModels:
    """PlannerModels made of the fakes above, wrapped by the real Reader and Judge."""
    return PlannerModels(
        names=FakeNames(*names) if names else FakeNames("\u0000"),
        reader=Reader(FakeQAPipe(qa_rules or {})),
        judge=Judge(FakeNLIPipe(nli_rules or [])),
        ids={"ner": "fake", "qa": "fake", "nli": "fake"},
    )


def word_count(text: str) -> int:
    """A stand-in token counter: one token per word plus start and end markers."""
    return len(text.split()) + 2
