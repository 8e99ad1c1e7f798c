"""The helpers behind the notebooks: GPU advice, the install switch, PDF pages as pictures,
download links and the token preview's refusals."""

from __future__ import annotations

import pytest

from fairytale.errors import FairytaleError
from fairytale.notebook import (
    GIB,
    NO_GPU_ADVICE,
    advise,
    install_skipped,
    offer_download,
    pdf_page_images,
    plan_tables,
    preview_token,
)


@pytest.mark.parametrize(
    ("memory_gib", "device", "low_vram"),
    [(80, "cuda", False), (16, "cuda", False), (12, "cuda", False), (11.9, "cuda", True), (8, "cuda", True), (2, "cpu", False)],
)
def test_gpu_advice_by_memory(memory_gib, device, low_vram):
    advice = advise("cuda", "Tesla T4", int(memory_gib * GIB))
    assert (advice.device, advice.low_vram) == (device, low_vram)
    assert advice.render_options() == {"device": device, "low_vram": low_vram}


def test_without_a_gpu_the_advice_says_what_to_do():
    advice = advise("cpu")
    assert advice.device == "cpu" and advice.message == NO_GPU_ADVICE
    assert "Change runtime type" in advice.message
    assert advise("mps").render_options() == {"device": "mps", "low_vram": False}


@pytest.mark.parametrize(("value", "skipped"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_the_install_switch(monkeypatch, value, skipped):
    if value is None:
        monkeypatch.delenv("FAIRYTALE_SKIP_INSTALL", raising=False)
    else:
        monkeypatch.setenv("FAIRYTALE_SKIP_INSTALL", value)
    assert install_skipped() is skipped


def test_pdf_pages_as_pictures(tmp_path):
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    pdf = tmp_path / "b.pdf"
    drawing = canvas.Canvas(str(pdf), pagesize=letter)
    for _ in range(3):
        drawing.rect(100, 100, 200, 200, fill=1)
        drawing.showPage()
    drawing.save()
    images = pdf_page_images(pdf, pages=2, width=300)
    assert [im.size[0] for im in images] == [300, 300]
    assert images[0].getextrema() != ((255, 255), (255, 255), (255, 255))  # the square is drawn
    with pytest.raises(FairytaleError, match="PDF not found"):
        pdf_page_images(tmp_path / "none.pdf")


def test_download_link_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.pdf").write_bytes(b"%PDF")
    assert "b.pdf" in str(offer_download(tmp_path / "b.pdf"))
    with pytest.raises(FairytaleError, match="Nothing to download"):
        offer_download(tmp_path / "none.pdf")


def test_preview_prompts_must_use_the_token(tmp_path):
    import torch

    from fairytale.embeddings import save_embedding

    embedding = tmp_path / "t.safetensors"
    save_embedding(embedding, "<t>", torch.randn(1, 32), family="sd1")
    with pytest.raises(FairytaleError, match="must use the token <t>"):
        preview_token(embedding, ["a cat"], tmp_path / "p")
    with pytest.raises(FairytaleError, match="at least one prompt"):
        preview_token(embedding, [], tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_plan_tables_show_brackets_as_they_are():
    from rich.console import Console

    from tests.render_support import make_plan

    plan = make_plan(2)
    plan.characters[0].name = "Zoe [the brave]"
    plan.characters[0].description = "a girl in a [red scarf]"
    plan.pages[0].setting = "the [bold] sea"
    plan.pages[1].prompt = "odd [/] prompt"
    console = Console(record=True, width=400)
    for table in plan_tables(plan):
        console.print(table)
    text = console.export_text()
    for shown in ("Zoe [the brave]", "a girl in a [red scarf]", "the [bold] sea", "odd [/] prompt"):
        assert shown in text
