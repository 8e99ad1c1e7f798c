"""Tiny diffusers pipelines and CLIP models, saved in the layout of the real hub repos.

Each builder seeds torch before every component (as diffusers' own tests do), so the weights,
and therefore every test image, are the same on every run. Sizes are the smallest that keep
each architecture's structure (cross-attention, up/down blocks, v-prediction, projection class
embeddings), so a 3-page book paints in a second or two on a CPU.

Text-encoder widths stand in for the real families: SD 1.x-like models use a 32-wide CLIP text
encoder with ``quick_gelu`` (CLIP ViT-L's activation), SD 2.x-like models a 64-wide one with
``gelu`` (OpenCLIP-H's), so an embedding trained for one is refused by the other, as with the
real 768/1024-d encoders.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models.tokenizers import build_clip_tokenizer

SD1_TEXT_WIDTH = 32
SD2_TEXT_WIDTH = 64
IMAGE_EMBED_DIM = 32  # CLIP vision projection width of the image-conditioned models
VISION_IMAGE_SIZE = 32


def _seed() -> None:
    import torch

    torch.manual_seed(0)


def sd1_scheduler():
    """Scheduler config of SD v1.4 (PNDM, scaled-linear betas, epsilon prediction)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )


def sd2_scheduler():
    """Scheduler config of SD 2.1 (DDIM, v-prediction)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        num_train_timesteps=1000,
        prediction_type="v_prediction",
    )


def text_encoder(width: int, activation: str):
    from transformers import CLIPTextConfig, CLIPTextModel

    _seed()
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=activation,
        projection_dim=width,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def vision_config(projection_dim: int = IMAGE_EMBED_DIM):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=VISION_IMAGE_SIZE,
        patch_size=8,
        projection_dim=projection_dim,
    )


def image_processor():
    """CLIP preprocessing at the tiny vision size (the real one works at 224)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": VISION_IMAGE_SIZE},
        crop_size={"height": VISION_IMAGE_SIZE, "width": VISION_IMAGE_SIZE},
        do_resize=True,
        do_center_crop=True,
        do_normalize=True,
    )


def image_encoder():
    from transformers import CLIPVisionModelWithProjection

    _seed()
    return CLIPVisionModelWithProjection(vision_config())


def vae(blocks: int = 2):
    """A tiny KL autoencoder; ``blocks`` sets the downsampling (2 blocks → ×2, 3 → ×4)."""
    from diffusers import AutoencoderKL

    _seed()
    return AutoencoderKL(
        block_out_channels=[16] * (blocks - 1) + [32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def unet(cross_attention_dim: int, sample_size: int = 32, sd2: bool = False, **extra):
    from diffusers import UNet2DConditionModel

    _seed()
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=extra.pop("in_channels", 4),
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        use_linear_projection=sd2,
        **extra,
    )


def safety_checker():
    """A tiny safety checker. Its concept embeddings start at ones, so nothing is flagged
    (cosine similarity < 1 never beats the threshold); see :func:`make_checker_flag_everything`."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig

    _seed()
    config = CLIPConfig(
        text_config=CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4).to_dict(),
        vision_config=vision_config(projection_dim=32).to_dict(),
        projection_dim=32,
    )
    return StableDiffusionSafetyChecker(config)


def make_checker_flag_everything(checker) -> None:
    """Lower every concept threshold below any cosine similarity, so every image is flagged."""
    import torch

    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
        checker.special_care_embeds_weights.fill_(-2.0)


# --------------------------------------------------------------------------- pipelines


def build_sd(outdir: Path) -> Path:
    """SD v1.x layout: CLIP text encoder + tokenizer, UNet, VAE, PNDM, safety checker."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae(),
        text_encoder=text_encoder(SD1_TEXT_WIDTH, "quick_gelu"),
        tokenizer=build_clip_tokenizer(outdir / "_build"),
        unet=unet(SD1_TEXT_WIDTH),
        scheduler=sd1_scheduler(),
        safety_checker=safety_checker(),
        feature_extractor=image_processor(),
        requires_safety_checker=True,
    )
    return _save(pipe, outdir)


def build_sd2(outdir: Path) -> Path:
    """SD 2.1 layout: v-prediction, wider gelu text encoder, ``!`` padding, no safety checker
    in the repo (as on the hub; the product loads the standalone one)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae(),
        text_encoder=text_encoder(SD2_TEXT_WIDTH, "gelu"),
        tokenizer=build_clip_tokenizer(outdir / "_build", pad_token="!"),
        unet=unet(SD2_TEXT_WIDTH, sample_size=48, sd2=True),
        scheduler=sd2_scheduler(),
        safety_checker=None,
        feature_extractor=image_processor(),
        requires_safety_checker=False,
    )
    return _save(pipe, outdir)


def build_variations(outdir: Path) -> Path:
    """lambdalabs image-variations layout: CLIP image encoder instead of a text encoder."""
    from diffusers import StableDiffusionImageVariationPipeline

    pipe = StableDiffusionImageVariationPipeline(
        vae=vae(),
        image_encoder=image_encoder(),
        unet=unet(IMAGE_EMBED_DIM),
        scheduler=sd1_scheduler(),
        safety_checker=safety_checker(),
        feature_extractor=image_processor(),
        requires_safety_checker=True,
    )
    return _save(pipe, outdir)


def build_unclip(outdir: Path) -> Path:
    """SD 2.1 unCLIP (img2img) layout: image embedding + noise level as class conditioning."""
    from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    _seed()
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=IMAGE_EMBED_DIM)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=image_processor(),
        image_encoder=image_encoder(),
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=build_clip_tokenizer(outdir / "_build", pad_token="!"),
        text_encoder=text_encoder(SD2_TEXT_WIDTH, "gelu"),
        unet=unet(
            SD2_TEXT_WIDTH,
            sd2=True,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=IMAGE_EMBED_DIM * 2,
        ),
        scheduler=sd2_scheduler(),
        vae=vae(),
    )
    return _save(pipe, outdir)


def build_upscaler(outdir: Path) -> Path:
    """SD x4 upscaler layout: 7-channel UNet (latents + low-res image), ×4 VAE."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    pipe = StableDiffusionUpscalePipeline(
        vae=vae(blocks=3),
        text_encoder=text_encoder(SD2_TEXT_WIDTH, "gelu"),
        tokenizer=build_clip_tokenizer(outdir / "_build", pad_token="!"),
        unet=unet(SD2_TEXT_WIDTH, sd2=True, in_channels=7, num_class_embeds=100),
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.vae.register_to_config(scaling_factor=0.08333)
    return _save(pipe, outdir)


def build_safety_checker(outdir: Path) -> Path:
    """The standalone safety checker repo layout (model + preprocessor config)."""
    outdir.mkdir(parents=True, exist_ok=True)
    safety_checker().save_pretrained(outdir, safe_serialization=True)
    image_processor().save_pretrained(outdir)
    return outdir


def build_clip(outdir: Path) -> Path:
    """A tiny CLIPModel + CLIPProcessor (real CLIP vocabulary) for evaluation tests."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTextConfig

    _seed()
    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
        ).to_dict(),
        vision_config=vision_config(projection_dim=32).to_dict(),
        projection_dim=32,
    )
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=image_processor(), tokenizer=build_clip_tokenizer(outdir / "_build"))
    model.save_pretrained(outdir, safe_serialization=True)
    processor.save_pretrained(outdir)
    _drop_build(outdir)
    return outdir


def _drop_build(outdir: Path) -> None:
    import shutil

    shutil.rmtree(outdir / "_build", ignore_errors=True)


def _save(pipe, outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(outdir, safe_serialization=True)
    _drop_build(outdir)
    return outdir


# --------------------------------------------------------------------------- drafts and previews

#: the layers the LCM-LoRA for SD 1.5 adapts (attention, feed-forward, resnet convs, timestep projection)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "time_emb_proj"]


def build_lcm_lora(outdir: Path) -> Path:
    """A LoRA for the tiny SD 1.x UNet in the hub layout of ``latent-consistency/lcm-lora-sdv1-5``
    (``pytorch_lora_weights.safetensors``, written by diffusers' own ``save_lora_weights``).
    Random, not distilled: its up-projections are non-zero so that it changes every picture."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = unet(SD1_TEXT_WIDTH)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    outdir.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        outdir, unet_lora_layers=get_peft_model_state_dict(model), safe_serialization=True
    )
    return outdir


def build_taesd(outdir: Path) -> Path:
    """A tiny ``AutoencoderTiny`` (the layout of ``madebyollin/taesd``) for 4-channel latents,
    upsampling x2 like the tiny SD's VAE."""
    from diffusers import AutoencoderTiny

    _seed()
    model = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    outdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(outdir, safe_serialization=True)
    return outdir


def build_ip_adapter(outdir: Path) -> Path:
    """IP-Adapter for the tiny SD 1.x UNet, in the layout of the hub repo ``h94/IP-Adapter``:
    ``models/ip-adapter_sd15.safetensors`` (``image_proj.*``: the image projection to 4 extra
    tokens; ``ip_adapter.N.to_k_ip/to_v_ip``: keys and values of those tokens for every
    cross-attention layer, numbered as diffusers' loader reads them) and its CLIP image encoder
    in ``models/image_encoder``."""
    import torch
    from safetensors.torch import save_file

    tokens = 4
    model = unet(SD1_TEXT_WIDTH)
    _seed()
    tensors = {
        "image_proj.proj.weight": torch.randn(tokens * SD1_TEXT_WIDTH, IMAGE_EMBED_DIM) * 0.2,
        "image_proj.proj.bias": torch.randn(tokens * SD1_TEXT_WIDTH) * 0.1,
        "image_proj.norm.weight": torch.ones(SD1_TEXT_WIDTH),
        "image_proj.norm.bias": torch.zeros(SD1_TEXT_WIDTH),
    }
    key_id = 1  # diffusers numbers the cross-attention layers 1, 3, 5, … (the original's layout)
    for name in model.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = model.get_submodule(name.rsplit(".processor", 1)[0])
        width = block.to_k.out_features
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(width, SD1_TEXT_WIDTH) * 0.3
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(width, SD1_TEXT_WIDTH) * 0.3
        key_id += 2
    folder = Path(outdir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "ip-adapter_sd15.safetensors"))
    image_encoder().save_pretrained(folder / "image_encoder", safe_serialization=True)
    return Path(outdir)
