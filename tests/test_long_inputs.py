"""Long sentences and paragraphs through the real planner with the tiny models.

The tiny NLI and QA models have RoBERTa's 514 positions (512 tokens), like roberta-large-mnli
and roberta-base-squad2, so a 600-word sentence overflows them exactly as it did the real ones
(``RuntimeError: The expanded size of the tensor … must match … 514``).
"""

from __future__ import annotations

import pytest

from fairytale.nlp import Judge, PlannerModels, Premise, Question, Reader, fit_premise, load_planner_models
from fairytale.planner import plan_story
from fairytale.prompts import clip_token_counter
from fairytale.story import read_story

FILLER = "and the wind blew softly over the green hills by the old mill".split()


def filler(words: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(words))


@pytest.fixture(scope="module")
def planner_models(tiny_ner, tiny_qa, tiny_nli) -> PlannerModels:
    return load_planner_models(str(tiny_ner), str(tiny_qa), str(tiny_nli))


@pytest.fixture(scope="module")
def clip_count(tiny_sd):
    from transformers import CLIPTokenizer

    return clip_token_counter(CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer"))


def _story(tmp_path, shape: str, words: int):
    if shape == "sentence":  # one run-on sentence, the character in its middle
        half = filler(words // 2)
        text = f"Once upon a time {half} came Ginger the giraffe {half} until the sun went down."
    else:  # one paragraph of speech whose quotation never closes: the splitter keeps it one sentence
        sentences = [f"Ginger the giraffe walked {filler(16)}." for _ in range(words // 20)]
        text = "“" + " ".join(sentences)
    path = tmp_path / "story.txt"
    path.write_text(f"A Long Day\n\n{text}\n", encoding="utf-8")
    return path


def _plan(path, models, count, words_per_page=None):
    return plan_story(path, models=models, count_tokens=count, seed=3, words_per_page=words_per_page)


@pytest.mark.parametrize(
    "shape, words",
    [
        ("sentence", 600),
        ("paragraph", 600),
        ("sentence", 3_000),
        ("paragraph", 3_000),
        pytest.param("sentence", 10_000, marks=pytest.mark.slow),  # QA reads ~50 windows: 2-15 s here
        pytest.param("paragraph", 10_000, marks=pytest.mark.slow),
    ],
)
def test_long_inputs_are_planned(tmp_path, planner_models, clip_count, shape, words):
    story = _story(tmp_path, shape, words)
    plan = _plan(story, planner_models, clip_count)
    body = read_story(story).text.split()
    assert " ".join(page.text for page in plan.pages).split() == body and len(body) >= words  # nothing lost
    assert "ginger" in {c.id for c in plan.characters}


def test_a_long_sentence_overflows_the_tiny_nli_model(planner_models):
    # The tests above are real: without fitting, this premise crashes the tiny model as it did the real one.
    pipe = planner_models.judge.pipe
    with pytest.raises((RuntimeError, IndexError)):
        pair = {"text": filler(600), "text_pair": "Ginger is a giraffe."}
        pipe([pair], top_k=None, function_to_apply="none")


def test_premise_is_cut_around_its_focus_and_the_hypothesis_is_kept(planner_models):
    tokenizer = planner_models.judge.pipe.tokenizer
    hypothesis = "The giraffe is a person or an animal."
    before, after = filler(1_500), filler(1_500)
    text = f"{before} the tall giraffe {after}"
    start = text.index("the tall giraffe")
    cut = fit_premise(tokenizer, 512, Premise(text, start, start + len("the tall giraffe")), hypothesis)
    assert "the tall giraffe" in cut and cut in text
    assert len(tokenizer(cut, hypothesis)["input_ids"]) <= 512
    middle = cut.index("the tall giraffe")
    assert abs(middle - (len(cut) - middle - len("the tall giraffe"))) < 80  # centred on the mention
    opening = fit_premise(tokenizer, 512, Premise(text), hypothesis)
    assert text.startswith(opening) and len(opening) < len(text)  # no focus: the opening is kept
    short = "Ginger was a tall giraffe."
    assert fit_premise(tokenizer, 512, Premise(short), hypothesis) == short  # what fits is never cut


def test_premise_around_finds_its_focus():
    premise = Premise.around("Far away lived Pip.", "pip")
    assert premise.text[premise.start : premise.end] == "Pip"
    assert Premise.around("Nobody here.", "Pip") == Premise("Nobody here.")


def test_judge_reads_a_long_premise_around_the_mention(planner_models):
    judge: Judge = planner_models.judge
    text = f"{filler(3_000)} Ginger the giraffe {filler(3_000)}"
    start = text.index("Ginger")
    [score] = judge.entailment([(Premise(text, start, start + 6), "Ginger is here.")])
    assert 0.0 <= score <= 1.0
    [(premise, hypothesis)] = [key for key in judge._cache if key[1] == "Ginger is here."]
    assert "Ginger the giraffe" in premise and hypothesis == "Ginger is here."


def test_reader_hands_the_whole_context_to_the_windowing_pipeline(planner_models):
    # The QA pipeline windows a long context itself (doc_stride); the Reader must not cut it.
    seen = []
    pipe = planner_models.reader.pipe

    def spy(**kwargs):
        seen.extend(kwargs["context"])
        assert not {"max_seq_len", "doc_stride", "truncation"} & set(kwargs)
        return pipe(**kwargs)

    reader = Reader(spy)
    context = f"{filler(10_000)} Ginger wore a red scarf."
    [answer] = reader.answer_all([Question("What is Ginger wearing?", context)])
    assert seen == [context]
    assert answer is None or answer.text in context


def test_a_question_too_long_for_the_qa_model_is_unanswered_not_a_crash(planner_models):
    name = "Q" + "".join(chr(0x0100 + (i * 37) % 300) for i in range(600))  # 600 letters, many tokens each
    reader: Reader = planner_models.reader
    long_question, short_question = (
        Question(f"What kind of animal or person is {name}?", "A cat sat on the mat."),
        Question("What sat?", "A cat sat on the mat."),
    )
    answers = reader.answer_all([long_question, short_question])
    assert answers[0] is None and (answers[1] is None or answers[1].text in short_question.context)


def test_max_input_tokens_reads_the_model_and_the_tokenizer():
    from types import SimpleNamespace

    from fairytale.nlp import max_input_tokens

    def pipe(model_type, positions, tokenizer_max):
        config = SimpleNamespace(model_type=model_type, max_position_embeddings=positions, pad_token_id=1)
        return SimpleNamespace(
            model=SimpleNamespace(config=config), tokenizer=SimpleNamespace(model_max_length=tokenizer_max)
        )

    assert max_input_tokens(pipe("roberta", 514, int(1e30))) == 512  # positions start after the padding index
    assert max_input_tokens(pipe("bert", 512, int(1e30))) == 512
    assert max_input_tokens(pipe("deberta-v2", 512, 256)) == 256  # the tokenizer's own limit, when it has one
    assert max_input_tokens(SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace()))) is None
