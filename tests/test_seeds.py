"""Seeds inside one experiment (train.seeds): each seed is the run a single-seed run of that seed is (bitwise on
CPU), kept in its own folders and MLflow run under one group run; a failing seed is recorded, not dropped."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from ganlab.config import ConfigError, load_params
from ganlab.data.toy import make_toy
from ganlab.engine.contract import RunPaths, Tracker, TrainingDiverged
from ganlab.engine.train import fit_seeds
from helpers import REPO, stage_in_process, write_params

PARAMS = load_params(REPO / "params.yaml")
NAME = "gaussian_2d"


def edit(seeds: int, seed: int = 0):
    def f(p):
        p["variants"] = {NAME: p["variants"][NAME]}
        p["variants"][NAME]["train"].update(max_steps=40, seed=seed, seeds=seeds)
    return f


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-seed run (seeds 4, 5, 6) and a single run of seed 5, by the real train stage."""
    root = tmp_path_factory.mktemp("seeds")
    make_toy(PARAMS.data.toy, root / "data" / "processed")
    for sub, seeds, seed in (("multi", 3, 4), ("single", 1, 5)):
        (root / sub).mkdir()
        write_params(root / sub / "params.yaml", edit(seeds, seed))
        assert stage_in_process("train.py", [NAME, "--data-dir", str(root / "data" / "processed")], root / sub) == 0
    return root


def test_seed_s_of_a_multi_seed_run_is_the_single_run_of_seed_s(trained):
    multi = RunPaths.for_variant(NAME, trained / "multi", seed=5)
    single = RunPaths.for_variant(NAME, trained / "single")
    assert multi.models == trained / "multi" / "models" / NAME / "seed_5"
    for f in ("generator.pt", "discriminator.pt"):
        a, b = torch.load(multi.models / f), torch.load(single.models / f)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert multi.losses_csv.read_text() == single.losses_csv.read_text()
    other = torch.load(RunPaths.for_variant(NAME, trained / "multi", seed=4).models / "generator.pt")
    assert not all(torch.equal(other[k], a[k]) for k in a)  # another seed is another run


def test_the_variant_train_json_lists_every_seed_and_mlflow_nests_them(trained):
    doc = json.loads((trained / "multi" / "metrics" / NAME / "train.json").read_text())
    assert doc["seeds"] == [4, 5, 6] and doc["n_failed"] == 0
    assert {s: r["status"] for s, r in doc["per_seed"].items()} == {"4": "ok", "5": "ok", "6": "ok"}
    for s in (4, 5, 6):  # each seed's folders, apart
        run = RunPaths.for_variant(NAME, trained / "multi", seed=s)
        assert run.checkpoint.exists() and run.train_json.exists() and list(run.progress.glob("epoch_*.png"))
    client = MlflowClient(f"sqlite:///{trained / 'multi' / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ganlab")
    runs = client.search_runs([exp.experiment_id])
    group = [r for r in runs if r.data.tags.get("seed") == "group"]
    assert len(group) == 1 and group[0].info.run_id == doc["run_id"] and group[0].info.status == "FINISHED"
    children = {r.data.tags["seed"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == doc["run_id"]}
    assert sorted(children) == ["4", "5", "6"]
    assert children["5"].info.run_id == doc["per_seed"]["5"]["run_id"]


class FailingTracker(Tracker):
    def log_rows(self, rows):
        raise TrainingDiverged("d_loss is nan at step 10")


def test_a_failing_seed_is_recorded_and_the_others_go_on(tmp_path):
    make_toy(PARAMS.data.toy, tmp_path / "data")
    cfg = PARAMS.variant(NAME)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 20})})
    paths = RunPaths.for_variant(NAME, tmp_path, tmp_path / "data")
    out = fit_seeds(cfg, NAME, [0, 1, 2], paths.for_seed, lambda s: FailingTracker() if s == 1 else Tracker())
    assert [out[s]["status"] for s in (0, 1, 2)] == ["ok", "failed", "ok"]
    assert "TrainingDiverged: d_loss is nan" in out[1]["error"]
    assert (paths.for_seed(2).models / "generator.pt").exists()


def test_train_seeds_is_checked(tmp_path):
    for bad in (0, 101, "three"):
        write_params(tmp_path / "params.yaml", lambda p: p["train"].update(seeds=bad))
        with pytest.raises(ConfigError, match="train.seeds"):
            load_params(tmp_path / "params.yaml")


def test_evaluate_scores_every_seed_and_the_report_shows_the_spread(trained):
    multi = trained / "multi"
    assert stage_in_process("evaluate.py", [NAME, "--data-dir", str(trained / "data" / "processed")], multi) == 0
    ev = json.loads((multi / "metrics" / NAME / "eval.json").read_text())
    assert sorted(ev["per_seed"]) == ["4", "5", "6"] and ev["n_failed"] == 0
    fids = [ev["per_seed"][s]["fid_gaussian"] for s in ("4", "5", "6")]
    head = json.loads((multi / "metrics" / NAME / "headline.json").read_text())[NAME]
    assert head["n_seeds"] == 3 and head["fid"] == pytest.approx(sum(fids) / 3, abs=1e-4)
    assert head["fid_lo"] < head["fid"] < head["fid_hi"]
    # seed 5 scores as the single run of seed 5 does
    single = trained / "single"
    assert stage_in_process("evaluate.py", [NAME, "--data-dir", str(trained / "data" / "processed")], single) == 0
    one = json.loads((single / "metrics" / NAME / "eval.json").read_text())
    assert ev["per_seed"]["5"]["fid_gaussian"] == one["fid_gaussian"]

    from ganlab.report.claims import claims
    from ganlab.report.results import Spread, collect, fmt

    params = load_params(multi / "params.yaml")
    (r,) = collect(params, multi)
    v = r.values()["fid_gaussian"]
    assert isinstance(v, Spread) and v.n == 3 and v == pytest.approx(sum(fids) / 3)
    assert fmt(v).endswith("(sd, 3 seeds)") and "±" in fmt(v)
    judged = [c for c in claims(params, {NAME: r}, None) if c.stated.subject == NAME and c.ran]
    assert judged and all(" of 3 seeds" in c.verdict.text for c in judged)
    from ganlab.report.report import build_report

    paths, _ = build_report(params, multi, multi / "reports" / "all")  # the whole page renders from seeds
    md = (multi / "reports" / "all" / "report.md").read_text()
    assert "(sd, 3 seeds)" in md and " of 3 seeds" in md


def test_a_rerun_after_a_kill_trains_only_the_unfinished_seeds(trained, tmp_path, capfd):
    """DVC removes models/ before it reruns the stage; the checkpoints persist. Seeds 4 and 5 finished, seed 6's
    checkpoint is gone (killed before its first): only seed 6 trains, and every seed's weights are as before."""
    import shutil

    root = tmp_path / "rerun"
    shutil.copytree(trained / "multi", root, ignore=shutil.ignore_patterns("eval.json", "headline.json"))
    before = {s: torch.load(RunPaths.for_variant(NAME, root, seed=s).models / "generator.pt") for s in (4, 5, 6)}
    shutil.rmtree(root / "models")
    shutil.rmtree(RunPaths.for_variant(NAME, root, seed=6).checkpoints)
    capfd.readouterr()
    assert stage_in_process("train.py", [NAME, "--data-dir", str(trained / "data" / "processed")], root) == 0
    err = capfd.readouterr().err
    assert err.count("training finished before") == 2  # seeds 4 and 5
    for s, want in before.items():
        got = torch.load(RunPaths.for_variant(NAME, root, seed=s).models / "generator.pt")
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_ctrl_c_stops_a_multi_seed_run_and_a_rerun_resumes_it(trained, tmp_path, monkeypatch, capfd):
    """A real SIGINT (the stage's own handler) in seed 5 of 4, 5, 6: the stage stops there with the resume line
    and exit status 130, seed 6 never starts, no train.json is written, the MLflow group run ends KILLED. The same
    stage again: seed 4 is kept, seed 5 resumes, seed 6 trains; every seed's weights are the uninterrupted run's."""
    import os
    import shutil
    import signal

    from ganlab.engine import train

    root = tmp_path / "stopped"
    root.mkdir()
    shutil.copy(trained / "multi" / "params.yaml", root / "params.yaml")
    argv = [NAME, "--data-dir", str(trained / "data" / "processed")]
    real, calls = train.stop_requested, []

    def ctrl_c_in_seed_5() -> bool:  # called once a step: seed 4's 40 steps, then seed 5's
        calls.append(1)
        if len(calls) == 50:
            os.kill(os.getpid(), signal.SIGINT)
        return real()

    monkeypatch.setattr(train, "stop_requested", ctrl_c_in_seed_5)
    capfd.readouterr()
    assert stage_in_process("train.py", argv, root) == 130
    err = capfd.readouterr().err
    assert f"train@{NAME}: stopped at step 10 of 40" in err and "to resume, run:" in err, err
    assert "FAILED" not in err and "Traceback" not in err
    assert not RunPaths.for_variant(NAME, root, seed=6).checkpoints.exists()
    assert not (root / "metrics" / NAME / "train.json").exists()
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ganlab").experiment_id
    (group,) = client.search_runs([exp], "tags.seed = 'group'")
    assert group.info.status == "KILLED"

    monkeypatch.setattr(train, "stop_requested", real)
    assert stage_in_process("train.py", argv, root) == 0
    err = capfd.readouterr().err
    assert "training finished before" in err and "resuming from step 10 of 40" in err, err
    for s in (4, 5, 6):
        want = torch.load(RunPaths.for_variant(NAME, trained / "multi", seed=s).models / "generator.pt")
        got = torch.load(RunPaths.for_variant(NAME, root, seed=s).models / "generator.pt")
        assert all(torch.equal(got[k], want[k]) for k in want), s
    assert json.loads((root / "metrics" / NAME / "train.json").read_text())["n_failed"] == 0
