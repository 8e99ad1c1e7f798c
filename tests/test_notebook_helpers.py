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


def test_plan_or_keep_keeps_the_edited_plan_of_the_same_story_and_keeps_the_old_one_when_replanning(
    tmp_path, monkeypatch
):
    import hashlib

    from fairytale import planner
    from fairytale.notebook import PREVIOUS_PLAN, plan_or_keep
    from fairytale.plan import Source, load_plan, save_plan
    from tests.render_support import make_plan

    planned = []

    def fake_plan_story(story_path, *, title=None, author=None, words_per_page=None, seed=None, **rest):
        planned.append(rest)
        data = story_path.read_bytes()
        return make_plan(2, seed=seed, source=Source(sha256=hashlib.sha256(data).hexdigest(), words_per_page=words_per_page))

    monkeypatch.setattr(planner, "plan_story", fake_plan_story)
    story, plan_file = tmp_path / "story.txt", tmp_path / "plan.json"
    story.write_text("Once upon a time.\n", encoding="utf-8")

    first = plan_or_keep(story, plan_file, words_per_page=35, seed=7, device="cpu")
    assert not first.kept and planned == [{"device": "cpu"}]
    edited = load_plan(plan_file)
    edited.pages[0].set_hand_written_prompt("my own prompt")
    save_plan(edited, plan_file)

    again = plan_or_keep(story, plan_file, words_per_page=35, seed=7, author="Ann Other")
    assert again.kept and len(planned) == 1 and "NEW_PLAN" in again.message
    assert load_plan(plan_file).pages[0].prompt == "my own prompt" and load_plan(plan_file).author == "Ann Other"

    for change in ({"seed": 8}, {"words_per_page": 20}):
        settings = {"words_per_page": 35, "seed": 7, **change}
        replanned = plan_or_keep(story, plan_file, **settings)
        assert not replanned.kept and PREVIOUS_PLAN in replanned.message
        plan_or_keep(story, plan_file, words_per_page=35, seed=7)
    story.write_text("Another story.\n", encoding="utf-8")
    assert not plan_or_keep(story, plan_file, words_per_page=35, seed=7).kept
    assert not plan_or_keep(story, plan_file, words_per_page=35, seed=7, new_plan=True).kept
    assert len(planned) == 7
    with pytest.raises(FairytaleError, match="Story file not found"):
        plan_or_keep(tmp_path / "missing.txt", plan_file, words_per_page=35, seed=7)
    plan_file.write_text('{"title": "a hand edit that broke it",')
    with pytest.raises(FairytaleError, match="tick NEW_PLAN to plan the story again"):
        plan_or_keep(story, plan_file, words_per_page=35, seed=7)
    assert not plan_or_keep(story, plan_file, words_per_page=35, seed=7, new_plan=True).kept
    assert "a hand edit that broke it" in (tmp_path / PREVIOUS_PLAN).read_text()


def test_plain_messages_show_a_mistake_or_a_stop_as_one_line_and_fail_the_cell(capsys, tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from fairytale.notebook import use_plain_messages

    shell = InteractiveShell.instance()
    try:
        use_plain_messages(shell)
        use_plain_messages(shell)  # a second call changes nothing
        failed = shell.run_cell("from fairytale.errors import FairytaleError\nraise FairytaleError('No such trim a5')")
        assert failed.error_in_exec is not None  # Run all stops here
        stopped = shell.run_cell(
            "from fairytale.errors import Interrupted\nraise Interrupted('2 of 6 pages painted and kept')"
        )
        assert stopped.error_in_exec is not None
        noted = shell.run_cell(
            "import warnings\nfrom fairytale.plan_edits import HandWrittenPromptsKept\n"
            "for _ in range(2): warnings.warn(HandWrittenPromptsKept('Page 3 kept its hand-written prompt'))"
        )
        assert noted.error_in_exec is None
        shown = capsys.readouterr()
        assert "Error: No such trim a5" in shown.err
        assert "Stopped: 2 of 6 pages painted and kept; run this cell again to go on." in shown.err
        assert "Traceback" not in shown.out + shown.err
        assert shown.out.count("Note: Page 3 kept its hand-written prompt") == 2
        early = shell.run_cell("print(plan_file)")  # a cell run before the one that sets plan_file
        assert isinstance(early.error_in_exec, NameError)
        shown = capsys.readouterr()
        assert "Error: plan_file is not set yet: run the cells above this one first" in shown.err
        assert "Traceback" not in shown.out + shown.err
        bug = shell.run_cell("1 / 0")  # a bug is not a user's mistake: it keeps its traceback
        assert isinstance(bug.error_in_exec, ZeroDivisionError) and "Traceback" in capsys.readouterr().out
        module = tmp_path / "buggy_module.py"
        module.write_text("def run():\n    return undefined_name\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        bug = shell.run_cell("import buggy_module\nbuggy_module.run()")  # a NameError in a module is a bug too
        assert isinstance(bug.error_in_exec, NameError) and "Traceback" in capsys.readouterr().out
    finally:
        InteractiveShell.clear_instance()


def test_story_file_and_trained_already(tmp_path):
    from fairytale.notebook import story_file, trained_already

    path, line = story_file("  Ginger was tall.  ", "", tmp_path)
    assert path.read_text(encoding="utf-8") == "Ginger was tall.\n" and line.endswith("3 words")
    with pytest.raises(FairytaleError, match="No story"):
        story_file(" ", "", tmp_path)
    with pytest.raises(FairytaleError, match="Story file not found"):
        story_file("", "nowhere.txt", tmp_path)
    token = tmp_path / "t.safetensors"
    assert trained_already(token) is None
    token.write_bytes(b"x")
    assert "OVERWRITE" in trained_already(token)
    assert trained_already(token, overwrite=True) is None and trained_already(token, resume=True) is None


class _Area:
    """A notebook display area: what it shows now."""

    def __init__(self):
        self.shown = None

    def update(self, obj, raw=False):
        self.shown = obj


def test_the_live_preview_never_keeps_a_half_painted_picture(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from fairytale.errors import Interrupted
    from fairytale.notebook import live_preview

    half = Image.new("RGB", (8, 8), "gray")
    preview = SimpleNamespace(pages=(2,), step=5, steps=25, images=[half])

    area = _Area()
    with pytest.raises(Interrupted), live_preview(True, area) as live:  # stopped (a failure is the same)
        live.callback(preview)
        assert area.shown is half
        raise Interrupted("1 of 3 pages painted and kept")
    assert area.shown == {"text/plain": ""}  # cleared

    Image.new("RGB", (8, 8), "red").save(tmp_path / "p2.png")
    result = SimpleNamespace(book_dir=tmp_path, pages=[SimpleNamespace(number=1, image="p1.png"), SimpleNamespace(number=2, image="p2.png")])
    area = _Area()
    with live_preview(True, area) as live:
        live.callback(preview)
        live.end(result)
    assert area.shown.getpixel((0, 0)) == (255, 0, 0)  # the finished picture of the page previewed

    with live_preview(False, area) as live:
        assert live.callback is None
        live.end(result)


def test_gpu_advice_goes_by_the_memory_free_now():
    """A T4 (15 GiB) whose earlier cell still holds a pipeline, or a shared card: the advice
    follows what is free, and says why."""
    advice = advise("cuda", "Tesla T4", 15 * GIB, free_bytes=int(7.5 * GIB))
    assert (advice.device, advice.low_vram) == ("cuda", True)
    assert "7.5 GiB free" in advice.message and "earlier cell" in advice.message
    crowded = advise("cuda", "Tesla T4", 15 * GIB, free_bytes=2 * GIB)
    assert crowded.device == "cpu" and "Restart session" in crowded.message
    fresh = advise("cuda", "Tesla T4", 15 * GIB, free_bytes=int(14.6 * GIB))  # the CUDA context's share
    assert (fresh.device, fresh.low_vram) == ("cuda", False) and "free" not in fresh.message


def test_check_gpu_asks_torch_for_the_free_memory(monkeypatch):
    import types

    import torch

    from fairytale.notebook import check_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(name="Tesla T4", total_memory=15 * GIB))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * GIB, 15 * GIB))
    advice = check_gpu()
    assert (advice.device, advice.low_vram, advice.memory_gib) == ("cuda", True, 6.0)

    def cannot_say(device=None):
        raise RuntimeError("CUDA driver: operation not supported")

    monkeypatch.setattr(torch.cuda, "mem_get_info", cannot_say)
    advice = check_gpu()
    assert (advice.device, advice.low_vram, advice.memory_gib) == ("cuda", False, 15.0)
