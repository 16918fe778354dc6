#!/bin/bash
# The whole study of docs/studies/losses.md, from a checkout of the project, on a machine with the full MNIST:
#
#   MNIST_MIRROR=http://127.0.0.1:8765/ docs/studies/run_all.sh SCRATCH OUT [SEEDS]
#
# MNIST_MIRROR: a URL serving the four MNIST IDX .gz files (e.g. `python -m http.server --bind 127.0.0.1 8765` in
# their folder); the CSV URLs are pointed at it too, where they are missing, so the real download_mnist stage falls
# back to the IDX files. IDX_MD5_DIR: a local folder holding the same .gz files, when they are a re-compressed copy
# whose md5 differs from torchvision's (their md5 is then pinned instead). SCRATCH: a new folder for the scratch
# copy of the pipeline (git + DVC, as tests/helpers.py make_repo makes one). OUT: where run_study.sh copies each
# run's eval.json/train.json/run.json; then `python docs/studies/losses.py --runs OUT`. SEEDS: default "0 1 2 3 4".
# STOP_AT=HHMM (UTC) stops starting runs at that time; a rerun skips the runs already done. Since the study
# repository's pipeline changes with the code, a run of newer code needs a new scratch copy: the
# evaluator and data can be carried over with `dvc commit -f download_mnist train_classifier` (losses.md says how).
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$1 out=$2 seeds=${3:-0 1 2 3 4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}  # threads_under_load.py says why
export PYTHONPATH=$scratch/src
if [ ! -d "$scratch/.dvc" ]; then
  mkdir -p "$scratch"
  cp "$here/dvc.yaml" "$here/.dvcignore" "$here/.gitignore" "$here/params.yaml" "$scratch/"
  mkdir -p "$scratch/docs/studies" && cp "$here/docs/studies/losses_verdicts.json" "$scratch/docs/studies/"  # the report reads it
  cp -r "$here/stages" "$here/src" "$scratch/"
  find "$scratch" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
  python3 - "$scratch/params.yaml" "${MNIST_MIRROR:?set MNIST_MIRROR}" "${IDX_MD5_DIR:-}" <<'EOF'
import hashlib, pathlib, sys, yaml
path, mirror, md5_dir = sys.argv[1], sys.argv[2].rstrip("/") + "/", sys.argv[3]
p = yaml.safe_load(open(path))
m = p["data"]["mnist"]
m.update(train_url=mirror + "mnist_train.csv", test_url=mirror + "mnist_test.csv", idx_mirror=mirror)
for f in sorted(pathlib.Path(md5_dir).glob("*.gz")) if md5_dir else []:
    m["idx_md5"][f.name] = hashlib.md5(f.read_bytes()).hexdigest()
yaml.safe_dump(p, open(path, "w"), sort_keys=False)
EOF
  (cd "$scratch" && git init -q && git config user.email study@localhost && git config user.name study &&
   dvc init -q && dvc config core.analytics false && git add -A && git commit -qm "the pipeline, for the study")
fi
cd "$scratch"
nice -n 19 dvc repro train_classifier  # the evaluator, once
run() { "$here/docs/studies/run_study.sh" "$scratch" "$@" || [ $? != 3 ] || exit 0; }
for seed in $seeds; do for loss in bce mse lsgan hinge wgan_gp; do  # seed-major: every loss has as many seeds
  run "$out/losses" "$loss" "$seed" mnist_vanilla -S "model.loss=$loss"
done; done
for v in pattern_1010 gaussian_2d mnist_mlp_first; do
  for seed in $seeds; do run "$out/noise_floor" "$v" "$seed" "$v"; done
done
set -- $seeds  # the longer ones: one multi-seed experiment of the (consecutive) seeds each, as a user asks for seeds
for v in mnist_linear mnist_mlp mnist_dcgan mnist_cgan; do run "$out/noise_floor" "$v" "$1-${!#}" "$v"; done
run "$out/five_seeds" mnist_vanilla "$1-${!#}" mnist_vanilla  # the 5-seed experiment's wall time
# issue 22: mnist_vanilla's seeds trained together against one after another, seeds 0-4 and 5-9 (bench/README.md)
for range in 0-4 5-9; do for mode in on off; do
  arm=mnist_vanilla_$([ $mode = on ] && echo joint || echo seq)
  run "$out/joint" "$arm" "$range" mnist_vanilla -S "train.joint=$mode"
done; done
