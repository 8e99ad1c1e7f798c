"""Tiny NLP models in the on-disk layout of the real ones.

* ``ner``: a flair ``SequenceTagger`` trained for a few seconds on ``tests/data/ner`` (CoNLL
  columns), so it really tags PER; saved as ``pytorch_model.bin`` like ``flair/ner-english``.
* ``qa``: a random RoBERTa question-answering head with the local byte-level BPE tokenizer.
* ``nli``: a random RoBERTa sequence classifier with MNLI's labels (as ``roberta-large-mnli``).

Random heads exercise plumbing only; no test reads meaning into their answers.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from tests.tiny_models.tokenizers import DATA, build_roberta_tokenizer

MNLI_LABELS = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}


def build_ner(outdir: Path, epochs: int = 12, seed: int = 0) -> Path:
    """Train the tiny NER tagger and save it as ``outdir/pytorch_model.bin``."""
    import flair
    import torch
    from flair.datasets import ColumnCorpus
    from flair.embeddings import OneHotEmbeddings
    from flair.models import SequenceTagger

    logging.getLogger("flair").setLevel(logging.WARNING)
    flair.set_seed(seed)
    flair.device = torch.device("cpu")
    corpus = ColumnCorpus(
        DATA / "ner", {0: "text", 1: "ner"}, train_file="train.txt", dev_file="dev.txt", test_file="test.txt"
    )
    tag_dictionary = corpus.make_label_dictionary("ner", add_unk=False)
    embeddings = OneHotEmbeddings.from_corpus(corpus, field="text", embedding_length=32, min_freq=2)
    tagger = SequenceTagger(
        embeddings=embeddings,
        tag_dictionary=tag_dictionary,
        tag_type="ner",
        hidden_size=32,
        use_crf=False,
        word_dropout=0.0,
        locked_dropout=0.0,
    )
    optimizer = torch.optim.Adam(tagger.parameters(), lr=0.01)
    sentences = list(corpus.train)
    order = random.Random(seed)
    tagger.train()
    for _ in range(epochs):
        order.shuffle(sentences)
        for start in range(0, len(sentences), 16):
            batch = sentences[start : start + 16]
            loss, count = tagger.forward_loss(batch)
            optimizer.zero_grad()
            (loss / max(count, 1)).backward()
            optimizer.step()
            for sentence in batch:  # flair caches embeddings on tokens; drop them between steps
                sentence.clear_embeddings()
    tagger.eval()
    outdir.mkdir(parents=True, exist_ok=True)
    tagger.save(outdir / "pytorch_model.bin")
    return outdir


def _roberta_config(vocab_size: int, **extra):
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **extra,
    )


def build_qa(outdir: Path, seed: int = 0) -> Path:
    """A random SQuAD2-style QA model (RoBERTa) with the local tokenizer."""
    import torch
    from transformers import RobertaForQuestionAnswering

    tokenizer = build_roberta_tokenizer(outdir)
    torch.manual_seed(seed)
    model = RobertaForQuestionAnswering(_roberta_config(len(tokenizer)))
    model.save_pretrained(outdir, safe_serialization=True)
    return outdir


def build_nli(outdir: Path, seed: int = 0) -> Path:
    """A random MNLI-style classifier (RoBERTa) with the local tokenizer."""
    import torch
    from transformers import RobertaForSequenceClassification

    tokenizer = build_roberta_tokenizer(outdir)
    torch.manual_seed(seed)
    config = _roberta_config(
        len(tokenizer),
        num_labels=3,
        id2label=MNLI_LABELS,
        label2id={label: index for index, label in MNLI_LABELS.items()},
    )
    model = RobertaForSequenceClassification(config)
    model.save_pretrained(outdir, safe_serialization=True)
    return outdir
