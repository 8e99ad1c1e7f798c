"""The one render core: keys that never change, one seed helper, one paint-and-safety loop,
backends listed in one place, and an illustrator that is always released."""

from __future__ import annotations

import pytest

from fairytale.errors import FairytaleError
from fairytale.render import RenderSettings, render_book
from fairytale.render.backends import BACKENDS, Backend, PaintRequest, get_backend
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)

# Cache keys computed with the render code before the render core was rebuilt (commit 57fcd01),
# for the same settings and requests: upgrading must never repaint an existing book.
KEYS_BEFORE_THE_CORE = {
    "sd14-seed": "453ef77fffc6b6e96cb36c8184b1e6e6",
    "sd14-tokens": "81d01c4d37eca306d57a8699eabbe701",
    "sd21-seed": "1b59341b9133f537fe664c151d67b33a",
    "unclip-ref": "d4eaff1ba847425a8ca3bacfaea4ba47",
}


def test_cache_keys_are_those_of_the_old_render_code(tiny_sd, tiny_sd2, tiny_unclip, tmp_path, monkeypatch):
    monkeypatch.setattr(Backend, "model_fingerprint", lambda self: "fixed-fingerprint")
    portrait = tmp_path / "portrait.bin"
    portrait.write_bytes(b"a portrait")
    cases = {
        "sd14-seed": ("sd14", tiny_sd, {}, PaintRequest(1, "a girl by the sea", "blurry", 1000), {}),
        "sd14-tokens": (
            "sd14", tiny_sd, {"consistency": "tokens", "steps": 4, "guidance": 6.0},
            PaintRequest(2, "<zoe> by the sea", "blurry", 7), {"<zoe>": "ab" * 32},
        ),
        "sd21-seed": (
            "sd21", tiny_sd2, {"scheduler": "ddim", "width": 128, "height": 64}, PaintRequest(3, "a lighthouse", "", 2**62), {},
        ),
        "unclip-ref": (
            "unclip", tiny_unclip, {"noise_level": 100},
            PaintRequest(1, "a girl", "dark", 5, (portrait,), {"noise_level": 100}), {},
        ),
    }
    for name, (backend, model, changes, request, embeddings) in cases.items():
        settings = RenderSettings(**({"backend": backend, "model": str(model), "steps": 3, "device": "cpu"} | changes))
        assert get_backend(backend)(settings).picture_key(request, embeddings) == KEYS_BEFORE_THE_CORE[name], name


def test_every_derived_seed_comes_from_one_helper():
    """The derived seeds are those the old code made (pictures and keys depend on them)."""
    from fairytale.render.book import next_seed
    from fairytale.render.safety import repaint_seed
    from fairytale.render.seeds import derive_seed, reference_seed, variation_seed

    assert repaint_seed(1000, 1) == derive_seed("repaint", 1000, 1) == 9178462023452817009
    assert reference_seed(7, "zoe") == 9105755438823238894
    assert variation_seed(5, 0) == 5050746354828890983  # the first seed `vary --seed 5` recorded
    assert next_seed(5) == derive_seed("new-seed", 5) != 5
    assert len({repaint_seed(9, 1), reference_seed(9, "1"), variation_seed(9, 1)}) == 3


def test_backends_are_listed_in_one_place():
    import inspect

    import fairytale.render.backends as package

    assert list(BACKENDS) == ["sd14", "sd21", "unclip"]
    for cls in BACKENDS.values():  # one module each, in the backends package
        assert cls.__module__ == f"fairytale.render.backends.{cls.name}"
    assert "BACKENDS[" not in inspect.getsource(inspect.getmodule(BACKENDS["unclip"]))  # no self-registration
    assert package.get_backend("unclip") is BACKENDS["unclip"]
    with pytest.raises(FairytaleError, match="Unknown backend"):
        get_backend("nope")


def test_unclip_adds_its_inputs_through_the_hook_not_its_own_paint():
    from fairytale.render.backends.unclip import UnCLIPIllustrator
    from fairytale.render.illustrator import TextToImageIllustrator

    assert UnCLIPIllustrator.paint is TextToImageIllustrator.paint
    assert UnCLIPIllustrator.pipeline_inputs is not TextToImageIllustrator.pipeline_inputs


def test_an_exception_while_painting_releases_the_illustrator(tiny_sd, tiny_safety_checker, tmp_path, monkeypatch):
    """However a render ends, the model it loaded is closed (a notebook rendering again and
    again must not run the GPU out of memory); one passed in by the caller stays open."""
    import fairytale.render.book as book
    from fairytale.render import load_illustrator

    loaded = []
    real_load = BACKENDS["sd14"].load

    def load(self, device_plan):
        illustrator = real_load(self, device_plan)
        loaded.append(illustrator)
        return illustrator

    monkeypatch.setattr(BACKENDS["sd14"], "load", load)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(book, "paint_pages", broken)
    settings = tiny_settings(tiny_sd, safety_model=str(tiny_safety_checker))
    with pytest.raises(RuntimeError, match="out of memory"):
        render_book(write_plan(tmp_path, make_plan(2)), tmp_path / "b.pdf", settings, progress=False)
    assert len(loaded) == 1 and loaded[0].pipe is None  # released

    mine = load_illustrator(settings)
    with pytest.raises(RuntimeError, match="out of memory"):
        render_book(write_plan(tmp_path, make_plan(2)), tmp_path / "c.pdf", settings, illustrator=mine, progress=False)
    assert mine.pipe is not None  # the caller's, still usable
    with mine:
        pass
    assert mine.pipe is None


def test_render_book_reads_as_numbered_steps():
    """Each step of ``render_book`` is one call (the rest is in the step functions)."""
    import inspect

    from fairytale.render.book import render_book as function

    source = inspect.getsource(function)
    body = source[source.index("with reporter") : source.index("return RenderResult")]
    steps = [line.strip() for line in body.splitlines() if line.strip().startswith("# ") and line.strip()[2].isdigit()]
    assert [int(s[2 : s.index(".")]) for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 8
    assert body.count("\n") < 60


def test_unclip_through_the_hook_paints_what_a_plain_pipeline_call_paints(tiny_unclip, tiny_safety_checker, tmp_path):
    """The unCLIP inputs added by the hook (image embedding, noise level) give each picture what
    one plain ``StableUnCLIPImg2ImgPipeline`` call with that embedding paints."""
    import numpy as np
    import torch
    from PIL import Image

    from fairytale.render import load_illustrator

    portrait = tmp_path / "zoe.png"
    Image.fromarray((np.random.default_rng(3).random((64, 64, 3)) * 255).astype("uint8")).save(portrait)
    settings = tiny_settings(tiny_unclip, backend="unclip", steps=3, safety_model=str(tiny_safety_checker))
    with load_illustrator(settings) as illustrator:
        requests = [
            PaintRequest(1, "a girl by the sea", "blurry", 21, (portrait,), {"noise_level": 100}),
            PaintRequest(2, "a lighthouse", "blurry", 22, (), {"noise_level": 100}),
        ]
        ours = illustrator.paint(requests)
        for request, picture in zip(requests, ours, strict=True):
            embedding = illustrator.pipeline_inputs([request])["image_embeds"]
            with torch.inference_mode():
                plain = illustrator.pipe(
                    prompt=request.prompt, negative_prompt=request.negative_prompt, image_embeds=embedding, noise_level=100,
                    num_inference_steps=3, guidance_scale=10.0, width=picture.width, height=picture.height,
                    generator=torch.Generator("cpu").manual_seed(request.seed),
                ).images[0]
            difference = np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max()
            assert difference <= 1, (request.page, difference)
        assert not np.array_equal(np.asarray(ours[0]), np.asarray(ours[1]))
