#!/usr/bin/env bash
# GPU benchmarks (one H100 or H200) in under 7 minutes: the 350M and 2.6B train steps in bf16
# (fp32 master params, cuDNN flash attention, scanned layers) with a few settings each, a
# PyTorch peer for 350M, and generation with and without the KV cache. Each setting runs in its
# own process under a time limit, so one failure (an out-of-memory, a timeout) is reported and
# the next setting still runs.
#
#   OUT=/path/to/results bash codereason_jax/benchmarks/gpu.sh    (default OUT: ./bench_out)
#
# Run it from the repository root: it runs `python -m codereason_jax.bench`.
#
# Writes $OUT/gpu_bench.jsonl (one JSON object per setting), $OUT/gpu_bench.log (everything
# printed) and $OUT/gpu_summary.txt (the result lines). BENCH_SMOKE=1 runs the same steps with
# the micro config and short runs (for a CPU check of the script).
set -u
OUT="${OUT:-./bench_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
JSONL="$OUT/gpu_bench.jsonl"
LOG="$OUT/gpu_bench.log"
: > "$JSONL"
: > "$LOG"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.94}"
START=$(date +%s)

if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  SMALL=micro; BIG=micro; B350="2 4"; B26="2 4"; T=32; REPEATS=2; GEN=24; GENB=4; LIMIT=120
  LIMIT_BIG=120; PEERB=4
else
  SMALL=350m; BIG=2_6b; B350="16 32"; B26="8 16"; T=1024; REPEATS=10; GEN=512; GENB=32
  LIMIT=110; LIMIT_BIG=150; PEERB=8
fi
BUDGET_S="${BUDGET_S:-400}"
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
LAST_RC=0

run() {  # run LIMIT_SECONDS LABEL ARGS...: one setting, its own process, never fatal
  local limit=$1 label=$2; shift 2
  echo "=== [$(( $(date +%s) - START )) s] $label" | tee -a "$LOG"
  timeout -k 10 "$limit" "$PY" -m codereason_jax.bench --json_out="$JSONL" "$@" 2>&1 \
    | grep --line-buffered -v -E "^(W|I)[0-9]{4} |TfrtCpuClient|UserWarning|warnings.warn" \
    | tee -a "$LOG"
  LAST_RC=${PIPESTATUS[0]}
  [ "$LAST_RC" = 0 ] || echo "=== $label: exit code $LAST_RC (124 = time limit)" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
} 2>&1 | tee -a "$LOG"

COMMON=(--dtype=bfloat16 --seq_len=$T --repeats=$REPEATS --warmup=3)
B_LAST=${B350##* }
# 1. 350M: two batch sizes in one process, with a profile (top kernels in the results).
run $LIMIT "train $SMALL B=${B350// /,}" --suite=train --config=$SMALL \
  --batch_size="${B350// /,}" --remat=none "${COMMON[@]}" --profile_dir=/tmp/bench_profile
# 2. 2.6B: B=8 and B=16 without remat (B=16 with remat=dots if that does not fit).
for b in $B26; do
  run $LIMIT_BIG "train $BIG B=$b remat=none" --suite=train --config=$BIG --batch_size=$b \
    --remat=none "${COMMON[@]}" --profile_dir=/tmp/bench_profile
done
if [ "$LAST_RC" != 0 ]; then
  run $LIMIT_BIG "train $BIG B=${B26##* } remat=dots" --suite=train --config=$BIG \
    --batch_size=${B26##* } --remat=dots "${COMMON[@]}"
fi
# 3. Generation (KV cache vs none; host loop and device loop) and multiple choice.
run $LIMIT "eval $SMALL (generation of $GEN tokens, batch $GENB; multiple choice)" \
  --suite=eval --config=$SMALL --dtype=bfloat16 --gen_batch=$GENB --gen_tokens=$GEN \
  --gen_prompt=16 --mc_questions=256 --repeats=2
# 4. PyTorch peer (eager and torch.compile, bf16 autocast, fused AdamW). It shares the GPU
#    with JAX, which allocates on demand here.
if [ "$(left)" -ge 100 ]; then
  XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 \
    run $(( $(left) > 130 ? 130 : $(left) )) "peer $SMALL B=$PEERB" --suite=peer \
    --config=$SMALL --batch_size=$PEERB "${COMMON[@]}" --repeats=5
else
  echo "=== skipped the PyTorch peer: $(left) s left of BUDGET_S=$BUDGET_S" | tee -a "$LOG"
fi
# 5. Variants while time is left: the head's backward in bf16 (no TF32 GEMM on the logit
#    gradient), unrolled layers (no scan copies), on 350M at the larger batch; 2.6B head_vjp.
cap() { local l; l=$(left); echo $(( l > $1 ? $1 : l )); }
if [ "$(left)" -ge 40 ]; then
  run "$(cap 60)" "train $SMALL B=$B_LAST head_vjp" --suite=train --config=$SMALL \
    --batch_size=$B_LAST --remat=none --head_vjp=true "${COMMON[@]}"
fi
if [ "$(left)" -ge 50 ]; then
  run "$(cap 80)" "train $BIG B=${B26%% *} head_vjp" --suite=train --config=$BIG \
    --batch_size=${B26%% *} --remat=none --head_vjp=true "${COMMON[@]}"
fi
if [ "$(left)" -ge 70 ]; then
  run "$(cap 100)" "train $SMALL B=$B_LAST head_vjp, unrolled layers" --suite=train \
    --config=$SMALL --batch_size=$B_LAST --remat=none --head_vjp=true --scan_layers=false \
    "${COMMON[@]}"
fi
echo "=== done; settings not listed above were skipped at BUDGET_S=$BUDGET_S" | tee -a "$LOG"

{ echo "=== summary ($(( $(date +%s) - START )) s)"
  grep -E "^  (train|peer|eval|pipeline) |^           |FAILED|exit code|skipped|^=== \[" "$LOG" \
    | awk '!seen[$0]++'
} | tee "$OUT/gpu_summary.txt"
