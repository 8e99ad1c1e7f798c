"""`fairytale render --format pdf,epub --preset kdp` on a tiny-model book: every file, valid."""

from __future__ import annotations

import zipfile

import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from fairytale.cli import app
from tests.publish_support import epubcheck
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    write_plan,
)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow  # a render and a JVM start (epubcheck): ~30 s on a busy 2-core box
def test_render_writes_the_epub_and_the_print_files(tiny_sd, tmp_path):
    plan_file = write_plan(tmp_path, make_plan(3, back_cover_text="A girl, a lighthouse and a storm."))
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "render",
        plan_file,
        "-o",
        out / "zoe.pdf",
        "--model",
        tiny_sd,
        "--consistency",
        "seed",
        "--steps",
        2,
        "--device",
        "cpu",
        "--format",
        "pdf,epub",
        "--preset",
        "kdp",
        "--paper",
        "standard-color",
    )
    assert result.exit_code == 0, result.output
    for name in ("zoe.pdf", "zoe.epub", "zoe-kdp-interior.pdf", "zoe-kdp-cover.pdf", "zoe/preflight-kdp.txt"):
        assert (out / name).is_file(), name
    assert "Preflight" in result.stderr and "spine 0.054048 in (24 pages, standard-color)" in result.stderr
    assert len(PdfReader(str(out / "zoe-kdp-interior.pdf")).pages) == 24
    assert (
        len(PdfReader(str(out / "zoe.pdf")).pages) == 5
    )  # the reading PDF is unchanged: cover, title, 3 pages
    with zipfile.ZipFile(out / "zoe.epub") as archive:
        assert sum(name.startswith("OEBPS/images/") for name in archive.namelist()) == 4  # cover + 3 pages
    epubcheck(out / "zoe.epub")


def test_a_bad_format_or_preset_fails_before_painting(tmp_path):
    plan_file = write_plan(tmp_path, make_plan(2))
    for option, value, message in (
        ("--format", "pdf,docx", "Unknown format"),
        ("--preset", "lulu", "Unknown print preset 'lulu'"),
        ("--paper", "premium-color", "go with --preset"),
    ):
        result = run(
            "render", plan_file, "-o", tmp_path / "zoe.pdf", "--model", tmp_path / "no-model", option, value
        )
        assert result.exit_code != 0 and message in result.stderr, result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / "zoe").exists()  # nothing painted
