"""Illustration backends: what ``--backend`` names, and how each paints a page.

A :class:`Backend` is cheap: it knows its model role, its defaults and how to key a picture,
without loading anything, so a re-render whose pictures are all cached never loads a model.
:meth:`Backend.load` gives an :class:`~fairytale.render.illustrator.Illustrator`, which holds the
pipeline and paints.

Each shipped backend lives in a module of its own in this package and is listed by name in
:data:`fairytale.render.backends.BACKENDS`. Image-conditioned backends override
:meth:`Backend.request_for` to add the reference pictures a page is painted from, and
:meth:`Backend.key_fields` to put whatever else decides their pictures into the cache key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fairytale import registry
from fairytale.errors import FairytaleError, PlanError
from fairytale.files import sha256_file
from fairytale.render.schedulers import check_scheduler

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.plan import BookPlan, Page
    from fairytale.render.devices import DevicePlan
    from fairytale.render.illustrator import Illustrator
    from fairytale.render.settings import RenderSettings

#: modes that paint pages from the characters' reference portraits
PORTRAIT_MODES = frozenset({"reference", "adapter", "attention"})

KEY_FORMAT = 1  # bump when what a key covers changes, so old cache entries are not reused


@dataclass(frozen=True)
class PaintRequest:
    """One picture to paint: everything that only its page decides."""

    page: int
    prompt: str
    negative_prompt: str
    seed: int
    references: tuple[Path, ...] = ()  # pictures that condition the painting (image backends)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def with_seed(self, seed: int) -> PaintRequest:
        return PaintRequest(self.page, self.prompt, self.negative_prompt, seed, self.references, self.options)


class Backend:
    """The kind of painter behind ``--backend NAME``; loads nothing until :meth:`load`."""

    name: ClassVar[str]
    role: ClassVar[str]  # registry role of its model
    family: ClassVar[str | None]  # text encoder family its learned tokens must fit (None: no text)
    default_guidance: ClassVar[float] = 7.5
    description: ClassVar[str] = ""
    #: the ``--consistency`` modes it offers, weakest first
    consistency_modes: ClassVar[tuple[str, ...]] = ("seed", "tokens")
    #: the mode used when ``--consistency`` is not given (see :meth:`consistency`)
    default_consistency: ClassVar[str] = "seed"

    def __init__(self, settings: RenderSettings) -> None:
        self.settings = settings
        self.source = registry.resolve(self.role, settings.model)
        check_scheduler(settings.scheduler)

    # -- what a picture depends on -------------------------------------------------------

    @property
    def guidance(self) -> float:
        return self.default_guidance if self.settings.guidance is None else self.settings.guidance

    def native_size(self) -> tuple[int, int]:
        """The model's own picture size, from its configs (no weights are read)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        unet = registry.load_config(self.role, UNet2DConditionModel, "unet", self.settings.model)
        vae = registry.load_config(self.role, AutoencoderKL, "vae", self.settings.model)
        scale = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
        size = unet.get("sample_size", 64)
        height, width = (size, size) if isinstance(size, int) else size
        return int(width) * scale, int(height) * scale

    def picture_size(self) -> tuple[int, int]:
        """(width, height) of the pictures: the settings', else the model's native size."""
        if self.settings.width and self.settings.height:
            return self.settings.width, self.settings.height
        native_w, native_h = self.native_size()
        return self.settings.width or native_w, self.settings.height or native_h

    def model_fingerprint(self) -> str:
        """Names the model's weights for cache keys: for a hub model the content hashes of its
        weight files (so the same weights from a mirror repo repaint nothing; the hub id and
        revision when the model is not in the cache), for a local folder a digest of its file
        names, sizes and modification times (cheap, and it changes when a model is retrained
        in place)."""
        if not self.source.local:
            return registry.weights_fingerprint(self.source) or f"{self.source.ref}@{self.source.revision or 'main'}"
        root = Path(self.source.ref)
        digest = hashlib.sha256()
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return f"local:{digest.hexdigest()[:20]}"

    def consistency(self, plan: BookPlan) -> str:
        """The ``--consistency`` mode in force for ``plan``: the one asked for, else the
        backend's declared :attr:`default_consistency` (``adapter`` for SD 1.x, ``attention``
        for SD 2.x, ``reference`` for unCLIP), combined with ``tokens`` when every main
        character of the plan has a learned token (``tokens+adapter``). The default is decided
        by the backend and the plan's content alone, never by what happens to be cached. Asking
        for a mode the backend lacks is a one-line error.

        * ``seed``: each page is painted from its prompt (which describes its characters) and its
          recorded seed; nothing else ties pages together.
        * ``tokens``: every main character must have a learned token (``fairytale train
          character``) fitting this backend's text encoder; the prompts draw them with it.
        * ``reference``: pages are painted from the characters' reference portraits (``unclip``).
        * ``adapter``: pages are steered by the portraits through IP-Adapter (SD 1.x).

        Portrait modes cost nothing on a plan whose pages show no character with a portrait:
        no portrait is painted, no extra model is loaded or required, and its pages are painted
        (and keyed) as in ``seed`` mode; the mode is still the one recorded in the manifest.
        """
        from fairytale.render.settings import consistency_parts

        wanted = self.settings.consistency
        if wanted is None:
            return self.default_mode(plan)
        for part in consistency_parts(wanted):
            if part not in self.consistency_modes:
                why = " (IP-Adapter has weights for SD 1.x only)" if part == "adapter" and self.family == "sd2" else ""
                raise FairytaleError(
                    f"Backend '{self.name}' cannot keep characters alike by '{part}'{why}; it offers: "
                    f"{', '.join(self.consistency_modes)}"
                )
        if "tokens" in consistency_parts(wanted):
            missing = [c.name for c in plan.characters if c.main and not c.token]
            if missing:
                raise PlanError(
                    f"--consistency tokens: {', '.join(missing)} ha{'ve' if len(missing) > 1 else 's'} no learned token; "
                    "train one with `fairytale train character` and add it to the plan, or use --consistency seed"
                )
            listed = {e.token: e for e in plan.embeddings}
            for character in (c for c in plan.characters if c.main):
                entry = listed.get(character.token or "")
                if entry is None:
                    raise PlanError(
                        f"--consistency tokens: {character.name}'s token {character.token} is not in the plan's "
                        "embeddings (add its file there)"
                    )
                if entry.family and self.family and entry.family != self.family:
                    raise PlanError(
                        f"--consistency tokens: {character.name}'s token {entry.token} was trained for {entry.family}, "
                        f"but backend '{self.name}' needs {self.family} tokens; train it again for this backend"
                    )
        return wanted

    @classmethod
    def default_mode(cls, plan: BookPlan | None = None) -> str:
        """The mode without ``--consistency``: :attr:`default_consistency`, preceded by
        ``tokens+`` when every main character of ``plan`` has a learned token (a plan's content,
        not the cache; a plan without main characters, or no plan yet, has none)."""
        main = [c for c in plan.characters if c.main] if plan is not None else []
        if main and all(c.token for c in main):
            return "tokens" if cls.default_consistency in ("seed", "tokens") else f"tokens+{cls.default_consistency}"
        return cls.default_consistency

    def modes(self, plan: BookPlan) -> set[str]:
        """The modes in force for ``plan`` (``tokens+adapter`` → {tokens, adapter})."""
        from fairytale.render.settings import consistency_parts

        return set(consistency_parts(self.consistency(plan)))

    def needs_portraits(self, plan: BookPlan) -> bool:
        """Whether the mode in force (or the drift check) needs the characters' reference portraits."""
        return bool(self.modes(plan) & PORTRAIT_MODES) or self.settings.drift_check is not None

    def missing_references(self, plan: BookPlan) -> list[str]:
        """Ids of the main characters whose reference portrait must be painted before the pages
        (none unless the mode in force paints from portraits)."""
        if not self.needs_portraits(plan):
            return []
        return [c.id for c in plan.characters if c.main and c.reference is None]

    def request_for(self, plan: BookPlan, page: Page, plan_file: Path) -> PaintRequest:
        """What to paint for ``page``: its prompt, negative prompt and seed; in ``adapter`` mode
        its characters' portraits with the adapter's scale and weights, in ``attention`` mode
        the portraits with the strength and each portrait's seed and prompt (several portraits:
        each with its region)."""
        request = PaintRequest(page.number, page.prompt, plan.negative_prompt(page), page.seed)
        modes = self.modes(plan)
        if not modes & {"adapter", "attention"}:
            return request
        portraits = page_portraits(plan, page, plan_file)
        if not portraits:  # painted (and keyed) exactly as in seed mode; nothing extra is loaded
            return request
        from fairytale.render.portrait_adapter import REGIONS_OPTION, SCALE_OPTION, adapter_fingerprint

        options: dict[str, Any] = {}
        if "adapter" in modes:
            if not hasattr(self, "_adapter_fingerprint"):
                self._adapter_fingerprint = adapter_fingerprint(self.settings)
            options |= {SCALE_OPTION: self.settings.adapter_scale, "adapter": self._adapter_fingerprint}
        if "attention" in modes:
            from fairytale.render.shared_attention import PORTRAITS_OPTION, STRENGTH_OPTION

            options[STRENGTH_OPTION] = self.settings.attention_strength
            options[PORTRAITS_OPTION] = [list(p) for p in portrait_passes(plan, page)]
        if len(portraits) > 1:  # one portrait acts on the whole picture; several, each in its region
            options[REGIONS_OPTION] = [list(box) for box in page_regions(plan, page)]
        return PaintRequest(request.page, request.prompt, request.negative_prompt, request.seed, portraits, options)

    def key_fields(self, request: PaintRequest, embeddings: dict[str, str]) -> dict[str, Any]:
        """Everything that decides ``request``'s picture. ``embeddings`` maps each learned
        token used by the request to its file's SHA-256. Device and precision are left out on
        purpose: they change pixels only at rounding level, and a book painted on a GPU should
        not be repainted because its text is edited on a laptop."""
        width, height = self.picture_size()
        return {
            "format": KEY_FORMAT,
            "backend": self.name,
            "model": self._fingerprint,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "steps": self.settings.steps,
            "guidance": self.guidance,
            "scheduler": self.settings.scheduler,
            "width": width,
            "height": height,
            "embeddings": dict(sorted(embeddings.items())),
            "references": [sha256_file(p) for p in request.references],
            **({"options": dict(sorted(request.options.items()))} if request.options else {}),
        }

    def picture_key(self, request: PaintRequest, embeddings: dict[str, str]) -> str:
        """A hash of :meth:`key_fields`: the name of the picture in the cache."""
        text = json.dumps(self.key_fields(request, embeddings), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def legacy_picture_keys(self, request: PaintRequest, embeddings: dict[str, str]) -> list[str]:
        """The keys ``request``'s picture had before keys named weights by their hashes (the
        model's ``ref@revision``), so an existing book's pictures are adopted, not repainted."""
        keys = []
        for fingerprint in registry.legacy_fingerprints(self.source):
            if fingerprint == self._fingerprint:
                continue
            fields = self.key_fields(request, embeddings) | {"model": fingerprint}
            text = json.dumps(fields, sort_keys=True, ensure_ascii=False)
            keys.append(hashlib.sha256(text.encode("utf-8")).hexdigest()[:32])
        return keys

    @property
    def _fingerprint(self) -> str:
        if not hasattr(self, "_fingerprint_cache"):
            self._fingerprint_cache = self.model_fingerprint()
        return self._fingerprint_cache

    # -- painting -------------------------------------------------------------------------

    def load(self, device_plan: DevicePlan) -> Illustrator:
        """Load the model and return the illustrator that paints with it."""
        raise NotImplementedError

    def describe_model(self) -> str:
        return self.source.label

    def credit_model(self) -> str:
        """How the book's credit line names the model (no local path: see ``public_label``)."""
        return self.source.public_label


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide diffusers' own 'Loading pipeline components' bar: ours says what is loading."""
    from diffusers.utils import logging

    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.enable_progress_bar()



def check_v_prediction(scheduler: Any, label: str) -> None:
    """SD 2.x 768 px models predict velocity; an epsilon scheduler paints noise. Say so."""
    if scheduler.config.get("prediction_type") != "v_prediction":
        raise FairytaleError(
            f"{label} has an epsilon-prediction scheduler config; SD 2.1 (768) and its unCLIP need "
            "v_prediction. Use the model's own repo, or fix scheduler/scheduler_config.json"
        )


def page_regions(plan: BookPlan, page: Page) -> list[tuple[float, float, float, float]]:
    """The region of each character of ``page`` that has a portrait, in the order of
    :func:`page_portraits`: the plan's (``pages[].regions``), else side by side, as wide as
    the picture divided among them, in the order the page lists them (the order the text names
    them)."""
    shown = [c for c in page.characters if c in {x.id for x in plan.characters if x.reference is not None}]
    boxes = {}
    for index, character_id in enumerate(shown):
        region = (page.regions or {}).get(character_id)
        boxes[character_id] = region.box() if region else (index / len(shown), 0.0, (index + 1) / len(shown), 1.0)
    return [boxes[c.id] for c in plan.characters if c.id in boxes]


def shows_portraits(plan: BookPlan) -> bool:
    """Whether some page of ``plan`` shows a character that has a reference portrait, or will
    be given one (a main character): if none does, portrait modes need no extra model."""
    with_portrait = {c.id for c in plan.characters if c.main or c.reference is not None}
    return any(with_portrait.intersection(page.characters) for page in plan.pages)


def portrait_passes(plan: BookPlan, page: Page) -> list[tuple[int, str]]:
    """(seed, prompt) of each portrait of ``page`` (in the order of :func:`page_portraits`) for
    shared attention's portrait pass: those it was painted with; for the user's own picture
    (no seed, no prompt) a seed derived from the plan's and the character's, and the prompt a
    portrait of it would be painted from."""
    from fairytale.render.references import portrait_prompt
    from fairytale.render.seeds import derive_seed

    passes = []
    for character in plan.characters:
        if character.id not in page.characters or character.reference is None:
            continue
        reference = character.reference
        seed = reference.seed if reference.seed is not None else derive_seed("portrait-pass", plan.seed, character.id)
        passes.append((seed, reference.prompt or portrait_prompt(plan, character)))
    return passes


def page_portraits(plan: BookPlan, page: Page, plan_file: Path) -> tuple[Path, ...]:
    """The reference portraits of the characters ``page`` shows, in the plan's character order
    (a character without one is left out); a listed picture that is missing or unreadable is a
    one-line error."""
    from fairytale.plan import resolve_plan_path

    found = []
    for character in plan.characters:
        if character.id not in page.characters or character.reference is None:
            continue
        path = resolve_plan_path(plan_file, character.reference.image)
        if not path.is_file():
            raise PlanError(f"Reference picture of {character.name} not found: {path} (listed in {plan_file})")
        check_picture(path, character.name)
        found.append(path)
    return tuple(found)


@functools.lru_cache(maxsize=256)
def _checked_picture(path: Path, size: int, mtime_ns: int, name: str) -> None:
    from fairytale.images import open_picture

    open_picture(path, what=f"reference picture of {name}")


def check_picture(path: Path, name: str) -> None:
    """Refuse a reference picture that is not a readable picture now, before any model loads
    (checked once per file version, as every page of the character names it)."""
    stat = path.stat()
    _checked_picture(path, stat.st_size, stat.st_mtime_ns, name)
