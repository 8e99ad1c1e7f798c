#!/usr/bin/env bash
# Every GPU check the issues name, as one prepared script for the lent GPU machine (no network;
# the wheels it lacks come from tests/benchmarks/gpu_wheels.sh, carried as .whl):
#
#   run(command="bash tests/benchmarks/gpu_checks.sh smoke bench", carry=[".whl"], timeout_s=590)
#   run(command="bash tests/benchmarks/gpu_checks.sh compile train", carry=[".whl"], timeout_s=590)
#   run(command="bash tests/benchmarks/gpu_checks.sh modes", carry=[".whl"], timeout_s=420)
#
# Sections (all by default, in this order; each under its own time limit, a failed one is said
# and the next runs; logs go to $OUT, or ./gpu-logs without one):
#   smoke    the CLI on the tiny models, on CUDA in fp16: a render, a draft render, --low-vram
#            (model offload), each a real PDF; then the same plan at --batch-size 1 and 4
#   bench    full-size random-weight SD 1.4, 512², fp16, 25 steps, 8 pages: ours vs the plain
#            per-page loop (pages/min, peak GPU memory), drafts (4 LCM steps) and previews
#   compile  the same final paint with --compile (torch.compile of our UNet), one round
#   train    the trainer's peak GPU memory and steps/s, SD 1.4 size, 512², fp16 (bar ≤ 6 GiB)
#   modes    every render mode and option on the tiny models in the device's default precision:
#            the paths CPU tests cannot reach (model offload moving the modules our hooks use,
#            half-precision side models, --compile with our attention processors, the trainer's
#            fp16); each a real PDF or a line "FAILED <name>: <last line of its log>"; one
#            failure does not stop the others
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
[ ${#sections[@]} -eq 0 ] && sections=(smoke modes bench compile train)

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

modes() {
    local models="$work/tiny" book="$work/modes" failed=0
    rm -rf "$book" && mkdir -p "$book"
    local role roles=()
    for role in sd sd2 unclip lcm_lora taesd ip_adapter upscaler safety_checker clip; do
        [ -d "$models/$role" ] || roles+=("$role")
    done
    [ ${#roles[@]} -eq 0 ] || "$py" -m tests.tiny_models "$models" "${roles[@]}" >/dev/null || return 1
    "$py" -c "from tests.render_support import make_plan, write_plan; write_plan('$book', make_plan(3))" || return 1
    local sd=(--model "$models/sd" --device "$device" --steps 3 --width 64 --height 64)
    local ip=(--adapter-model "$models/ip_adapter" --adapter-encoder "$models/ip_adapter")
    local safety=(--safety-model "$models/safety_checker")
    try() {  # NAME ARGS...: one render of the plan (in its own folder), said if it fails
        local name=$1
        shift
        mkdir -p "$book/$name" && cp "$book/plan.json" "$book/$name/plan.json"
        if ! "$py" -m fairytale render "$book/$name/plan.json" -o "$book/$name/b.pdf" --quiet "$@" >"$book/$name.log" 2>&1; then
            echo "FAILED $name: $(grep -v '^\s*$' "$book/$name.log" | tail -n 1)"
            failed=$((failed + 1))
        fi
    }
    try adapter "${sd[@]}" --consistency adapter "${ip[@]}"  # the sd14 default
    try adapter-lowvram "${sd[@]}" --consistency adapter "${ip[@]}" --low-vram  # IP-Adapter under offload
    try adapter-attention-lowvram "${sd[@]}" --consistency adapter+attention "${ip[@]}" --low-vram
    try draft-lowvram "${sd[@]}" --consistency seed --draft --draft-lora "$models/lcm_lora" --low-vram
    try drift-lowvram "${sd[@]}" --consistency adapter "${ip[@]}" --drift-check 99 --clip-model "$models/clip" --low-vram
    try print "${sd[@]}" --consistency seed --print --upscaler-model "$models/upscaler"  # the x4 upscaler in fp16
    try sd21 --backend sd21 --model "$models/sd2" --device "$device" --steps 3 "${safety[@]}"  # its default: attention
    try sd21-lowvram --backend sd21 --model "$models/sd2" --device "$device" --steps 3 "${safety[@]}" --low-vram
    # pages with and without portraits (the father has none) in one batch under offload
    try unclip-lowvram --backend unclip --model "$models/unclip" --device "$device" --steps 3 "${safety[@]}" --low-vram --batch-size 3
    try bf16 "${sd[@]}" --consistency adapter "${ip[@]}" --precision bf16
    if [ "$device" = cuda ]; then
        try compile-adapter "${sd[@]}" --consistency adapter "${ip[@]}" --compile
        try compile-attention "${sd[@]}" --consistency attention --compile
    fi
    # live previews (Python API) under offload
    "$py" - "$models" "$device" "$book/previews" <<'EOF' || failed=$((failed + 1))
import sys
from pathlib import Path

from fairytale.render import render_book
from tests.render_support import make_plan, tiny_settings, write_plan

models, device, book = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
book.mkdir(parents=True, exist_ok=True)
seen = []
settings = tiny_settings(models / "sd", device=device, low_vram=True, steps=4, preview_model=str(models / "taesd"))
render_book(write_plan(book, make_plan(2)), book / "b.pdf", settings, progress=False, on_preview=seen.append, preview_every=1)
print(f"previews under --low-vram: {len(seen)}")
EOF
    # the trainer's default precision on this device (fp16 on a T4, bf16 from Ampere), with a validation picture
    "$py" -c "import pathlib, tests.training_fixtures as f; f.character_folder(pathlib.Path('$book/pictures'))" &&
        "$py" -m fairytale train character --data "$book/pictures" --token "<zoe>" -o "$book/zoe.safetensors" \
            --model "$models/sd" --steps 2 --resolution 64 --validation-prompt "a picture of <zoe>" \
            --validation-every 1 >"$book/train.log" 2>&1 ||
        { echo "FAILED train: $(tail -n 1 "$book/train.log")"; failed=$((failed + 1)); }
    echo "modes: $failed failed"
    [ "$failed" -eq 0 ]
}

export -f smoke modes
export py device work
bench_args=(--device "$device" --full-size --models-dir "$work/full" --size 512 --pages 8 --steps 25 --skip-pdf)
for name in "${sections[@]}"; do
    case "$name" in
        smoke) section smoke 240 bash -c smoke ;;
        modes) section modes 400 bash -c modes ;;
        bench) section bench 420 "$py" tests/benchmarks/bench_render.py "${bench_args[@]}" --rounds 2 \
                   --draft --draft-rounds 2 --previews --preview-steps 25 ;;
        compile) section compile 420 "$py" tests/benchmarks/bench_render.py "${bench_args[@]}" --rounds 1 --compile ;;
        train) section train 300 "$py" -m tests.benchmarks.bench_training gpu-memory --workdir "$work/train" --steps 20 ;;
        *) echo "unknown section $name (smoke, modes, bench, compile, train)"; exit 2 ;;
    esac
done
