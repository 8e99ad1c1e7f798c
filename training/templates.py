"""Prompts the new token is trained in.

Textual inversion learns a token by asking the frozen model to denoise the training pictures
while the prompt mentions the token, in many phrasings so the token, not one sentence, carries
the concept. A *style* token sits where a style goes ("… in the style of <tok>"); a *character*
token where a subject goes ("a picture of <tok>").

When the scraper's dataset gives a caption for a page, style prompts also say what the page
shows (``{caption}``), so the token is pushed to hold the look rather than the content. The
token comes first in those prompts: long captions are cut at CLIP's 77 tokens and the token
must survive the cut.
"""

from __future__ import annotations

STYLE_TEMPLATES: tuple[str, ...] = (
    "an illustration in the style of {token}",
    "a children's book illustration in the style of {token}",
    "a picture book page in the style of {token}",
    "a drawing in the style of {token}",
    "a painting in the style of {token}",
    "a colourful picture in the style of {token}",
    "a small picture in the style of {token}",
    "a detailed picture in the style of {token}",
    "a scene drawn in the style of {token}",
    "artwork in the style of {token}",
    "a {token} style illustration",
    "a {token} style picture of a story",
)

CAPTIONED_STYLE_TEMPLATES: tuple[str, ...] = (
    "in the style of {token}: {caption}",
    "a {token} style illustration of {caption}",
    "an illustration in the style of {token} showing {caption}",
    "{token} style, {caption}",
)

CHARACTER_TEMPLATES: tuple[str, ...] = (
    "a picture of {token}",
    "an illustration of {token}",
    "a drawing of {token}",
    "a children's book picture of {token}",
    "a close-up picture of {token}",
    "a cartoon of {token}",
    "a portrait of {token}",
    "{token} in a picture book",
    "a small picture of {token}",
    "a large picture of {token}",
    "a picture of the {token}",
    "a colourful drawing of {token}",
)

#: Words kept from a caption: CLIP reads 77 tokens, and the template needs some of them.
MAX_CAPTION_WORDS = 40


def token_text(token: str, vectors: int) -> str:
    """How a token of ``vectors`` vectors is written in a prompt: ``<t> <t>_1 <t>_2 …``.

    This is the spelling diffusers' ``load_textual_inversion`` uses for multi-vector tokens,
    so prompts at render time expand the same way.
    """
    return " ".join(placeholder_tokens(token, vectors))


def placeholder_tokens(token: str, vectors: int) -> list[str]:
    """The tokenizer entries of a token: the token itself, then ``token_1`` … ``token_{n-1}``."""
    return [token] + [f"{token}_{index}" for index in range(1, vectors)]


def prompts_for(kind: str, token: str, caption: str | None = None) -> list[str]:
    """Every training prompt for one picture.

    >>> prompts_for("character", "<ginger>")[0]
    'a picture of <ginger>'
    """
    if kind == "style" and caption:
        short = " ".join(caption.split()[:MAX_CAPTION_WORDS])
        return [template.format(token=token, caption=short) for template in CAPTIONED_STYLE_TEMPLATES]
    templates = STYLE_TEMPLATES if kind == "style" else CHARACTER_TEMPLATES
    return [template.format(token=token) for template in templates]
