"""The sd21 and unclip backends with their tiny models: whole books, references, consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import FairytaleError, PlanError
from fairytale.plan import Embedding, Reference, load_plan, save_plan
from fairytale.render import get_backend, load_manifest, render_book
from fairytale.render.backends.unclip import blend_embeddings
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def unclip_settings(tiny_unclip, tiny_safety_checker, **changes):
    values = dict(backend="unclip", safety_model=str(tiny_safety_checker), steps=2, consistency=None)  # its default: reference
    return tiny_settings(tiny_unclip, **(values | changes))


def test_sd21_renders_a_book(tiny_sd2, tiny_safety_checker, tmp_path):
    plan_path = write_plan(tmp_path, make_plan(3))
    settings = tiny_settings(tiny_sd2, backend="sd21", safety_model=str(tiny_safety_checker), steps=2)
    result = render_book(plan_path, tmp_path / "zoe.pdf", settings, progress=False)
    manifest = load_manifest(result.book_dir)
    assert result.pdf.is_file() and result.painted == [1, 2, 3]
    assert manifest.backend == "sd21" and manifest.settings["width"] == 96  # the tiny SD 2 model's size
    assert manifest.settings["consistency"] == "seed"  # no learned tokens in the plan
    assert all(p.safety == "passed" and p.seed == p.requested_seed for p in manifest.pages)
    assert all(pixels(result.book_dir / p.image).std() > 5 for p in manifest.pages)
    again = render_book(plan_path, tmp_path / "zoe.pdf", settings, progress=False)
    assert again.painted == [] and again.reused == [1, 2, 3]


@pytest.fixture(scope="module")
def unclip_book(tiny_unclip, tiny_safety_checker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("unclip")
    plan_path = write_plan(folder, make_plan(3))
    settings = unclip_settings(tiny_unclip, tiny_safety_checker)
    result = render_book(plan_path, folder / "zoe.pdf", settings, progress=False)
    return result, plan_path, settings


def test_unclip_renders_a_book_with_reference_portraits(unclip_book):
    result, plan_path, settings = unclip_book
    plan = load_plan(plan_path)
    zoe = plan.character("zoe")
    # the main character's portrait: in the book folder, recorded in the plan with its seed
    assert zoe.reference is not None and zoe.reference.seed is not None and "portrait" in zoe.reference.prompt
    portrait = (plan_path.parent / zoe.reference.image).resolve()
    assert portrait == (result.book_dir / "references" / "zoe.png").resolve() and portrait.is_file()
    assert plan.character("dad").reference is None  # not a main character
    # plan.json is shared: the model is named as the book's credit names it, not by its path
    assert zoe.reference.model == f"{Path(settings.model).name} (unclip)"
    assert str(Path(settings.model)) not in plan_path.read_text()
    manifest = load_manifest(result.book_dir)
    assert manifest.backend == "unclip" and manifest.settings["consistency"] == "reference"
    assert manifest.settings["noise_level"] == 0 and result.painted == [1, 2, 3]
    assert all(p.safety == "passed" for p in manifest.pages)
    again = render_book(plan_path, result.pdf, settings, progress=False)
    assert again.painted == [] and load_plan(plan_path).character("zoe").reference == zoe.reference


def test_unclip_pages_are_painted_from_their_characters_reference(unclip_book, tmp_path):
    result, plan_path, settings = unclip_book
    before = {p.number: pixels(result.book_dir / p.image) for p in load_manifest(result.book_dir).pages}
    folder = tmp_path / "book"
    folder.mkdir()
    # Zoë is on pages 1 and 3, Father on page 2. Give Father a reference, then change Zoë's.
    Image.new("RGB", (40, 40), (200, 30, 30)).save(folder / "dad.png")
    Image.new("RGB", (40, 40), (20, 40, 220)).save(folder / "zoe-own.png")
    plan = load_plan(plan_path)
    zoe_portrait = (plan_path.parent / plan.character("zoe").reference.image).resolve()
    plan.character("zoe").reference = Reference(image=str(zoe_portrait))
    plan.character("dad").reference = Reference(image="dad.png")
    path = folder / "plan.json"
    save_plan(plan, path)
    with_dad = render_book(path, folder / "zoe.pdf", settings, progress=False)
    pages = {p.number: pixels(with_dad.book_dir / p.image) for p in load_manifest(with_dad.book_dir).pages}
    # Father's new reference changes his page only; Zoë's pages are painted exactly as before
    assert np.array_equal(pages[1], before[1]) and np.array_equal(pages[3], before[3])
    assert not np.array_equal(pages[2], before[2])
    # a new picture of Zoë (the user's own) changes her pages, not Father's
    plan.character("zoe").reference = Reference(image="zoe-own.png")
    save_plan(plan, path)
    changed = render_book(path, folder / "zoe.pdf", settings, progress=False)
    assert changed.painted == [1, 3]
    after = {p.number: pixels(changed.book_dir / p.image) for p in load_manifest(changed.book_dir).pages}
    assert not np.array_equal(after[1], pages[1]) and not np.array_equal(after[3], pages[3])
    assert np.array_equal(after[2], pages[2])


def test_unclip_pictures_do_not_depend_on_the_batch(unclip_book, tmp_path):
    result, plan_path, settings = unclip_book
    plan = load_plan(plan_path)
    plan.character("zoe").reference = Reference(image=str((plan_path.parent / plan.character("zoe").reference.image).resolve()))
    path = write_plan(tmp_path, plan)
    one_by_one = render_book(path, tmp_path / "zoe.pdf", settings.with_(batch_size=1), progress=False)
    assert one_by_one.painted == [1, 2, 3]
    for mine, theirs in zip(load_manifest(one_by_one.book_dir).pages, load_manifest(result.book_dir).pages, strict=True):
        assert mine.key == theirs.key
        assert np.array_equal(pixels(one_by_one.book_dir / mine.image), pixels(result.book_dir / theirs.image))


def test_noise_level_is_part_of_the_key(unclip_book):
    result, plan_path, settings = unclip_book
    again = render_book(plan_path, result.pdf, settings.with_(noise_level=500), progress=False)
    assert again.painted == [1, 2, 3]  # the noise goes into every page's image embedding
    assert load_manifest(result.book_dir).settings["noise_level"] == 500
    render_book(plan_path, result.pdf, settings, progress=False)  # back as the other tests expect


def test_blend_rule():
    import torch

    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.equal(blend_embeddings([a]), a)
    mixed = blend_embeddings([a, b])
    assert torch.allclose(mixed.norm(), torch.tensor(2.0)) and torch.allclose(mixed[0], mixed[1])


def test_consistency_modes(tiny_sd, tiny_unclip):
    from fairytale.render import RenderSettings

    plan = make_plan(2)
    assert get_backend("unclip")(RenderSettings(backend="unclip", model=str(tiny_unclip))).consistency(plan) == "reference"
    sd14 = get_backend("sd14")
    assert sd14(RenderSettings(model=str(tiny_sd))).consistency(plan) == "adapter"
    with pytest.raises(FairytaleError, match="offers: seed, tokens"):
        sd14(RenderSettings(model=str(tiny_sd), consistency="reference")).consistency(plan)
    with pytest.raises(PlanError, match="Zoë has no learned token"):
        sd14(RenderSettings(model=str(tiny_sd), consistency="tokens")).consistency(plan)
    plan.character("zoe").token = "<zoe>"
    assert sd14(RenderSettings(model=str(tiny_sd))).consistency(plan) == "tokens+adapter"
    with pytest.raises(PlanError, match="not in the plan's embeddings"):
        sd14(RenderSettings(model=str(tiny_sd), consistency="tokens")).consistency(plan)
    plan.embeddings = [Embedding(token="<zoe>", path="zoe.safetensors", family="sd1")]
    assert sd14(RenderSettings(model=str(tiny_sd), consistency="tokens")).consistency(plan) == "tokens"
    unclip = get_backend("unclip")(RenderSettings(backend="unclip", model=str(tiny_unclip), consistency="tokens"))
    with pytest.raises(PlanError, match="trained for sd1, but backend 'unclip' needs sd2"):
        unclip.consistency(plan)
    with pytest.raises(FairytaleError, match="Unknown consistency"):
        RenderSettings(consistency="magic")


def test_an_sd1_token_on_an_sd2_backend_is_a_clear_error(tiny_sd2, tmp_path):
    import torch

    from fairytale.embeddings import save_embedding

    save_embedding(tmp_path / "zoe.safetensors", "<zoe>", torch.zeros(1, 32), family="sd1")
    plan = make_plan(2, embeddings=[Embedding(token="<zoe>", path="zoe.safetensors", family="sd1")])
    plan.pages[0].prompt = "<zoe> by the sea"
    plan_path = write_plan(tmp_path, plan)
    with pytest.raises(PlanError, match="Render with the backend it was trained for"):
        render_book(plan_path, tmp_path / "b.pdf", tiny_settings(tiny_sd2, backend="sd21"), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sd14", "sd21", "unclip"])
def test_every_backend_through_the_cli_then_evaluate(
    backend, tiny_sd, tiny_sd2, tiny_unclip, tiny_safety_checker, tiny_clip, tiny_ip_adapter, tmp_path
):
    """The whole path a user takes, per backend, in its default consistency mode: render a
    3-page book with --low-vram, render it again (all cached), evaluate it."""
    import json

    from typer.testing import CliRunner

    from fairytale.cli import app

    model = {"sd14": tiny_sd, "sd21": tiny_sd2, "unclip": tiny_unclip}[backend]
    plan_path = write_plan(tmp_path, make_plan(3))
    args = [
        "render", str(plan_path), "-o", str(tmp_path / "book.pdf"), "--backend", backend, "--model", str(model),
        "--steps", "2", "--device", "cpu", "--low-vram", "--safety-model", str(tiny_safety_checker), "--quiet",
    ]
    if backend == "sd14":  # its default mode, adapter, with the tiny IP-Adapter
        args += ["--adapter-model", str(tiny_ip_adapter), "--adapter-encoder", str(tiny_ip_adapter)]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--noise-level", "100"] if backend == "unclip" else args)
    assert first.exit_code == 0, first.output
    manifest = load_manifest(tmp_path / "book")
    assert manifest.backend == backend and [p.safety for p in manifest.pages] == ["passed"] * 3
    expected = {"sd14": "adapter", "sd21": "attention", "unclip": "reference"}[backend]
    assert manifest.settings["consistency"] == expected and manifest.settings["low_vram"]
    assert load_plan(plan_path).character("zoe").reference is not None  # every default mode paints portraits
    again = runner.invoke(app, [*args, "--noise-level", "100"] if backend == "unclip" else args)
    assert again.exit_code == 0 and not any(p.painted for p in load_manifest(tmp_path / "book").pages)
    scored = runner.invoke(app, ["evaluate", str(tmp_path / "book"), "--clip-model", str(tiny_clip)])
    assert scored.exit_code == 0, scored.output
    assert len(json.loads((tmp_path / "book" / "evaluation.json").read_text())["pages"]) == 3


def test_cli_consistency_errors_are_one_line(tiny_sd, tmp_path):
    from typer.testing import CliRunner

    from fairytale.cli import app

    plan_path = write_plan(tmp_path, make_plan(2))
    base = ["render", str(plan_path), "-o", str(tmp_path / "b.pdf"), "--model", str(tiny_sd), "--device", "cpu"]
    for extra, message in [
        (["--consistency", "reference"], "Backend 'sd14' cannot keep characters alike by 'reference'"),
        (["--consistency", "magic"], "Unknown consistency 'magic'"),
        (["--consistency", "tokens"], "has no learned token"),
        (["--backend", "unclip", "--noise-level", "2000"], "--noise-level must be between 0 and 1000"),
    ]:
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_a_missing_reference_picture_is_a_clear_error(tiny_unclip, tiny_safety_checker, tmp_path):
    plan = make_plan(2)
    plan.character("zoe").reference = Reference(image="gone.png")
    plan_path = write_plan(tmp_path, plan)
    with pytest.raises(PlanError, match="Reference picture of Zoë not found"):
        render_book(plan_path, tmp_path / "b.pdf", unclip_settings(tiny_unclip, tiny_safety_checker), progress=False)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("backend", "default"), [("sd14", "adapter"), ("sd21", "attention"), ("unclip", "reference")])
def test_the_default_mode_is_the_backends_own_and_ignores_the_cache(backend, default, tiny_sd, tmp_path):
    """Without --consistency the mode is declared by the backend (what is cached plays no
    part); every main character with a learned token puts ``tokens+`` in front."""
    from fairytale.render import RenderSettings

    painter = get_backend(backend)
    assert painter.default_consistency == default
    plan = make_plan(2)
    settings = RenderSettings(backend=backend, model=str(tiny_sd))  # a local folder: nothing read to decide
    assert painter(settings).consistency(plan) == default
    plan.characters[1].main = True  # Father: a main character without a token
    plan.character("zoe").token = "<zoe>"
    assert painter(settings).consistency(plan) == default
    plan.character("dad").token = "<dad>"
    assert painter(settings).consistency(plan) == f"tokens+{default}"
    for page in plan.pages:
        page.characters = []
    plan.characters = []  # no main character: the backend's default alone
    assert painter(settings).consistency(plan) == default
    assert painter.default_mode(None) == default  # `book` before planning


@pytest.mark.parametrize("backend", ["sd14", "sd21", "unclip"])
def test_every_default_mode_is_one_the_backend_offers(backend):
    painter = get_backend(backend)
    assert painter.default_consistency in painter.consistency_modes


def test_unclip_batches_pages_with_and_without_portraits_under_model_offload(
    tiny_unclip, tiny_safety_checker, tmp_path, monkeypatch
):
    """Under model offload (--low-vram) the pipeline works on the GPU while the image encoder's
    weights rest on the CPU: a page's portrait embedding comes out on the GPU, a page without
    one got its zero embedding on the CPU, and the two could not be stacked. Here the
    "GPU" is torch's meta device (shapes only), on this CPU."""
    import torch
    from diffusers import StableUnCLIPImg2ImgPipeline

    from fairytale.render import load_illustrator
    from fairytale.render.backends import PaintRequest

    illustrator = load_illustrator(unclip_settings(tiny_unclip, tiny_safety_checker))
    width = illustrator.pipe.image_encoder.config.projection_dim
    monkeypatch.setattr(StableUnCLIPImg2ImgPipeline, "_execution_device", property(lambda pipe: torch.device("meta")))
    monkeypatch.setattr(illustrator, "image_embedding", lambda path: torch.zeros(width, device="meta"))
    portrait = tmp_path / "zoe.png"
    Image.new("RGB", (64, 64), "red").save(portrait)
    requests = [PaintRequest(1, "zoe", "", 1, (portrait,)), PaintRequest(2, "the sea", "", 2)]
    embeds = illustrator.pipeline_inputs(requests)["image_embeds"]
    assert embeds.shape == (2, width) and embeds.device.type == "meta"
