"""Benchmark: plan a 1,500-word story with full-size QA and NLI models on the CPU.

    python -m tests.benchmarks.bench_plan [--story PATH] [--keep DIR]

QA and NLI have the architectures of the defaults (RoBERTa-base SQuAD2, RoBERTa-large MNLI),
built from the configs in ``tests/benchmarks/configs`` with random weights (compute does not
depend on the values), saved to disk and loaded through the registry like real models. The
tokenizer is the locally trained byte-level BPE of the tests (its smaller vocabulary splits
words into more tokens than RoBERTa's, so sequences are if anything longer than real). NER is
the tiny fixture-trained flair tagger: a full-size flair model needs its downloaded embeddings.

Prints the wall time of loading and of planning, and the forward passes each model ran.
Bar (issue 2): planning ≤ 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
DEFAULT_STORY = Path(__file__).parent.parent / "data" / "stories" / "pip_long_journey.txt"


def build_full_size(outdir: Path) -> dict[str, Path]:
    """Random-weight QA and NLI models of the default architectures, plus the tiny NER."""
    import torch
    from transformers import RobertaConfig, RobertaForQuestionAnswering, RobertaForSequenceClassification

    from tests.tiny_models.nlp import build_ner
    from tests.tiny_models.tokenizers import build_roberta_tokenizer

    paths = {"ner": build_ner(outdir / "ner")}
    for role, name, model_cls in (
        ("qa", "roberta-base-squad2", RobertaForQuestionAnswering),
        ("nli", "roberta-large-mnli", RobertaForSequenceClassification),
    ):
        settings = {k: v for k, v in json.loads((CONFIGS / f"{name}.json").read_text()).items() if not k.startswith("_")}
        settings.pop("architectures", None)
        torch.manual_seed(0)
        model = model_cls(RobertaConfig(**settings))
        build_roberta_tokenizer(outdir / role)
        model.save_pretrained(outdir / role, safe_serialization=True)
        paths[role] = outdir / role
    return paths


def count_forwards(module) -> dict[str, float]:
    """Count forward calls, rows (batch items), tokens and seconds spent in a torch module."""
    counts = {"forward_passes": 0, "rows": 0, "tokens": 0, "seconds": 0.0}

    def before(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counts["forward_passes"] += 1
        counts["rows"] += int(ids.shape[0])
        counts["tokens"] += int(ids.numel())
        counts["started"] = time.perf_counter()

    def after(_module, _args, _kwargs, _output):
        counts["seconds"] += time.perf_counter() - counts.pop("started")

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--story", type=Path, default=DEFAULT_STORY)
    parser.add_argument("--keep", type=Path, help="build the models here (and reuse them on later runs)")
    args = parser.parse_args()

    import torch

    from fairytale.nlp import load_planner_models
    from fairytale.planner import PlanStats, plan_story
    from fairytale.prompts import clip_token_counter
    from tests.tiny_models.tokenizers import build_clip_tokenizer

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-plan-"))
    if not (workdir / "nli" / "model.safetensors").exists():
        print(f"building full-size random models in {workdir} …", flush=True)
        build_full_size(workdir)
    count_tokens = clip_token_counter(build_clip_tokenizer(workdir / "clip-tokenizer"))

    started = time.perf_counter()
    models = load_planner_models(str(workdir / "ner"), str(workdir / "qa"), str(workdir / "nli"), device="cpu")
    loaded = time.perf_counter()
    qa_counts = count_forwards(models.reader.pipe.model)
    nli_counts = count_forwards(models.judge.pipe.model)
    stats = PlanStats()
    plan = plan_story(args.story, models=models, count_tokens=count_tokens, seed=0, stats=stats)
    planned = time.perf_counter()

    words = len(" ".join(p.text for p in plan.pages).split())
    print(f"story: {args.story.name}, {words} words → {len(plan.pages)} pages, {len(plan.characters)} characters")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"load models: {loaded - started:6.1f} s")
    print(f"plan:        {planned - loaded:6.1f} s   (bar: ≤ 60 s)")
    for label, counts, asked, unique in (
        ("QA  (RoBERTa-base): ", qa_counts, stats.qa_asked, stats.qa_computed),
        ("NLI (RoBERTa-large):", nli_counts, stats.nli_asked, stats.nli_computed),
    ):
        print(
            f"{label} {counts['forward_passes']:3d} forward passes, {counts['rows']:4d} rows, "
            f"{counts['tokens']:6d} tokens, {counts['seconds']:5.1f} s in the model; {asked} asked, {unique} unique"
        )


if __name__ == "__main__":
    main()
