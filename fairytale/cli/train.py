"""`fairytale train style|character`: learn a token (textual inversion) for the illustration models.

    fairytale train style --data dataset/ --token "<monkeypen-style>" -o style.safetensors
    fairytale train character --data ginger_pics/ --token "<ginger>" --init giraffe -o ginger.safetensors

The same command runs on several GPUs under ``accelerate launch``:

    accelerate launch --num_processes 2 -m fairytale train style --data dataset/ --token "<s>" -o s.safetensors
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fairytale.cli.app import plain, stderr, user_errors
from training.config import MAX_BATCH_SIZE, MAX_GRAD_ACCUM, MAX_LR, RESOLUTION_RANGE, TrainingConfig

# One source of truth for defaults: the documented ones in training.config.
_DEFAULTS = {name: spec.default for name, spec in TrainingConfig.__dataclass_fields__.items()}

train_app = typer.Typer(
    help="Learn a style or character token (textual inversion) for the illustration models.",
    no_args_is_help=True,
)


class Backend(str, Enum):
    sd14 = "sd14"
    sd21 = "sd21"


class Precision(str, Enum):
    auto = "auto"
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="The scraper's dataset folder (imagefolder: train/metadata.jsonl + pictures) or a plain folder of pictures.",
    ),
]
TokenOpt = Annotated[
    str, typer.Option("--token", help='The new word, e.g. "<ginger>"; use it in prompts afterwards.')
]
OutputOpt = Annotated[
    Path,
    typer.Option(
        "--output", "-o", help="Where the token goes (diffusers layout); an A1111 copy is written beside it."
    ),
]
InitOpt = Annotated[
    str | None,
    typer.Option(
        "--init", help="Word(s) the token starts from (e.g. giraffe). Default: 'illustration' / 'character'."
    ),
]
BackendOpt = Annotated[
    Backend, typer.Option("--backend", help="Base model family: sd14 (SD 1.x) or sd21 (SD 2.x).")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Base model hub id or local folder (default: the backend's model)."),
]
StepsOpt = Annotated[int, typer.Option("--steps", help="Optimizer steps.", min=1)]
VectorsOpt = Annotated[
    int, typer.Option("--vectors", help="Vectors per token (more = more capacity).", min=1)
]
LrOpt = Annotated[
    float,
    typer.Option(
        "--lr",
        help=f"Learning rate per picture (scaled by the effective batch); above 0, at most {MAX_LR:g}.",
    ),
]
ScaleLrOpt = Annotated[
    bool, typer.Option("--scale-lr/--no-scale-lr", help="Multiply --lr by batch × accumulation × GPUs.")
]
WarmupOpt = Annotated[
    int, typer.Option("--warmup-steps", help="Linear warm-up steps before the constant rate.", min=0)
]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        help=f"Pictures per micro-batch per GPU: 1-{MAX_BATCH_SIZE}, and at most the number of pictures.",
        min=1,
    ),
]
AccumOpt = Annotated[
    int, typer.Option("--grad-accum", help=f"Micro-batches per optimizer step (1-{MAX_GRAD_ACCUM}).", min=1)
]
ResolutionOpt = Annotated[
    int | None,
    typer.Option(
        "--resolution",
        help=f"Training size in pixels, {RESOLUTION_RANGE[0]}-{RESOLUTION_RANGE[1]} and a multiple of the "
        "model's (default: the model's own, 512 for SD 1.4).",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice (recorded in the output).")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--mixed-precision", help="auto: bf16 or fp16 on a GPU, none on CPU. The token itself stays float32."
    ),
]
CheckpointingOpt = Annotated[
    bool,
    typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations to save GPU memory (~25% slower).",
    ),
]
FuseOpt = Annotated[
    bool | None,
    typer.Option(
        "--fuse-accumulation/--no-fuse-accumulation",
        help="One UNet call for all of a step's micro-batches: same result, faster, more memory "
        "(default: on for CPU, off on a GPU).",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile-unet", help="torch.compile the UNet (for CUDA GPUs; the first steps compile it)."
    ),
]
Adam8bitOpt = Annotated[
    bool, typer.Option("--adam-8bit", help="8-bit AdamW from bitsandbytes (CUDA; extra 'bnb').")
]
FlipOpt = Annotated[
    bool | None,
    typer.Option(
        "--flip/--no-flip", help="Mirror-image augmentation (default: on for style, off for character)."
    ),
]
CropOpt = Annotated[
    bool | None,
    typer.Option(
        "--random-crop/--no-random-crop",
        help="Random-crop augmentation (default: on for style, off for character).",
    ),
]
CaptionsOpt = Annotated[
    bool, typer.Option("--captions/--no-captions", help="Use the dataset's captions in style prompts.")
]
CheckpointEveryOpt = Annotated[
    int, typer.Option("--checkpoint-every", help="Save a resumable checkpoint every N steps.", min=1)
]
CheckpointDirOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint-dir", help="Checkpoint folder (default: OUTPUT name + .checkpoints)."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the last checkpoint of the same run.")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Overwrite the output and start over from any old checkpoints.")
]
ValidationPromptOpt = Annotated[
    str | None,
    typer.Option("--validation-prompt", help='Prompt painted during training, e.g. "a picture of <ginger>".'),
]
ValidationEveryOpt = Annotated[
    int, typer.Option("--validation-every", help="Paint it every N steps (0: never).", min=0)
]
SafetyOpt = Annotated[
    str | None,
    typer.Option("--safety-model", help="Safety checker for validation pictures of models that ship none."),
]


def _command(kind: str, summary: str):
    @user_errors
    def command(
        data: DataOpt,
        token: TokenOpt,
        output: OutputOpt,
        init: InitOpt = None,
        backend: BackendOpt = Backend.sd14,
        model: ModelOpt = None,
        steps: StepsOpt = _DEFAULTS["steps"],
        vectors: VectorsOpt = _DEFAULTS["vectors"],
        lr: LrOpt = _DEFAULTS["lr"],
        scale_lr: ScaleLrOpt = _DEFAULTS["scale_lr"],
        warmup_steps: WarmupOpt = _DEFAULTS["warmup_steps"],
        batch_size: BatchOpt = _DEFAULTS["batch_size"],
        grad_accum: AccumOpt = _DEFAULTS["grad_accum"],
        resolution: ResolutionOpt = None,
        seed: SeedOpt = _DEFAULTS["seed"],
        mixed_precision: PrecisionOpt = Precision.auto,
        gradient_checkpointing: CheckpointingOpt = _DEFAULTS["gradient_checkpointing"],
        adam_8bit: Adam8bitOpt = _DEFAULTS["adam_8bit"],
        fuse_accumulation: FuseOpt = None,
        compile_unet: CompileOpt = False,
        flip: FlipOpt = None,
        random_crop: CropOpt = None,
        captions: CaptionsOpt = _DEFAULTS["captions"],
        checkpoint_every: CheckpointEveryOpt = _DEFAULTS["checkpoint_every"],
        checkpoint_dir: CheckpointDirOpt = None,
        resume: ResumeOpt = False,
        force: ForceOpt = False,
        validation_prompt: ValidationPromptOpt = None,
        validation_every: ValidationEveryOpt = _DEFAULTS["validation_every"],
        safety_model: SafetyOpt = None,
    ) -> None:
        from training import TrainingConfig, train

        config = TrainingConfig(
            kind=kind,  # type: ignore[arg-type]
            data=data,
            token=token,
            output=output,
            init=init,
            backend=backend.value,
            model=model,
            vectors=vectors,
            steps=steps,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            scale_lr=scale_lr,
            warmup_steps=warmup_steps,
            resolution=resolution,
            flip=flip,
            random_crop=random_crop,
            captions=captions,
            mixed_precision=mixed_precision.value,  # type: ignore[arg-type]
            gradient_checkpointing=gradient_checkpointing,
            adam_8bit=adam_8bit,
            fuse_accumulation=fuse_accumulation,
            compile_unet=compile_unet,
            seed=seed,
            checkpoint_every=checkpoint_every,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            force=force,
            validation_prompt=validation_prompt,
            validation_every=validation_every,
            safety_model=safety_model,
        )
        # Impossible settings, then a missing or empty --data, are said before the base
        # model is checked (or fetched) or anything is loaded.
        config.check()
        console = stderr()
        from fairytale.errors import FollowerError
        from fairytale.model_check import ensure, train_needs
        from training.data import find_training_images

        config.check_pictures(len(find_training_images(data)))
        ensure(train_needs(backend.value, model, safety_model, validation_prompt is not None), console)
        from training.textual_inversion import TrainingInterrupted

        try:
            result = train(config, console=console)
        except FollowerError:  # under accelerate launch: the main process has said what went wrong
            raise typer.Exit(code=1) from None
        except TrainingInterrupted:  # Ctrl-C: said as every command says it, not as an error
            from fairytale.errors import Interrupted
            from training.checkpoint import checkpoint_dir_for, latest_checkpoint

            last = latest_checkpoint(config.checkpoint_dir or checkpoint_dir_for(config.output))
            if last is None:
                raise Interrupted("no checkpoint had been written yet", "run the same command again to start over") from None
            raise Interrupted(f"the last checkpoint ({last}) is kept", "add --resume to the same command to go on") from None
        if result.written:  # the main process of a multi-GPU run
            from rich.table import Table

            table = Table(title=f"Trained {plain(result.token)}", show_header=False)
            for name, value in result.summary():
                table.add_row(name, plain(value))
            console.print(table)

    command.__doc__ = summary
    return command


train_app.command("style")(
    _command(
        "style",
        "Learn a style token from the scraper's dataset (or any folder of pages).\n\n"
        'Example: fairytale train style --data dataset/ --token "<monkeypen-style>" -o style.safetensors',
    )
)
train_app.command("character")(
    _command(
        "character",
        "Learn a character token from a folder of 3–20 pictures of it.\n\n"
        'Example: fairytale train character --data ginger_pics/ --token "<ginger>" --init giraffe -o ginger.safetensors',
    )
)


def register(app: typer.Typer) -> None:
    """Add `fairytale train` to ``app``."""
    app.add_typer(train_app, name="train")
