"""The Colab notebooks, executed top to bottom with nbclient on the CPU against the tiny models.

Parameters are overridden the way papermill does it: a cell with the new values is injected
right after the cell tagged ``parameters``. The install cells are skipped by the documented
switch ``FAIRYTALE_SKIP_INSTALL=1`` (fAIrytale is already installed here); the notebooks
themselves are never edited. Each notebook is also run a second time in the same kernel, as a
user's Runtime → Run all after a change does; the character notebook runs in a kernel that
looks like Colab's (a fake ``google.colab`` whose upload box hands in pictures).
"""

from __future__ import annotations

import ast
import base64
import copy
import importlib.util
import io
import json
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import requests
from PIL import Image

from fairytale.embeddings import read_embedding
from fairytale.notebook import SKIP_INSTALL_ENV
from fairytale.plan import load_plan
from tests.render_support import make_plan, pdf_page_texts, write_plan
from tests.scraping_site import Site, serve
from tests.training_fixtures import character_folder

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["generate_book.ipynb", "train_character.ipynb", "style_dataset.ipynb"]


def with_parameters(notebook: nbformat.NotebookNode, values: dict) -> nbformat.NotebookNode:
    """The notebook with a cell setting ``values`` injected after its parameters cell."""
    cells = notebook.cells
    index = next(i for i, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    injected = nbformat.v4.new_code_cell(source)
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells = [*cells[: index + 1], injected, *cells[index + 1 :]]
    return notebook


def client_for(name: str, values: dict, workdir: Path, monkeypatch):
    """An nbclient client of the notebook ``name`` with ``values`` injected, run in ``workdir``."""
    from nbclient import NotebookClient

    monkeypatch.setenv(SKIP_INSTALL_ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the kernel is this interpreter, so it imports the fAIrytale under test
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]))
    notebook = with_parameters(nbformat.read(NOTEBOOKS / name, as_version=4), values)
    return NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}},
    )


def run_all(client, values: dict | None = None) -> tuple[list[nbformat.NotebookNode], int | None]:
    """Run every cell in the client's kernel again, as Runtime → Run all does, with the settings
    changed to ``values`` as a user changes the form. Returns this run's cells and the index of
    the cell that failed (``None``: none did); like Run all, it stops there."""
    from nbclient.exceptions import CellExecutionError

    cells = client.nb.cells
    if values is not None:
        injected = next(c for c in cells if "injected-parameters" in c.metadata.get("tags", []))
        injected.source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    for index, cell in enumerate(cells):
        try:
            client.execute_cell(cell, index)
        except CellExecutionError:
            return copy.deepcopy(cells[: index + 1]), index
    return copy.deepcopy(cells), None


def outputs_text(notebook: nbformat.NotebookNode | list) -> str:
    """Everything the cells of a notebook (or a list of cells) showed, as one text."""
    parts = []
    for cell in notebook if isinstance(notebook, list) else notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(json.dumps(output.get("data", {})))
            parts.extend([output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])])
    return "\n".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_valid_committed_clean_and_parameterised(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the outputs"
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "FAIRYTALE_SKIP_INSTALL" in code[0].source and "pip" in code[0].source  # install first
    assert "colab.research.google.com" in notebook.cells[0].source  # the badge


def _bound(tree: ast.AST) -> set[str]:
    """The names a piece of code sets: assignments, imports, definitions, arguments."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _loaded(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_that_needs_an_earlier_one_says_so_when_run_first(name):
    # After a restart, any such cell may be the first one run: it turns the plain messages on
    # itself, before it uses a name an earlier cell sets, so a NameError is one line naming the cells to run.
    code = [cell for cell in nbformat.read(NOTEBOOKS / name, as_version=4).cells if cell.cell_type == "code"]
    set_earlier: set[str] = set()
    dependent = 0
    for cell in code:
        tree = ast.parse(cell.source)
        needs = (_loaded(tree) & set_earlier) - _bound(tree)
        if needs:
            dependent += 1
            first_use = next(i for i, statement in enumerate(tree.body) if _loaded(statement) & needs)
            guard = [
                i for i, statement in enumerate(tree.body)
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
                and getattr(statement.value.func, "id", None) == "use_plain_messages"
            ]
            assert guard and guard[0] < first_use, f"{cell.id} needs {sorted(needs)} without use_plain_messages() first"
            assert "use_plain_messages" in _bound(tree), f"{cell.id} imports use_plain_messages itself"
        set_earlier |= _bound(tree)
    assert dependent >= 3


def test_generate_book_notebook_makes_the_pdf(
    tiny_ner, tiny_qa, tiny_nli, tiny_sd, tiny_ip_adapter, story_path, tmp_path, monkeypatch
):
    values = {  # CONSISTENCY left empty: the default mode, with the tiny IP-Adapter
        "STORY_FILE": str(story_path), "MODEL": str(tiny_sd), "NER_MODEL": str(tiny_ner),
        "QA_MODEL": str(tiny_qa), "NLI_MODEL": str(tiny_nli), "STEPS": 2, "PAGES_TO_SHOW": 2, "SEED": 3,
        "ADAPTER_MODEL": str(tiny_ip_adapter),
    }
    client = client_for("generate_book.ipynb", values, tmp_path, monkeypatch)
    with client.setup_kernel():
        done, failed = run_all(client)
        assert failed is None, outputs_text(done)
        # the studio cell run again replaces its studio: the first one is closed, not left serving
        index, studio_cell = next((i, c) for i, c in enumerate(client.nb.cells) if "launch_studio" in c.source)
        client.execute_cell(studio_cell, index)
        urls = re.findall(r"fAIrytale Studio: (http://127\.0\.0\.1:\d+/?)", outputs_text(done) + outputs_text([studio_cell]))
        if urls:  # gradio is installed
            assert len(urls) == 2 and urls[0] != urls[1]
            assert requests.get(urls[1], timeout=30).ok
            with pytest.raises(requests.ConnectionError):
                requests.get(urls[0], timeout=30)

    plan = load_plan(tmp_path / "book" / "plan.json")
    assert all(c.reference is not None for c in plan.characters if c.main)  # painted from portraits
    pdf = tmp_path / "book.pdf"
    assert len(pdf_page_texts(pdf)) == len(plan.pages) + 2  # cover, title page, story pages
    assert plan.seed == 3
    shown = [o for c in done for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) == 2  # the first pages, inline
    assert "No GPU found" in outputs_text(done)
    # the last cell starts the studio on the book and returns (the run above did not block on it)
    if importlib.util.find_spec("gradio"):
        assert len(urls) == 2
    else:
        assert 'pip install -e ".[studio]"' in outputs_text(done)


def pretend_colab(folder: Path, uploads: Path, monkeypatch) -> Path:
    """Make the notebook kernel look like Colab's: a ``google.colab`` whose upload box hands in
    the files of ``uploads`` and whose download does nothing, imported at start as Colab's is.
    Returns the log file the fake writes each call to."""
    package = folder / "fake-colab" / "google" / "colab"  # "google" stays a namespace package
    package.mkdir(parents=True)
    log = folder / "colab-calls.log"
    (package / "__init__.py").write_text("from google.colab import drive, files  # noqa: F401\n")
    (package / "files.py").write_text(
        "import pathlib\n"
        f"LOG, UPLOADS = pathlib.Path({str(log)!r}), pathlib.Path({str(uploads)!r})\n"
        "def _say(line):\n"
        "    with LOG.open('a') as log:\n"
        "        log.write(line + '\\n')\n"
        "def upload():\n"
        "    _say('upload')\n"
        "    return {p.name: p.read_bytes() for p in sorted(UPLOADS.iterdir())}\n"
        "def download(path):\n"
        "    _say('download ' + pathlib.Path(path).name)\n"
    )
    (package / "drive.py").write_text("def mount(path):\n    raise RuntimeError('no Drive in the tests')\n")
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # noqa: F401\n")
    monkeypatch.setenv("IPYTHONDIR", str(folder / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder / "fake-colab"), os.environ.get("PYTHONPATH", "")]))
    return log


def composed_plan(pages: int):
    """A plan whose prompts are composed, as the planner leaves them (a word counts as a token)."""
    from fairytale.planner import compose_prompt

    plan = make_plan(pages)
    for page in plan.pages:
        page.set_composed_prompt(compose_prompt(plan, page, lambda text: len(text.split())))
    return plan


def test_train_character_notebook_learns_previews_and_uses_the_token(tiny_sd, tmp_path, monkeypatch):
    # in a kernel that looks like Colab's, so the upload box and the download are the ones a user meets
    log = pretend_colab(tmp_path / "colab", character_folder(tmp_path / "my-pictures"), monkeypatch)
    plan = composed_plan(3)
    plan.pages[2].set_hand_written_prompt("Zoë waves from the lighthouse, my own words")
    plan_file = write_plan(tmp_path, plan)
    output = tmp_path / "ginger.safetensors"
    values = {
        "PICTURES_DIR": "pictures", "UPLOAD": True, "MODEL": str(tiny_sd), "STEPS": 2,
        "PREVIEW_PROMPTS": ["a picture of {token}"], "PREVIEW_STEPS": 2, "PLAN_FILE": str(plan_file),
        "CHARACTER": "zoe",
    }
    client = client_for("train_character.ipynb", values, tmp_path, monkeypatch)
    with client.setup_kernel():
        first, failed = run_all(client)
        assert failed is None, outputs_text(first)
        trained = output.read_bytes()
        again, failed = run_all(client)  # Run all again (after a restart, say): nothing is lost, refused or asked again
        assert failed is None, outputs_text(again)

    learned = read_embedding(output)
    assert learned.token == "<ginger>" and learned.family == "sd1"
    assert output.read_bytes() == trained and "is trained already: kept" in outputs_text(again)
    calls = log.read_text().splitlines()
    assert calls.count("upload") == 1 and "download ginger.safetensors" in calls  # the box would wait for a person
    assert "already (no upload box" in outputs_text(again)
    assert len(list((tmp_path / "preview" / "preview" / "pages").glob("*.png"))) == 1
    assert (tmp_path / "preview" / "preview.pdf").is_file()
    plan = load_plan(plan_file)
    assert plan.character("zoe").token == "<ginger>"
    assert [e.token for e in plan.embeddings] == ["<ginger>"]
    assert "<ginger>" in plan.pages[0].prompt  # composed again with the token
    assert plan.pages[2].prompt == "Zoë waves from the lighthouse, my own words"  # the person's prompt is kept
    shown = outputs_text(first)
    assert "Note: Page 3 kept its hand-written prompt" in shown and "HandWrittenPromptsKept" not in shown


def test_style_dataset_notebook_scrapes_builds_and_trains(tiny_sd, tmp_path, monkeypatch):
    from datasets import load_dataset

    with serve(Site()) as site:
        values = {
            "SITE": site.url, "DELAY": 0.0, "DPI": 40, "MODEL": str(tiny_sd), "STEPS": 2,
            "OUTPUT": str(tmp_path / "style.safetensors"),
        }
        client = client_for("style_dataset.ipynb", values, tmp_path, monkeypatch)
        with client.setup_kernel():
            first, failed = run_all(client)
            assert failed is None, outputs_text(first)
            trained = (tmp_path / "style.safetensors").read_bytes()
            again, failed = run_all(client)  # Run all again: nothing fetched twice, the token kept
            assert failed is None, outputs_text(again)

    assert "0 downloaded" in outputs_text(again) and "is trained already: kept" in outputs_text(again)
    kept = "dataset: kept, built before from the same books and settings"
    assert kept in outputs_text(again) and kept not in outputs_text(first)  # not built again
    assert (tmp_path / "style.safetensors").read_bytes() == trained
    assert sorted(p.name for p in (tmp_path / "books").glob("*.pdf"))
    dataset = load_dataset("imagefolder", data_dir=str(tmp_path / "dataset"))
    assert dataset["train"].num_rows >= 1 and "caption" in dataset["train"].column_names
    assert read_embedding(tmp_path / "style.safetensors").token == "<monkeypen-style>"


def test_generate_book_notebook_run_again_keeps_the_edited_plan_and_replaces_the_drafts(
    tiny_models, tiny_ner, tiny_qa, tiny_nli, tiny_sd, story_path, tmp_path, monkeypatch
):
    values = {
        "STORY_FILE": str(story_path), "MODEL": str(tiny_sd), "NER_MODEL": str(tiny_ner), "QA_MODEL": str(tiny_qa),
        "NLI_MODEL": str(tiny_nli), "STEPS": 6, "PAGES_TO_SHOW": 1, "SEED": 3, "CONSISTENCY": "seed",
        "DRAFT": True, "DRAFT_LORA": str(tiny_models("lcm_lora")), "OPEN_STUDIO": False,
    }
    client = client_for("generate_book.ipynb", values, tmp_path, monkeypatch)
    plan_file, manifest = tmp_path / "book" / "plan.json", tmp_path / "book" / "manifest.json"
    with client.setup_kernel():
        drafted, failed = run_all(client)
        assert failed is None
        assert all(page["draft"] for page in json.loads(manifest.read_text())["pages"])
        assert "untick DRAFT in step 2 and run all cells again" in outputs_text(drafted)

        # the user writes page 1's prompt in the plan file (the file browser), unticks DRAFT,
        # asks for live previews and an EPUB, and runs all the cells again
        raw = json.loads(plan_file.read_text())
        raw["pages"][0]["prompt"] = "a giraffe of my own, watercolor"
        plan_file.write_text(json.dumps(raw))
        final, failed = run_all(
            client, {**values, "DRAFT": False, "LIVE_PREVIEW": True, "PREVIEW_MODEL": str(tiny_models("taesd")), "EPUB": True}
        )
        assert failed is None

    assert load_plan(plan_file).pages[0].prompt == "a giraffe of my own, watercolor"  # the edit is kept
    assert "Kept" in outputs_text(final) and "are drafts" not in outputs_text(final)
    assert not any(page["draft"] for page in json.loads(manifest.read_text())["pages"])
    render_cell = next(c for c in final if "render_book(" in c.source)
    [shown] = [o["data"]["image/png"] for o in render_cell.outputs if "image/png" in o.get("data", {})]
    # the live preview's area ends with a finished picture, not the last half-painted one
    finished = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "book" / "pages").glob("*.png"))]
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown))).convert("RGB"))
    assert any(shown.shape == f.shape and (shown == f).all() for f in finished)
    assert (tmp_path / "book.epub").is_file()


def test_a_mistake_is_one_line_and_stops_the_run(tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    client = client_for("generate_book.ipynb", {"STORY_FILE": "my story.txt"}, tmp_path, monkeypatch)
    with client.setup_kernel():
        # a new kernel (a runtime restarted): the plan cell run first says so in one line
        index, plan_cell = next((i, c) for i, c in enumerate(client.nb.cells) if "plan_or_keep(" in c.source)
        with pytest.raises(CellExecutionError):
            client.execute_cell(plan_cell, index)
        early = outputs_text([plan_cell])
        assert "is not set yet: run the cells above this one first (in Colab: Runtime → Run before)" in early
        assert "Traceback" not in early
        cells, failed = run_all(client)
        # the user goes on with the next cell anyway: it needs what the failed one sets
        index, after = next((i, c) for i, c in enumerate(client.nb.cells) if i > failed and c.cell_type == "code")
        with pytest.raises(CellExecutionError):
            client.execute_cell(after, index)
    said = outputs_text([after])
    assert "Error: story_path is not set yet: run the cells above this one first" in said
    assert "Traceback" not in said

    assert failed is not None and "story_file(" in cells[failed].source  # Run all stops at the story
    shown = outputs_text(cells[failed:])
    assert "Error: Story file not found: my story.txt (in Colab, upload it" in shown
    assert "Traceback" not in shown and "FairytaleError" not in shown


def test_output_folder_goes_to_drive_only_in_colab_and_says_where(tmp_path, monkeypatch):
    import sys
    import types

    from fairytale import notebook

    monkeypatch.chdir(tmp_path)
    folder, line = notebook.output_folder("book", drive=True)
    assert folder == Path("book") and folder.is_dir() and "only in Colab" in line

    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(notebook, "DRIVE_MOUNT", tmp_path / "drive")
    folder, line = notebook.output_folder("book", drive=False)
    assert folder == Path("book") and "Colab deletes it when the runtime ends" in line and not mounted
    folder, line = notebook.output_folder("book", drive=True, drive_folder="stories")
    assert mounted == [str(tmp_path / "drive")]
    assert folder == tmp_path / "drive" / "MyDrive" / "stories" / "book" and folder.is_dir()
    assert "Google Drive" in line
