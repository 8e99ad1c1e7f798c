"""The safety checker is always on: flagged pictures are repainted, then replaced, never kept."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import ModelUnavailableError
from fairytale.render import load_illustrator, load_manifest, render_book
from fairytale.render.backends import PaintRequest
from fairytale.render.safety import SafetyChecker, placeholder_picture, repaint_seed
from fairytale.render.settings import RenderSettings
from tests.render_support import make_plan, single_torch_thread, tiny_settings, write_plan  # noqa: F401
from tests.tiny_models.diffusion import make_checker_flag_everything


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_models_own_checker_is_run_outside_the_pipeline(tiny_sd):
    illustrator = load_illustrator(tiny_settings(tiny_sd))
    assert illustrator.pipe.safety_checker is None  # never inside the pipeline (it would blacken)
    assert illustrator.safety.source == "the model's own safety checker"
    pictures = illustrator.paint([PaintRequest(1, "a lighthouse", "", 3)])
    assert illustrator.safety.flagged(pictures) == [False]
    make_checker_flag_everything(illustrator.safety.checker)
    assert illustrator.safety.flagged(pictures + pictures) == [True, True]


def test_pictures_flagged_every_time_become_placeholders_and_never_reach_disk(tiny_sd, tmp_path):
    settings = tiny_settings(tiny_sd, max_repaints=2, steps=2)
    illustrator = load_illustrator(settings)
    make_checker_flag_everything(illustrator.safety.checker)
    plan_path = write_plan(tmp_path, make_plan(2))
    result = render_book(plan_path, tmp_path / "b.pdf", settings, illustrator=illustrator, progress=False)

    assert result.placeholders == [1, 2] and result.pictures_painted == 2 * 3  # first try + 2 repaints each
    assert sum("placeholder" in w for w in result.warnings) == 2
    manifest = load_manifest(result.book_dir)
    for page in manifest.pages:
        assert page.safety == "placeholder" and page.seed is None and page.attempts == 3
    # every picture file in the book folder is the placeholder: no flagged picture was written
    placeholder = np.asarray(placeholder_picture(64, 64))
    pngs = list(result.book_dir.rglob("*.png"))
    assert len(pngs) == 3  # the placeholder in the cache, and its copy for each page
    for path in pngs:
        assert np.array_equal(pixels(path), placeholder)
    assert result.pdf.is_file()

    # the outcome is cached: a second run neither repaints nor loads a model
    again = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    assert again.painted == [] and again.placeholders == [1, 2]


def test_a_flagged_picture_is_repainted_with_a_new_recorded_seed(tiny_sd, tmp_path):
    settings = tiny_settings(tiny_sd, steps=2)
    illustrator = load_illustrator(settings)
    checker = illustrator.safety.checker
    saved = [checker.concept_embeds_weights.clone(), checker.special_care_embeds_weights.clone()]
    make_checker_flag_everything(checker)

    def calm_down_after_first_check(module, args, output):
        # The first check (the first batch) flags everything; later ones run the checker as shipped.
        checker.concept_embeds_weights.data.copy_(saved[0])
        checker.special_care_embeds_weights.data.copy_(saved[1])
        handle.remove()

    handle = checker.register_forward_hook(calm_down_after_first_check)
    plan = make_plan(2)
    result = render_book(write_plan(tmp_path, plan), tmp_path / "b.pdf", settings, illustrator=illustrator, progress=False)

    assert result.repainted == [1, 2] and result.placeholders == []
    assert result.pictures_painted == 4
    for page, planned in zip(result.pages, plan.pages, strict=True):
        assert page.safety == "repainted" and page.attempts == 2
        assert page.requested_seed == planned.seed
        assert page.seed == repaint_seed(planned.seed, 1) != planned.seed
        # the recorded seed reproduces the kept picture
        (again,) = illustrator.paint([PaintRequest(page.number, page.prompt, page.negative_prompt, page.seed)])
        assert np.array_equal(np.asarray(again), pixels(result.book_dir / page.image))
    assert sum("repainted with seed" in w for w in result.warnings) == 2


def test_a_placeholder_is_tried_again_when_max_repaints_is_raised(tiny_sd, tmp_path):
    """A page given up after ``--max-repaints 1`` is painted again by a render allowed more
    repaints (its record says how many it had), and reused by one allowed as many or fewer; a
    picture that passed is reused whatever the limit. Records of older versions, which do not
    say, are tried again."""
    import json

    settings = tiny_settings(tiny_sd, max_repaints=1, steps=2)
    plan_path = write_plan(tmp_path, make_plan(3))
    pdf = tmp_path / "b.pdf"
    first = render_book(plan_path, pdf, settings, progress=False)
    assert first.placeholders == []
    flagging = load_illustrator(settings)
    make_checker_flag_everything(flagging.safety.checker)
    given_up = render_book(plan_path, pdf, settings, pages="3", illustrator=flagging, progress=False)
    assert given_up.painted == [3] and given_up.placeholders == [3] and given_up.pictures_painted == 2
    record_path = given_up.book_dir / "cache" / f"{given_up.pages[2].key}.json"
    assert json.loads(record_path.read_text())["max_repaints"] == 1

    for limit in (0, 1):  # no more repaints than it was given up after: reused
        again = render_book(plan_path, pdf, settings.with_(max_repaints=limit), progress=False)
        assert again.painted == [] and again.placeholders == [3], limit
    raised = render_book(plan_path, pdf, settings.with_(max_repaints=2), progress=False)
    assert raised.painted == [3] and raised.reused == [1, 2]  # the checker lets it pass now
    assert raised.placeholders == [] and raised.pages[2].safety == "passed"
    assert raised.pages[2].key == given_up.pages[2].key

    # given up again under 2, then its record made as older versions made it (no max_repaints)
    flagged_again = render_book(plan_path, pdf, settings.with_(max_repaints=2), pages="3", illustrator=flagging, progress=False)
    assert flagged_again.placeholders == [3] and flagged_again.pictures_painted == 3
    record_path = flagged_again.book_dir / "cache" / f"{flagged_again.pages[2].key}.json"
    record = json.loads(record_path.read_text())
    assert record.pop("max_repaints") == 2
    record_path.write_text(json.dumps(record))
    older = render_book(plan_path, pdf, settings.with_(max_repaints=0), progress=False)
    assert older.painted == [3] and older.reused == [1, 2] and older.placeholders == []


def test_repaint_seeds_are_reproducible_and_distinct():
    seeds = [repaint_seed(42, attempt) for attempt in (1, 2, 3)]
    assert seeds == [repaint_seed(42, attempt) for attempt in (1, 2, 3)]
    assert len(set(seeds + [42])) == 4 and all(0 <= s < 2**63 for s in seeds)


def test_a_model_without_a_checker_gets_the_standalone_one(tiny_sd2, tiny_safety_checker, tmp_path):
    # The SD 2-style repo ships no checker (as on the hub): the registry's standalone one is used.
    settings = tiny_settings(tiny_sd2, steps=2, safety_model=str(tiny_safety_checker))
    illustrator = load_illustrator(settings)
    assert "safety checker" in illustrator.safety.source and str(tiny_safety_checker) in illustrator.safety.source
    make_checker_flag_everything(illustrator.safety.checker)
    result = render_book(write_plan(tmp_path, make_plan(1)), tmp_path / "b.pdf", settings.with_(max_repaints=0),
                         illustrator=illustrator, progress=False)
    assert result.placeholders == [1]


def test_without_any_checker_nothing_is_painted(tiny_sd2, tmp_path):
    # Offline and no checker named: a clear error naming the checker, never a run without one.
    settings = RenderSettings(model=str(tiny_sd2), steps=2, device="cpu")
    with pytest.raises(ModelUnavailableError, match="stable-diffusion-safety-checker"):
        render_book(write_plan(tmp_path, make_plan(1)), tmp_path / "b.pdf", settings, progress=False)
    assert not (tmp_path / "b.pdf").exists() and not (tmp_path / "b").exists()


def test_the_checker_reads_pictures_as_stored(tiny_sd):
    illustrator = load_illustrator(tiny_settings(tiny_sd))
    assert isinstance(illustrator.safety, SafetyChecker)
    assert illustrator.safety.flagged([]) == []
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    assert illustrator.safety.flagged([grey, grey.convert("L")]) == [False, False]


def test_on_cpu_the_checkers_vision_layers_run_per_picture_so_a_verdict_never_depends_on_its_batch(tiny_sd):
    """Its transformer's linear layers are oneDNN products, one picture at a time (as the
    UNet's): faster than torch's BLAS call on CPU, and the scores a picture gets are the same
    bit for bit alone or beside others."""
    import torch

    illustrator = load_illustrator(tiny_settings(tiny_sd))
    checker = illustrator.safety.checker
    layers = [m for name, m in checker.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    assert layers and all(getattr(layer, "_fairytale_per_picture", False) for layer in layers)
    pictures = [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)) for seed in range(3)]
    pixels_in = illustrator.safety.processor(images=pictures, return_tensors="pt").pixel_values
    with torch.inference_mode():
        together = checker.vision_model(pixels_in).pooler_output
        pair = checker.vision_model(pixels_in[1:]).pooler_output
    assert torch.equal(together[1:], pair)
