"""Training data: both dataset layouts, picture preparation, the latent cache, prompts, defaults."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from fairytale.errors import FairytaleError
from tests.training_fixtures import BACKGROUND, character_folder, draw_character, imagefolder_dataset
from training.config import TrainingConfig
from training.data import (
    TrainingData,
    data_fingerprint,
    encode_pictures,
    find_training_images,
    load_picture,
    prepare_picture,
)
from training.templates import placeholder_tokens, prompts_for, token_text


def test_reads_the_scrapers_imagefolder_with_splits(tmp_path):
    dataset = imagefolder_dataset(tmp_path / "dataset", splits=True, pages=3)
    images = find_training_images(dataset)
    assert [image.path.name for image in images] == ["book_a_p01.png", "book_a_p02.png", "book_a_p03.png"]
    assert all(image.path.parent.name == "train" for image in images)  # validation split left alone
    assert images[1].caption == "a green hill under the sun, page 2"
    assert (images[1].book, images[1].page) == ("Book A", 2)


def test_reads_the_imagefolder_without_splits_and_a_plain_folder(tmp_path):
    flat = imagefolder_dataset(tmp_path / "flat", splits=False, pages=2)
    assert len(find_training_images(flat)) == 2
    pictures = character_folder(tmp_path / "ginger", count=3)
    images = find_training_images(pictures)
    assert [image.path.name for image in images] == ["creature_0.png", "creature_1.png", "creature_2.png"]
    assert all(image.caption is None for image in images)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root, "No training pictures"),
        (lambda root: root / "missing", "not found"),
        (lambda root: (root / "metadata.jsonl").write_text("{not json}\n") and root, "line 1"),
        (
            lambda root: (
                (root / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.png"}) + "\n") and root
            ),
            "gone.png",
        ),
    ],
)
def test_bad_data_folders_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(FairytaleError, match=message):
        find_training_images(make(tmp_path))


def test_unreadable_picture_is_named(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(FairytaleError, match="broken.png"):
        load_picture(broken)


def test_transparent_pictures_are_laid_on_white(tmp_path):
    path = draw_character(tmp_path / "cutout.png", 0, mode="RGBA")
    image = load_picture(path)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_pictures_keep_their_tones(tmp_path):
    """Pillow's own conversion clips 16-bit greyscale, so a 0-65535 ramp trained as almost white."""
    import numpy as np
    from PIL import Image

    from fairytale.images import open_rgb

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    for picture in (load_picture(path), open_rgb(path)):
        values = np.asarray(picture)
        assert picture.mode == "RGB" and values[0, 0, 0] == 0 and values[-1, -1, 0] == 255
        assert abs(values.mean() - 127.5) < 1


def test_prepare_centre_square_and_crop_margin():
    page = Image.new("RGB", (300, 200), BACKGROUND)
    square = prepare_picture(page, 64, crop_margin=False, multiple=8)
    assert square.size == (64, 64)
    # With the margin: short side 64 × 1.125 = 72, long side kept (108 → 104, a multiple of 8).
    wide = prepare_picture(page, 64, crop_margin=True, multiple=8)
    assert wide.size == (104, 72)
    # A very wide spread keeps at most twice its height.
    spread = prepare_picture(Image.new("RGB", (900, 200), BACKGROUND), 64, crop_margin=True, multiple=8)
    assert spread.size == (144, 72)
    tall = prepare_picture(Image.new("RGB", (200, 300), BACKGROUND), 64, crop_margin=True, multiple=8)
    assert tall.size == (72, 104)


def _latents(shape_hw: tuple[int, int], value: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((4, *shape_hw), value), torch.full((4, *shape_hw), value / 10)


def test_get_batch_crops_windows_and_pairs_prompts():
    prompts = [torch.full((3, 77), 10 + picture) for picture in range(2)]
    data = TrainingData(
        latents=[_latents((9, 13), 0.0), _latents((9, 13), 1.0), _latents((8, 8), 2.0)],
        picture_of=[0, 0, 1],  # picture 0 and its mirror image, then picture 1
        prompt_ids=prompts,
        latent_size=8,
    )
    seen, generator = set(), torch.Generator().manual_seed(0)
    for _ in range(40):
        mean, std, ids = data.get_batch(2, generator)
        assert mean.shape == std.shape == (2, 4, 8, 8)
        for row in range(2):
            value = float(mean[row, 0, 0, 0])
            seen.add(value)
            expected_picture = 1 if value == 2.0 else 0
            assert int(ids[row, 0]) == 10 + expected_picture
    assert seen == {0.0, 1.0, 2.0}
    first = data.get_batch(3, torch.Generator().manual_seed(7))
    again = data.get_batch(3, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_each_picture_and_its_flip_are_encoded_once(tmp_path, tiny_sd):
    from diffusers import AutoencoderKL

    images = find_training_images(character_folder(tmp_path / "pics", count=3))
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    calls = []
    encode = vae.encode
    vae.encode = lambda pixels: calls.append(pixels.shape) or encode(pixels)
    latents, picture_of = encode_pictures(
        images, vae, resolution=64, flip=True, random_crop=False, device="cpu", dtype=torch.float32
    )
    assert calls == [(2, 3, 64, 64)] * 3  # one call per picture: it and its mirror image
    assert picture_of == [0, 0, 1, 1, 2, 2]
    mean, std = latents[0]
    assert mean.shape == (4, 32, 32) and (std > 0).all()
    assert not torch.equal(latents[0][0], latents[1][0])  # the mirror image is a different encoding
    latents, _ = encode_pictures(
        images, vae, resolution=64, flip=False, random_crop=True, device="cpu", dtype=torch.float32
    )
    assert len(latents) == 3 and latents[0][0].shape == (4, 36, 40)  # 72 × 80 px with the crop margin


def test_fingerprint_follows_pictures_and_captions(tmp_path):
    dataset = imagefolder_dataset(tmp_path / "d", splits=False, pages=2)
    before = data_fingerprint(find_training_images(dataset))
    metadata = dataset / "metadata.jsonl"
    metadata.write_text(metadata.read_text().replace("green hill", "blue hill"))
    assert data_fingerprint(find_training_images(dataset)) != before


def test_prompts_put_the_token_where_it_belongs():
    character = prompts_for("character", "<ginger>")
    assert all("<ginger>" in prompt for prompt in character)
    style = prompts_for("style", "<mp>")
    assert all("style of <mp>" in prompt or "<mp> style" in prompt for prompt in style)
    long_caption = " ".join(["word"] * 200)
    captioned = prompts_for("style", "<mp>", long_caption)
    # The token comes early so CLIP's 77-token cut never drops it; captions are shortened.
    assert all(prompt.index("<mp>") < 50 and prompt.count("word") <= 40 for prompt in captioned)
    assert prompts_for("character", "<g>", "a caption") == prompts_for(
        "character", "<g>"
    )  # captions: style only
    assert token_text("<g>", 3) == "<g> <g>_1 <g>_2"
    assert placeholder_tokens("<g>", 1) == ["<g>"]


def test_defaults_follow_the_known_good_recipe(tmp_path):
    config = TrainingConfig(kind="character", data=tmp_path, token="<g>", output=tmp_path / "g.safetensors")
    assert (config.batch_size, config.grad_accum, config.steps, config.lr) == (1, 4, 3000, 5e-4)
    assert config.learning_rate(num_processes=1) == pytest.approx(2e-3)  # scaled: 5e-4 × 1 × 4 × 1
    assert config.learning_rate(num_processes=2) == pytest.approx(4e-3)
    assert (config.use_flip, config.use_random_crop) == (False, False)  # likeness first for characters
    style = TrainingConfig(kind="style", data=tmp_path, token="<s>", output=tmp_path / "s.safetensors")
    assert (style.use_flip, style.use_random_crop) == (True, True)
    assert (style.init_text, config.init_text) == ("illustration", "character")
