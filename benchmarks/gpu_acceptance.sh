#!/usr/bin/env bash
# GPU acceptance in one call: versions, the CUDA tests, conv2_relu trained on the GPU, the
# step benchmark, then the chapter-6 rungs that do not fit on a CPU, all inside a time budget.
#
#   benchmarks/gpu_acceptance.sh BUDGET_SECONDS OUTDIR [--device cuda|cpu] [--quick]
#
# Runs from a source checkout without installing (PYTHONPATH=.), because a GPU machine may
# have no way to install anything. MNIST comes from $NNEXP_DATA_DIR. Every training run
# stops cleanly (resumable, `--time-limit`) before the budget ends; what is left when a step
# would start too late is skipped and said so. OUTDIR gets:
#   acceptance.log   everything printed, in order
#   runs.tar.gz      the run directories; checkpoints only for conv2_relu (for
#                    `nnexp evaluate RUN --backend numpy` elsewhere), the rest without *.npz
# `--device cpu --quick` (a few hundred images) checks the script itself on a machine
# without a GPU before any GPU time is spent on it.
set -uo pipefail

usage() { echo "usage: $0 BUDGET_SECONDS OUTDIR [--device cuda|cpu] [--quick]" >&2; exit 2; }
[[ $# -ge 2 && $1 =~ ^[0-9]+$ ]] || usage
BUDGET=$1 OUT=$2
shift 2
DEVICE=cuda QUICK=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) DEVICE=${2:-}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) usage ;;
  esac
done
[[ -n ${NNEXP_DATA_DIR:-} ]] || { echo "set NNEXP_DATA_DIR to the folder of the MNIST IDX files" >&2; exit 2; }

cd "$(dirname "$0")/.."
mkdir -p "$OUT/runs"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export NNEXP_CACHE_DIR=${NNEXP_CACHE_DIR:-$(mktemp -d)}
exec > >(tee -a "$OUT/acceptance.log") 2>&1
PY=${PYTHON:-python3}
NNEXP="$PY -m nnexp"
RESERVE=25  # seconds kept back at the end for packing the results

left() { echo $((BUDGET - SECONDS - RESERVE)); }
minutes() { $PY -c "print(max($1, 0) / 60)"; }  # seconds -> minutes for --time-limit
step() { printf '\n=== %s (t=%ds, %ds left) ===\n' "$1" "$SECONDS" "$(left)"; }
SMALL=()
if [[ $QUICK == 1 ]]; then
  SMALL=(--set data.train_size=500 --set training.epochs=2)
fi

step "machine and versions"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: not available"
nproc
$PY - <<'EOF'
import platform, sys
import numpy, torch
print("python", sys.version.split()[0], platform.machine())
print("numpy", numpy.__version__, "| torch", torch.__version__, "| torch CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"compute capability {p.major}.{p.minor}")
for name in ("typer", "rich", "yaml", "matplotlib", "scipy", "pytest"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError as exc:
        print(name, "MISSING:", exc)
EOF
$NNEXP backends

step "pytest tests/test_torch_gpu.py"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_torch_gpu.py -rs
echo "pytest exit code: $?"

# conv2_relu on the GPU: full data, 60 epochs or what the budget allows, leaving time for the
# benchmark and the cross-backend evaluation after it.
step "train conv2_relu on $DEVICE"
CONV2=$($NNEXP train configs/conv2_relu.yaml --backend torch --device "$DEVICE" "${SMALL[@]}" \
        --runs-dir "$OUT/runs" --time-limit "$(minutes $(( $(left) * 45 / 100 )))" | tail -n 1)
echo "run directory: $CONV2"
if [[ -d $CONV2 ]]; then
  cat "$CONV2/summary.json"
  step "evaluate conv2_relu's best checkpoint on torch/$DEVICE and on numpy"
  $NNEXP evaluate "$CONV2" --backend torch --device "$DEVICE"
  timeout 120 $NNEXP evaluate "$CONV2" --backend numpy
fi

step "benchmarks/bench_gpu.py"
if [[ $QUICK == 1 ]]; then
  timeout 120 $PY benchmarks/bench_gpu.py --steps 50 --cpu-steps 20 --repeats 2 --profile
else
  timeout 180 $PY benchmarks/bench_gpu.py --steps 2000 --cpu-steps 100 --repeats 5 --profile
fi

# The rungs that need a GPU, in the order they matter: the expanded data set, then the
# dropout net whose 5 seeds make the vote. Each is given what is left of the budget.
step "expand-mnist"
$NNEXP expand-mnist
RUNGS=("configs/expanded.yaml 1")
for seed in 1 2 3 4 5; do RUNGS+=("configs/dropout.yaml $seed"); done
DROPOUT=()
for rung in "${RUNGS[@]}"; do
  read -r cfg seed <<<"$rung"
  if (( $(left) < 30 )); then
    echo "skipped (budget spent): $cfg seed $seed"
    continue
  fi
  step "train $cfg seed $seed"
  dir=$($NNEXP train "$cfg" --seed "$seed" --backend torch --device "$DEVICE" "${SMALL[@]}" \
        --runs-dir "$OUT/runs" --time-limit "$(minutes "$(left)")" | tail -n 1)
  [[ -d $dir ]] && cat "$dir/summary.json"
  [[ $cfg == configs/dropout.yaml && -f $dir/checkpoints/best.npz ]] && DROPOUT+=("$dir")
done
if (( ${#DROPOUT[@]} >= 2 )); then
  step "ensemble of the dropout nets"
  $NNEXP ensemble "${DROPOUT[@]}"
fi

step "pack"
# One archive (the results folder of a GPU lease brings back few files): conv2_relu whole,
# the other runs without checkpoints, which are large and not needed to read the results.
(
  cd "$OUT/runs" || exit 1
  shopt -s nullglob
  conv=(conv2_relu-*) others=()
  for dir in *; do [[ $dir == conv2_relu-* ]] || others+=("$dir"); done
  tar cf ../runs.tar --exclude=.lock "${conv[@]}" &&
    { (( ${#others[@]} == 0 )) || tar rf ../runs.tar --exclude=.lock --exclude=checkpoints "${others[@]}"; } &&
    gzip -f ../runs.tar && tar tzf ../runs.tar.gz | grep -c . | sed 's/^/files packed: /'
) && rm -rf "$OUT/runs"
ls -la "$OUT"
echo "done at t=${SECONDS}s of ${BUDGET}s"
