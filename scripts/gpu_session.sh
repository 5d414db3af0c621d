#!/usr/bin/env bash
# The one call a lent GPU machine runs (docs/benchmarks.md, "The GPU session"), or its rehearsal
# on the CPU:
#
#   OUT=gpu_out scripts/gpu_session.sh            # on the GPU machine (the device tool's $OUT)
#   OUT=/tmp/dry scripts/gpu_session.sh --dry-run  # here: CPU, small sizes, same steps
#
# Steps: env (env.json), one pytest call per test file that mentions CUDA (junit + log),
# tests_report (tests.json), loop (loop.json: the module's working-set loop in all 16
# configurations under torch.cuda.set_sync_debug_mode("error")), bench (the headline training
# benchmark, results/<date>-<device>.json), profile (the benchmark's trace of one working set,
# checked and gzipped). Every step runs under a timeout taken from one global budget
# (GPU_SESSION_BUDGET, 480 s), so the whole call fits the device tool's 600 s limit; a failed
# step does not stop the next, but the exit code is non-zero and summary.json names it. Logs
# are gzipped as written (logs/<step>.log.gz). No network, no pip: a missing package is a
# failure of the env step. The HDL packages are blocked (scripts/without_hdl first on
# PYTHONPATH) in both runs: the GPU machine has none, so the dry run must do without them too.
#
# Knobs (environment): OUT, PYTHON, GPU_SESSION_BUDGET (seconds), GPU_SESSION_STEPS (a
# comma-separated subset of env,tests,tests_report,loop,bench,profile), GPU_SESSION_FAIL (steps
# whose command is replaced by a missing Python module: the negative control),
# GPU_SESSION_BENCH_ARGS / GPU_SESSION_LOOP_ARGS (extra arguments), GPU_SESSION_PYTEST_K (a
# pytest -k expression for the test files; default "cuda": their CUDA tests, which run on the
# GPU and skip in the dry run).
set -u -o pipefail

DRY=0
for a in "$@"; do
  case $a in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a (use --dry-run or nothing)" >&2; exit 2 ;;
  esac
done

for tool in timeout gzip zcat grep; do
  command -v "$tool" > /dev/null || { echo "gpu_session: '$tool' is missing" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-gpu_out}
mkdir -p "$OUT/logs" "$OUT/tests" "$OUT/results" || exit 2
OUT=$(cd "$OUT" && pwd)

if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ $DRY == 1 && -x $ROOT/.venv/bin/python ]]; then PY=$ROOT/.venv/bin/python
else PY=python3; fi

# Offline and without the HDL packages, whatever the caller's environment says.
export PYTHONPATH="$ROOT/scripts/without_hdl:$ROOT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
unset PYTEST_ADDOPTS PYTEST_XDIST_WORKER PYTEST_XDIST_WORKER_COUNT PYTEST_CURRENT_TEST

BUDGET=${GPU_SESSION_BUDGET:-480}
KILL_GRACE=5          # timeout -k: a step that ignores SIGTERM is killed this much later
FINAL_RESERVE=5       # the summary at the end
START=$SECONDS
DEADLINE=$((START + BUDGET))
STEPS=${GPU_SESSION_STEPS:-env,tests,tests_report,loop,bench,profile}
FAIL_INJECT=${GPU_SESSION_FAIL:-}

if [[ $DRY == 1 ]]; then
  # The dry run runs the CUDA tests of each file (they skip here): what it proves is that the
  # files collect without the HDL packages; the GPU run runs the same tests on the GPU.
  PYTEST_K=${GPU_SESSION_PYTEST_K-cuda}
  DEVICE=cpu
  REQUIRE_CUDA=
  # The benchmark's own scaled-down options (26 Criteo-shaped tables x 0.001, 8 mini-batches).
  BENCH_ARGS=(--device cpu --threads 1 --table-scale 0.001 --batch-size 128 --hot-budget 2048
              --pool 8 --dim 8)
  LOOP_ARGS=(--device cpu --size small --threads 1)
else
  # The CUDA tests only: the whole files would not fit the tests' 150 s (they run here in
  # make test anyway); GPU_SESSION_PYTEST_K= runs everything.
  PYTEST_K=${GPU_SESSION_PYTEST_K-cuda}
  DEVICE=cuda
  REQUIRE_CUDA=1
  BENCH_ARGS=(--device cuda)
  LOOP_ARGS=(--device cuda --size gpu)
fi
# shellcheck disable=SC2206
BENCH_ARGS+=(${GPU_SESSION_BENCH_ARGS:-})
# shellcheck disable=SC2206
LOOP_ARGS+=(${GPU_SESSION_LOOP_ARGS:-})

# Step table: name cap min. cap = most seconds the step may take; min = seconds kept for it
# while earlier steps run (so a hanging early step cannot starve the later ones).
declare -A CAP=([env]=45 [tests]=150 [tests_report]=20 [loop]=150 [bench]=100000 [profile]=30)
declare -A MIN=([env]=10 [tests]=30 [tests_report]=5 [loop]=45 [bench]=150 [profile]=10)
ORDER=(env tests tests_report loop bench profile)
if [[ $DRY == 1 ]]; then MIN[bench]=30; fi

wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

# Seconds reserved for the wanted steps after $1.
reserve_after() {
  local after=0 r=0 s
  for s in "${ORDER[@]}"; do
    if [[ $after == 1 ]] && wanted "$s"; then r=$((r + MIN[$s] + KILL_GRACE)); fi
    [[ $s == "$1" ]] && after=1
  done
  echo $((r + FINAL_RESERVE))
}

STATUS_FILE=$OUT/steps.tsv
: > "$STATUS_FILE"
FAILED=()

# record NAME STATUS RC SECONDS TIMEOUT LOG NOTE
record() {
  local f out=()
  for f in "$@"; do out+=("${f:--}"); done     # "-" for an empty field (tabs collapse in read)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${out[@]}" >> "$STATUS_FILE"
  if [[ $2 != ok ]]; then FAILED+=("$1"); fi
  printf '[%4d s] %-40s %-8s rc=%s %ss (limit %ss) %s\n' $((SECONDS - START)) "$1" "$2" "$3" \
    "$4" "$5" "$7"
}

# run_step NAME LIMIT OK_RCS NOTE -- command...: runs the command under `timeout LIMIT`, its
# stdout+stderr gzipped into logs/NAME.log.gz as written; OK_RCS: exit codes that count as ok
# (space-separated).
run_step() {
  local name=$1 limit=$2 okrcs=$3 note=$4; shift 5
  local log=$OUT/logs/$name.log.gz
  if (( limit < 5 )); then
    record "$name" skipped -1 0 "$limit" "" "no time left in the ${BUDGET}s budget"
    return
  fi
  local t0=$SECONDS rc
  {
    echo "# $name: $*"
    echo "# limit ${limit}s, $(date -u +%FT%TZ)"
    timeout -k "$KILL_GRACE" "$limit" "$@" 2>&1
    rc=$?
    echo "# exit code $rc"
    exit $rc
  } | gzip -c > "$log"
  rc=${PIPESTATUS[0]}
  local dt=$((SECONDS - t0)) status=failed
  if [[ " $okrcs " == *" $rc "* ]]; then status=ok; fi
  if [[ $rc == 124 || $rc == 137 ]]; then status=timeout; note="killed after ${limit}s"; fi
  if [[ $rc == 5 && $status == ok ]]; then note="no test selected"; fi
  record "$name" "$status" "$rc" "$dt" "$limit" "logs/$name.log.gz" "$note"
  # The tail of the log into the caller's output (the device tool keeps the last 12,000 chars).
  local n=4; [[ $status != ok ]] && n=30
  zcat "$log" 2>/dev/null | tail -n "$n" | sed 's/^/    | /'
}

# limit_for NAME [CAP]: the step's timeout: its cap, or what the budget leaves after keeping
# the later steps' minimum.
limit_for() {
  local cap=${2:-${CAP[$1]}}
  local left=$((DEADLINE - SECONDS - $(reserve_after "$1") - KILL_GRACE))
  (( left < cap )) && cap=$left
  echo "$cap"
}

# The Python module a step runs, or a missing one when the step is to fail (negative control).
mod() { if [[ ",$FAIL_INJECT," == *",$1,"* ]]; then echo "sw_driver._no_such_module_$1"; else echo "$2"; fi; }

echo "gpu_session: $([[ $DRY == 1 ]] && echo dry run on the CPU || echo GPU run), budget ${BUDGET}s, out $OUT, python $PY"

# 1. environment
if wanted env; then
  run_step env "$(limit_for env)" "0" "" -- "$PY" -m "$(mod env sw_driver.gpu_checks)" env \
    --out "$OUT/env.json" --require-no-hdl ${REQUIRE_CUDA:+--require-cuda}
fi

# 2. the test files that mention cuda, each its own pytest call (exit 5, no test selected, is
#    ok only with a -k filter; a collection error is exit 2 or 4: a failure).
if wanted tests; then
  group_end=$((SECONDS + $(limit_for tests)))
  okrcs="0"; [[ -n $PYTEST_K ]] && okrcs="0 5"
  # Every test file that says "cuda" except this session's own test (it would run the session
  # inside itself).
  mapfile -t files < <(grep -l cuda tests/test_*.py | grep -v '/test_gpu_session\.py$' | sort)
  if (( ${#files[@]} == 0 )); then record tests failed -1 0 0 "" "no test file mentions cuda"; fi
  for f in "${files[@]}"; do
    base=$(basename "$f" .py)
    limit=$((group_end - SECONDS - KILL_GRACE)); (( limit > 90 )) && limit=90
    run_step "tests.$base" "$limit" "$okrcs" "" -- "$PY" -m "$(mod tests pytest)" -q \
      -p no:cacheprovider -o addopts="-ra" --junitxml="$OUT/tests/$base.xml" \
      ${PYTEST_K:+-k "$PYTEST_K"} "$f"
    [[ -f $OUT/tests/$base.xml ]] && gzip -f "$OUT/tests/$base.xml"
  done
fi

if wanted tests_report; then
  run_step tests_report "$(limit_for tests_report)" "0" "" -- "$PY" -m \
    "$(mod tests_report sw_driver.gpu_checks)" junit "$OUT/tests" --out "$OUT/tests.json" \
    ${REQUIRE_CUDA:+--require-cuda-tests}
fi

# 3. the working-set loop in every configuration, host syncs forbidden inside it on CUDA
if wanted loop; then
  limit=$(limit_for loop)
  run_step loop "$limit" "0" "" -- "$PY" -m "$(mod loop sw_driver.gpu_checks)" loop \
    --out "$OUT/loop.json" --time-limit $((limit - 10)) "${LOOP_ARGS[@]}"
fi

# 4. the headline benchmark (results JSON written after every mode: a killed run keeps what
#    it measured) with the profile of one working set
if wanted bench; then
  rm -f "$OUT/results/profile-working-set.json" "$OUT/results/profile-working-set.json.gz"
  run_step bench "$(limit_for bench)" "0" "" -- "$PY" -m "$(mod bench sw_driver.bench_training)" \
    --results-dir "$OUT/results" --profile "$OUT/results/profile-working-set.json" \
    "${BENCH_ARGS[@]}"
fi

# 5. the profile: the phases named, GPU kernels in it (GPU run), gzipped
if wanted profile; then
  run_step profile "$(limit_for profile)" "0" "" -- "$PY" -m "$(mod profile sw_driver.gpu_checks)" \
    trace "$OUT/results/profile-working-set.json" ${REQUIRE_CUDA:+--require-cuda-kernels}
fi

# Summary (plain bash: it must be written even when Python is broken).
ELAPSED=$((SECONDS - START))
{
  printf '{\n "ok": %s,\n "dry_run": %s,\n "device": "%s",\n' \
    "$([[ ${#FAILED[@]} == 0 ]] && echo true || echo false)" \
    "$([[ $DRY == 1 ]] && echo true || echo false)" "$DEVICE"
  printf ' "budget_s": %s,\n "elapsed_s": %s,\n "failed": [' "$BUDGET" "$ELAPSED"
  sep=""; for s in "${FAILED[@]}"; do printf '%s"%s"' "$sep" "$s"; sep=", "; done
  printf '],\n "steps": [\n'
  sep=""
  while IFS=$'\t' read -r name status rc secs limit log note; do
    [[ $note == - ]] && note=""; [[ $log == - ]] && log=""
    note=${note//\\/\\\\}; note=${note//\"/\\\"}
    printf '%s  {"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit_s": %s, "log": "%s", "note": "%s"}' \
      "$sep" "$name" "$status" "$rc" "$secs" "$limit" "$log" "$note"
    sep=$',\n'
  done < "$STATUS_FILE"
  printf '\n ]\n}\n'
} > "$OUT/summary.json"
cat "$OUT/summary.json"
if (( ${#FAILED[@]} )); then
  echo "gpu_session: FAILED steps: ${FAILED[*]} (${ELAPSED}s of ${BUDGET}s)"
  exit 1
fi
echo "gpu_session: all steps ok (${ELAPSED}s of ${BUDGET}s)"
exit 0
