"""End to end in a real browser (Debian's headless chromium driven by Playwright) against a studio
on the tiny models: paste a story → plan → paint drafts → paint the finals → change page 2's
prompt and paint it again → download the PDF, make the EPUB. The downloaded PDF's page-2 picture
is the new one, the others are unchanged.

Every step is photographed (``SHOTS`` in the test's folder, copied to /tmp/studio-shots), and
the browser may talk to the studio only: any request elsewhere fails the test.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from fairytale.plan import load_plan
from fairytale.render import load_manifest
from fairytale.studio_actions import StudioOptions
from tests.render_support import single_torch_thread, tiny_settings  # noqa: F401  (autouse fixture)
from tests.studio_support import pdf_picture_pixels, require_browser

STORY = Path(__file__).parent / "data" / "stories" / "zoe_lighthouse.txt"
COPIES = Path("/tmp/studio-shots")
WAIT_MS = 300_000  # planning and painting on a shared 2-core box

pytestmark = pytest.mark.slow


class Shots:
    """Numbered screenshots of each step, kept in the test folder and copied for people to see."""

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder, self.count = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def wait_for(page, selector: str, text: str) -> None:
    """Wait until ``selector`` shows ``text``; an error the studio shows instead fails at once, with its message."""
    target = page.locator(selector).filter(has_text=text)
    toast = page.locator('[data-testid="toast-body"]')
    target.or_(toast).first.wait_for(timeout=WAIT_MS)
    if not target.count():
        pytest.fail(f"the studio showed an error instead of {text!r}: {toast.all_inner_texts()}")


def alt_texts(page, selector: str) -> list[str]:
    """The alt text of every picture under ``selector`` (gradio leaves it empty; the studio names them)."""
    return page.locator(f"{selector} img").evaluate_all("images => images.map(i => i.alt)")


@contextlib.contextmanager
def studio_page(chromium: str, url: str, **context_options):
    """(context, page): headless chromium on the studio at ``url``. The browser may talk to the
    studio only: a request anywhere but 127.0.0.1 is refused, and fails the test when the
    browser closes."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_loopback(route) -> None:
        url = route.request.url
        if urlparse(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, **context_options)
        context.route("**/*", only_loopback)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        yield context, page
        browser.close()
    assert not outside, f"the page asked for something outside 127.0.0.1: {outside}"


def test_paste_plan_paint_fix_page_two_and_download(
    tiny_sd, tiny_ner, tiny_qa, tiny_nli, tiny_models, tmp_path, monkeypatch
):
    chromium = require_browser()
    from playwright.sync_api import expect

    from fairytale.studio_app import launch_studio

    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "")  # put back after the test
    options = StudioOptions(
        settings=tiny_settings(tiny_sd, steps=2, draft_lora=str(tiny_models("lcm_lora"))),
        ner_model=str(tiny_ner),
        qa_model=str(tiny_qa),
        nli_model=str(tiny_nli),
    )
    studio = launch_studio(books_dir=tmp_path / "books", options=options)
    try:
        with studio_page(chromium, studio.url, accept_downloads=True) as (context, page):
            shots = Shots(page, tmp_path / "shots")

            # 1. paste the story and plan it
            page.locator("#story-text textarea").fill(STORY.read_text(encoding="utf-8"))
            page.locator("#story-title textarea").fill("Zoë and the Lighthouse")
            shots.take("story-pasted")
            page.locator("#make-plan").click()
            wait_for(page, "#status", "Planned")
            book_dir = Path(page.locator("#open-path textarea").input_value())
            pages = len(load_plan(book_dir / "plan.json").pages)
            assert pages >= 3
            # a reload, or a second tab, opens the same book (it used to show an empty studio)
            page.reload()
            wait_for(page, "#status", "Zoë and the Lighthouse")
            expect(page.locator("#open-path textarea")).to_have_value(str(book_dir))
            second = context.new_page()
            second.goto(studio.url)
            wait_for(second, "#status", "Zoë and the Lighthouse")
            second.close()
            page.get_by_role("tab", name="2 · Plan").click()
            expect(page.locator("#pages-table")).to_contain_text("to paint")
            shots.take("plan")

            # 2. paint every page as a draft, then the finals (which repaint the drafts)
            page.get_by_role("tab", name="3 · Paint").click()
            started = time.perf_counter()
            page.locator("#paint-draft input").check()
            page.locator("#paint").click()
            wait_for(page, "#progress", "Paint the book without Draft")
            expect(page.locator("#progress")).to_contain_text("not an enlargement")
            expect(page.locator("#pictures img")).to_have_count(pages)
            assert all(p.draft for p in load_manifest(book_dir).pages)
            shots.take("drafts")
            page.locator("#paint-draft input").uncheck()
            page.locator("#paint").click()
            wait_for(page, "#progress", "now painted in full")
            expect(page.locator("#pictures img")).to_have_count(pages)
            assert not any(p.draft for p in load_manifest(book_dir).pages)
            expect(page.locator("#pictures img").first).to_have_attribute("alt", "page 1")
            assert all(alt_texts(page, "#pictures")), alt_texts(page, "#pictures")
            shots.take("painted")
            before = pdf_picture_pixels(book_dir.with_suffix(".pdf"))
            keys_before = {p.number: p.key for p in load_manifest(book_dir).pages}

            # 3. page 2: a new prompt, painted again
            page.get_by_role("tab", name="4 · Fix a page").click()
            page.locator('#fix-page [data-testid="2-radio-label"]').click()
            prompt = page.locator("#fix-prompt textarea")
            expect(prompt).not_to_have_value("")
            prompt.fill("a red lighthouse on a rock under a starry night sky")
            shots.take("page-2-new-prompt")
            page.locator("#fix-repaint").click()
            wait_for(page, "#status", "Page 2 painted again")
            expect(page.locator("#fix-picture img")).to_have_attribute("alt", "The page's picture now")
            assert all(alt_texts(page, "#earlier")), alt_texts(page, "#earlier")
            shots.take("page-2-repainted")

            # 4. lay out the book and download the PDF
            page.get_by_role("tab", name="5 · Book").click()
            page.locator("#make-pdf").click()
            expect(page.locator("#preview img")).to_have_count(pages + 2, timeout=WAIT_MS)
            with page.expect_download() as download_info:
                page.locator("#pdf-file a[download]").click()
            downloaded = tmp_path / "downloaded.pdf"
            download_info.value.save_as(downloaded)
            seconds = time.perf_counter() - started
            assert all(alt_texts(page, "#preview")), alt_texts(page, "#preview")
            shots.take("book-preview")

            # 5. the EPUB beside the PDF, from the painted pictures
            page.locator("#make-epub").click()
            wait_for(page, "#status", "Written from the painted pictures")
            expect(page.locator("#export-files")).to_contain_text(".epub")
            assert book_dir.with_suffix(".epub").is_file()
            shots.take("epub")
    finally:
        studio.close()

    COPIES.mkdir(parents=True, exist_ok=True)
    for shot in (tmp_path / "shots").glob("*.png"):
        shutil.copy(shot, COPIES / shot.name)
    (COPIES / "timing.txt").write_text(
        f"paint -> download: {seconds:.1f} s for {pages} pages (tiny models)\n"
    )
    print(f"paint -> download: {seconds:.1f} s for {pages} pages")

    after = pdf_picture_pixels(downloaded)
    assert len(after) == len(before) == pages + 2  # cover, title page, the story pages
    story_before, story_after = before[2:], after[2:]
    assert story_after[1] != story_before[1], "page 2's picture did not change"
    assert [p for i, p in enumerate(story_after) if i != 1] == [
        p for i, p in enumerate(story_before) if i != 1
    ]
    manifest = load_manifest(book_dir)
    assert manifest.page(2).prompt == "a red lighthouse on a rock under a starry night sky"
    assert manifest.page(2).key != keys_before[2]
    assert all(manifest.page(n).key == keys_before[n] for n in keys_before if n != 2)


def test_a_reload_and_a_second_tab_follow_the_painting_and_stop_it(tiny_sd, tmp_path, monkeypatch):
    """Painting runs (a fake that paints page 1 of 2 until stopped, with a preview); the page is
    reloaded and a second tab opened: both go to the Paint tab and show the painting's progress
    and preview (they showed one line of text), Stop in the second tab stops it, and both say so."""
    chromium = require_browser()
    from PIL import Image
    from playwright.sync_api import expect

    from fairytale import studio_app
    from fairytale.render.previews import Preview
    from tests.render_support import make_plan, write_plan

    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "")  # put back after the test

    def paint_book(book, options, pool, *, progress, on_preview, **kwargs):
        progress.start_pages(2)
        progress.batch([1])
        for _ in range(WAIT_MS // 1000):  # bounded: a test that never presses Stop ends
            progress.step(3, 10)  # a stopped painting ends here
            if on_preview:
                on_preview(Preview((1,), 3, 10, [Image.new("RGB", (64, 64), "red")]))
            progress._stop.wait(1)
        raise AssertionError("Stop never reached the painting")

    monkeypatch.setattr(studio_app, "paint_book", paint_book)
    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    studio = studio_app.launch_studio(folder, options=StudioOptions(tiny_settings(tiny_sd)))
    painting = "Painting page 1 of 2 · step 3 of 10"
    try:
        with studio_page(chromium, studio.url) as (context, page):
            shots = Shots(page, tmp_path / "shots")
            page.get_by_role("tab", name="3 · Paint").click()
            page.locator("#show-previews input").check()
            page.locator("#paint").click()
            wait_for(page, "#progress", painting)

            tabs = [page, context.new_page()]
            page.reload()
            tabs[1].goto(studio.url)
            for tab in tabs:
                wait_for(tab, "#progress", painting)  # live, on the Paint tab it opened on
                expect(tab.get_by_role("tab", name="3 · Paint")).to_have_attribute("aria-selected", "true")
                expect(tab.locator("#live-preview img")).to_be_visible()
                expect(tab.locator("#status")).to_contain_text("being painted now")
            shots.take("reloaded-while-painting")
            tabs[1].locator("#stop").click()
            for tab in tabs:
                wait_for(tab, "#progress", "Painting stopped")
                expect(tab.locator("#status")).to_contain_text("Painting stopped")
                expect(tab.locator("#live-preview img")).to_have_count(0)
            shots.take("stopped-from-the-second-tab")
    finally:
        studio.close()
    assert not studio.session.jobs


def test_a_reload_and_a_second_tab_follow_the_planning_and_stop_it(tiny_sd, tmp_path, monkeypatch):
    """Make the plan runs (a fake planning that waits at its second step until stopped); the page
    is reloaded and a second tab opened: both stay on the Start tab and show the planning's step
    (they showed an empty studio), Stop in the second tab stops it, and both say so."""
    chromium = require_browser()
    from playwright.sync_api import expect

    from fairytale import studio_app

    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "")  # put back after the test

    def create_book(books_dir, *, progress, **kwargs):
        for _ in range(WAIT_MS // 1000):  # bounded: a test that never presses Stop ends
            progress.stage("Finding characters")  # a stopped planning ends here
            progress._stop.wait(1)
        raise AssertionError("Stop never reached the planning")

    monkeypatch.setattr(studio_app, "create_book", create_book)
    studio = studio_app.launch_studio(
        books_dir=tmp_path / "books", options=StudioOptions(tiny_settings(tiny_sd))
    )
    planning = "Planning the story: Finding characters"
    try:
        with studio_page(chromium, studio.url) as (context, page):
            shots = Shots(page, tmp_path / "shots")
            # the page has loaded (and has the browser's id, which a reloaded tab finds the planning by)
            page.wait_for_function(f"() => localStorage.getItem({studio_app.BROWSER_KEY!r}) !== null")
            page.locator("#story-text textarea").fill(STORY.read_text(encoding="utf-8"))
            page.locator("#make-plan").click()
            wait_for(page, "#status", planning)

            tabs = [page, context.new_page()]
            page.reload()
            tabs[1].goto(studio.url)
            for tab in tabs:
                wait_for(tab, "#status", planning)  # live, on the Start tab with its Stop
                expect(tab.get_by_role("tab", name="1 · Start")).to_have_attribute("aria-selected", "true")
            shots.take("reloaded-while-planning")
            tabs[1].locator("#plan-stop").click()
            for tab in tabs:
                expect(tab.locator("#status")).to_contain_text("Planning stopped", timeout=WAIT_MS)
            shots.take("planning-stopped-from-the-second-tab")
    finally:
        studio.close()
    assert not studio.session.plannings
