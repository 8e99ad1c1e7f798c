"""``--consistency adapter``: pages steered by their characters' portraits through IP-Adapter
(tiny weights built in-process in the hub layout, loaded by diffusers' ``load_ip_adapter``)."""

from __future__ import annotations

import numpy as np
import pytest

from fairytale.errors import FairytaleError
from fairytale.plan import load_plan, save_plan
from fairytale.render import load_manifest, render_book
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    check_a_new_portrait_repaints_only_its_pages,
    make_plan,
    pixels,
    single_torch_thread,
    tiny_settings,
    two_character_plan,
    write_plan,
)


def adapter_settings(tiny_sd, tiny_ip_adapter, tiny_safety_checker, **changes):
    values = dict(
        consistency="adapter",
        adapter_model=str(tiny_ip_adapter),
        adapter_encoder=str(tiny_ip_adapter),
        safety_model=str(tiny_safety_checker),
    )
    return tiny_settings(tiny_sd, **(values | changes))


@pytest.fixture(scope="module")
def adapter_book(tiny_sd, tiny_ip_adapter, tiny_safety_checker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter-book")
    plan_path = write_plan(folder, two_character_plan())
    settings = adapter_settings(tiny_sd, tiny_ip_adapter, tiny_safety_checker)
    return plan_path, settings, render_book(plan_path, folder / "book.pdf", settings, progress=False)


def test_adapter_mode_paints_portraits_first_and_records_the_mode(adapter_book):
    plan_path, _, result = adapter_book
    plan = load_plan(plan_path)
    for character in ("zoe", "dad"):
        reference = plan.character(character).reference
        assert reference is not None and reference.seed is not None
        assert (plan_path.parent / reference.image).is_file()
    manifest = load_manifest(result.book_dir)
    assert manifest.settings["consistency"] == "adapter" and manifest.settings["adapter_scale"] == 0.6
    assert result.painted == [1, 2, 3, 4]


def test_scale_zero_paints_exactly_the_plain_pictures(adapter_book, tiny_sd, tiny_ip_adapter, tiny_safety_checker, tmp_path):
    _, _, steered = adapter_book
    plain = render_book(
        write_plan(tmp_path, two_character_plan()), tmp_path / "plain.pdf",
        tiny_settings(tiny_sd, consistency="seed", safety_model=str(tiny_safety_checker)), progress=False,
    )
    zero = render_book(
        write_plan(tmp_path, two_character_plan(), "zero.json"), tmp_path / "zero.pdf",
        adapter_settings(tiny_sd, tiny_ip_adapter, tiny_safety_checker, adapter_scale=0.0), progress=False,
    )
    for number in (1, 2, 3, 4):
        assert np.array_equal(pixels(zero, number), pixels(plain, number)), number
        assert not np.array_equal(pixels(steered, number), pixels(plain, number)), number  # the portraits count


def test_batch_size_does_not_change_a_page(adapter_book, tiny_sd, tiny_ip_adapter, tiny_safety_checker, tmp_path):
    _, _, batched = adapter_book
    alone = render_book(
        write_plan(tmp_path, two_character_plan()), tmp_path / "one.pdf",
        adapter_settings(tiny_sd, tiny_ip_adapter, tiny_safety_checker, batch_size=1), progress=False,
    )
    for number in (1, 2, 3, 4):
        assert np.array_equal(pixels(alone, number), pixels(batched, number)), number


def test_low_vram_attention_slicing_takes_the_adapter(adapter_book, tiny_sd, tiny_ip_adapter, tiny_safety_checker, tmp_path):
    """--low-vram slices attention; IP-Adapter loads over it (diffusers' loader alone cannot
    re-create sliced processors) and the other layers stay sliced."""
    from diffusers.models.attention_processor import SlicedAttnProcessor

    from fairytale.render import load_illustrator

    settings = adapter_settings(tiny_sd, tiny_ip_adapter, tiny_safety_checker, low_vram=True, batch_size=1)
    illustrator = load_illustrator(settings)
    result = render_book(
        write_plan(tmp_path, two_character_plan(2)), tmp_path / "low.pdf", settings, illustrator=illustrator,
        progress=False,
    )
    assert result.painted == [1, 2]
    kinds = {type(p).__name__ for p in illustrator.pipe.unet.attn_processors.values()}
    assert "PortraitAttnProcessor" in kinds and SlicedAttnProcessor.__name__ in kinds


def test_a_new_portrait_repaints_only_the_pages_that_show_its_character(adapter_book, tmp_path):
    check_a_new_portrait_repaints_only_its_pages(*adapter_book, tmp_path)


def test_regions_in_the_plan_key_only_their_page(adapter_book, tmp_path):
    """The planner's automatic regions are the boxes the renderer computes for a plan without
    them (nothing repainted); an edited region survives the render and repaints only its page."""
    import shutil

    from fairytale.plan import Region
    from fairytale.scenes import side_by_side

    plan_path, settings, before = adapter_book
    folder = tmp_path / "copy"
    shutil.copytree(plan_path.parent, folder)
    copied = folder / plan_path.name
    plan = load_plan(copied)
    plan.pages[3].regions = side_by_side(["zoe", "dad"])
    save_plan(plan, copied)
    same = render_book(copied, folder / "book.pdf", settings, progress=False)
    assert same.painted == []
    plan = load_plan(copied)
    plan.pages[3].regions["dad"] = Region(left=0.6, top=0.3, right=1.0, bottom=1.0)
    save_plan(plan, copied)
    after = render_book(copied, folder / "book.pdf", settings, progress=False)
    assert after.painted == [4]
    keys_before = {p.number: p.key for p in load_manifest(before.book_dir).pages}
    keys_after = {p.number: p.key for p in load_manifest(after.book_dir).pages}
    assert [n for n in keys_before if keys_before[n] != keys_after[n]] == [4]
    assert load_plan(copied).pages[3].regions["dad"].box() == (0.6, 0.3, 1.0, 1.0)  # kept as edited


def test_sd2_adapter_is_a_one_line_error_naming_the_modes_that_work(tiny_sd2, tmp_path):
    with pytest.raises(FairytaleError, match=r"IP-Adapter has weights for SD 1.x only\); it offers: seed, tokens"):
        render_book(
            write_plan(tmp_path, two_character_plan(2)), tmp_path / "b.pdf",
            tiny_settings(tiny_sd2, backend="sd21", consistency="adapter"), progress=False,
        )


def test_modes_combine_and_are_checked():
    from fairytale.render import RenderSettings

    assert RenderSettings(consistency="tokens+adapter").consistency == "tokens+adapter"
    for bad in ("seed+adapter", "adapter+adapter", "magic+adapter"):
        with pytest.raises(FairytaleError, match="Unknown consistency"):
            RenderSettings(consistency=bad)
    with pytest.raises(FairytaleError, match="--adapter-scale"):
        RenderSettings(adapter_scale=3.0)


ADAPTER_ROLES = {"ip_adapter_sd15", "ip_adapter_image_encoder"}


def test_the_model_check_names_the_adapter_models():
    from fairytale import registry
    from fairytale.model_check import render_needs

    def roles(*args, **kwargs):
        return {need.role for need in render_needs(*args, **kwargs)}

    assert ADAPTER_ROLES <= roles("sd14", None, consistency="adapter")
    assert ADAPTER_ROLES <= roles("sd14", None)  # the default for SD 1.x
    assert ADAPTER_ROLES <= roles("sd14", None, plan=two_character_plan())
    assert not ADAPTER_ROLES & roles("sd14", None, consistency="seed")
    assert not ADAPTER_ROLES & roles("sd21", None) and not ADAPTER_ROLES & roles("unclip", None)
    assert ADAPTER_ROLES <= set(registry.MODELS)  # `fairytale models pull` (all roles) pulls them


def test_a_plan_without_portraits_needs_no_adapter(tiny_sd, tiny_safety_checker, tmp_path):
    """Default (adapter) mode on a plan whose pages show no character with a portrait: nothing
    is painted for portraits, IP-Adapter is neither required nor loaded (here none exists), the
    pictures are keyed as plain ones, and the manifest still records the mode."""
    from fairytale.model_check import render_needs

    plan = make_plan(3)
    for page in plan.pages:
        page.characters = []
    plan.characters = []
    assert not ADAPTER_ROLES & {need.role for need in render_needs("sd14", None, plan=plan)}
    plan_path = write_plan(tmp_path, plan)
    settings = tiny_settings(tiny_sd, consistency=None, safety_model=str(tiny_safety_checker))
    result = render_book(plan_path, tmp_path / "book.pdf", settings, progress=False)
    assert load_manifest(result.book_dir).settings["consistency"] == "adapter"
    assert not (result.book_dir / "references").exists()
    plain = render_book(
        write_plan(tmp_path, plan, "plain.json"), tmp_path / "book.pdf",
        tiny_settings(tiny_sd, consistency="seed", safety_model=str(tiny_safety_checker)), progress=False,
    )
    assert plain.painted == [] and plain.reused == [1, 2, 3]  # the same keys as seed mode


def test_a_default_render_names_the_missing_adapter_in_one_line(tiny_sd, tiny_safety_checker, tmp_path):
    from typer.testing import CliRunner

    from fairytale.cli import app

    plan_path = write_plan(tmp_path, two_character_plan(2))
    result = CliRunner().invoke(
        app, ["render", str(plan_path), "-o", str(tmp_path / "b.pdf"), "--model", str(tiny_sd),
              "--safety-model", str(tiny_safety_checker), "--steps", "2", "--device", "cpu"],
    )
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "fairytale models pull ip_adapter_sd15 ip_adapter_image_encoder" in line
    assert not (tmp_path / "b").exists()  # nothing painted or written


def test_a_portrait_adds_exactly_nothing_outside_its_region():
    """At the attention processor: with a region, every latent cell outside it comes out
    exactly as without the portrait; inside, the portrait changes it."""
    import types

    import torch
    from diffusers.models.attention_processor import Attention

    from fairytale.render.portrait_attention import PortraitAttnProcessor, RegionState, grid_of, region_mask

    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=32, heads=4, dim_head=8)
    loaded = types.SimpleNamespace(
        to_k_ip=torch.nn.ModuleList([torch.nn.Linear(32, 32, bias=False)]),
        to_v_ip=torch.nn.ModuleList([torch.nn.Linear(32, 32, bias=False)]),
    )
    state = RegionState(aspect=2.0)
    processor = PortraitAttnProcessor(loaded, state)
    processor.scale = 0.8
    cells = 8 * 16  # a 2:1 picture's latent grid: 8 rows of 16
    assert grid_of(cells, 2.0) == (8, 16)
    hidden = torch.randn(2, cells, 32)
    text = torch.randn(2, 7, 32)
    box = (0.25, 0.5, 0.75, 1.0)  # the lower half, middle half of the width
    with torch.inference_mode():
        plain = processor(attn, hidden, text)
        state.tokens = torch.randn(2, 2, 4, 32)  # 2 rows, 2 portraits of 4 tokens each
        state.regions = [[box, (0.0, 0.0, 0.25, 1.0)]]
        steered = processor(attn, hidden, text)
    inside = (region_mask(box, 8, 16) + region_mask((0.0, 0.0, 0.25, 1.0), 8, 16)).bool()
    assert inside.any() and not inside.all()
    assert torch.equal(steered[:, ~inside], plain[:, ~inside])
    assert (steered[:, inside] != plain[:, inside]).any(dim=-1).all()
    # the box is rasterised by cell centres: 8 rows × 16 columns, lower 4 rows, columns 4..11
    assert int(region_mask(box, 8, 16).sum()) == 4 * 8


def test_pages_showing_several_characters_place_them_side_by_side(tmp_path):
    from fairytale.plan import Reference, Region
    from fairytale.render.backends.common import page_regions

    plan = two_character_plan(2)
    for character in plan.characters:
        character.reference = Reference(image=f"{character.id}.png")
    page = plan.pages[-1]
    page.characters = ["dad", "zoe"]  # the text names him first
    assert page_regions(plan, page) == [(0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 0.5, 1.0)]  # zoe, dad (plan order)
    page.regions = {"zoe": Region(left=0.1, top=0.2, right=0.4, bottom=0.9)}
    assert page_regions(plan, page)[0] == (0.1, 0.2, 0.4, 0.9)
    with pytest.raises(ValueError, match="left < right"):
        Region(left=0.5, top=0, right=0.5, bottom=1)


def test_evaluate_reports_each_characters_likeness_to_its_portrait(adapter_book, tiny_clip, tmp_path):
    import shutil

    from fairytale.evaluation import evaluate_book

    plan_path, _, result = adapter_book
    folder = tmp_path / "copy"
    shutil.copytree(plan_path.parent, folder)
    book = folder / result.book_dir.name
    shutil.copyfile(book / "references" / "zoe.png", book / "pages" / "page-01.png")  # page 1 shows Zoë alone
    scores = {p.number: p.portrait for p in evaluate_book(book, clip_model=str(tiny_clip)).pages}
    assert set(scores[1]) == {"zoe"} and set(scores[2]) == {"dad"} and set(scores[4]) == {"zoe", "dad"}
    assert scores[1]["zoe"] == pytest.approx(100.0, abs=1e-3)  # her portrait itself
    assert scores[3]["zoe"] < 100.0


def test_the_drift_check_repaints_a_page_below_the_threshold_and_records_it(
    tiny_sd, tiny_safety_checker, tiny_clip, tmp_path
):
    """A threshold of 100 (a region exactly like its portrait) forces every page below it: each
    is painted again once, the most alike picture is kept and every score is recorded."""
    plan_path = write_plan(tmp_path, two_character_plan(2))
    settings = tiny_settings(
        tiny_sd, consistency="seed", safety_model=str(tiny_safety_checker), drift_check=100.0,
        max_drift_repaints=1, clip_model=str(tiny_clip),
    )
    result = render_book(plan_path, tmp_path / "book.pdf", settings, progress=False)
    assert load_plan(plan_path).character("zoe").reference is not None  # the drift check needs portraits
    manifest = load_manifest(result.book_dir)
    for page in manifest.pages:
        assert set(page.likeness) == set(page.characters) and page.drift_repaints == 1
        assert all(0 <= v < 100 for v in page.likeness.values())
    assert result.pictures_painted >= 4 and sum("drifted from its portrait" in w for w in result.warnings) == 2
    again = render_book(plan_path, tmp_path / "book.pdf", settings, progress=False)  # all cached: said, not hidden
    assert again.painted == [] and any("pages 1, 2 were reused from the cache unchecked" in w for w in again.warnings)
    plain = render_book(write_plan(tmp_path, two_character_plan(2), "p.json"), tmp_path / "p.pdf",
                        settings.with_(drift_check=None), progress=False)
    assert all(not p.likeness and not p.drift_repaints for p in load_manifest(plain.book_dir).pages)
    assert load_plan(tmp_path / "p.json").character("zoe").reference is None  # off: no portraits painted


def test_the_cli_says_adapter_is_not_for_sd2_before_checking_models(tiny_sd2, tmp_path):
    from typer.testing import CliRunner

    from fairytale.cli import app

    plan_path = write_plan(tmp_path, two_character_plan(2))
    result = CliRunner().invoke(
        app, ["render", str(plan_path), "-o", str(tmp_path / "b.pdf"), "--backend", "sd21", "--model", str(tiny_sd2),
              "--consistency", "adapter", "--quiet"],
    )
    assert result.exit_code == 1
    assert "cannot keep characters alike by 'adapter'" in result.output and "it offers: seed, tokens" in result.output
    assert "Missing models" not in result.output and len(result.output.strip().splitlines()) == 1


def test_portraits_keys_and_values_are_projected_once_per_painting(
    tiny_sd, tiny_ip_adapter, tiny_safety_checker, tmp_path, monkeypatch
):
    """A page's portrait tokens are the same at every step: each IP-Adapter layer projects
    them once per painting (it did at every step), and the pictures are bit for bit those
    painted with every projection computed."""
    from fairytale.render import portrait_attention, unet_tuning

    projected = []
    made = portrait_attention.PortraitAttnProcessor.__init__

    def counting(processor, loaded, state) -> None:
        made(processor, loaded, state)
        for layer in (processor.to_k_ip, processor.to_v_ip):
            layer.register_forward_hook(lambda module, args, output: projected.append(module))

    monkeypatch.setattr(portrait_attention.PortraitAttnProcessor, "__init__", counting)
    settings = adapter_settings(tiny_sd, tiny_ip_adapter, tiny_safety_checker, steps=4)
    results, counts = {}, {}
    kept = unet_tuning.PromptResults.output
    for keep in (False, True):
        every_time = lambda results, layer, x, compute: compute(x)  # noqa: E731
        monkeypatch.setattr(unet_tuning.PromptResults, "output", kept if keep else every_time)
        folder = tmp_path / f"keep-{keep}"
        folder.mkdir()
        results[keep] = render_book(write_plan(folder, two_character_plan()), folder / "b.pdf", settings, progress=False)
        counts[keep], projected[:] = len(projected), []
    assert counts[True] and counts[False] == 4 * counts[True]  # 4 steps
    for number in (1, 2, 3, 4):
        assert np.array_equal(pixels(results[True], number), pixels(results[False], number)), number


def test_the_drift_check_keeps_clip_off_the_gpu_under_model_offload(
    tiny_sd, tiny_safety_checker, tiny_clip, tmp_path, monkeypatch
):
    """--low-vram promises one model at a time on the GPU: the drift check's CLIP (ViT-L/14,
    1.7 GB in float32) works beside the pipeline on the CPU, as the safety checker does (it
    went to the painting device and stayed there)."""
    from dataclasses import replace

    from fairytale import registry
    from fairytale.render import load_illustrator

    settings = tiny_settings(
        tiny_sd, consistency="seed", safety_model=str(tiny_safety_checker), drift_check=1.0, clip_model=str(tiny_clip),
        precision="fp32",  # as the card is planned: a CUDA card in float32
    )  # fmt: skip
    illustrator = load_illustrator(settings)
    # painted on the CPU, planned as a CUDA card under offload (the plan decides where side models go)
    illustrator.device_plan = replace(illustrator.device_plan, device="cuda", low_vram=True, offload=True)
    devices, load_clip = [], registry.load_clip
    monkeypatch.setattr(registry, "load_clip", lambda ref, device: (devices.append(device), load_clip(ref, "cpu"))[1])
    render_book(write_plan(tmp_path, two_character_plan(2)), tmp_path / "b.pdf", settings, illustrator=illustrator, progress=False)
    assert devices == ["cpu"]


def test_closing_an_illustrator_lets_go_of_every_model(tiny_sd, tiny_ip_adapter, tiny_safety_checker, tiny_models, tmp_path):
    """``with load_illustrator(...) as illustrator:`` frees the models when the block ends, though
    the name lives on (a notebook loading the next model on a T4): the draft switch, IP-Adapter
    and the safety checker held the pipeline and its models on the GPU after close()."""
    import gc
    import weakref

    from PIL import Image

    from fairytale.render import load_illustrator
    from fairytale.render.backends import PaintRequest
    from fairytale.render.portrait_adapter import SCALE_OPTION

    settings = adapter_settings(
        tiny_sd, tiny_ip_adapter, tiny_safety_checker, steps=2, draft=True, draft_lora=str(tiny_models("lcm_lora"))
    )
    portrait = tmp_path / "zoe.png"
    Image.new("RGB", (64, 64), "red").save(portrait)
    with load_illustrator(settings) as illustrator:
        illustrator.paint([PaintRequest(1, "a girl", "", 1, (portrait,), {SCALE_OPTION: 0.6})])
        pipe = illustrator.pipe
        models = [pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder, illustrator.safety.checker]
        alive = [weakref.ref(model) for model in models]
        del pipe, models
    gc.collect()
    assert [ref() is None for ref in alive] == [True] * len(alive)
