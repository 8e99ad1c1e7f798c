"""The book plan: the editable JSON file between the story and the pictures.

``fairytale plan`` writes it, a person may edit it (fix a description, a prompt, a seed),
and ``fairytale render`` paints from it. It is validated on load, so a hand edit that breaks
it is reported as one line naming the field, never as a crash half-way through a render.

Paths inside a plan (embeddings, reference pictures) are relative to the plan file's folder.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, model_validator

from fairytale.errors import FairytaleError, PlanError
from fairytale.files import atomic_write_text
from fairytale.story import read_bounded

PLAN_VERSION = 4
#: Length of a composed prompt's fingerprint (hex digits of its SHA-256).
FINGERPRINT_LENGTH = 16
#: A plan is a few kilobytes per page; anything larger is not one.
MAX_PLAN_BYTES = 32 * 2**20

DEFAULT_STYLE = "children's picture book illustration, soft watercolor, warm gentle colors"
DEFAULT_NEGATIVE = (
    "photo, photorealistic, scary, horror, violence, blood, weapon, nsfw, nude, text, watermark, "
    "signature, blurry, deformed, disfigured, extra limbs, bad anatomy, low quality"
)

Layout = Literal["picture_above_text", "full_bleed"]
Gender = Literal["female", "male", "neutral", "group"]
Family = Literal["sd1", "sd2"]


class _Strict(BaseModel):
    # Unknown keys are typos in a hand edit: report them instead of ignoring them. Numbers and
    # flags are strict too: `"seed": true` or `"main": "yes"` is a mistake, not 1 or True.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Reference(_Strict):
    """A character's reference portrait: painted once, or the user's own picture."""

    image: str = Field(description="Picture file, relative to the plan's folder.")
    seed: StrictInt | None = Field(
        default=None, description="Seed it was painted with; null for a user's picture."
    )
    prompt: str | None = None
    model: str | None = Field(default=None, description="Model it was painted with.")


class Character(_Strict):
    """Someone (or some creature) in the story."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Stable key that pages refer to.")
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list, description="Other ways the text names them.")
    kind: str | None = Field(default=None, description="What they are: 'giraffe', 'girl', 'owl'.")
    gender: Gender | None = None
    appearance: dict[str, str] = Field(default_factory=dict, description="Looks found in the text, by aspect.")
    description: str = Field(default="", description="How prompts describe them; edit freely.")
    mentions: StrictInt = Field(default=0, ge=0)
    main: StrictBool = False
    token: str | None = Field(default=None, description="Learned token (see embeddings) that draws them.")
    reference: Reference | None = None
    members: list[str] = Field(
        default_factory=list,
        description="For a group of known characters ('Pip and Tom'): their ids. Gender 'group' means "
        "they/them; a group without members ('the three bears') is drawn from its description.",
    )


class Embedding(_Strict):
    """A learned textual-inversion token and the file that holds it."""

    token: str = Field(min_length=1)
    path: str = Field(description="Embedding file, relative to the plan's folder.")
    family: Family | None = Field(default=None, description="Text encoder it fits: sd1 (768-d) or sd2 (1024-d).")


class Style(_Strict):
    """The look of the whole book."""

    description: str = DEFAULT_STYLE
    token: str | None = Field(default=None, description="Learned style token, e.g. '<monkeypen-style>'.")
    negative_prompt: str = DEFAULT_NEGATIVE


class Region(_Strict):
    """A box in a picture, in fractions of its width and height (0 = left/top, 1 = right/bottom)."""

    left: float = Field(ge=0, le=1)
    top: float = Field(ge=0, le=1)
    right: float = Field(ge=0, le=1)
    bottom: float = Field(ge=0, le=1)

    def box(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)

    @model_validator(mode="after")
    def _not_empty(self) -> Region:
        if not (self.left < self.right and self.top < self.bottom):
            raise ValueError("a region needs left < right and top < bottom")
        return self


class Page(_Strict):
    """One page of the book: its text and what its picture shows."""

    number: StrictInt = Field(ge=1)
    text: str = Field(min_length=1)
    characters: list[str] = Field(default_factory=list, description="Ids of the characters on the page.")
    setting: str | None = None
    action: str | None = None
    time_of_day: str | None = None
    mood: str | None = None
    prompt: str = Field(min_length=1)
    composed: str | None = Field(
        default=None,
        pattern=rf"^[0-9a-f]{{{FINGERPRINT_LENGTH}}}$",
        description="Fingerprint of the prompt fAIrytale composed for this page (see prompt_fingerprint). A prompt "
        "that no longer matches it was written by a person, and a new description or token leaves it alone. "
        "Null: written by hand (or a plan older than version 4).",
    )
    negative_prompt: str | None = Field(default=None, description="Overrides the style's negative prompt.")
    seed: StrictInt = Field(ge=0, lt=2**63)
    layout: Layout | None = None
    alt_text: str | None = Field(
        default=None, description="The picture described for people who cannot see it; written from the plan when null."
    )
    regions: dict[str, Region] | None = Field(
        default=None,
        description="Where each character stands in the picture (--consistency adapter): character id → box in "
        "fractions of the picture. Null: side by side, in the order the page lists them.",
    )
    locked: bool = Field(default=False, description="Keep this page's picture: no render or studio action repaints it.")
    picture: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",  # a key names a file in the book's cache, nothing outside it
        description="Cache key of the picture a locked page keeps (a chosen candidate or an earlier picture).",
    )

    def prompt_is_composed(self) -> bool:
        """Whether the page's prompt is the one fAIrytale composed for it: true while it matches the
        fingerprint written with it, false once a person changed it (in any editor) or set it."""
        return self.composed is not None and self.composed == prompt_fingerprint(self.prompt)

    def set_composed_prompt(self, prompt: str) -> None:
        """Give the page ``prompt`` as composed by fAIrytale, with its fingerprint."""
        self.prompt = prompt
        self.composed = prompt_fingerprint(prompt)

    def set_hand_written_prompt(self, prompt: str) -> None:
        """Give the page ``prompt`` as written by a person: re-composition keeps it."""
        self.prompt = prompt
        self.composed = None


def prompt_fingerprint(prompt: str) -> str:
    """A short fingerprint of ``prompt`` (the first hex digits of its UTF-8 SHA-256), written beside
    a composed prompt so that a hand edit of it shows: no editor has to know about it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


class Source(_Strict):
    """Where the plan came from, so a run can be reproduced."""

    story: str | None = None
    sha256: str | None = None
    words_per_page: StrictInt | None = None
    models: dict[str, str] = Field(default_factory=dict)


class BookPlan(_Strict):
    """A whole book, ready to render. See the module docstring."""

    version: Literal[4] = PLAN_VERSION
    book_id: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        description="This book's identifier (urn:uuid:…), which e-readers tell books apart by: written when the "
        "plan is made and kept through every edit. Null: derived from the title, author, seed and story.",
    )
    title: str = Field(min_length=1)
    author: str | None = None
    language: str = Field(default="en", description="Language of the story text (BCP 47, e.g. 'en', 'de').")
    back_cover_text: str | None = Field(default=None, description="Text for the back cover of a printed book.")
    seed: StrictInt = Field(ge=0, lt=2**63, description="Master seed the page seeds were drawn from.")
    style: Style = Field(default_factory=Style)
    characters: list[Character] = Field(default_factory=list)
    pages: list[Page] = Field(min_length=1)
    embeddings: list[Embedding] = Field(default_factory=list)
    source: Source = Field(default_factory=Source)

    @model_validator(mode="after")
    def _identified(self) -> BookPlan:
        # Set once, when the plan is made (or first read without one), and saved with it: an
        # edit of the title or a typo in the text keeps the book's identity.
        if self.book_id is None:
            self.book_id = derived_book_id(self)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> BookPlan:
        numbers = [page.number for page in self.pages]
        if numbers != list(range(1, len(self.pages) + 1)):
            raise ValueError(f"pages must be numbered 1..{len(self.pages)} in order, got {numbers}")
        ids = [character.id for character in self.characters]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"character ids must be unique, repeated: {duplicates}")
        known = set(ids)
        groups = {c.id for c in self.characters if c.members}
        for character in self.characters:
            if not character.members:
                continue
            if character.gender != "group":
                raise ValueError(f"character '{character.id}' has members, so its gender must be 'group'")
            if character.id in character.members:
                raise ValueError(f"character '{character.id}' lists itself among its members")
            unknown = [m for m in character.members if m not in known]
            if unknown:
                raise ValueError(f"character '{character.id}' has unknown members {unknown}")
            if len(set(character.members)) != len(character.members):
                raise ValueError(f"character '{character.id}' lists a member twice: {character.members}")
            nested = [m for m in character.members if m in groups]
            if nested:
                raise ValueError(
                    f"character '{character.id}' has groups among its members {nested}; list their members"
                )
        for page in self.pages:
            unknown = [c for c in page.characters if c not in known]
            if unknown:
                raise ValueError(f"page {page.number} names unknown characters {unknown}")
            elsewhere = sorted(set(page.regions or {}) - set(page.characters))
            if elsewhere:
                raise ValueError(f"page {page.number} has regions for characters it does not show: {elsewhere}")
        tokens = {embedding.token for embedding in self.embeddings}
        used = [self.style.token] + [c.token for c in self.characters]
        missing = sorted({t for t in used if t and t not in tokens})
        if missing:
            raise ValueError(f"tokens {missing} are used but no embedding file is listed for them")
        return self

    def character(self, character_id: str) -> Character:
        """The character with id ``character_id``."""
        for character in self.characters:
            if character.id == character_id:
                return character
        raise KeyError(character_id)

    def negative_prompt(self, page: Page) -> str:
        """The negative prompt that applies to ``page``."""
        return page.negative_prompt if page.negative_prompt is not None else self.style.negative_prompt


def derived_book_id(plan: BookPlan) -> str:
    """A book identifier (``urn:uuid:…``) made from what tells one book from another: its
    title, author, master seed and story (the story file's SHA-256, or the pages' text when the
    plan records no story file). Two books share it only if all of these agree."""
    story = plan.source.sha256 or hashlib.sha256("\n".join(p.text for p in plan.pages).encode()).hexdigest()
    name = "\x00".join(["fairytale-book", plan.title, plan.author or "", str(plan.seed), story])
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def resolve_plan_path(plan_file: Path, relative: str) -> Path:
    """A path written in a plan, resolved against the plan file's folder."""
    path = Path(relative).expanduser()
    return path if path.is_absolute() else Path(plan_file).resolve().parent / path


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "plan"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {first['msg']}{suffix}"


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 only adds optional fields (groups' members, alt text, language, back-cover
    text, page locks), so a version-1 plan means exactly the same book: same prompts, seeds, pictures."""
    return {**data, "version": 2}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 adds the book's identifier (``book_id``); a version-2 plan gets the one derived
    from its title, author, seed and story (:func:`derived_book_id`), kept once it is saved."""
    return {**data, "version": 3}


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 adds the fingerprint of a composed prompt (``pages[].composed``). An older plan
    has none, so its prompts read as hand-written until an edit recomposes them; the edit first
    takes a prompt for composed when it is exactly what composing that page gives (see
    :func:`fairytale.plan_edits.fingerprint_composed_prompts`), so hand-written ones are kept."""
    return {**data, "version": 4}


#: Each entry upgrades a plan of that version by one version. A later format adds its step
#: here; plans are read through the whole chain, so every old plan keeps working.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def migrate_plan_data(data: dict[str, Any], origin: str = "plan") -> dict[str, Any]:
    """Bring plan JSON of any known version up to :data:`PLAN_VERSION`."""
    version = data.get("version")
    # bool is an int in Python: `"version": true` must not pass for version 1.
    if type(version) is not int or not (min(MIGRATIONS) <= version <= PLAN_VERSION):
        raise PlanError(
            f"{origin} has plan version {version!r}; this fAIrytale reads versions "
            f"{min(MIGRATIONS)} to {PLAN_VERSION}. Re-create it with `fairytale plan`."
        )
    while version < PLAN_VERSION:
        data = MIGRATIONS[version](data)
        version = data["version"]
    return data


def parse_plan(text: str, origin: str = "plan") -> BookPlan:
    """Validate plan JSON text; any problem is a :class:`PlanError` of one line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    except RecursionError:
        raise PlanError(f"{origin} is not a book plan: its JSON is nested too deeply") from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise PlanError(f"{origin} is not a book plan: it holds a number with too many digits") from None
    if not isinstance(data, dict):
        raise PlanError(f"{origin} is not a book plan: expected a JSON object")
    data = migrate_plan_data(data, origin)
    try:
        return BookPlan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"{origin} is not a valid book plan: {_format_validation_error(exc)}") from exc


def load_plan(path: Path) -> BookPlan:
    """Read and validate a plan file (at most :data:`MAX_PLAN_BYTES`)."""
    path = Path(path)
    try:
        raw = read_bounded(path, MAX_PLAN_BYTES, "Plan file")
    except FairytaleError as exc:
        raise PlanError(str(exc)) from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(f"{path} is over {MAX_PLAN_BYTES // 2**20} MB, too large for a book plan")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PlanError(f"{path} is not a book plan: not UTF-8 text") from None
    return parse_plan(text, origin=str(path))


def dump_plan(plan: BookPlan) -> str:
    """The plan as pretty, human-editable JSON (UTF-8, not ASCII-escaped)."""
    return json.dumps(plan.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def save_plan(plan: BookPlan, path: Path) -> None:
    """Write ``plan`` to ``path`` atomically."""
    atomic_write_text(Path(path), dump_plan(plan))
