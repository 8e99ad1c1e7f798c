#!/usr/bin/env bash
# Fetch, on this (networked) machine, the wheels the lent GPU machine lacks, into .whl/ at the
# repository root, for `run --carry .whl` and tests/benchmarks/gpu_checks.sh.
#
# The GPU machine's image (Python 3.12) has torch, accelerate, peft, safetensors, numpy, pillow
# and rich, but no diffusers, and transformers 5 / huggingface_hub 1.x, which our pins (flair
# needs transformers < 5) refuse; its typer may predate the TyperException our CLI uses. The
# versions below are the ones CI resolves: change them together with pyproject.toml. About 26 MB,
# inside the 64 MiB a call may carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude="$(git rev-parse --git-path info/exclude)"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl \
    diffusers==0.39.0 transformers==4.57.6 huggingface_hub==0.36.2 tokenizers==0.22.2 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    reportlab==4.5.1 python-bidi==0.6.12 arabic-reshaper==3.1.0 typer==0.29.2
du -sh .whl
