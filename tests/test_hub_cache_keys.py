"""The render cache names a hub model by its weights' content hashes, not by its repo id: a
role switched to a mirror repaints nothing, and books painted under the old ``repo@revision``
keys are adopted, not repainted."""

from __future__ import annotations

import shutil

import pytest
from huggingface_hub import constants

from fairytale.render import render_book
from fairytale.render.backends import Backend, StableDiffusion14
from tests.hub_server import add_to_cache
from tests.render_support import (  # noqa: F401  (single_torch_thread is an autouse fixture)
    make_plan,
    single_torch_thread,
    tiny_settings,
    write_plan,
)


@pytest.fixture(scope="module")
def cached_tiny_sd(tiny_sd):
    """The tiny SD model in the session's HF cache under two repo ids holding the same weights
    (ids no other test uses), as a withdrawn repo and its mirror would be."""
    for repo_id in ("test-original/tiny-sd", "test-mirror/tiny-sd"):
        add_to_cache(constants.HF_HUB_CACHE, repo_id, tiny_sd)
    yield
    for repo_id in ("test-original/tiny-sd", "test-mirror/tiny-sd"):
        shutil.rmtree(f"{constants.HF_HUB_CACHE}/models--{repo_id.replace('/', '--')}", ignore_errors=True)


def test_same_weights_in_a_mirror_have_the_same_fingerprint(cached_tiny_sd, tiny_sd, tmp_path):
    original = StableDiffusion14(tiny_settings("test-original/tiny-sd"))
    mirror = StableDiffusion14(tiny_settings("test-mirror/tiny-sd"))
    assert original.model_fingerprint() == mirror.model_fingerprint()
    assert original.model_fingerprint().startswith("weights:")
    # other weights: another name
    changed = tmp_path / "changed"
    shutil.copytree(tiny_sd, changed)
    weights = changed / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    add_to_cache(constants.HF_HUB_CACHE, "test-other/tiny-sd", changed)
    try:
        other = StableDiffusion14(tiny_settings("test-other/tiny-sd"))
        assert other.model_fingerprint() != original.model_fingerprint()
    finally:
        shutil.rmtree(f"{constants.HF_HUB_CACHE}/models--test-other--tiny-sd", ignore_errors=True)


def test_old_books_are_adopted_and_a_mirror_repaints_nothing(cached_tiny_sd, tiny_sd, tmp_path, monkeypatch):
    plan_path = write_plan(tmp_path, make_plan(2))
    pdf = tmp_path / "zoe.pdf"
    settings = tiny_settings("test-original/tiny-sd")

    # A book painted by the previous version, whose keys named the model `repo@revision`.
    with monkeypatch.context() as patch:
        patch.setattr(Backend, "model_fingerprint", lambda self: f"{self.source.ref}@{self.source.revision or 'main'}")
        old = render_book(plan_path, pdf, settings, progress=False)
    assert old.painted == [1, 2]

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although every picture is cached")

    monkeypatch.setattr(StableDiffusion14, "load", no_loading)
    upgraded = render_book(plan_path, pdf, settings, progress=False)
    assert upgraded.painted == [] and upgraded.reused == [1, 2]

    mirrored = render_book(plan_path, pdf, settings.with_(model="test-mirror/tiny-sd"), progress=False)
    assert mirrored.painted == [] and mirrored.reused == [1, 2]


def test_the_studio_shows_an_old_books_pictures_as_painted(cached_tiny_sd, tmp_path, monkeypatch):
    """The studio looks pages up as render_book does (one PageKeys): old keys are adopted there too."""
    from fairytale.studio_actions import open_book, page_views, pages_to_paint

    folder = tmp_path / "zoe"
    folder.mkdir()
    settings = tiny_settings("test-original/tiny-sd")
    with monkeypatch.context() as patch:
        patch.setattr(Backend, "model_fingerprint", lambda self: f"{self.source.ref}@{self.source.revision or 'main'}")
        old = render_book(write_plan(folder, make_plan(2)), tmp_path / "zoe.pdf", settings, progress=False)
    assert old.painted == [1, 2]
    book = open_book(folder)
    views = page_views(book, settings)
    assert [v.status for v in views] == ["painted", "painted"] and all(v.picture for v in views)
    assert pages_to_paint(book, settings) == []
