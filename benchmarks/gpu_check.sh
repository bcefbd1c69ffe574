#!/usr/bin/env bash
# gpu_check.sh: exercise robustfair's CUDA paths once and print how long each took.
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]          # default WORK_DIR: a fresh temporary folder
#
# What it runs (synthetic data at CIFAR shape, 10 classes of 3x32x32 Gaussian blobs: nothing is
# downloaded), in about 3-5 minutes on one recent GPU, under 8 by design:
#   1. one PGD-AT epoch (PGD-10, eps 8/255) of preact_resnet18 through `robustfair train`
#      (AMP and channels_last are the CUDA defaults), then the same epoch with --compile;
#   2. a PGD-20 audit of that model: full precision, the model as it is (--no-optimize: no
#      channels_last, no BatchNorm folding), AMP (every success confirmed in full precision;
#      its robust accuracy is compared with the full-precision one), --batch-size auto, and
#      --compile;
#   3. one epoch of DDP over NCCL with torchrun on every visible GPU (skipped, with a message,
#      when there is only one);
#   4. robustfair's `autoattack` against the official AutoAttack (version standard, same points
#      and batch) on an architecture robustfair never defined, at CIFAR size:
#      benchmarks/bench_unseen.py on RobustBench's PreActResNet18 (or timm's resnet18 where
#      RobustBench is missing), briefly PGD-AT-trained on the GPU first (skipped, with a message,
#      when neither library, the official AutoAttack or mlxtend is installed).
# Environment: PYTHON (default: python), GPU_CHECK_TRAIN_PER_CLASS (default 1000 training
# points per class), GPU_CHECK_TEST_PER_CLASS (default 500 audit points per class),
# GPU_CHECK_STEP_LIMIT (default 300: seconds before a step counts as hung and the check fails),
# GPU_CHECK_UNSEEN_N (default 500 points for step 4).
# Exit status: 0 when every step ran, 1 with a one-line reason otherwise (no CUDA device first).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export ROBUSTFAIR_NO_DOWNLOAD=1
TRAIN_PER_CLASS="${GPU_CHECK_TRAIN_PER_CLASS:-1000}"
LIMIT="${GPU_CHECK_STEP_LIMIT:-300}"  # seconds any one step may take before it counts as hung
TEST_PER_CLASS="${GPU_CHECK_TEST_PER_CLASS:-500}"
UNSEEN_N="${GPU_CHECK_UNSEEN_N:-500}"

die() { echo "gpu_check: $*" >&2; exit 1; }

# ---------------------------------------------------------------- fail fast without a GPU
command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' on PATH (set PYTHON=...)"
"$PYTHON" -c "import torch, robustfair" 2>/dev/null \
    || die "cannot import torch and robustfair with $PYTHON (PYTHONPATH=$PYTHONPATH)"
NGPU="$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")"
if [ "$NGPU" -lt 1 ]; then
    die "no CUDA device: torch.cuda.is_available() is False (torch $("$PYTHON" -c 'import torch; print(torch.__version__)')); run this on a machine with an NVIDIA GPU and a CUDA build of torch"
fi

WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK"
SUMMARY="$WORK/timings.txt"
: > "$SUMMARY"
echo "gpu_check: $NGPU GPU(s): $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))'); torch $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'); work dir $WORK"

# timed LABEL COMMAND...: run COMMAND, then print and record its wall time
timed() {
    local label="$1"; shift
    local t0 t1
    t0="$(date +%s.%N)"
    "$@" || die "step '$label' failed (exit $?: 124 is the step limit); its output is above"
    t1="$(date +%s.%N)"
    printf '%-58s %8.1f s\n' "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        | tee -a "$SUMMARY"
}

DATA=(--dataset gaussian --dataset-option image_size=32 --dataset-option channels=3
      --dataset-option num_classes=10 --dataset-option spread=0.15
      --dataset-option "n_train_per_class=$TRAIN_PER_CLASS"
      --dataset-option "n_test_per_class=$TEST_PER_CLASS")
TRAIN=(train "${DATA[@]}" --model preact_resnet18 --objective pgd_at --eps 8/255 --steps 10
       --epochs 1 --batch-size 128 --optimizer sgd --lr 0.05 --eval-steps 10 --no-progress)

# ---------------------------------------------------------------- 1. training
timed "train: 1 PGD-AT epoch (AMP, channels_last)" \
    timeout "$LIMIT" "$PYTHON" -m robustfair "${TRAIN[@]}" --device cuda --out "$WORK/at"
timed "train: 1 PGD-AT epoch with --compile" \
    timeout "$LIMIT" "$PYTHON" -m robustfair "${TRAIN[@]}" --device cuda --compile --out "$WORK/at_compiled"

# ---------------------------------------------------------------- 2. audits
audit_variants() {
    timeout "$LIMIT" "$PYTHON" - "$WORK/at/model.safetensors" "$TEST_PER_CLASS" "$SUMMARY" <<'PY'
import sys
import time

import torch

from robustfair import audit
from robustfair.attacks import build_attack
from robustfair.data import load_dataset
from robustfair.models import load_model

checkpoint, per_class, summary = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ds = load_dataset("gaussian", image_size=32, channels=3, num_classes=10, spread=0.15,
                  n_train_per_class=10, n_test_per_class=per_class)
x, y = ds.test.x, ds.test.y
model = load_model(checkpoint, device="cuda")
pgd = lambda: [build_attack("pgd", eps=8 / 255, steps=20)]  # noqa: E731

def run(label, **options):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    report = audit(model, x, y, attacks=pgd(), progress=False, device="cuda", **options)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    overall = report.overall
    line = (f"{'audit: PGD-20 ' + label:<58} {seconds:8.1f} s   clean {overall['clean_acc']:.1%}"
            f"  robust {overall['robust_acc']:.1%}  ({len(y)} points)")
    print(line, flush=True)
    with open(summary, "a") as f:
        f.write(line + "\n")
    return overall["robust_acc"]

audit(model, x[:256], y[:256], attacks=pgd(), progress=False, device="cuda")  # warm-up (cuDNN)
full = run("full precision (channels_last, BN folded)")
run("--no-optimize (the model as it is)", optimize=False)
amp = run("--amp (successes confirmed in fp32)", amp=True)
run("--batch-size auto", batch_size="auto")
run("--compile", compile=True)
gap = amp - full
if full == 0:
    verdict = "uninformative: nothing is robust in full precision either"
else:
    verdict = "ok" if gap <= 0.01 else "WEAKER: AMP misses adversarial examples full precision finds"
print(f"AMP robust accuracy minus full precision: {gap:+.2%} ({verdict})")
PY
}
timed "audit: all variants above, together" audit_variants

# ---------------------------------------------------------------- 3. DDP over NCCL
if [ "$NGPU" -lt 2 ]; then
    echo "gpu_check: DDP skipped: only one GPU is visible (torchrun with NCCL needs two or more)" \
        | tee -a "$SUMMARY"
else
    "$PYTHON" -c "import sys, torch.distributed as d; sys.exit(0 if d.is_nccl_available() else 1)" \
        || die "this torch build has no NCCL, so DDP on CUDA cannot run"
    timed "train: 1 PGD-AT epoch, DDP over NCCL on $NGPU GPUs" \
        timeout "$LIMIT" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" \
        -m robustfair "${TRAIN[@]}" --out "$WORK/ddp"
fi

# ---------------------------------------------------------------- 4. AutoAttack, unseen architecture
UNSEEN=""
if "$PYTHON" -c "import pyautoattack, mlxtend, robustbench" >/dev/null 2>&1; then
    UNSEEN=rb_preact18
elif "$PYTHON" -c "import pyautoattack, mlxtend, timm" >/dev/null 2>&1; then
    UNSEEN=timm_resnet18
fi
if [ -z "$UNSEEN" ]; then
    echo "gpu_check: autoattack vs official skipped: needs pyautoattack, mlxtend and robustbench or timm" \
        | tee -a "$SUMMARY"
else
    # the model is trained on the GPU into the work dir (no download, nothing outside it)
    timed "autoattack vs official AutoAttack, $UNSEEN ($UNSEEN_N points)" \
        env BENCH_CACHE="$WORK/bench-cache" timeout "$LIMIT" "$PYTHON" "$ROOT/benchmarks/bench_unseen.py" \
        --models "$UNSEEN" --n "$UNSEEN_N" --device cuda --out "$WORK/unseen.md"
    cat "$WORK/unseen.md" >> "$SUMMARY"
fi

echo
echo "gpu_check: all steps ran; timings (also in $SUMMARY):"
cat "$SUMMARY"
