#!/usr/bin/env bash
# Every GPU check the issues name, as one prepared script for the lent GPU machine (no network;
# the wheels it lacks come from tests/benchmarks/gpu_wheels.sh, carried as .whl):
#
#   run(command="bash tests/benchmarks/gpu_checks.sh smoke bench", carry=[".whl"], timeout_s=590)
#   run(command="bash tests/benchmarks/gpu_checks.sh compile train", carry=[".whl"], timeout_s=590)
#
# Sections (all by default, in this order; each under its own time limit, a failed one is said
# and the next runs; logs go to $OUT, or ./gpu-logs without one):
#   smoke    the CLI on the tiny models, on CUDA in fp16: a render, a draft render, --low-vram
#            (model offload), each a real PDF; then the same plan at --batch-size 1 and 4
#   bench    full-size random-weight SD 1.4, 512², fp16, 25 steps, 8 pages: ours vs the plain
#            per-page loop (pages/min, peak GPU memory), drafts (4 LCM steps) and previews
#   compile  the same final paint with --compile (torch.compile of our UNet), one round
#   train    the trainer's peak GPU memory and steps/s, SD 1.4 size, 512², fp16 (bar ≤ 6 GiB)
# On a machine without CUDA, GPU_CHECKS_CPU=1 runs the smoke section on the CPU (a dry run of
# this script).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-logs}"
mkdir -p "$out"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
py="${PYTHON:-python3}"
device=cuda
[ "${GPU_CHECKS_CPU:-0}" = 1 ] && device=cpu
work="${GPU_CHECKS_WORK:-/tmp/gpu-checks}"
mkdir -p "$work"
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(smoke bench compile train)

section() {  # NAME SECONDS COMMAND...: run under a limit, log to $out/NAME.log, say how it ended
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    grep -v -e 'it/s]' -e 's/it]' -e '^Loading' "$out/$name.log" | tail -n 40
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
}

"$py" - <<'EOF' 2>&1 | tee "$out/environment.log"
import torch, diffusers, transformers
print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF

smoke() {
    local models="$work/tiny" book="$work/smoke"
    rm -rf "$book" && mkdir -p "$book"
    [ -d "$models/sd" ] || "$py" -m tests.tiny_models "$models" sd lcm_lora taesd || return 1
    "$py" -c "from tests.render_support import make_plan, write_plan; write_plan('$book', make_plan(4))" || return 1
    local common=(--model "$models/sd" --consistency seed --device "$device" --steps 4 --width 64 --height 64)
    "$py" -m fairytale render "$book/plan.json" -o "$book/final.pdf" "${common[@]}" || return 1
    "$py" -m fairytale render "$book/plan.json" -o "$book/draft.pdf" "${common[@]}" --draft --draft-lora "$models/lcm_lora" || return 1
    "$py" -m fairytale render "$book/plan.json" -o "$book/low.pdf" "${common[@]}" --low-vram --pages 1,2 || return 1
    ls -l "$book"/*.pdf
    # pictures by batch size: bit-identical on CPU (tested); on CUDA in fp16 the figure is the finding
    "$py" - "$models/sd" "$device" "$work" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fairytale.render import render_book
from tests.render_support import make_plan, tiny_settings, write_plan

model, device, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
pictures = {}
for batch in (1, 4):
    folder = work / f"batch{batch}"
    folder.mkdir(parents=True, exist_ok=True)
    result = render_book(write_plan(folder, make_plan(4)), folder / "b.pdf",
                         tiny_settings(model, device=device, batch_size=batch, steps=4), progress=False)
    pictures[batch] = [np.asarray(Image.open(result.book_dir / p.image), dtype=np.int16) for p in result.pages]
worst = max(int(np.abs(a - b).max()) for a, b in zip(pictures[1], pictures[4]))
print(f"largest pixel difference, batch 1 vs batch 4 on {device}: {worst} / 255")
EOF
}

export -f smoke
export py device work
bench_args=(--device "$device" --full-size --models-dir "$work/full" --size 512 --pages 8 --steps 25 --skip-pdf)
for name in "${sections[@]}"; do
    case "$name" in
        smoke) section smoke 240 bash -c smoke ;;
        bench) section bench 420 "$py" tests/benchmarks/bench_render.py "${bench_args[@]}" --rounds 2 \
                   --draft --draft-rounds 2 --previews --preview-steps 25 ;;
        compile) section compile 420 "$py" tests/benchmarks/bench_render.py "${bench_args[@]}" --rounds 1 --compile ;;
        train) section train 300 "$py" -m tests.benchmarks.bench_training gpu-memory --workdir "$work/train" --steps 20 ;;
        *) echo "unknown section $name (smoke, bench, compile, train)"; exit 2 ;;
    esac
done
