"""Learned-token files: every format reads back the same vectors; mismatches are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fairytale.embeddings import (
    LearnedEmbedding,
    a1111_path,
    check_fits,
    existing_word,
    family_of_text_encoder,
    load_into_pipeline,
    read_embedding,
    save_embedding,
)
from fairytale.errors import FairytaleError


@pytest.fixture()
def vectors():
    torch.manual_seed(0)
    return torch.randn(2, 32)


def test_saved_files_read_back_in_both_layouts(tmp_path, vectors):
    path = tmp_path / "ginger.safetensors"
    written = save_embedding(path, "<ginger>", vectors, family="sd1", base_model="tiny")
    assert written == [path, a1111_path(path)]
    for file in written:
        embedding = read_embedding(file)
        assert embedding.token == "<ginger>"
        assert embedding.family == "sd1"
        assert torch.equal(embedding.vectors, vectors)


def test_reads_foreign_formats(tmp_path, vectors):
    torch.save({"string_to_param": {"*": vectors}, "name": "<owl>", "step": 100}, tmp_path / "owl.pt")
    torch.save(vectors[0], tmp_path / "bare.bin")
    save_file({"<fox>": vectors}, str(tmp_path / "learned_embeds.safetensors"))
    save_file({"emb_params": vectors}, str(tmp_path / "comfy.safetensors"))
    assert read_embedding(tmp_path / "owl.pt").token == "<owl>"
    bare = read_embedding(tmp_path / "bare.bin")
    assert bare.token == "<bare>" and bare.vectors.shape == (1, 32)
    assert read_embedding(tmp_path / "learned_embeds.safetensors").token == "<fox>"
    assert read_embedding(tmp_path / "comfy.safetensors", token="<comfy>").token == "<comfy>"


def test_pickles_with_code_are_refused(tmp_path):
    import argparse

    # Any object that is not a plain tensor container stands for a pickle that could run code.
    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "evil.pt")
    with pytest.raises(FairytaleError, match="weights_only"):
        read_embedding(tmp_path / "evil.pt")


def test_width_mismatch_is_a_clear_error(vectors):
    embedding = LearnedEmbedding(token="<g>", vectors=torch.zeros(1, 768), family="sd1")
    with pytest.raises(FairytaleError, match=r"SD 1\.x.*SD 2\.x"):
        check_fits(embedding, 1024)
    check_fits(embedding, 768)


def test_family_from_text_encoder_activation():
    from transformers import CLIPTextConfig

    assert family_of_text_encoder(CLIPTextConfig(hidden_act="quick_gelu")) == "sd1"
    assert family_of_text_encoder(CLIPTextConfig(hidden_act="gelu")) == "sd2"


def test_loaded_into_pipeline_through_diffusers(tmp_path, tiny_sd, tiny_sd2, vectors):
    from diffusers import StableDiffusionPipeline

    save_embedding(tmp_path / "g.safetensors", "<ginger>", vectors)
    embedding = read_embedding(a1111_path(tmp_path / "g.safetensors"))  # diffusers can't read emb_params itself
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    assert load_into_pipeline(pipe, [embedding]) == ["<ginger>"]
    ids = pipe.tokenizer(pipe.maybe_convert_prompt("a <ginger> on grass", pipe.tokenizer)).input_ids
    table = pipe.text_encoder.get_input_embeddings().weight
    token_ids = pipe.tokenizer.convert_tokens_to_ids(["<ginger>", "<ginger>_1"])
    assert set(token_ids) <= set(ids)
    assert torch.equal(table[token_ids], vectors)
    assert load_into_pipeline(pipe, [embedding]) == []  # already there: skipped, not an error

    wide = StableDiffusionPipeline.from_pretrained(tiny_sd2)
    with pytest.raises(FairytaleError, match="trained for"):
        load_into_pipeline(wide, [embedding])


def test_a_retrained_token_replaces_the_rows_a_loaded_pipeline_has(tiny_sd):
    import torch

    from fairytale import registry
    from fairytale.embeddings import LearnedEmbedding, load_into_pipeline

    pipe = registry.load_pipeline("sd14", ref=str(tiny_sd))
    first = LearnedEmbedding("<t>", torch.randn(2, 32), family="sd1")
    retrained = LearnedEmbedding("<t>", torch.randn(2, 32), family="sd1")
    rows = lambda: pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(["<t>", "<t>_1"])]  # noqa: E731

    assert load_into_pipeline(pipe, [first]) == ["<t>"]
    assert torch.equal(rows(), first.vectors)
    assert load_into_pipeline(pipe, [first]) == []  # the same file again: nothing to do
    assert load_into_pipeline(pipe, [retrained]) == ["<t>"]
    assert torch.equal(rows(), retrained.vectors)
    with pytest.raises(FairytaleError, match="another number of vectors"):
        load_into_pipeline(pipe, [LearnedEmbedding("<t>", torch.randn(3, 32), family="sd1")])


@pytest.mark.parametrize(
    "tensor, message",
    [
        (torch.tensor([[0.0, float("inf")]]), "NaN or infinite"),
        (torch.ones(76, 4), "at most 75"),
        (torch.ones(1, 4, dtype=torch.int64), "not learned vectors"),
        (torch.ones(1, 0), "holds no vectors"),
    ],
)
def test_vectors_that_cannot_be_a_token_are_refused(tmp_path, tensor, message):
    path = tmp_path / "bad.safetensors"
    save_file({"<bad>": tensor}, str(path))
    with pytest.raises(FairytaleError, match=message):
        read_embedding(path)


def test_a_token_that_is_already_a_word_is_found(tiny_sd):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    # CLIP stores whole words with an end-of-word mark: "giraffe" is not a key, yet it is a word.
    assert "giraffe" not in tokenizer.get_vocab()
    assert existing_word(tokenizer, "giraffe") == "giraffe</w>"
    assert existing_word(tokenizer, "Giraffe") == "giraffe</w>"
    assert existing_word(tokenizer, "<|endoftext|>") == "<|endoftext|>"
    assert existing_word(tokenizer, "<giraffe>") is None
    tokenizer.add_tokens(["<giraffe>"])
    assert existing_word(tokenizer, "<giraffe>") is None  # a learned token loaded before is not a word
