"""Tokenizers built on this machine, never downloaded.

* RoBERTa: a byte-level BPE trained here with 🤗 ``tokenizers`` on the test stories.
* CLIP: the real CLIP BPE vocabulary, rebuilt from the merges file that ships inside the PyPI
  package ``open_clip_torch`` (``bpe_simple_vocab_16e6.txt.gz``), so prompt token counts in the
  tests are the real ones. The package is only read as data, never imported.
"""

from __future__ import annotations

import gzip
import json
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
CLIP_MERGES = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 48,894 merges: 49,408 tokens = 2 x 256 byte symbols + merges + 2 specials.
CLIP_NUM_MERGES = 49152 - 256 - 2


def training_texts() -> list[str]:
    """Text the local RoBERTa BPE learns from: the test stories and the NER corpus."""
    texts = [path.read_text(encoding="utf-8") for path in sorted(DATA.glob("stories/*.txt"))]
    for path in sorted((DATA / "ner").glob("*.txt")):
        words = [line.split(" ")[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts.append(" ".join(words))
    return texts


def build_roberta_tokenizer(outdir: Path, vocab_size: int = 2000):
    """Train a byte-level BPE and wrap it as a ``RobertaTokenizerFast``; saved to ``outdir``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    outdir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        training_texts(),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(outdir))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(outdir / "vocab.json"), merges_file=str(outdir / "merges.txt"), model_max_length=512
    )
    tokenizer.save_pretrained(str(outdir))
    return tokenizer


def clip_merges_file() -> Path:
    """The CLIP merges file inside the installed ``open_clip_torch`` distribution."""
    try:
        dist = distribution("open_clip_torch")
    except PackageNotFoundError:
        raise RuntimeError(
            "The tests need the CLIP BPE vocabulary from open_clip_torch: "
            "pip install --no-deps 'open_clip_torch>=2.24,<4'"
        ) from None
    path = Path(str(dist.locate_file(CLIP_MERGES)))
    if not path.is_file():
        raise RuntimeError(f"open_clip_torch is installed but {CLIP_MERGES} is missing")
    return path


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins CLIP (like GPT-2) uses for raw bytes, in CLIP's vocabulary order.

    Printable bytes stand for themselves and come first; the other bytes follow in byte order,
    each mapped to a character from U+0100 up.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + index) for index in range(len(others))]


def write_clip_vocab(outdir: Path) -> tuple[Path, Path]:
    """Write CLIP's ``vocab.json`` and ``merges.txt`` into ``outdir``."""
    lines = gzip.open(clip_merges_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1]]
    byte_symbols = _byte_symbols()
    tokens = byte_symbols + [symbol + "</w>" for symbol in byte_symbols]
    tokens += ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    outdir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = outdir / "vocab.json", outdir / "merges.txt"
    vocab_file.write_text(json.dumps({token: index for index, token in enumerate(tokens)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_clip_tokenizer(outdir: Path, pad_token: str = "<|endoftext|>"):
    """A ``CLIPTokenizer`` with the real CLIP vocabulary (SD 1.x pads with ``<|endoftext|>``, SD 2.x with ``!``)."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_vocab(outdir / "_bpe")
    tokenizer = CLIPTokenizer(
        vocab_file=str(vocab_file),
        merges_file=str(merges_file),
        pad_token=pad_token,
        model_max_length=77,
    )
    return tokenizer
