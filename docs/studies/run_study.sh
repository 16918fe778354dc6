#!/bin/bash
# One run of a seed study, the DVC way: `dvc exp run` of evaluate@VARIANT in a scratch copy of the pipeline, its
# eval.json and train.json copied out as they are (docs/studies/losses.md says how the copy was made).
#
#   docs/studies/run_study.sh REPO OUT ARM SEED VARIANT [-S key=value ...]
#
# SEED: one seed, or A-B for one multi-seed experiment of seeds A..B (`-S train.seed=A -S train.seeds=B-A+1`, the
# way a user asks for seeds; its wall time is the whole experiment's), split afterwards into OUT/ARM/s<k>/ per seed.
# REPO: a git + DVC repository holding dvc.yaml, stages/, src/ and params.yaml (data.mnist pointed at a mirror);
# OUT/ARM/s<SEED>/ gets eval.json, train.json and run.json ({cmd, rc, wall_s, started}). A run that already has
# its run.json is skipped, so an interrupted study restarts where it stopped. STOP_AT=HHMM (UTC) refuses to start
# a run at or after that time (exit 3). Every run is `nice -n 19`: one training at a time on a shared machine.
set -u
repo=$1 out=$2 arm=$3 seed=$4 variant=$5
shift 5
first=${seed%-*} last=${seed#*-}  # "3" -> 3 3; "0-4" -> 0 4
seed_args=(-S "train.seed=$first")
[ "$last" != "$first" ] && seed_args+=(-S "train.seeds=$((last - first + 1))")
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
cmd=(dvc exp run -n "$arm-s$seed" "${seed_args[@]}" "$@" "evaluate@$variant")
echo "$started ${cmd[*]}"
nice -n 19 "${cmd[@]}" >"$dest/dvc.log" 2>&1
rc=$?
wall=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)")
if [ $rc = 0 ]; then
  cp "metrics/$variant/eval.json" "metrics/$variant/train.json" "$dest/" || rc=98  # 98: ran, outputs missing
  if [ "$last" != "$first" ]; then  # each seed's train.json
    for s in $(seq "$first" "$last"); do
      [ ! -f "models/$variant/seed_$s/train.json" ] || cp "models/$variant/seed_$s/train.json" "$dest/train_s$s.json"
    done
  fi
fi
python3 - "$dest/run.json" "${cmd[*]}" "$rc" "$wall" "$started" <<'EOF'
import json, sys
path, cmd, rc, wall, started = sys.argv[1:]
import os
json.dump({"cmd": cmd, "rc": int(rc), "wall_s": float(wall), "started": started,
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}, open(path, "w"), indent=1)
EOF
[ "$last" = "$first" ] || python3 - "$dest" "$first" "$last" <<'EOF'
# A multi-seed experiment, one folder per seed as a one-seed run leaves it: its values from eval.json's per_seed,
# its train.json from models/<v>/seed_<s>/; run.json is the experiment's (wall_s: all its seeds, "seeds": which).
import json, pathlib, shutil, sys
dest, first, last = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
run = json.loads((dest / "run.json").read_text())
run["seeds"] = list(range(first, last + 1))
ev = json.loads((dest / "eval.json").read_text()).get("per_seed", {}) if run["rc"] == 0 else {}
for s in run["seeds"]:
    one = dest.parent / f"s{s}"
    one.mkdir(exist_ok=True)
    if str(s) in ev:
        (one / "eval.json").write_text(json.dumps(ev[str(s)], indent=1) + "\n")
        shutil.copy(dest / f"train_s{s}.json", one / "train.json")
    (one / "run.json").write_text(json.dumps({**run, "rc": run["rc"] if str(s) in ev else 1}, indent=1) + "\n")
EOF
echo "$(date -u +%T) $arm s$seed rc=$rc ${wall}s"
