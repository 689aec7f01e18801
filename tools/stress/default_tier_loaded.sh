#!/usr/bin/env bash
# Runs the default test tier again and again on a loaded machine, to catch timing failures
# (issue 19: "passes 20 times in a row on a loaded machine").
#
#   tools/stress/default_tier_loaded.sh [RUNS] [LOG_DIR]       # defaults: 20, /tmp/stress_logs
#
# The tests run from a detached worktree of HEAD, so later edits to the checkout do not change
# the suite under test, with the checkout's .venv (make venv first). Beside them, one busy loop
# per core at the lowest priority keeps the machine loaded. Each run appends one line to
# LOG_DIR/summary.tsv (run, exit status, seconds, load before and after, pytest's last line)
# and keeps its whole output in LOG_DIR/run_N.log. It stops at the first failing run.
set -euo pipefail

runs=${1:-20}
log_dir=${2:-/tmp/stress_logs}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || { echo "error: $python is missing; run 'make venv' first" >&2; exit 2; }

commit=$(git -C "$repo" rev-parse --short HEAD)
worktree=$(mktemp -d /tmp/stress_wt.XXXXXX)
git -C "$repo" worktree add --detach "$worktree" HEAD >/dev/null
burners=()
cleanup() {
  kill "${burners[@]}" 2>/dev/null || true
  git -C "$repo" worktree remove --force "$worktree" || true
}
trap cleanup EXIT
for _ in $(seq "$(nproc)"); do
  nice -n 19 "$python" -c "while True: pass" & burners+=($!)
done

mkdir -p "$log_dir"
echo -e "# commit $commit, $(nproc) cores, $(date -u +%FT%TZ)" >> "$log_dir/summary.tsv"
cd "$worktree"
for i in $(seq "$runs"); do
  start=$(date +%s) load0=$(cut -d' ' -f1 /proc/loadavg)
  status=0
  "$python" -m pytest -m "not slow and not heavy" -q -p no:cacheprovider --durations=40 tests \
    > "$log_dir/run_$i.log" 2>&1 || status=$?
  echo -e "$i\t$status\t$(( $(date +%s) - start ))s\tload=$load0..$(cut -d' ' -f1 /proc/loadavg)\t$(tail -1 "$log_dir/run_$i.log")" \
    | tee -a "$log_dir/summary.tsv"
  [[ $status -eq 0 ]] || exit 1
done
