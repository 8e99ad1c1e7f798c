"""The training loop on tiny models (CPU): what changes, what is kept, what is written.

Behaviour a random model cannot show (the loss going down) is tested on a deliberately
text-sensitive tiny model; everything else is plumbing, checked bit for bit.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fairytale.embeddings import a1111_path, load_into_pipeline, read_embedding
from fairytale.errors import FairytaleError
from tests.training_fixtures import character_folder
from training import TrainingConfig, train
from training import textual_inversion as ti
from training.checkpoint import completed_checkpoints
from training.data import encode_pictures, find_training_images
from training.templates import token_text


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    return character_folder(tmp_path_factory.mktemp("pictures") / "creature", count=3)


def quick(tmp_path: Path, model: Path, pictures: Path, **changes) -> TrainingConfig:
    """A few fast steps: small accumulation, no gradient checkpointing, no periodic checkpoints."""
    config = TrainingConfig(
        kind="character",
        data=pictures,
        token="<creature>",
        init="cat",
        output=tmp_path / "creature.safetensors",
        model=str(model),
        steps=2,
        grad_accum=2,
        gradient_checkpointing=False,
        checkpoint_every=1000,
    )
    return replace(config, **changes)


def test_only_the_new_rows_change(tmp_path, tiny_sd, pictures):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    original_text = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder").state_dict()
    original_unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").state_dict()
    table_key = "text_model.embeddings.token_embedding.weight"
    seen = []

    def check(report: ti.StepReport) -> None:
        text_state = report.text_encoder.state_dict()
        embedding = report.text_encoder.get_input_embeddings()
        # Every row of the original table is exactly what it was…
        assert torch.equal(
            text_state.pop("text_model.embeddings.token_embedding.table.weight"), original_text[table_key]
        )
        first_new = embedding.first_new
        assert report.token_ids == list(range(first_new, first_new + 2))
        assert torch.equal(embedding.weight[:first_new], original_text[table_key][:first_new])
        # …every other weight and buffer of the text encoder and the UNet is bit-identical…
        new_rows = text_state.pop("text_model.embeddings.token_embedding.new_rows")
        assert text_state.keys() == original_text.keys() - {table_key}
        assert all(torch.equal(value, original_text[name]) for name, value in text_state.items())
        assert all(
            torch.equal(value, original_unet[name]) for name, value in report.unet.state_dict().items()
        )
        trainable = [name for name, p in report.text_encoder.named_parameters() if p.requires_grad]
        assert trainable == ["text_model.embeddings.token_embedding.new_rows"]
        assert not any(p.requires_grad for p in report.unet.parameters())
        # …and the new rows (both vectors) move every step.
        if seen:
            assert (new_rows != seen[-1]).any(dim=1).all()
        seen.append(new_rows.clone())

    result = train(quick(tmp_path, tiny_sd, pictures, steps=3, vectors=2), on_step=check)
    assert len(seen) == 3
    assert torch.equal(read_embedding(result.output).vectors, seen[-1])


def test_new_rows_start_from_the_init_word(tmp_path, tiny_sd, pictures):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    table = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder").get_input_embeddings().weight
    text_encoder = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder")
    config = quick(tmp_path, tiny_sd, pictures, init="tall giraffe", vectors=2)
    ids = ti._add_token(config, tokenizer, text_encoder)
    init_ids = tokenizer.encode("tall giraffe", add_special_tokens=False)
    assert torch.equal(
        text_encoder.get_input_embeddings().new_rows.detach(), table[init_ids]
    )  # one word per vector
    assert tokenizer.convert_ids_to_tokens(ids) == ["<creature>", "<creature>_1"]
    with pytest.raises(FairytaleError, match="already knows"):
        ti._add_token(replace(config, token="cat</w>"), tokenizer, text_encoder)


# --------------------------------------------------------------------------- the objective


@pytest.mark.parametrize("role", ["sd", "sd2"])
def test_first_loss_is_the_models_own_objective(tmp_path, tiny_models, pictures, role):
    """The loss is epsilon-prediction for SD 1.x and v-prediction for SD 2.x, computed here
    independently from the same random draws as the trainer."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    model = tiny_models(role)
    config = quick(tmp_path, model, pictures, steps=1, grad_accum=1, seed=5)
    result = train(config)
    assert result.prediction_type == ("v_prediction" if role == "sd2" else "epsilon")

    # The same draws, in the trainer's order: picture, crop, prompt; posterior sample, noise, timestep.
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae")
    resolution = result.resolution
    latents, picture_of = encode_pictures(
        find_training_images(pictures),
        vae,
        resolution=resolution,
        flip=False,
        random_crop=False,
        device="cpu",
        dtype=torch.float32,
    )
    tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder")
    ti._add_token(config, tokenizer, text_encoder)
    from training.data import TrainingData, tokenize_prompts
    from training.templates import prompts_for

    prompts = [tokenize_prompts(tokenizer, prompts_for("character", "<creature>")) for _ in range(3)]
    data = TrainingData(latents, picture_of, prompts, latent_size=resolution // 2)
    mean, std, ids = data.get_batch(1, torch.Generator().manual_seed(5))
    noise_generator = torch.Generator().manual_seed(5)
    x0 = mean + std * torch.randn(mean.shape, generator=noise_generator)
    noise = torch.randn(x0.shape, generator=noise_generator)
    t = torch.randint(0, 1000, (1,), generator=noise_generator)
    scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0 if role == "sd2" else noise
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    with torch.no_grad():
        prediction = unet(noisy, t, text_encoder(ids)[0]).sample
    assert result.losses[0] == pytest.approx(F.mse_loss(prediction, target).item(), rel=1e-5)


def test_denoising_target_follows_the_scheduler():
    from diffusers import DDPMScheduler

    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    assert torch.equal(ti.denoising_target(DDPMScheduler(), latents, noise, t), noise)
    v = ti.denoising_target(DDPMScheduler(prediction_type="v_prediction"), latents, noise, t)
    assert torch.allclose(v, DDPMScheduler(prediction_type="v_prediction").get_velocity(latents, noise, t))
    assert not torch.allclose(v, noise)


@pytest.fixture(scope="module")
def text_sensitive_model(tiny_sd, tmp_path_factory) -> Path:
    """tiny_sd with its cross-attention outputs scaled ×30, so the prompt can steer the UNet.

    A random tiny UNet barely listens to its prompt, so no token can lower its loss much; here
    the prompt matters by construction and learning the token must show.
    """
    from diffusers import UNet2DConditionModel

    target = tmp_path_factory.mktemp("text-sensitive") / "sd"
    shutil.copytree(tiny_sd, target)
    unet = UNet2DConditionModel.from_pretrained(target, subfolder="unet")
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_out[0].weight.mul_(30)
                module.to_out[0].bias.mul_(30)
    unet.save_pretrained(target / "unet")
    return target


def test_loss_goes_down(tmp_path, text_sensitive_model, pictures):
    from diffusers import AutoencoderKL, DDPMScheduler

    # A fixed evaluation set: each picture at fixed noise levels with fixed noise.
    vae = AutoencoderKL.from_pretrained(text_sensitive_model, subfolder="vae")
    latents, _ = encode_pictures(
        find_training_images(pictures),
        vae,
        resolution=64,
        flip=False,
        random_crop=False,
        device="cpu",
        dtype=torch.float32,
    )
    x0 = torch.stack([mean for mean, _ in latents]).repeat(4, 1, 1, 1)
    generator = torch.Generator().manual_seed(123)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, 1000, (len(x0),), generator=generator)
    noisy = DDPMScheduler.from_pretrained(text_sensitive_model, subfolder="scheduler").add_noise(x0, noise, t)
    vectors = 16
    evaluated = []

    def evaluate(report: ti.StepReport) -> None:
        if report.step in (1, 20, 40):
            prompt = f"a picture of {token_text('<creature>', vectors)}"
            ids = report.tokenizer(
                [prompt] * len(x0), padding="max_length", max_length=77, return_tensors="pt"
            ).input_ids
            with torch.no_grad():
                prediction = report.unet(noisy, t, report.text_encoder(ids)[0]).sample
            evaluated.append(F.mse_loss(prediction, noise).item())

    config = quick(
        tmp_path,
        text_sensitive_model,
        pictures,
        steps=40,
        grad_accum=1,
        vectors=vectors,
        lr=5e-2,
        scale_lr=False,
        warmup_steps=0,
    )
    result = train(config, on_step=evaluate)
    assert evaluated[0] > evaluated[1] > evaluated[2]
    assert evaluated[2] < 0.985 * evaluated[0]
    # The training loss itself (random noise levels each step) falls too.
    assert sum(result.losses[-10:]) < sum(result.losses[:10])


# --------------------------------------------------------------------------- checkpoints and outputs


def test_interrupted_then_resumed_run_ends_bit_identical(tmp_path, tiny_sd, pictures):
    def config(name: str) -> TrainingConfig:
        return quick(
            tmp_path, tiny_sd, pictures, output=tmp_path / name / "c.safetensors", steps=5, checkpoint_every=2
        )

    for name in ("straight", "interrupted"):
        (tmp_path / name).mkdir()
    straight = train(config("straight"))

    def stop_after_three(report: ti.StepReport) -> None:
        if report.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(ti.TrainingInterrupted, match="--resume"):
        train(config("interrupted"), on_step=stop_after_three)
    assert not (tmp_path / "interrupted" / "c.safetensors").exists()
    with pytest.raises(FairytaleError, match="--resume"):  # the same command again must say how to go on
        train(config("interrupted"))
    resumed = train(replace(config("interrupted"), resume=True))

    assert resumed.start_step == 2
    assert resumed.losses == straight.losses
    assert torch.equal(read_embedding(resumed.output).vectors, read_embedding(straight.output).vectors)
    # A resumed run may be extended: same settings, more steps.
    longer = train(replace(config("interrupted"), resume=True, steps=6, force=True))
    assert longer.start_step == 5 and len(longer.losses) == 6
    with pytest.raises(FairytaleError, match="other settings"):
        train(replace(config("interrupted"), resume=True, force=True, lr=1e-2))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_sd, pictures, monkeypatch):
    calls = []

    class PoisonedF:
        """torch.nn.functional, except that the loss turns NaN from the 5th micro-batch on."""

        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def mse_loss(prediction, target):
            calls.append(1)
            loss = F.mse_loss(prediction, target)
            return loss * float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(ti, "F", PoisonedF())
    config = quick(tmp_path, tiny_sd, pictures, steps=6, checkpoint_every=1)
    with pytest.raises(ti.TrainingDiverged, match=r"nan at step 3.*last good checkpoint \(step 2\)"):
        train(config)
    steps = [step for step, _ in completed_checkpoints(tmp_path / "creature.checkpoints")]
    assert steps == [1, 2]
    saved = torch.load(tmp_path / "creature.checkpoints" / "step-000002" / "state.pt", weights_only=True)
    assert torch.isfinite(saved["new_rows"]).all()
    assert not config.output.exists()


def test_existing_output_needs_force_and_writes_are_atomic(tmp_path, tiny_sd, pictures, monkeypatch):
    config = quick(tmp_path, tiny_sd, pictures, steps=1)
    config.output.write_bytes(b"an older token")
    with pytest.raises(FairytaleError, match="--force"):
        train(replace(config, model=str(tmp_path / "no-model-needed")))  # refused before anything loads

    import safetensors.torch

    def torn_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn_write)
    with pytest.raises(OSError, match="disk full"):
        train(replace(config, force=True))
    assert config.output.read_bytes() == b"an older token"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "creature.checkpoints",
        "creature.safetensors",
    ]


def test_a1111_or_other_output_names_are_refused(tmp_path, tiny_sd, pictures):
    for name in ("x.a1111.safetensors", "x.pt"):
        with pytest.raises(FairytaleError, match="safetensors"):
            train(quick(tmp_path, tiny_sd, pictures, output=tmp_path / name))


# --------------------------------------------------------------------------- formats


def test_saved_files_reproduce_the_trainers_text_encoder_output(tmp_path, tiny_sd, tiny_sd2, pictures):
    from diffusers import StableDiffusionPipeline

    prompt = "a picture of <creature> in a garden"
    captured = {}

    def capture(report: ti.StepReport) -> None:
        expanded = prompt.replace("<creature>", token_text("<creature>", 2))
        ids = report.tokenizer(expanded, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            captured["embeds"] = report.text_encoder(ids)[0]

    result = train(quick(tmp_path, tiny_sd, pictures, vectors=2), on_step=capture)
    assert result.written == [result.output, a1111_path(result.output)]

    def encoded(pipe) -> torch.Tensor:
        with torch.no_grad():
            return pipe.encode_prompt(prompt, "cpu", 1, False)[0]

    # diffusers reads the diffusers-layout file itself…
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    pipe.load_textual_inversion(str(result.output))
    assert torch.allclose(encoded(pipe), captured["embeds"], atol=1e-6)

    # …and the A1111 copy through our loader (diffusers alone takes "emb_params" for the token's name).
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    embedding = read_embedding(a1111_path(result.output))
    assert (embedding.token, embedding.family, embedding.metadata["text_encoder_width"]) == (
        "<creature>",
        "sd1",
        "32",
    )
    assert load_into_pipeline(pipe, [embedding]) == ["<creature>"]
    assert torch.allclose(encoded(pipe), captured["embeds"], atol=1e-6)
    confused = StableDiffusionPipeline.from_pretrained(tiny_sd)
    confused.load_textual_inversion(str(a1111_path(result.output)))
    assert (
        "emb_params" in confused.tokenizer.get_vocab() and "<creature>" not in confused.tokenizer.get_vocab()
    )

    # An SD 1.x token is refused by an SD 2.x pipeline, with a clear message.
    with pytest.raises(FairytaleError, match=r"trained for SD 1\.x"):
        load_into_pipeline(StableDiffusionPipeline.from_pretrained(tiny_sd2), [read_embedding(result.output)])


def test_sd2_token_records_its_family(tmp_path, tiny_sd2, pictures):
    result = train(quick(tmp_path, tiny_sd2, pictures, steps=1, grad_accum=1))
    embedding = read_embedding(result.output)
    assert (result.family, result.prediction_type, result.resolution) == ("sd2", "v_prediction", 96)
    assert embedding.metadata["family"] == "sd2" and embedding.width == 64
    assert embedding.metadata["prediction_type"] == "v_prediction"


# --------------------------------------------------------------------------- memory features


def test_mixed_precision_keeps_the_text_encoder_float32(tmp_path, tiny_sd, pictures):
    seen = {}

    def check(report: ti.StepReport) -> None:
        seen["unet"] = report.unet.dtype
        seen["text"] = {p.dtype for p in report.text_encoder.parameters()} | {
            report.text_encoder.get_input_embeddings().table.weight.dtype
        }

    result = train(quick(tmp_path, tiny_sd, pictures, mixed_precision="bf16"), on_step=check)
    assert seen == {"unet": torch.bfloat16, "text": {torch.float32}}
    assert result.mixed_precision == "bf16" and all(math.isfinite(loss) for loss in result.losses)
    assert read_embedding(result.output).vectors.dtype == torch.float32
    with pytest.raises(FairytaleError, match="fp16 mixed precision needs a CUDA GPU"):
        train(quick(tmp_path, tiny_sd, pictures, mixed_precision="fp16", force=True))
    with pytest.raises(FairytaleError, match="CUDA"):
        train(quick(tmp_path, tiny_sd, pictures, adam_8bit=True, force=True))


def test_gradient_checkpointing_gives_the_same_token(tmp_path, tiny_sd, pictures):
    flags = {}

    def check(report: ti.StepReport) -> None:
        flags["unet"] = report.unet.is_gradient_checkpointing
        flags["text"] = report.text_encoder.is_gradient_checkpointing

    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on = train(
        quick(
            tmp_path, tiny_sd, pictures, gradient_checkpointing=True, output=tmp_path / "on" / "t.safetensors"
        ),
        on_step=check,
    )
    off = train(quick(tmp_path, tiny_sd, pictures, output=tmp_path / "off" / "t.safetensors"))
    assert flags == {"unet": True, "text": True}
    assert on.losses == pytest.approx(off.losses, rel=1e-6)
    assert torch.allclose(read_embedding(on.output).vectors, read_embedding(off.output).vectors, atol=1e-7)


def test_validation_pictures_go_through_the_safety_checker(tmp_path, tiny_sd, pictures):
    from PIL import Image

    result = train(
        quick(
            tmp_path,
            tiny_sd,
            pictures,
            validation_prompt="a picture of <creature>",
            validation_every=1,
            steps=1,
        )
    )
    (picture,) = result.validation_pictures
    assert picture.parent == result.checkpoint_dir
    assert Image.open(picture).size == (64, 64)


def test_a_flagged_validation_picture_is_blanked_before_it_is_saved(tmp_path, tiny_sd, pictures, monkeypatch):
    from PIL import Image

    import training.validation as validation
    from tests.tiny_models.diffusion import make_checker_flag_everything

    load_checker = validation.load_checker

    def flagging_checker(*args, **kwargs):
        checker, processor = load_checker(*args, **kwargs)
        make_checker_flag_everything(checker)
        return checker, processor

    monkeypatch.setattr(validation, "load_checker", flagging_checker)
    result = train(
        quick(
            tmp_path,
            tiny_sd,
            pictures,
            validation_prompt="a picture of <creature>",
            validation_every=1,
            steps=1,
        )
    )
    (picture,) = result.validation_pictures
    assert Image.open(picture).convert("L").getextrema() == (0, 0)  # all black: nothing of it kept


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"token": "two words"}, "one word"),
        ({"vectors": 0}, "--vectors"),
        ({"init": "   "}, "--init"),
        ({"validation_every": 5}, "--validation-prompt"),
        ({"resolution": 70}, "multiple of 4"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, tiny_sd, pictures, changes, message):
    with pytest.raises(FairytaleError, match=message):
        train(quick(tmp_path, tiny_sd, pictures, **changes))


# --------------------------------------------------------------------------- micro-batches in one UNet call


def test_fused_micro_batches_learn_what_step_by_step_ones_do(tmp_path, tiny_sd, pictures, monkeypatch):
    """One UNet call for a step's micro-batches draws the same noise, gives the same loss and moves the
    token the same way as one call per micro-batch (up to float rounding of the bigger batch)."""
    from diffusers import UNet2DConditionModel

    calls = []
    forward = UNet2DConditionModel.forward

    def counted(self, sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counted)
    runs = {}
    for fused in (True, False):
        calls.clear()
        (tmp_path / str(fused)).mkdir()
        config = quick(
            tmp_path, tiny_sd, pictures, steps=3, grad_accum=3, batch_size=2, fuse_accumulation=fused,
            output=tmp_path / str(fused) / "t.safetensors",
        )  # fmt: skip
        runs[fused] = (train(config), list(calls))
    (fused, fused_calls), (separate, separate_calls) = runs[True], runs[False]
    assert fused_calls == [6] * 3 and separate_calls == [2] * 9
    assert fused.losses == pytest.approx(separate.losses, rel=1e-5)
    assert torch.allclose(
        read_embedding(fused.output).vectors, read_embedding(separate.output).vectors, atol=1e-6
    )


def test_micro_batches_are_fused_on_the_cpu_only_unless_told():
    config = TrainingConfig(kind="style", data=Path("d"), token="<t>", output=Path("t.safetensors"))
    assert config.fuses_accumulation("cpu") and not config.fuses_accumulation("cuda")
    assert replace(config, fuse_accumulation=True).fuses_accumulation("cuda")
    assert not replace(config, fuse_accumulation=False).fuses_accumulation("cpu")


def test_compile_unet_trains_through_the_compiled_unet(tmp_path, tiny_sd, pictures, monkeypatch):
    from diffusers import UNet2DConditionModel

    compiled = []

    def fake_compile(module):
        compiled.append(module)

        def call(*args, **kwargs):
            compiled.append("called")
            return module(*args, **kwargs)

        return call

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = train(quick(tmp_path, tiny_sd, pictures, steps=2, compile_unet=True))
    assert isinstance(compiled[0], UNet2DConditionModel) and compiled[1:] == ["called"] * 2
    assert len(result.losses) == 2
