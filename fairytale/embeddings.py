"""Learned textual-inversion tokens on disk: read any common format, write two.

Formats read:

* diffusers ``learned_embeds.safetensors`` layout: ``{token: tensor[n, d]}``;
* A1111 / ComfyUI safetensors: ``{"emb_params": tensor[n, d]}`` (diffusers itself cannot read
  this one, so it is converted here);
* A1111 ``.pt``: ``{"string_to_param": {"*": tensor}, "name": token, ...}``, and a bare tensor
  (``.pt``/``.bin``), both read with ``torch.load(weights_only=True)``, never a full unpickle.

Files written by fAIrytale also carry metadata: the model family (``sd1`` = 768-d CLIP ViT-L text
encoder, ``sd2`` = 1024-d OpenCLIP ViT-H) and the width, so an embedding is never loaded into a
text encoder it was not trained for (:func:`check_fits`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairytale.errors import FairytaleError
from fairytale.files import atomic_path
from fairytale.quiet_logs import errors_only

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT_VERSION = "1"
#: The most vectors a token may have: a prompt holds 75 tokens between its start and end marks.
MAX_VECTORS = 75
FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2"}
FAMILY_NAMES = {"sd1": "SD 1.x (768-d CLIP ViT-L text encoder)", "sd2": "SD 2.x / unCLIP (1024-d OpenCLIP-H text encoder)"}


def family_of_width(width: int) -> str | None:
    """The model family whose text encoder is ``width`` wide, if it is a known one."""
    return FAMILY_BY_WIDTH.get(width)


def family_of_text_encoder(config: Any) -> str:
    """The family of a CLIP text-encoder config: OpenCLIP-H (SD 2.x) uses ``gelu``, CLIP ViT-L
    (SD 1.x) ``quick_gelu``. The activation, not the width, tells them apart for any size."""
    return "sd2" if getattr(config, "hidden_act", "quick_gelu") == "gelu" else "sd1"


def describe_family(family: str | None, width: int) -> str:
    """Human description of a text encoder, e.g. ``SD 1.x (768-d CLIP ViT-L text encoder)``."""
    return FAMILY_NAMES.get(family or "", f"a {width}-d text encoder")


@dataclass
class LearnedEmbedding:
    """One learned token: its name and its vectors (``n`` vectors of width ``d``)."""

    token: str
    vectors: torch.Tensor
    family: str | None = None
    source: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])


def _as_matrix(tensor: Any, where: Path) -> torch.Tensor:
    """``tensor`` as an ``n × d`` float32 matrix of finite learned vectors, or a one-line error."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise FairytaleError(f"{where} is not an embedding file: expected a tensor, found {type(tensor).__name__}")
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise FairytaleError(f"{where} is not an embedding file: tensor of shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise FairytaleError(f"{where} is not an embedding file: it holds {tensor.dtype} values, not learned vectors")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise FairytaleError(f"{where} holds no vectors (shape {tuple(tensor.shape)})")
    if tensor.shape[0] > MAX_VECTORS:
        raise FairytaleError(
            f"{where} holds {tensor.shape[0]} vectors; a token may have at most {MAX_VECTORS} (a prompt's length)"
        )
    matrix = tensor.detach().to(torch.float32).cpu()
    if not torch.isfinite(matrix).all():
        # NaN or inf rows paint a black (or noise) picture without any error: refuse them here.
        raise FairytaleError(f"{where} is damaged: its vectors hold NaN or infinite values (a training run that diverged?)")
    return matrix


def _from_state(state: Any, metadata: dict[str, str], path: Path, token: str | None) -> LearnedEmbedding:
    import torch

    name = token or metadata.get("token") or metadata.get("name")
    if isinstance(state, torch.Tensor):  # bare tensor
        vectors = state
    elif not isinstance(state, dict):
        raise FairytaleError(
            f"{path} is not a textual-inversion embedding: it holds a {type(state).__name__}, not tensors"
        )
    elif "emb_params" in state:  # A1111/ComfyUI safetensors
        vectors = state["emb_params"]
    elif "string_to_param" in state:  # A1111 .pt
        params = state["string_to_param"]
        if isinstance(params, dict):
            if not params:
                raise FairytaleError(f"{path} is not a textual-inversion embedding: its string_to_param is empty")
            vectors = params.get("*", next(iter(params.values())))
        else:
            vectors = params
        stored_name = state.get("name")
        name = token or (stored_name if isinstance(stored_name, str) else None) or name
    elif len(state) == 1:  # diffusers layout {token: tensor}
        (stored, vectors), = state.items()
        name = token or str(stored)
    else:
        keys = ", ".join(sorted(map(str, state))[:5]) or "none"
        raise FairytaleError(f"{path} is not a textual-inversion embedding (keys: {keys})")
    name = name or f"<{path.stem.split('.')[0]}>"
    matrix = _as_matrix(vectors, path)
    family = metadata.get("family") or family_of_width(matrix.shape[-1])
    return LearnedEmbedding(token=name, vectors=matrix, family=family, source=path, metadata=metadata)


def read_embedding(path: Path, token: str | None = None) -> LearnedEmbedding:
    """Read a learned token from any of the formats in the module docstring.

    ``token`` overrides the name stored in the file (a bare tensor has none; then the file
    name in angle brackets is used).
    """
    path = Path(path)
    if not path.is_file():
        raise FairytaleError(f"Embedding file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise FairytaleError(f"{path} is not a readable safetensors file: {exc}") from exc
        return _from_state(state, metadata, path, token)
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FairytaleError(
            f"{path} could not be read as plain tensors (weights_only); convert it to safetensors: {reason}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a text file or junk trips torch's legacy reader in many ways
        raise FairytaleError(f"{path} is not an embedding file torch can read ({type(exc).__name__})") from exc
    return _from_state(state, {}, path, token)


def a1111_path(path: Path) -> Path:
    """Where the A1111/ComfyUI copy of an embedding saved at ``path`` goes."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.safetensors')}.a1111.safetensors")


def save_embedding(
    path: Path,
    token: str,
    vectors: torch.Tensor,
    *,
    family: str | None = None,
    base_model: str | None = None,
    extra: dict[str, str] | None = None,
    write_a1111: bool = True,
) -> list[Path]:
    """Save a learned token in diffusers layout at ``path`` and an A1111 copy beside it.

    Both files are safetensors with the same metadata. Returns the paths written.
    """
    from safetensors.torch import save_file

    matrix = _as_matrix(vectors, Path(path)).contiguous()
    family = family or family_of_width(matrix.shape[-1]) or ""
    metadata = {
        "format": "fairytale-textual-inversion",
        "format_version": FORMAT_VERSION,
        "token": token,
        "name": token,
        "family": family,
        "text_encoder_width": str(matrix.shape[-1]),
        "vectors": str(matrix.shape[0]),
        "base_model": base_model or "",
        **(extra or {}),
    }
    written = []
    targets = [(Path(path), {token: matrix})]
    if write_a1111:
        targets.append((a1111_path(path), {"emb_params": matrix}))
    for target, tensors in targets:
        with atomic_path(target) as tmp:
            save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        written.append(target)
    return written


def text_encoder_width(pipe: Any) -> int:
    """Width of the token embeddings of ``pipe``'s text encoder."""
    return int(pipe.text_encoder.get_input_embeddings().weight.shape[1])


def check_fits(embedding: LearnedEmbedding, width: int) -> None:
    """Refuse an embedding trained for another text encoder, with a clear message."""
    if embedding.width == width:
        return
    trained = describe_family(embedding.family or family_of_width(embedding.width), embedding.width)
    target = describe_family(family_of_width(width), width)
    where = f" ({embedding.source})" if embedding.source else ""
    raise FairytaleError(
        f"Embedding {embedding.token}{where} was trained for {trained}, but this model has "
        f"{target}. Train the token for this model, or render with the backend it was made for."
    )


def existing_word(tokenizer: Any, token: str) -> str | None:
    """The entry of ``tokenizer``'s own vocabulary that ``token`` already is, or None for a new word.

    CLIP's vocabulary stores whole words with an end-of-word mark (``giraffe</w>``), so a token
    ``giraffe`` is not *in* it, yet reads as that word: added as a learned token, it would take
    over every "giraffe" in every later prompt. Tokens added earlier (learned ones) do not count.
    """
    added = set(tokenizer.get_added_vocab()) - set(getattr(tokenizer, "all_special_tokens", []))
    if token in added:
        return None
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return token
    pieces = tokenizer.tokenize(token)
    if len(pieces) == 1 and pieces[0] in vocab and pieces[0] not in added:
        return pieces[0]
    return None


def check_new_token(tokenizer: Any, token: str) -> None:
    """Refuse a learned token that is already a word of the tokenizer (see :func:`existing_word`)."""
    word = existing_word(tokenizer, token)
    if word is not None:
        shown = re.sub(r"</w>|[^\w-]", "", token) or "name"
        raise FairytaleError(
            f"The model already knows the token {token} as a word ({word}): as a learned token it would "
            f"replace that word in every prompt. Pick a new word, e.g. <{shown}>"
        )


def load_into_pipeline(pipe: Any, embeddings: list[LearnedEmbedding]) -> list[str]:
    """Add learned tokens to a diffusers pipeline through its own ``load_textual_inversion``.

    A token the pipeline already knows (a second render with the same pipeline) keeps its rows
    when the vectors are the same and gets the new ones when they differ (a retrained token).
    Returns the tokens added or changed.
    """
    import torch

    if not embeddings:
        return []
    if getattr(pipe, "text_encoder", None) is None or not hasattr(pipe, "load_textual_inversion"):
        tokens = ", ".join(e.token for e in embeddings)
        raise FairytaleError(f"This model has no text encoder, so learned tokens ({tokens}) cannot be used with it")
    width = text_encoder_width(pipe)
    vocab = pipe.tokenizer.get_vocab()
    added = []
    for embedding in embeddings:
        check_fits(embedding, width)
        check_new_token(pipe.tokenizer, embedding.token)
        if embedding.token in vocab:
            if _replace_known_token(pipe, embedding, vocab, torch):
                added.append(embedding.token)
            continue
        dtype = pipe.text_encoder.get_input_embeddings().weight.dtype
        with errors_only("transformers"):  # resizing the token table notes how it fills new rows
            pipe.load_textual_inversion({embedding.token: embedding.vectors.to(dtype)}, token=embedding.token)
        added.append(embedding.token)
    return added


def unload_from_pipeline(pipe: Any, tokens: dict[str, int]) -> None:
    """Take learned tokens (token → number of vectors) out of a pipeline again, through diffusers'
    own ``unload_textual_inversion``: the tokenizer reads them as plain text once more."""
    names = [f"{token}_{i}" if i else token for token, count in tokens.items() for i in range(count)]
    known = set(pipe.tokenizer.get_vocab())
    present = [name for name in names if name in known]
    if present:
        with errors_only("transformers"):  # resizing the token table notes how it fills new rows
            pipe.unload_textual_inversion(present)


def _replace_known_token(pipe: Any, embedding: LearnedEmbedding, vocab: dict[str, int], torch: Any) -> bool:
    """Overwrite the rows of a token the pipeline already has; whether anything changed."""
    # diffusers names the rows of a multi-vector token "<t>", "<t>_1", "<t>_2", …
    names = [embedding.token] + [f"{embedding.token}_{i}" for i in range(1, embedding.num_vectors)]
    if any(name not in vocab for name in names) or f"{embedding.token}_{embedding.num_vectors}" in vocab:
        raise FairytaleError(
            f"The model already has a token {embedding.token} with another number of vectors; load the model again to use the new file"
        )
    table = pipe.text_encoder.get_input_embeddings().weight
    ids = [vocab[name] for name in names]
    vectors = embedding.vectors.to(device=table.device, dtype=table.dtype)
    if torch.equal(table.data[ids], vectors):
        return False
    with torch.no_grad():
        table.data[ids] = vectors
    return True
