#!/usr/bin/env bash
# GPU benchmarks (one H100 or H200) in under 7 minutes: the 350M and 2.6B train steps in bf16
# (fp32 master params, cuDNN flash attention, scanned layers) with a few settings each, a
# PyTorch peer for 350M, and generation with and without the KV cache. Each setting runs in its
# own process under a time limit, so one failure (an out-of-memory, a timeout) is reported and
# the next setting still runs.
#
#   OUT=/path/to/results bash benchmarks/gpu.sh        (default OUT: ./bench_out)
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
  SMALL=micro; BIG=micro; B350="4"; B26="2 4"; T=32; REPEATS=2; GEN=24; LIMIT=120; LIMIT_BIG=120
else
  SMALL=350m; BIG=2_6b; B350="32 64"; B26="8 16"; T=1024; REPEATS=10; GEN=512; LIMIT=110; LIMIT_BIG=150
fi

run() {  # run LIMIT_SECONDS LABEL ARGS...: one setting, its own process, never fatal
  local limit=$1 label=$2; shift 2
  local now=$(( $(date +%s) - START ))
  echo "=== [$now s] $label" | tee -a "$LOG"
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
run $LIMIT "train $SMALL B=${B350// /,} remat=none" --suite=train --config=$SMALL \
  --batch_size="${B350// /,}" --remat=none "${COMMON[@]}" --profile_dir=/tmp/bench_profile
for b in $B26; do
  run $LIMIT_BIG "train $BIG B=$b remat=none" --suite=train --config=$BIG --batch_size=$b \
    --remat=none "${COMMON[@]}"
done
if [ "$LAST_RC" != 0 ]; then  # the larger batch did not fit (or failed): with remat
  run $LIMIT_BIG "train $BIG B=${B26##* } remat=dots" --suite=train --config=$BIG \
    --batch_size=${B26##* } --remat=dots "${COMMON[@]}"
fi
run $LIMIT "eval $SMALL (generation $GEN tokens, KV cache vs none; multiple choice)" \
  --suite=eval --config=$SMALL --dtype=bfloat16 --gen_batch=8 --gen_tokens=$GEN \
  --gen_prompt=16 --mc_questions=256 --repeats=2
# The peer shares the GPU with a torch process: JAX allocates on demand here.
B0=$(echo $B350 | cut -d' ' -f1)
XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 \
  run $LIMIT "peer $SMALL B=$B0 (torch eager, bf16 autocast)" \
  --suite=peer --config=$SMALL --batch_size=$B0 "${COMMON[@]}" --repeats=5 --torch_compile=false
LEFT=$(( ${BUDGET_S:-400} - ($(date +%s) - START) ))
if [ "$LEFT" -ge 100 ]; then
  XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 \
    run $LEFT "peer $SMALL B=$B0 (torch eager and torch.compile)" \
    --suite=peer --config=$SMALL --batch_size=$B0 "${COMMON[@]}" --repeats=5
else
  echo "=== skipped the torch.compile peer: ${LEFT} s left of BUDGET_S=${BUDGET_S:-400}" | tee -a "$LOG"
fi

{ echo "=== summary ($(( $(date +%s) - START )) s)"
  grep -E "^  (train|peer|eval|pipeline) |^           |FAILED|exit code" "$LOG"
} | tee "$OUT/gpu_summary.txt"
