"""render_book with the tiny SD pipeline: the book folder, the cache, resuming, batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fairytale.embeddings import save_embedding
from fairytale.files import TEMP_MARK
from fairytale.plan import Embedding, load_plan, save_plan
from fairytale.render import load_illustrator, load_manifest, render_book
from fairytale.render.book import next_seed
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    pdf_fonts,
    pdf_page_texts,
    pdf_pictures,
    single_torch_thread,
    squash,
    tiny_settings,
    write_plan,
)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def rendered(tiny_sd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("book")
    plan_path = write_plan(folder, make_plan(3))
    settings = tiny_settings(tiny_sd)
    result = render_book(plan_path, folder / "zoe.pdf", settings, progress=False)
    return result, plan_path, settings


def test_book_folder_and_manifest(rendered):
    result, plan_path, settings = rendered
    book = result.book_dir
    assert book == plan_path.parent / "zoe" and result.pdf.is_file()
    assert result.painted == [1, 2, 3] and result.reused == []
    manifest = load_manifest(book)
    plan = load_plan(plan_path)
    assert manifest.backend == "sd14" and manifest.settings["steps"] == settings.steps
    assert manifest.settings["width"] == manifest.settings["height"] == 64  # the tiny model's native size
    assert manifest.pdf_pages == 5 and (book / manifest.pdf).resolve() == result.pdf.resolve()
    for page, planned in zip(manifest.pages, plan.pages, strict=True):
        assert (book / page.image).is_file() and page.image == f"pages/page-{page.number:02d}.png"
        assert page.prompt == planned.prompt and page.seed == page.requested_seed == planned.seed
        assert page.characters == planned.characters
        assert page.safety == "passed" and page.attempts == 1 and page.painted
        assert page.effective_dpi == pytest.approx(64 / (page.layout == "full_bleed" and 8.5 or 1), rel=10)
        assert 0 < page.effective_dpi < settings.dpi
        assert (book / "cache" / f"{page.key}.png").is_file() and (book / "cache" / f"{page.key}.json").is_file()
    # the stored page picture is the cached one, and it is not blank
    first = manifest.pages[0]
    assert np.array_equal(pixels(book / first.image), pixels(book / "cache" / f"{first.key}.png"))
    assert pixels(book / first.image).std() > 5
    assert any("DPI" in w for w in manifest.warnings)  # 64 px pictures: told to use --print


def test_the_pdf_of_a_rendered_book(rendered):
    result, plan_path, settings = rendered
    plan = load_plan(plan_path)
    texts = pdf_page_texts(result.pdf)
    assert len(texts) == len(plan.pages) + 2
    everything = squash(" ".join(texts))
    for page in plan.pages:
        for word in page.text.split():
            assert word in everything, word
    assert all(embedded for _, _, embedded in pdf_fonts(result.pdf))
    pictures = pdf_pictures(result.pdf)
    for page in [pictures[0], *pictures[2:]]:
        assert len(page) == 1
        assert page[0]["dpi"][0] == pytest.approx(settings.dpi, abs=0.5)
        assert page[0]["std"] > 5


def test_a_second_render_reuses_every_picture_without_loading_a_model(rendered, monkeypatch):
    from fairytale.render.backends import StableDiffusion14

    result, plan_path, settings = rendered
    before = {p.name: p.stat().st_mtime_ns for p in (result.book_dir / "cache").iterdir()}

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although every picture is cached")

    monkeypatch.setattr(StableDiffusion14, "load", no_loading)
    again = render_book(plan_path, result.pdf, settings, progress=False)
    assert again.painted == [] and again.reused == [1, 2, 3] and again.unet_calls == 0
    assert {p.name: p.stat().st_mtime_ns for p in (result.book_dir / "cache").iterdir()} == before
    # print settings do not touch the pictures either
    letter = render_book(plan_path, result.pdf, settings.with_(trim="letter", bleed=True), progress=False)
    assert letter.painted == []


def test_pages_option_repaints_only_those_pages_and_records_their_seeds(tiny_sd, tmp_path):
    plan_path = write_plan(tmp_path, make_plan(3))
    settings = tiny_settings(tiny_sd)
    first = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    old = {p.number: pixels(first.book_dir / p.image) for p in first.pages}
    old_seeds = [p.seed for p in load_plan(plan_path).pages]

    result = render_book(plan_path, tmp_path / "b.pdf", settings, pages="2", progress=False)
    assert result.painted == [2] and result.reused == [1, 3]
    assert result.unet_calls == settings.steps  # one page, one UNet call per step
    seeds = [p.seed for p in load_plan(plan_path).pages]
    assert seeds == [old_seeds[0], next_seed(old_seeds[1]), old_seeds[2]]
    new = {p.number: pixels(result.book_dir / p.image) for p in result.pages}
    assert np.array_equal(new[1], old[1]) and np.array_equal(new[3], old[3])
    assert not np.array_equal(new[2], old[2])

    chosen = render_book(plan_path, tmp_path / "b.pdf", settings, pages=[1, 3], seed=12345, progress=False)
    assert chosen.painted == [1, 3] and chosen.new_seeds == {1: 12345, 3: 12345}
    assert [p.seed for p in load_plan(plan_path).pages] == [12345, seeds[1], 12345]
    # going back to an earlier seed finds its picture in the cache
    plan = load_plan(plan_path)
    plan.pages[1].seed = old_seeds[1]
    save_plan(plan, plan_path)
    back = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    assert back.painted == [] and np.array_equal(pixels(back.book_dir / back.pages[1].image), old[2])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_size_does_not_change_any_picture(tiny_sd, tmp_path, precision):
    from fairytale.render.devices import cpu_has_bf16

    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no native bfloat16")
    plan = make_plan(5)
    results = {}
    for batch in (1, 4):
        folder = tmp_path / f"batch{batch}"
        folder.mkdir()
        settings = tiny_settings(tiny_sd, batch_size=batch, precision=precision)
        results[batch] = render_book(write_plan(folder, plan), folder / "b.pdf", settings, progress=False)
    one, four = results[1], results[4]
    assert one.unet_calls == 5 * 3 and four.unet_calls == 2 * 3  # batches of 1 vs 4+1
    for a, b in zip(one.pages, four.pages, strict=True):
        assert a.key == b.key
        assert np.array_equal(pixels(one.book_dir / a.image), pixels(four.book_dir / b.image)), a.number


def test_a_run_that_dies_at_page_9_paints_only_pages_9_to_12_when_started_again(tiny_sd, tmp_path):
    steps = 2
    settings = tiny_settings(tiny_sd, steps=steps, batch_size=1)
    plan_path = write_plan(tmp_path, make_plan(12))
    pdf = tmp_path / "long.pdf"

    class Crash(RuntimeError):
        pass

    calls = {"n": 0}

    def count(module, args):
        calls["n"] += 1

    def die_at_page_9(module, args):
        if calls["n"] > 8 * steps:  # the first UNet call of page 9
            raise Crash("power cut")

    illustrator = load_illustrator(settings)
    illustrator.pipe.unet.register_forward_pre_hook(count)
    illustrator.pipe.unet.register_forward_pre_hook(die_at_page_9)
    with pytest.raises(Crash):
        render_book(plan_path, pdf, settings, illustrator=illustrator, progress=False)
    cache = tmp_path / "long" / "cache"
    assert len(list(cache.glob("*.json"))) == 8 and len(list(cache.glob("*.png"))) == 8
    assert not pdf.exists() and not (tmp_path / "long" / "manifest.json").exists()
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARK in p.name]  # no half-written file anywhere

    calls["n"] = 0
    fresh = load_illustrator(settings)
    fresh.pipe.unet.register_forward_pre_hook(count)
    result = render_book(plan_path, pdf, settings, illustrator=fresh, progress=False)
    assert calls["n"] == 4 * steps  # pages 9-12 only
    assert result.painted == [9, 10, 11, 12] and result.reused == list(range(1, 9))
    assert pdf.is_file()


def test_each_distinct_prompt_is_encoded_once(tiny_sd, tmp_path):
    plan = make_plan(6)
    for page in plan.pages:  # three distinct prompts over six pages, one negative prompt
        page.prompt = f"a lighthouse, variant {page.number % 3}"
    settings = tiny_settings(tiny_sd, steps=1)
    illustrator = load_illustrator(settings)
    encoded = []
    illustrator.pipe.text_encoder.register_forward_pre_hook(lambda module, args: encoded.append(args[0].shape[0]))
    render_book(write_plan(tmp_path, plan), tmp_path / "b.pdf", settings, illustrator=illustrator, progress=False)
    assert len(encoded) == 4 and set(encoded) == {1}  # 3 prompts + 1 negative, each alone


def test_learned_tokens_from_the_plan_in_both_file_formats(tiny_sd, tmp_path):
    import torch

    torch.manual_seed(0)
    written = save_embedding(tmp_path / "style.safetensors", "<zoe-style>", torch.randn(2, 32), family="sd1")
    plan = make_plan(2)
    plan.style.token = "<zoe-style>"
    for page in plan.pages:
        page.prompt = f"{page.prompt}, in <zoe-style> style"
    plan.embeddings = [Embedding(token="<zoe-style>", path="style.safetensors", family="sd1")]
    plan_path = write_plan(tmp_path, plan)
    settings = tiny_settings(tiny_sd, steps=2)
    result = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    assert result.painted == [1, 2]

    # the A1111 copy of the same vectors: another file, so other keys, but the same pictures
    plan.embeddings = [Embedding(token="<zoe-style>", path=written[1].name, family="sd1")]
    save_plan(plan, plan_path)
    a1111 = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    assert a1111.painted == [1, 2]
    for a, b in zip(result.pages, a1111.pages, strict=True):
        assert a.key != b.key
        assert np.array_equal(pixels(tmp_path / "b" / "cache" / f"{a.key}.png"), pixels(tmp_path / "b" / "cache" / f"{b.key}.png"))

    # a page that does not use the token keeps its key when the token's file changes
    plan.pages[1].prompt = "a lighthouse at night"
    save_plan(plan, plan_path)
    before = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    save_embedding(written[1].with_name("other.safetensors"), "<zoe-style>", torch.randn(2, 32), family="sd1")
    plan.embeddings = [Embedding(token="<zoe-style>", path="other.safetensors", family="sd1")]
    save_plan(plan, plan_path)
    after = render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)
    assert after.painted == [1]
    assert after.pages[1].key == before.pages[1].key


def test_a_reused_model_forgets_the_learned_tokens_of_an_earlier_book(tiny_sd, tmp_path):
    """A book that lists no learned token reads "<zoe-style>" as plain text, as a fresh load
    does, even in a model another book taught that token (studio, notebooks)."""
    import torch

    taught, plain, fresh = (tmp_path / name for name in ("taught", "plain", "fresh"))
    for folder in (taught, plain, fresh):
        folder.mkdir()
    save_embedding(taught / "style.safetensors", "<zoe-style>", torch.randn(2, 32, generator=torch.Generator().manual_seed(0)) * 5, family="sd1")
    with_token = make_plan(1)
    with_token.pages[0].prompt = "<zoe-style> a lighthouse"
    with_token.embeddings = [Embedding(token="<zoe-style>", path="style.safetensors", family="sd1")]
    without = make_plan(1)
    without.pages[0].prompt = "<zoe-style> a lighthouse"  # the same text, no token listed
    settings = tiny_settings(tiny_sd, steps=2, batch_size=1)
    illustrator = load_illustrator(settings)
    render_book(write_plan(taught, with_token), taught / "b.pdf", settings, illustrator=illustrator, progress=False)
    reused = render_book(write_plan(plain, without), plain / "b.pdf", settings, illustrator=illustrator, progress=False)
    alone = render_book(write_plan(fresh, without), fresh / "b.pdf", settings, progress=False)
    assert reused.pages[0].key == alone.pages[0].key
    assert np.array_equal(pixels(reused.book_dir / reused.pages[0].image), pixels(alone.book_dir / alone.pages[0].image))
    again = render_book(taught / "plan.json", taught / "b2.pdf", settings, illustrator=illustrator, progress=False)
    assert again.painted == [1]  # another book folder: painted again, with the token taught anew
    first = (taught / "b" / "cache" / f"{again.pages[0].key}.png")
    assert np.array_equal(pixels(again.book_dir / again.pages[0].image), pixels(first))


def test_records_are_what_a_resumed_run_trusts(rendered):
    result, _, _ = rendered
    record = json.loads((result.book_dir / "cache" / f"{result.pages[0].key}.json").read_text())
    assert record["safety"] == "passed" and record["seed"] == result.pages[0].seed


def test_repainting_pages_keeps_plan_edits_saved_while_they_paint(tiny_sd, tmp_path):
    """--pages records the new seeds in the plan file as it is then, not as it was read: the
    studio saves pages while another is painted."""
    from fairytale.render.progress import QuietProgress

    plan_path = write_plan(tmp_path, make_plan(3))
    settings = tiny_settings(tiny_sd, steps=2, batch_size=1)
    render_book(plan_path, tmp_path / "b.pdf", settings, progress=False)

    class EditWhilePainting(QuietProgress):
        def start_pages(self, total: int) -> None:
            plan = load_plan(plan_path)
            plan.pages[0].text = "Edited while page 2 was painted."
            save_plan(plan, plan_path)

    result = render_book(plan_path, tmp_path / "b.pdf", settings, pages="2", progress=EditWhilePainting())
    after = load_plan(plan_path)
    assert result.painted == [2] and after.pages[1].seed == result.new_seeds[2]
    assert after.pages[0].text == "Edited while page 2 was painted."


def test_a_title_too_long_for_the_cover_is_said_before_any_page_is_painted(tiny_sd, tmp_path):
    from fairytale.errors import PlanError

    plan = write_plan(tmp_path, make_plan(2, title="Zoë " * 300))
    with pytest.raises(PlanError, match="title is too long to fit the cover"):
        render_book(plan, tmp_path / "b.pdf", tiny_settings(tiny_sd), progress=False)
    assert not (tmp_path / "b").exists()  # no picture painted, no book folder made


def test_the_credit_line_names_a_local_model_by_its_folder_not_its_path(rendered, tiny_sd):
    # A book goes out into the world: "/home/jane/models/sd" would print the painter's folders.
    result, _, _ = rendered
    credit = squash(" ".join(pdf_page_texts(result.pdf)))
    assert "Pictures painted with sd (sd14)" in credit
    assert str(tiny_sd.parent) not in credit and "tiny-models" not in credit
    manifest = load_manifest(result.book_dir)
    assert manifest.model_credit == "sd (sd14)" and manifest.model == f"{tiny_sd} (sd14)"  # the record keeps it


def test_an_export_from_an_older_manifest_prints_no_local_path():
    from fairytale.publish.book_export import _public

    assert _public("/home/jane/models/my-sd (sd14)") == "my-sd (sd14)"
    assert _public("C:\\Users\\jane\\sd (sd14)") == "sd (sd14)"
    assert _public("CompVis/stable-diffusion-v1-4 (sd14)") == "CompVis/stable-diffusion-v1-4 (sd14)"


def test_a_rendered_book_prints_its_own_words_in_the_book_language(tiny_sd, tmp_path):
    # `fairytale render` writes its PDF itself (not through `export`): its credit line was
    # English in a German book.
    plan = write_plan(tmp_path, make_plan(1, language="de"))
    result = render_book(plan, tmp_path / "b.pdf", tiny_settings(tiny_sd), progress=False)
    texts = squash(" ".join(pdf_page_texts(result.pdf)))
    assert "Bilder gemalt mit sd (sd14) · erstellt mit fAIrytale" in texts and "von Ann Example" in texts
    assert "Pictures painted" not in texts and "made with" not in texts


def test_an_illustrator_passed_in_must_paint_in_the_precision_asked_for(tiny_sd, tmp_path):
    # A notebook or a script keeps one loaded illustrator; asking it for another model or
    # precision must not paint in the loaded one's unnoticed.
    from fairytale.errors import FairytaleError
    from fairytale.render.devices import cpu_has_bf16

    settings = tiny_settings(tiny_sd)
    plan = write_plan(tmp_path, make_plan(1))
    with load_illustrator(settings) as illustrator:
        if cpu_has_bf16():
            with pytest.raises(FairytaleError, match="paints in float32, not in bfloat16"):
                render_book(plan, tmp_path / "b.pdf", settings.with_(precision="bf16"), illustrator=illustrator, progress=False)
        with pytest.raises(FairytaleError, match="paints in float32, not in float32, compiled"):
            render_book(plan, tmp_path / "b.pdf", settings.with_(compile=True), illustrator=illustrator, progress=False)
        assert not (tmp_path / "b").exists()  # refused before anything was painted
