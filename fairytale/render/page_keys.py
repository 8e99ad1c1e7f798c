"""Which cached picture belongs to which page: the one place a page's cache key is made and
looked up, for :func:`~fairytale.render.render_book` and for the studio alike.

A page's key names everything its picture depends on (prompt, seed, model, settings, the hashes
of the learned tokens it uses; see :meth:`~fairytale.render.backends.Backend.picture_key`). A
learned token "is used" by a page when any text its painting encodes names it: its prompt, its
negative prompt, or (``--consistency attention``) the prompt of a portrait's pass, which shapes
the page as much as its own prompt does. A locked page keeps the picture it names, whatever its
prompt. A draft has a key of its own, marked by what paints drafts, so a final render never
takes a draft for a final picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fairytale.embeddings import LearnedEmbedding, describe_family, read_embedding
from fairytale.errors import FairytaleError, PlanError
from fairytale.files import sha256_file
from fairytale.plan import BookPlan, Page, resolve_plan_path
from fairytale.render import drafts as draft_rules
from fairytale.render.backends import PaintRequest
from fairytale.render.backends.common import portrait_passes
from fairytale.render.legacy_keys import adopt_legacy
from fairytale.render.page_store import PageStore, StoredPicture
from fairytale.render.references import portrait_prompt
from fairytale.render.shared_attention import PORTRAITS_OPTION

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.backends import Backend


def uses(token: str, *texts: str) -> bool:
    """Whether a learned token appears in any of ``texts`` (then its file is part of the key)."""
    return any(token in text for text in texts)


def encoded_texts(request: PaintRequest) -> tuple[str, ...]:
    """Every text painting ``request`` encodes: its prompt, its negative prompt and, in attention
    mode, the prompt each of its portraits' passes is conditioned on."""
    passes = request.options.get(PORTRAITS_OPTION) or []
    return (request.prompt, request.negative_prompt, *(str(prompt) for _, prompt in passes))


def painted_texts(plan: BookPlan, backend: Backend) -> list[str]:
    """Every text a render of ``plan`` with ``backend`` encodes: the pages' prompts and negative
    prompts, the prompts of the portraits it paints first, and (attention mode) those of the
    portraits' passes. A learned token named by any of them must be taught to the model."""
    texts = [t for page in plan.pages for t in (page.prompt, plan.negative_prompt(page))]
    missing = backend.missing_references(plan)
    if missing:
        texts += [portrait_prompt(plan, plan.character(i)) for i in missing] + [plan.style.negative_prompt]
    if "attention" in backend.modes(plan):
        texts += [prompt for page in plan.pages for _, prompt in portrait_passes(plan, page)]
    return texts


def embedding_hashes(plan: BookPlan, plan_path: Path) -> dict[str, str]:
    """The content hash of each learned-token file the plan lists and that exists."""
    hashes = {}
    for entry in plan.embeddings:
        path = resolve_plan_path(plan_path, entry.path)
        if path.is_file():
            hashes[entry.token] = sha256_file(path)
    return hashes


def learned_tokens(plan: BookPlan, plan_path: Path, backend: Backend) -> tuple[list[LearnedEmbedding], dict[str, str]]:
    """The learned tokens some text of the render names (:func:`painted_texts`): read (to check
    them now, before any painting, and to teach the painting model) and hashed (for the cache
    keys)."""
    texts = painted_texts(plan, backend)
    loaded, hashes = [], {}
    for entry in plan.embeddings:
        if not uses(entry.token, *texts):
            continue
        path = resolve_plan_path(plan_path, entry.path)
        if not path.is_file():
            raise PlanError(f"Embedding file for {entry.token} not found: {path} (listed in {plan_path})")
        if entry.family and backend.family and entry.family != backend.family:
            raise PlanError(
                f"Embedding {entry.token} ({path}) is for {describe_family(entry.family, 0)}, but backend "
                f"'{backend.name}' uses {describe_family(backend.family, 0)}. Render with the backend it was trained for."
            )
        loaded.append(read_embedding(path, token=entry.token))
        hashes[entry.token] = sha256_file(path)
    return loaded, hashes


def as_draft(request: PaintRequest, mark: str) -> PaintRequest:
    """The draft of ``request``: the same page and seed, keyed apart by what paints drafts."""
    return PaintRequest(
        request.page, request.prompt, request.negative_prompt, request.seed, request.references,
        {**request.options, "draft": mark},
    )


@dataclass(frozen=True)
class CachedPage:
    """A page looked up in the cache: what would paint it, its key, and the picture found."""

    request: PaintRequest | None  # None for a locked page, which is never painted
    key: str
    found: StoredPicture | None
    draft: bool = False  # request and key are the page's draft's
    locked: bool = False  # the picture a locked page names


class PageKeys:
    """Cache keys of a plan's pages.

    ``backend`` keys final pictures; ``painter`` (the backend with draft settings) and
    ``draft_mark`` (the LCM-LoRA's fingerprint) key drafts, and are None where drafts cannot
    be painted. ``hashes`` maps learned tokens to the hashes of their files.
    """

    def __init__(
        self,
        plan: BookPlan,
        plan_path: Path,
        backend: Backend,
        hashes: dict[str, str],
        painter: Backend | None = None,
        draft_mark: str | None = None,
    ) -> None:
        self.plan, self.plan_path, self.backend, self.hashes = plan, plan_path, backend, hashes
        self.painter, self.draft_mark = painter, draft_mark
        #: a draft would be the final picture (no LCM-LoRA, few steps): it is keyed as one
        self.drafts_are_finals = draft_rules.same_as_final(backend.settings, backend.family)

    def request(self, page: Page, seed: int | None = None) -> PaintRequest:
        """What paints ``page`` (with ``seed`` instead of its own, for candidates)."""
        request = self.backend.request_for(self.plan, page, self.plan_path)
        return request if seed is None else request.with_seed(seed)

    def _used(self, request: PaintRequest) -> dict[str, str]:
        # Keys made before portrait passes counted left their tokens out; such a key is not
        # tried again (as a legacy key would be): which token file painted its picture is unknown.
        return {t: h for t, h in self.hashes.items() if uses(t, *encoded_texts(request))}

    def key(self, request: PaintRequest) -> str:
        return self.backend.picture_key(request, self._used(request))

    def draft(self, request: PaintRequest) -> tuple[PaintRequest, str]:
        """The draft request of ``request`` and its key (``request``'s own where a draft would be
        the final picture)."""
        if self.drafts_are_finals:
            return request, self.key(request)
        if self.draft_mark is None or self.painter is None:
            raise FairytaleError("Drafts need the LCM-LoRA, which is not available here")
        drafted = as_draft(request, self.draft_mark)
        return drafted, self.painter.picture_key(drafted, self._used(request))

    def find(self, request: PaintRequest, key: str, store: PageStore) -> StoredPicture | None:
        """The picture stored under ``key``, or one an older version filed under an older key of
        the same request (then filed under ``key`` too)."""
        return store.get(key) or adopt_legacy(store, key, self.backend.legacy_picture_keys(request, self._used(request)))

    def look_up(
        self, page: Page, store: PageStore, drafts: bool = False, max_repaints: int | None = None
    ) -> CachedPage:
        """``page`` in the cache: its locked picture, else its final picture, else, with
        ``drafts``, its draft (found or to paint). With ``max_repaints`` (what a render paints
        with), a placeholder given up under fewer repaints counts as not found: it is tried again."""
        kept = store.get(page.picture) if page.locked and page.picture else None
        if kept:  # whatever its prompt or the settings
            return CachedPage(None, kept.key, kept, locked=True)
        request = self.request(page)
        key = self.key(request)
        found = _unless_retried(self.find(request, key, store), max_repaints)
        if found or not drafts or self.drafts_are_finals:
            return CachedPage(request, key, found)
        drafted, draft_key = self.draft(request)
        return CachedPage(drafted, draft_key, _unless_retried(store.get(draft_key), max_repaints), draft=True)


def _unless_retried(found: StoredPicture | None, max_repaints: int | None) -> StoredPicture | None:
    """``found``, or None if it is a placeholder a render with ``max_repaints`` should try again."""
    if found is not None and max_repaints is not None and found.worth_retrying(max_repaints):
        return None
    return found
