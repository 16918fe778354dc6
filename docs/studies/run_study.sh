#!/bin/bash
# One run of a seed study, the DVC way: `dvc exp run` of evaluate@VARIANT in a scratch copy of the pipeline, its
# eval.json and train.json copied out as they are (docs/studies/losses.md says how the copy was made).
#
#   docs/studies/run_study.sh REPO OUT ARM SEED VARIANT [-S key=value ...]
#
# REPO: a git + DVC repository holding dvc.yaml, stages/, src/ and params.yaml (data.mnist pointed at a mirror);
# OUT/ARM/s<SEED>/ gets eval.json, train.json and run.json ({cmd, rc, wall_s, started}). A run that already has
# its run.json is skipped, so an interrupted study restarts where it stopped. STOP_AT=HHMM (UTC) refuses to start
# a run at or after that time (exit 3). Every run is `nice -n 19`: one training at a time on a shared machine.
set -u
repo=$1 out=$2 arm=$3 seed=$4 variant=$5
shift 5
dest=$out/$arm/s$seed
[ -f "$dest/run.json" ] && { echo "skip $arm s$seed (done)"; exit 0; }
if [ -n "${STOP_AT:-}" ] && [ "$(date -u +%H%M)" -ge "$STOP_AT" ]; then
  echo "not starting $arm s$seed: it is past $STOP_AT UTC"; exit 3
fi
mkdir -p "$out/$arm"
mkdir "$dest.claim" 2>/dev/null || { echo "skip $arm s$seed (another driver has it)"; exit 0; }  # two drivers
mkdir -p "$dest"
cd "$repo" || exit 2
git checkout -q -- params.yaml  # each run is the committed params plus its own -S, never the last run's
started=$(date -u +%FT%TZ) t0=$(date +%s.%N)
cmd=(dvc exp run -n "$arm-s$seed" -S "train.seed=$seed" "$@" "evaluate@$variant")
echo "$started ${cmd[*]}"
nice -n 19 "${cmd[@]}" >"$dest/dvc.log" 2>&1
rc=$?
wall=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)")
if [ $rc = 0 ]; then
  cp "metrics/$variant/eval.json" "metrics/$variant/train.json" "$dest/" || rc=98  # 98: ran, outputs missing
fi
python3 - "$dest/run.json" "${cmd[*]}" "$rc" "$wall" "$started" <<'EOF'
import json, sys
path, cmd, rc, wall, started = sys.argv[1:]
import os
json.dump({"cmd": cmd, "rc": int(rc), "wall_s": float(wall), "started": started,
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}, open(path, "w"), indent=1)
EOF
echo "$(date -u +%T) $arm s$seed rc=$rc ${wall}s"
