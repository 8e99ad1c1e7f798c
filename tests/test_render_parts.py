"""The render package's parts: settings, page lists, devices, schedulers, keys, upscaling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import FairytaleError
from fairytale.render import RenderSettings, get_backend, load_manifest, parse_pages, plan_device, render_book
from fairytale.render.backends import BACKENDS, Backend, PaintRequest, register_backend
from fairytale.render.book import book_dir_for, next_seed
from fairytale.render.safety import placeholder_picture
from fairytale.render.schedulers import SCHEDULERS, make_scheduler
from fairytale.render.upscale import UpscaleJob, Upscaler, _tiles, plain_prompt, upscale_pictures
from tests.render_support import make_plan, single_torch_thread, tiny_settings, write_plan  # noqa: F401


@pytest.mark.parametrize(
    "spec, expected",
    [(None, None), ("3,7", [3, 7]), ("2-4", [2, 3, 4]), ("1, 4-5,4", [1, 4, 5]), ("8", [8])],
)
def test_page_lists(spec, expected):
    assert parse_pages(spec, 8) == expected


@pytest.mark.parametrize(
    "spec, message",
    [("0", "Page 0 out of range"), ("9,10", "Pages 9, 10 out of range"), ("5-3", "runs backwards"), ("a", "Cannot read"), (",", "names no pages")],
)
def test_bad_page_lists(spec, message):
    with pytest.raises(FairytaleError, match=message):
        parse_pages(spec, 8)


def test_settings_are_validated():
    assert RenderSettings().steps == 25 and RenderSettings().scheduler == "dpm++"
    for bad in (dict(steps=0), dict(width=500), dict(guidance=-1), dict(layout="collage"), dict(jpeg_quality=5), dict(dpi=10)):
        with pytest.raises(FairytaleError):
            RenderSettings(**bad)
    assert RenderSettings().with_(trim="a4").trim == "a4"


def test_device_plans_on_this_machine():
    cpu = plan_device("cpu")
    assert (cpu.device, cpu.dtype, cpu.batch_size, cpu.offload) == ("cpu", "float32", 4, False)
    assert plan_device("cpu", low_vram=True).batch_size == 1
    assert plan_device("cpu", batch_size=3).batch_size == 3
    assert "float32" in cpu.describe()
    with pytest.raises(FairytaleError, match="Unknown device"):
        plan_device("gpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(FairytaleError, match="CUDA is not available"):
            plan_device("cuda")


def fake_cuda_card(monkeypatch, *, free_gib: float, total_gib: float, cached_gib: float = 0.0) -> None:
    """One CUDA card with ``free_gib`` free of ``total_gib``, this process's allocator caching
    ``cached_gib`` that no tensor uses (and holding 1 GiB of live tensors)."""
    import torch

    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * gib), int(total_gib * gib)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: int((1 + cached_gib) * gib))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: gib)


def test_device_plan_on_a_cuda_card(monkeypatch):
    # What a Colab T4 gets: float16, two pages at a time; --low-vram: offload, one page.
    fake_cuda_card(monkeypatch, free_gib=14.5, total_gib=15)
    t4 = plan_device()
    assert (t4.device, t4.dtype, t4.batch_size, t4.offload) == ("cuda", "float16", 2, False)
    small = plan_device(low_vram=True)
    assert (small.batch_size, small.offload, small.low_vram) == (1, True, True)
    with pytest.raises(FairytaleError, match="1 CUDA device"):
        plan_device("cuda:3")
    assert t4.describe().startswith("cuda, 14.5 of 15 GiB free, float16, batch 2") and t4.hint is None


def test_a_shared_cuda_card_is_planned_by_the_memory_free_now(monkeypatch):
    """On Colab or a shared card another process (or a pipeline an earlier notebook cell still
    holds) uses part of the card: the batch is sized by what is free, not by the card's size;
    blocks this process's allocator caches count as free (it paints in them)."""
    fake_cuda_card(monkeypatch, free_gib=9, total_gib=24)
    shared = plan_device()
    assert shared.batch_size == 1 and "9.0 of 24 GiB free" in shared.describe()
    fake_cuda_card(monkeypatch, free_gib=9, total_gib=24, cached_gib=3)
    assert plan_device().batch_size == 2  # 12 GiB usable
    fake_cuda_card(monkeypatch, free_gib=4, total_gib=16)
    tight = plan_device()
    assert tight.describe().endswith("(under 6 GiB free, one page may not fit: try --low-vram)")
    assert plan_device(low_vram=True).hint is None  # already saving memory
    assert plan_device(batch_size=3).batch_size == 3  # an explicit --batch-size still wins


def test_schedulers_keep_the_models_noise_schedule_and_prediction_type():
    from tests.tiny_models.diffusion import sd1_scheduler, sd2_scheduler

    dpm = make_scheduler("dpm++", sd2_scheduler())
    assert type(dpm).__name__ == "DPMSolverMultistepScheduler"
    assert dpm.config.prediction_type == "v_prediction" and dpm.config.algorithm_type == "dpmsolver++"
    assert dpm.config.beta_schedule == "scaled_linear" and dpm.config.use_karras_sigmas
    for name in SCHEDULERS:
        scheduler = make_scheduler(name, sd1_scheduler())
        assert scheduler.config.prediction_type == "epsilon"
    with pytest.raises(FairytaleError, match="Unknown scheduler"):
        make_scheduler("fancy", sd1_scheduler())


def test_picture_keys_cover_what_decides_a_picture(tiny_sd):
    backend = get_backend("sd14")(tiny_settings(tiny_sd))
    request = PaintRequest(1, "a lighthouse", "ugly", 5)
    key = backend.picture_key(request, {})
    assert backend.picture_key(PaintRequest(2, "a lighthouse", "ugly", 5), {}) == key  # the page number does not
    changed = [
        backend.picture_key(PaintRequest(1, "a lighthouse!", "ugly", 5), {}),
        backend.picture_key(PaintRequest(1, "a lighthouse", "ugly!", 5), {}),
        backend.picture_key(request.with_seed(6), {}),
        backend.picture_key(request, {"<zoe>": "abc"}),
        get_backend("sd14")(tiny_settings(tiny_sd, steps=4)).picture_key(request, {}),
        get_backend("sd14")(tiny_settings(tiny_sd, guidance=5.0)).picture_key(request, {}),
        get_backend("sd14")(tiny_settings(tiny_sd, scheduler="ddim")).picture_key(request, {}),
        get_backend("sd14")(tiny_settings(tiny_sd, width=128)).picture_key(request, {}),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    # device, batch size and print settings do not
    for same in (dict(batch_size=1), dict(device=None), dict(trim="a4", bleed=True), dict(low_vram=True)):
        assert get_backend("sd14")(tiny_settings(tiny_sd, **same)).picture_key(request, {}) == key
    assert backend.picture_size() == (64, 64)  # the tiny model's native size, read from its configs


def test_backends_register_by_name():
    assert "sd14" in BACKENDS

    @register_backend
    class Fake(Backend):
        name = "fake-test"
        role = "sd14"
        family = "sd1"

    try:
        assert get_backend("fake-test") is Fake
    finally:
        del BACKENDS["fake-test"]
    with pytest.raises(FairytaleError, match="Unknown backend 'nope'"):
        get_backend("nope")


def test_small_helpers():
    assert book_dir_for("out/ginger.pdf").as_posix() == "out/ginger"
    assert next_seed(5) == next_seed(5) != 5 and 0 <= next_seed(5) < 2**63
    picture = placeholder_picture(96, 64)
    assert picture.size == (96, 64)
    assert plain_prompt("<ginger> the giraffe, in <monkeypen-style> style") == "the giraffe, in style"
    assert _tiles(64, 32, 8) == [0, 24, 32] and _tiles(30, 32, 8) == [0]


def test_print_upscales_every_picture_x4_and_reports_the_gain(tiny_sd, tiny_upscaler, tmp_path):
    settings = tiny_settings(tiny_sd, steps=2, upscale=True, upscaler_model=str(tiny_upscaler), upscale_steps=2)
    plain = render_book(write_plan(tmp_path, make_plan(2)), tmp_path / "b.pdf", settings.with_(upscale=False), progress=False)
    result = render_book(tmp_path / "plan.json", tmp_path / "b.pdf", settings, progress=False)
    assert result.painted == []  # upscaling does not repaint
    manifest = load_manifest(result.book_dir)
    for page, before in zip(manifest.pages, plain.pages, strict=True):
        upscaled = Image.open(result.book_dir / page.print_image)
        assert upscaled.size == (256, 256)
        assert page.effective_dpi == pytest.approx(4 * before.effective_dpi, rel=0.01)
    assert not any("--print upscales" in w for w in result.warnings)
    # cached: a second run upscales nothing (and so loads no upscaler)
    files = sorted((result.book_dir / "upscaled").iterdir())
    again = render_book(tmp_path / "plan.json", tmp_path / "b.pdf", settings, progress=False)
    assert sorted((again.book_dir / "upscaled").iterdir()) == files
    # a damaged upscaled picture is made again, not a PDF-stage failure on every later run
    files[0].write_bytes(files[0].read_bytes()[:100])
    render_book(tmp_path / "plan.json", tmp_path / "b.pdf", settings, progress=False)
    assert Image.open(files[0]).size == (256, 256) and Image.open(files[0]).load() is not None


def test_large_pictures_are_upscaled_in_blended_tiles(tiny_sd, tiny_upscaler, tmp_path):
    from fairytale.render.safety import SafetyChecker

    picture = tmp_path / "p.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).resize((64, 64)).save(picture)
    device = plan_device("cpu")
    job = UpscaleJob(1, picture, "a lighthouse", "ugly", 3)
    checker = lambda: SafetyChecker.for_model("sd14", str(tiny_sd), device)  # noqa: E731
    files, warnings = upscale_pictures(
        [job], tmp_path, ref=str(tiny_upscaler), steps=2, device_plan=device, safety=checker, progress=None, tile=32
    )
    tiled = Image.open(files[1])
    assert tiled.size == (256, 256) and warnings == []
    whole = Upscaler.load(str(tiny_upscaler), device, 2).upscale(Image.open(picture), job)
    assert whole.size == (256, 256)
    # tiles blend: no hard seam where the tiles meet (rows 95/96 differ no more than rows nearby)
    array = np.asarray(tiled, dtype=np.float32)
    seam = np.abs(array[96] - array[95]).mean()
    nearby = np.mean([np.abs(array[r + 1] - array[r]).mean() for r in range(60, 90)])
    assert seam < 3 * nearby + 1


def test_a_flagged_upscale_is_remembered_not_made_again_at_every_render(tiny_upscaler, tmp_path, monkeypatch):
    picture = tmp_path / "p.png"
    Image.fromarray(np.full((64, 64, 3), 128, dtype="uint8")).save(picture)
    job = UpscaleJob(1, picture, "a lighthouse", "ugly", 3)

    class FlagsAll:
        def flagged(self, pictures):
            return [True for _ in pictures]

    run = dict(ref=str(tiny_upscaler), steps=2, device_plan=plan_device("cpu"), progress=None, tile=32)
    files, warnings = upscale_pictures([job], tmp_path, safety=FlagsAll, **run)
    assert files == {} and warnings == ["page 1: the upscaled picture was flagged; printed from the original instead"]

    def not_again(*args, **kwargs):
        raise AssertionError("upscaled again")

    monkeypatch.setattr(Upscaler, "load", not_again)
    assert upscale_pictures([job], tmp_path, safety=not_again, **run) == (files, warnings)


def test_our_painting_matches_a_plain_pipeline_call(tiny_sd):
    """Cached prompt embeddings, classifier-free guidance with a negative prompt, a batch of
    pages: each picture is what one plain pipeline call with its prompt and seed paints."""
    import numpy as np
    import torch

    from fairytale.render import load_illustrator
    from tests.render_support import tiny_settings

    illustrator = load_illustrator(tiny_settings(tiny_sd, steps=3))
    requests = [
        PaintRequest(1, "a lighthouse by the sea", "blurry, dark", 11),
        PaintRequest(2, "a girl with a red kite", "blurry, dark", 12),
        PaintRequest(3, "a lighthouse by the sea", "ugly", 13),
    ]
    ours = illustrator.paint(requests)
    for request, picture in zip(requests, ours, strict=True):
        with torch.inference_mode():
            plain = illustrator.pipe(
                request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=3,
                guidance_scale=7.5, width=picture.width, height=picture.height,
                generator=torch.Generator("cpu").manual_seed(request.seed),
            ).images[0]
        difference = np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max()
        assert difference <= 1, (request.page, difference)  # float rounding of the batched UNet, at most
    assert not np.array_equal(np.asarray(ours[0]), np.asarray(ours[2]))  # the negative prompt counts


def test_a_device_plan_places_pipelines_and_side_models():
    import torch

    from fairytale.render.devices import DevicePlan

    class Pipe:
        def __init__(self):
            self.calls = []

        def to(self, device):
            self.calls.append(("to", device))

        def enable_model_cpu_offload(self, device):
            self.calls.append(("offload", device))

        def enable_attention_slicing(self):
            self.calls.append(("slicing",))

    plain = DevicePlan("cuda", "float16", 4, low_vram=False, offload=False)
    small_card = DevicePlan("cuda", "float16", 1, low_vram=True, offload=True)
    for plan, expected in [(plain, [("to", "cuda")]), (small_card, [("offload", "cuda"), ("slicing",)])]:
        pipe = Pipe()
        plan.place(pipe)
        assert pipe.calls == expected
    assert plain.side_model_placement() == ("cuda", torch.float16)
    assert small_card.side_model_placement() == ("cpu", torch.float32)  # the GPU holds one model at a time
