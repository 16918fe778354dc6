"""Two runs started at the same moment on a fresh MLflow store (what `dvc queue start -j 2` does): the store's
creation happens under the same lock as every other write, so both end FINISHED, every time."""

import subprocess
import sys
import textwrap

from mlflow.tracking import MlflowClient

from helpers import env

ROUNDS = 4  # without the lock, 4 of 6 processes crashed in 3 rounds

# One process of the pair: for each fresh store, wait at a file barrier for its sibling, then start and end a run
# through the real tracker (the train stage's path: open the store, create the experiment and the run, log, end).
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ganlab.config import TrackingCfg, load_params
    from ganlab.tracking.tracker import MlflowTracker

    me, params, stores = sys.argv[1], load_params(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
    cfg = params.variant("pattern_1010")
    for store in stores:
        (store / f"ready.{me}").touch()
        deadline = time.monotonic() + 10  # a sibling that crashed
        while len(list(store.glob("ready.*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.0005)
        tracker = MlflowTracker(f"run_{me}", TrackingCfg(uri=f"sqlite:///{store / 'mlflow.db'}"), stage="test")
        tracker.start(cfg, None)
        tracker.log_rows([{"step": 1, "epoch": 0, "d_loss": 0.5, "g_loss": 0.7}])
        tracker.end({"steps": 1}, "FINISHED")
        print(store.name, "FINISHED", flush=True)
""")


def test_two_runs_on_a_fresh_store_both_finish(tmp_path):
    from helpers import REPO

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    stores = [tmp_path / f"store{i}" for i in range(ROUNDS)]
    for s in stores:
        s.mkdir()
    args = [str(REPO / "params.yaml"), *map(str, stores)]
    procs = [subprocess.Popen([sys.executable, str(script), me, *args], env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for me in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert out.count("FINISHED") == ROUNDS
    for s in stores:
        c = MlflowClient(f"sqlite:///{s / 'mlflow.db'}")
        exp = c.get_experiment_by_name("ganlab")
        runs = c.search_runs([exp.experiment_id])
        assert sorted(r.info.run_name for r in runs) == ["run_a", "run_b"]
        assert {r.info.status for r in runs} == {"FINISHED"}
