"""Drafts (``--draft``): the LCM-LoRA loaded from a folder in the hub layout, pictures keyed
apart from finals, a final render that repaints drafts and nothing else, and a final painted
after a draft in the same pipeline equal to one from a fresh load."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import FairytaleError, ModelUnavailableError
from fairytale.plan import load_plan, save_plan
from fairytale.render import load_illustrator, load_manifest, render_book
from fairytale.render.backends import PaintRequest
from fairytale.render.drafts import FALLBACK_STEPS
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)


@pytest.fixture(scope="session")
def tiny_lcm_lora(tiny_models):
    return tiny_models("lcm_lora")


def folder(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def draft_settings(tiny_sd, tiny_lcm_lora, **changes):
    return tiny_settings(tiny_sd, draft=True, draft_lora=str(tiny_lcm_lora), **changes)


def test_a_final_render_repaints_the_drafts_and_nothing_else(tiny_sd, tiny_lcm_lora, tmp_path):
    plan_path = write_plan(tmp_path, make_plan(3))
    final = tiny_settings(tiny_sd)
    first = render_book(plan_path, tmp_path / "b.pdf", final, progress=False)
    before = {p.number: pixels(first.book_dir / p.image) for p in first.pages}

    plan = load_plan(plan_path)
    plan.pages[1].prompt = "a girl and a red kite on the beach"
    save_plan(plan, plan_path)
    draft = render_book(plan_path, tmp_path / "b.pdf", draft_settings(tiny_sd, tiny_lcm_lora), progress=False)
    assert draft.painted == [2] and draft.reused == [1, 3] and draft.drafts == [2]
    assert draft.unet_calls == 4  # 4 LCM steps, guidance 1: one UNet call per step, no negative half
    assert "LCM" in draft.draft_note
    manifest = load_manifest(draft.book_dir)
    assert [p.draft for p in manifest.pages] == [False, True, False]
    page2 = manifest.page(2)
    assert page2.seed == page2.requested_seed == plan.pages[1].seed  # a draft keeps its page's seed
    assert manifest.settings["draft"] is True
    draft_picture = pixels(draft.book_dir / page2.image)

    # a second draft render paints nothing: the draft is cached under its own key
    again = render_book(plan_path, tmp_path / "b.pdf", draft_settings(tiny_sd, tiny_lcm_lora), progress=False)
    assert again.painted == [] and again.drafts == [2]

    done = render_book(plan_path, tmp_path / "b.pdf", final, progress=False)
    assert done.painted == [2] and done.reused == [1, 3] and done.redrawn_drafts == [2] and done.drafts == []
    manifest = load_manifest(done.book_dir)
    assert not any(p.draft for p in manifest.pages)
    assert manifest.page(2).key != page2.key
    for number in (1, 3):  # the other pages are the very same pictures
        assert np.array_equal(pixels(done.book_dir / manifest.page(number).image), before[number])
    assert not np.array_equal(pixels(done.book_dir / manifest.page(2).image), draft_picture)


def test_a_final_after_a_draft_in_one_pipeline_equals_a_fresh_load(tiny_sd, tiny_lcm_lora, tmp_path):
    plan = make_plan(3)
    final = tiny_settings(tiny_sd)
    fresh = render_book(write_plan(folder(tmp_path / "fresh"), plan), tmp_path / "fresh" / "b.pdf", final, progress=False)

    illustrator = load_illustrator(final)
    drafted = render_book(
        write_plan(folder(tmp_path / "draft"), plan), tmp_path / "draft" / "b.pdf",
        draft_settings(tiny_sd, tiny_lcm_lora), illustrator=illustrator, progress=False,
    )
    after = render_book(
        write_plan(folder(tmp_path / "after"), plan), tmp_path / "after" / "b.pdf", final, illustrator=illustrator, progress=False
    )
    for a, b, d in zip(fresh.pages, after.pages, drafted.pages, strict=True):
        assert np.array_equal(pixels(fresh.book_dir / a.image), pixels(after.book_dir / b.image)), a.number
        assert not np.array_equal(pixels(fresh.book_dir / a.image), pixels(drafted.book_dir / d.image))


def test_drafts_do_not_depend_on_their_batch_and_match_a_plain_lcm_lora_call(tiny_sd, tiny_lcm_lora, tmp_path):
    import torch
    from diffusers import LCMScheduler

    plan = make_plan(3)
    results = {}
    for batch in (1, 3):
        where = folder(tmp_path / f"batch{batch}")
        settings = draft_settings(tiny_sd, tiny_lcm_lora, batch_size=batch)
        results[batch] = render_book(write_plan(where, plan), where / "b.pdf", settings, progress=False)
    for a, b in zip(results[1].pages, results[3].pages, strict=True):
        assert np.array_equal(pixels(results[1].book_dir / a.image), pixels(results[3].book_dir / b.image)), a.number

    # the oracle: diffusers' own LCM-LoRA recipe, one call per page
    illustrator = load_illustrator(tiny_settings(tiny_sd))
    pipe = illustrator.pipe
    pipe.load_lora_weights(str(tiny_lcm_lora), weight_name="pytorch_lora_weights.safetensors")
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    for page in results[3].pages:
        with torch.inference_mode():
            plain = pipe(
                page.prompt, num_inference_steps=4, guidance_scale=1.0, width=64, height=64,
                generator=torch.Generator("cpu").manual_seed(page.seed),
            ).images[0]
        ours = pixels(results[3].book_dir / page.image)
        assert np.abs(ours.astype(np.int16) - np.asarray(plain, dtype=np.int16)).max() <= 1, page.number


def test_sd2_has_no_lcm_lora_so_its_drafts_take_fewer_steps_and_say_so(tiny_sd2, tiny_safety_checker, tmp_path):
    settings = tiny_settings(tiny_sd2, backend="sd21", safety_model=str(tiny_safety_checker), steps=12, draft=True)
    result = render_book(write_plan(tmp_path, make_plan(1)), tmp_path / "b.pdf", settings, progress=False)
    assert result.drafts == [1] and result.unet_calls == FALLBACK_STEPS
    assert "no LCM-LoRA" in result.draft_note and f"({FALLBACK_STEPS} instead of 12)" in result.draft_note


def test_sd2_drafts_at_a_drafts_steps_or_fewer_are_the_final_pictures(tiny_sd2, tiny_safety_checker, tmp_path):
    """A draft that would be the final picture itself is painted and kept as one: the final
    render paints nothing again."""
    settings = tiny_settings(tiny_sd2, backend="sd21", safety_model=str(tiny_safety_checker), steps=FALLBACK_STEPS)
    plan_path = write_plan(tmp_path, make_plan(2))
    drafted = render_book(plan_path, tmp_path / "b.pdf", settings.with_(draft=True), progress=False)
    assert drafted.painted == [1, 2] and drafted.drafts == [] and drafted.draft_note is None
    assert any("painted as final ones" in w for w in drafted.warnings)
    final = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    assert final.painted == [] and [p.key for p in final.pages] == [p.key for p in drafted.pages]


def test_a_missing_lora_is_one_clear_line(tiny_sd, tmp_path):
    plan_path = write_plan(tmp_path, make_plan(1))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        render_book(plan_path, tmp_path / "b.pdf", tiny_settings(tiny_sd, draft=True, draft_lora=str(tmp_path / "nope")), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="no pytorch_lora_weights.safetensors"):
        render_book(plan_path, tmp_path / "b.pdf", tiny_settings(tiny_sd, draft=True, draft_lora=str(empty)), progress=False)
    assert not (tmp_path / "b.pdf").exists()
    with pytest.raises(FairytaleError, match="use --draft"):
        tiny_settings(tiny_sd, scheduler="lcm")


def test_the_draft_adapter_is_switched_not_fused(tiny_sd, tiny_lcm_lora):
    """The UNet's own weights never change: drafting only switches the adapter on and off."""
    illustrator = load_illustrator(tiny_settings(tiny_sd))
    weights = {k: v.clone() for k, v in illustrator.pipe.unet.state_dict().items()}
    request = PaintRequest(1, "a lighthouse", "blurry", 5)
    final = illustrator.paint([request])[0]
    illustrator.configure(illustrator.backend.__class__(draft_settings(tiny_sd, tiny_lcm_lora).with_(scheduler="lcm", steps=4, guidance=1.0)))
    illustrator.paint([request])
    illustrator.configure(illustrator.backend.__class__(tiny_settings(tiny_sd)))
    assert np.array_equal(np.asarray(illustrator.paint([request])[0]), np.asarray(final))
    after = illustrator.pipe.unet.state_dict()
    for key, value in weights.items():
        base = key if key in after else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch_equal(after[base], value), key


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
