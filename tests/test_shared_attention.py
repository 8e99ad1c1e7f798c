"""``--consistency attention``: each page's self-attention also attends to its characters'
portraits at the same step, inside each character's region; and the modes combined."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fairytale.errors import FairytaleError
from fairytale.plan import Embedding, Reference, load_plan
from fairytale.render import RenderSettings, load_manifest, render_book
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    check_a_new_portrait_repaints_only_its_pages,
    pixels,
    single_torch_thread,
    tiny_settings,
    two_character_plan,
    write_plan,
)


def attention_settings(model, tiny_safety_checker, **changes):
    values = dict(consistency="attention", safety_model=str(tiny_safety_checker))
    return tiny_settings(model, **(values | changes))


@pytest.fixture(scope="module")
def attention_book(tiny_sd, tiny_safety_checker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("attention-book")
    plan_path = write_plan(folder, two_character_plan())
    settings = attention_settings(tiny_sd, tiny_safety_checker)
    return plan_path, settings, render_book(plan_path, folder / "book.pdf", settings, progress=False)


def test_attention_mode_paints_portraits_first_and_records_the_mode(attention_book):
    plan_path, _, result = attention_book
    plan = load_plan(plan_path)
    for character in ("zoe", "dad"):
        reference = plan.character(character).reference
        assert reference is not None and reference.seed is not None and reference.prompt
    manifest = load_manifest(result.book_dir)
    assert manifest.settings["consistency"] == "attention" and manifest.settings["attention_strength"] == 0.5
    assert result.painted == [1, 2, 3, 4]


def test_strength_zero_paints_exactly_the_seed_pictures(attention_book, tiny_sd, tiny_safety_checker, tmp_path):
    _, settings, shared = attention_book
    plain = render_book(
        write_plan(tmp_path, two_character_plan()), tmp_path / "plain.pdf", settings.with_(consistency="seed"), progress=False
    )
    zero = render_book(
        write_plan(tmp_path, two_character_plan(), "zero.json"), tmp_path / "zero.pdf",
        settings.with_(attention_strength=0.0), progress=False,
    )
    for number in (1, 2, 3, 4):
        assert np.array_equal(pixels(zero, number), pixels(plain, number)), number
        assert not np.array_equal(pixels(shared, number), pixels(plain, number)), number  # the portraits count


def test_the_shared_term_is_exactly_zero_outside_a_characters_region():
    """At the processor: recorded portrait keys/values change every cell inside a character's
    region and no cell outside it; at strength 0 nothing changes."""
    import torch
    from diffusers.models.attention_processor import Attention

    from fairytale.render.portrait_attention import region_mask
    from fairytale.render.shared_attention import SharedAttnProcessor, SharedState

    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8)
    state = SharedState(aspect=2.0)
    processor = SharedAttnProcessor(state)
    cells = 8 * 16  # a 2:1 picture's latent grid: 8 rows of 16
    pages = torch.randn(2, cells, 32)  # one page, both halves of guidance
    portraits = torch.randn(2, cells, 32)  # two portraits
    zoe, dad = (0.0, 0.0, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0)  # the left half; the lower right quarter
    with torch.inference_mode():
        plain = processor(attn, pages)
        state.mode = "record"
        processor(attn, portraits)
        state.mode = "share"
        state.pages = [(0.7, [(0, zoe), (1, dad)])]
        shared = processor(attn, pages)
        state.pages = [(0.0, [(0, zoe), (1, dad)])]
        zero = processor(attn, pages)
    inside = (region_mask(zoe, 8, 16) + region_mask(dad, 8, 16)).bool()
    assert int(inside.sum()) == 64 + 32
    assert torch.equal(shared[:, ~inside], plain[:, ~inside])
    assert (shared[:, inside] != plain[:, inside]).any(dim=-1).all()
    assert torch.equal(zero, plain)
    # With guidance only the conditional half (the second row) shares; the unconditional stays plain.
    state.pages, state.guided = [(0.7, [(0, zoe), (1, dad)])], True
    with torch.inference_mode():
        guided = processor(attn, pages)
    assert torch.equal(guided[0], plain[0]) and torch.equal(guided[1], shared[1])
    # Layers at the picture's full latent resolution stay plain, recording nothing either.
    state.full_cells = cells
    with torch.inference_mode():
        state.mode = "record"
        processor(attn, portraits)
        state.mode = "share"
        full = processor(attn, pages)
    assert torch.equal(full, plain) and processor.keys is None


def test_a_new_portrait_repaints_only_the_pages_that_show_its_character(attention_book, tmp_path):
    check_a_new_portrait_repaints_only_its_pages(*attention_book, tmp_path)


@pytest.fixture(scope="module")
def portrait_plan(tmp_path_factory):
    """A plan whose two main characters have the user's own portraits (random pictures, no
    seed: the portrait pass derives one) and learned tokens."""
    import torch

    from fairytale.embeddings import save_embedding

    folder = tmp_path_factory.mktemp("portraits")
    plan = two_character_plan()
    torch.manual_seed(0)
    for index, character in enumerate(plan.characters):
        picture = folder / f"{character.id}.png"
        Image.fromarray((np.random.default_rng(index).random((64, 64, 3)) * 255).astype("uint8")).save(picture)
        character.reference = Reference(image=str(picture))
        character.token = f"<{character.id}>"
        save_embedding(folder / f"{character.id}.safetensors", character.token, torch.randn(1, 32), family="sd1")
    plan.embeddings = [
        Embedding(token=c.token, path=str(folder / f"{c.id}.safetensors"), family="sd1") for c in plan.characters
    ]
    for page in plan.pages:
        page.prompt = f"{page.prompt}, " + " and ".join(f"<{c}>" for c in page.characters)
    return plan


def without_tokens(plan):
    """A copy of ``plan`` whose characters have no learned tokens (the prompts name none)."""
    plain = plan.model_copy(deep=True)
    for page, original in zip(plain.pages, two_character_plan(len(plan.pages)).pages, strict=True):
        page.prompt = original.prompt
    for character in plain.characters:
        character.token = None
    plain.embeddings = []
    return plain


@pytest.fixture(scope="session")
def tiny_lcm_lora(tiny_models):
    return tiny_models("lcm_lora")


BATCH_CASES = {
    "seed": ("sd14", "seed", {}),
    "tokens": ("sd14", "tokens", {}),
    "adapter": ("sd14", "adapter", {}),
    "attention": ("sd14", "attention", {}),
    "tokens+attention": ("sd14", "tokens+attention", {}),
    "adapter+attention": ("sd14", "adapter+attention", {}),
    "sd21-attention": ("sd21", "attention", {}),  # v-prediction
    "draft-attention": ("sd14", "attention", {"draft": True}),  # LCM-LoRA, no guidance: lone pictures paired
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_batch_size_does_not_change_a_page_in_any_mode(
    case, portrait_plan, tiny_sd, tiny_sd2, tiny_ip_adapter, tiny_lcm_lora, tiny_safety_checker, tmp_path
):
    backend, mode, changes = BATCH_CASES[case]
    model = tiny_sd2 if backend == "sd21" else tiny_sd
    plan = portrait_plan if "tokens" in mode else without_tokens(portrait_plan)
    if changes.get("draft"):
        changes = changes | {"draft_lora": str(tiny_lcm_lora)}
    settings = tiny_settings(
        model, backend=backend, consistency=mode, steps=2, safety_model=str(tiny_safety_checker),
        adapter_model=str(tiny_ip_adapter), adapter_encoder=str(tiny_ip_adapter), **changes,
    )
    results = {}
    for batch in (1, 4):
        folder = tmp_path / f"batch{batch}"
        folder.mkdir()
        results[batch] = render_book(
            write_plan(folder, plan), folder / "b.pdf", settings.with_(batch_size=batch), progress=False
        )
    one, four = results[1], results[4]
    assert load_manifest(four.book_dir).settings["consistency"] == mode
    for a, b in zip(one.pages, four.pages, strict=True):
        assert a.key == b.key
        assert np.array_equal(pixels(one, a.number), pixels(four, b.number)), (case, a.number)


def test_adapter_and_attention_processors_coexist_whichever_loads_first(
    portrait_plan, tiny_sd, tiny_ip_adapter, tiny_safety_checker, tmp_path
):
    """Loading IP-Adapter replaces every attention processor; shared attention puts its own
    back on attn1 and leaves the adapter's on attn2."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from fairytale.render import load_illustrator
    from fairytale.render.backends import get_backend
    from fairytale.render.portrait_attention import PortraitAttnProcessor
    from fairytale.render.shared_attention import SharedAttnProcessor

    plan = without_tokens(portrait_plan)
    plan_path = write_plan(tmp_path, plan)
    settings = tiny_settings(
        tiny_sd, steps=1, adapter_model=str(tiny_ip_adapter), adapter_encoder=str(tiny_ip_adapter),
        safety_model=str(tiny_safety_checker),
    )
    with load_illustrator(settings) as illustrator:
        # attention first (the adapter not loaded yet), then the adapter loaded, then both
        for mode, cross in (("attention", AttnProcessor2_0), ("adapter", PortraitAttnProcessor), ("adapter+attention", PortraitAttnProcessor)):
            backend = get_backend("sd14")(settings.with_(consistency=mode))
            illustrator.paint([backend.request_for(plan, plan.pages[-1], plan_path)])
            processors = illustrator.pipe.unet.attn_processors
            attn1 = [p for n, p in processors.items() if n.endswith("attn1.processor")]
            attn2 = {type(p) for n, p in processors.items() if n.endswith("attn2.processor")}
            assert all(isinstance(p, SharedAttnProcessor) for p in attn1) and attn2 == {cross}, mode
            assert all(p.state is illustrator._attention.state for p in attn1), mode  # ours, not fresh copies


def test_modes_combine_and_are_checked(tiny_sd, tiny_sd2, tiny_unclip):
    from fairytale.render.backends import get_backend

    for combo in ("tokens+attention", "adapter+attention", "tokens+adapter+attention", "attention"):
        assert RenderSettings(consistency=combo).consistency == combo
    with pytest.raises(FairytaleError, match="tokens\\+adapter, tokens\\+attention, adapter\\+attention, tokens\\+adapter\\+attention"):
        RenderSettings(consistency="seed+attention")
    with pytest.raises(FairytaleError, match="--attention-strength"):
        RenderSettings(attention_strength=1.5)
    plan = two_character_plan(2)
    assert get_backend("sd14")(RenderSettings(model=str(tiny_sd), consistency="adapter+attention")).modes(plan) == {
        "adapter", "attention"
    }
    sd21 = get_backend("sd21")(RenderSettings(backend="sd21", model=str(tiny_sd2), consistency="attention"))
    assert sd21.consistency(plan) == "attention" and sd21.needs_portraits(plan)
    assert get_backend("sd21")(RenderSettings(backend="sd21", model=str(tiny_sd2))).consistency(plan) == "attention"
    unclip = get_backend("unclip")(RenderSettings(backend="unclip", model=str(tiny_unclip), consistency="attention"))
    with pytest.raises(FairytaleError, match="cannot keep characters alike by 'attention'"):
        unclip.consistency(plan)


def test_adapter_keys_are_those_before_attention_existed(tmp_path, monkeypatch):
    """Adapter pages keep their cache keys (computed with the code before this mode)."""
    import fairytale.render.backends.common as common
    import fairytale.render.portrait_adapter as portrait_adapter
    from fairytale.render.backends import Backend, get_backend

    monkeypatch.setattr(Backend, "model_fingerprint", lambda self: "fixed-fingerprint")
    monkeypatch.setattr(portrait_adapter, "adapter_fingerprint", lambda settings: "fixed-adapter")
    monkeypatch.setattr(common, "check_picture", lambda path, name: None)
    plan = two_character_plan()
    for character in plan.characters:
        (tmp_path / f"{character.id}.png").write_bytes(f"portrait of {character.id}".encode())
        character.reference = Reference(image=f"{character.id}.png", seed=5, prompt=f"portrait of {character.id}")
    path = write_plan(tmp_path, plan)
    settings = RenderSettings(model="unused", steps=3, width=64, height=64, device="cpu", consistency="adapter")
    backend = get_backend("sd14")(settings)
    keys = [backend.picture_key(backend.request_for(plan, page, path), {}) for page in plan.pages]
    assert keys == [
        "cc076d39424464d8e5efd1affd68440b",
        "1cc3518a52ad61fb0d559c574ca95897",
        "b11460f4bcb64e260e3738baf63f3fc5",
        "3dba3f1952739001bb03ced84a32a412",
    ]
    attention = get_backend("sd14")(settings.with_(consistency="adapter+attention"))
    assert attention.picture_key(attention.request_for(plan, plan.pages[0], path), {}) != keys[0]
    # a page showing no character with a portrait is painted and keyed as in seed mode
    plan.character("dad").reference = None
    seed = get_backend("sd14")(settings.with_(consistency="seed"))
    for mode in ("attention", "adapter+attention"):
        painter = get_backend("sd14")(settings.with_(consistency=mode))
        request = painter.request_for(plan, plan.pages[1], path)
        assert not request.options and painter.picture_key(request, {}) == seed.picture_key(request, {})


def test_the_cli_takes_the_attention_strength(tiny_sd, tiny_safety_checker, tmp_path):
    from typer.testing import CliRunner

    from fairytale.cli import app

    plan_path = write_plan(tmp_path, two_character_plan(2))
    result = CliRunner().invoke(
        app, ["render", str(plan_path), "-o", str(tmp_path / "b.pdf"), "--model", str(tiny_sd), "--steps", "1",
              "--device", "cpu", "--consistency", "attention", "--attention-strength", "0.8",
              "--safety-model", str(tiny_safety_checker), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert load_manifest(tmp_path / "b").settings["attention_strength"] == 0.8
    bad = CliRunner().invoke(app, ["render", str(plan_path), "-o", str(tmp_path / "c.pdf"), "--attention-strength", "3"])
    assert bad.exit_code == 1 and "--attention-strength must be between 0 and 1" in bad.output


def test_attention_slicing_placed_again_does_not_drop_shared_attention(portrait_plan, tiny_sd, tiny_safety_checker, tmp_path):
    """--low-vram slices attention, and under offload the pipeline is placed again after every
    loader (every processor replaced): the next batch paints with shared attention all the same."""
    from fairytale.render import load_illustrator
    from fairytale.render.backends import PaintRequest, get_backend

    plan = without_tokens(portrait_plan)
    plan_path = write_plan(tmp_path, plan)
    settings = attention_settings(tiny_sd, tiny_safety_checker, steps=2, low_vram=True)
    request = get_backend("sd14")(settings).request_for(plan, plan.pages[-1], plan_path)
    with load_illustrator(settings) as illustrator:
        shared = np.asarray(illustrator.paint([request])[0])
        illustrator.device_plan.place(illustrator.pipe)  # as after loading a LoRA or learned tokens under offload
        again = np.asarray(illustrator.paint([request])[0])
        plain = np.asarray(illustrator.paint([PaintRequest(request.page, request.prompt, request.negative_prompt, request.seed)])[0])
    assert np.array_equal(shared, again) and not np.array_equal(shared, plain)


def token_only_in_portraits_plan(folder):
    """``two_character_plan()`` whose characters have learned tokens (``<zoe>``, ``<dad>``,
    files in ``folder``) that only their portrait prompts name: the page prompts do not."""
    import torch

    from fairytale.embeddings import save_embedding

    plan = two_character_plan()
    for index, character in enumerate(plan.characters):
        character.token = f"<{character.id}>"
        vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(index)) * 5
        save_embedding(folder / f"{character.id}.safetensors", character.token, vectors, family="sd1")
    plan.embeddings = [Embedding(token=c.token, path=f"{c.id}.safetensors", family="sd1") for c in plan.characters]
    assert not any("<" in page.prompt for page in plan.pages)
    return plan


def test_a_retrained_token_named_only_by_a_portrait_repaints_its_characters_pages(tiny_sd, tiny_safety_checker, tmp_path):
    """In attention mode each portrait's pass is conditioned on its portrait prompt, which names
    the character's learned token even where no page prompt does: the token is taught for the
    portraits and their passes, and re-training it (a new file, same name) repaints the pages
    that show its character, and only them."""
    import torch

    from fairytale.embeddings import save_embedding

    plan_path = write_plan(tmp_path, token_only_in_portraits_plan(tmp_path))
    settings = attention_settings(tiny_sd, tiny_safety_checker, steps=2)
    before = render_book(plan_path, tmp_path / "book.pdf", settings, progress=False)
    assert before.painted == [1, 2, 3, 4]

    # the father's token re-trained: his portrait stays (recorded in the plan), its pass changes
    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(7)) * 5
    save_embedding(tmp_path / "dad.safetensors", "<dad>", vectors, family="sd1")
    after = render_book(plan_path, tmp_path / "book.pdf", settings, progress=False)
    assert after.painted == [2, 4]  # the father's pages; Zoë's alone are reused
    for number in (1, 3):
        assert after.pages[number - 1].key == before.pages[number - 1].key
        assert np.array_equal(pixels(after, number), pixels(before, number))
    # (How much the pass's prompt moves a page of the tiny random model is below one 8-bit step:
    # what is checked here is that the cache does not answer for the old token.)
    for number in (2, 4):
        assert after.pages[number - 1].key != before.pages[number - 1].key


def test_a_portrait_is_painted_with_its_characters_learned_token(tiny_sd, tiny_safety_checker, tmp_path):
    """A portrait prompt names the character's token: the token is taught for painting it even
    when no page prompt names it (else it would be read as plain text)."""
    portraits = []
    for name, seed in (("one", 0), ("two", 9)):
        folder = tmp_path / name
        folder.mkdir()
        plan = token_only_in_portraits_plan(folder)
        if seed:  # Zoë's token file only differs between the two books
            import torch

            from fairytale.embeddings import save_embedding

            vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(seed)) * 5
            save_embedding(folder / "zoe.safetensors", "<zoe>", vectors, family="sd1")
        plan_path = write_plan(folder, plan)
        render_book(plan_path, folder / "book.pdf", attention_settings(tiny_sd, tiny_safety_checker, steps=2), progress=False)
        reference = load_plan(plan_path).character("zoe").reference
        portraits.append(np.asarray(Image.open(folder / reference.image)))
    assert not np.array_equal(*portraits)


def test_keys_made_before_portrait_tokens_counted_are_not_adopted(tmp_path, monkeypatch):
    """A page's key names the tokens its portraits' passes use; a picture cached under the key
    that left them out (older versions) was painted with a token that cannot be known now, so
    it is not adopted. Pages whose own prompt names every such token keep their keys."""
    import fairytale.render.backends.common as common
    from fairytale.render.backends import Backend, get_backend
    from fairytale.render.page_keys import PageKeys, embedding_hashes
    from fairytale.render.page_store import PageStore, StoredPicture

    monkeypatch.setattr(Backend, "model_fingerprint", lambda self: "fixed-fingerprint")
    monkeypatch.setattr(common, "check_picture", lambda path, name: None)
    plan = token_only_in_portraits_plan(tmp_path)
    for character in plan.characters:
        (tmp_path / f"{character.id}.png").write_bytes(b"a portrait")
        character.reference = Reference(image=f"{character.id}.png", seed=5, prompt=f"portrait of <{character.id}>")
    plan.pages[0].prompt += ", <zoe>"  # page 1 names Zoë's token itself
    path = write_plan(tmp_path, plan)
    backend = get_backend("sd14")(RenderSettings(model="unused", steps=3, width=64, height=64, consistency="attention"))
    hashes = embedding_hashes(plan, path)
    keys, store = PageKeys(plan, path, backend, hashes), PageStore(tmp_path / "book")
    for page in plan.pages:
        request = keys.request(page)
        named = {t: h for t, h in hashes.items() if t in request.prompt}  # how keys were made before
        old_key = backend.picture_key(request, named)
        store.put(StoredPicture(old_key, page.seed, page.seed, 1, "passed", 1.0, 64, 64), Image.new("RGB", (64, 64)))
        cached = keys.look_up(page, store)
        if page.number == 1:
            assert cached.key == old_key and cached.found is not None
        else:
            assert cached.key != old_key and cached.found is None, page.number


@pytest.mark.parametrize("batch", [4, 1])
def test_each_prompt_is_projected_once_per_painting_and_pictures_do_not_change(
    batch, tiny_sd, tiny_safety_checker, tmp_path, monkeypatch
):
    """The portraits' pass and the pages' alternate in every step, each with its own prompts
    (with batch 1, a lone portrait is paired with itself on CPU): each cross-attention layer
    projects each of them once per painting, where it projected both at every step, and the
    pictures are bit for bit those painted with every projection computed."""
    from fairytale.render import unet_tuning

    once, forget = unet_tuning.text_projections_once, unet_tuning.forget_text_projections
    computed: dict[str, int] = {}  # per cross-attention layer, in the painting under way
    paintings: list[dict[str, int]] = []

    def counted(unet, keep: bool = True) -> None:
        for name, layer in unet.named_modules():
            if name.endswith(("attn2.to_k", "attn2.to_v")) and not getattr(layer, "_counted", False):
                layer._counted = True

                def forward(x, name=name, whole=layer.forward):
                    computed[name] = computed.get(name, 0) + 1
                    return whole(x)

                layer.forward = forward
        if keep:
            once(unet)

    def forgotten(unet) -> None:
        paintings.append(dict(computed))
        computed.clear()
        forget(unet)

    monkeypatch.setattr(unet_tuning, "forget_text_projections", forgotten)
    settings = attention_settings(tiny_sd, tiny_safety_checker, steps=4, batch_size=batch)
    results, counts = {}, {}
    for keep in (False, True):
        monkeypatch.setattr(unet_tuning, "text_projections_once", lambda unet, keep=keep: counted(unet, keep))
        folder = tmp_path / f"keep-{keep}"
        folder.mkdir()
        results[keep] = render_book(write_plan(folder, two_character_plan()), folder / "b.pdf", settings, progress=False)
        counts[keep], paintings[:] = list(paintings), []
    # each painting: the portraits first (one prompt tensor), then pages with their portraits' pass
    assert {n for painting in counts[False] for n in painting.values()} == {4, 8}  # every step, 1 or 2 prompts
    assert {n for painting in counts[True] for n in painting.values()} == {1, 2}
    assert [len(painting) for painting in counts[True]] == [len(painting) for painting in counts[False]]
    for number in (1, 2, 3, 4):
        assert np.array_equal(pixels(results[True], number), pixels(results[False], number)), number
