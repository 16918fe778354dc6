"""A sweep across machines on a real SLURM cluster of one node (munged + slurmctld + slurmd started here): a 2-task
job array of docs/slurm/sweep.sbatch, each task in its own clone, logging to the lab's MLflow server and pushing
its experiment; then the collector pulls both into one `dvc exp show` and one report."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import REPO, git_commit_all, make_repo
from test_team import VARIANT, sh

pytestmark = pytest.mark.e2e
SWEEP = "lrsweep"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(program: str) -> str:
    found = shutil.which(program)
    if not found:
        pytest.fail(f"{program} is not installed: `make test` installs Debian's slurm-wlm and munge as root "
                    f"(apt-get install slurm-wlm munge)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM cluster on loopback ports: its own munge key and socket, slurmctld and slurmd as root.
    Yields the environment that points sbatch/squeue at it (SLURM_CONF)."""
    for p in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol"):
        _need(p)
    d = tmp_path_factory.mktemp("slurm")
    os.chmod(d, 0o755)
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=ganlab
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d / 'munge.sock'}
CredType=cred/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=lab Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = []

    def start(cmd, log):
        procs.append(subprocess.Popen(cmd, env=env, stdout=open(d / log, "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True))

    def logs() -> str:
        return "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
                         for f in sorted(d.glob("*.log")) + sorted(d.glob("*.out")))
    try:
        start(["munged", "-F", "-f", f"--socket={d / 'munge.sock'}", f"--key-file={key}",
               f"--log-file={d / 'munged.log'}", f"--pid-file={d / 'munged.pid'}",
               f"--seed-file={d / 'munged.seed'}"], "munged.out")
        deadline = time.monotonic() + 10
        while not (d / "munge.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        start(["slurmctld", "-D", "-i"], "slurmctld.out")
        start(["slurmd", "-D", "-N", node], "slurmd.out")
        deadline, state = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the one-node SLURM cluster did not come up (sinfo: {state.strip()!r}):\n{logs()}",
                        pytrace=False)
        yield {"SLURM_CONF": str(conf)}
    finally:
        for p in reversed(procs):  # slurmd, slurmctld, munged: SIGTERM is their orderly stop
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def test_slurm_array_sweep(tmp_path, lab, slurm):
    origin = tmp_path / "origin.git"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, lab)

    def edit(p):
        p["variants"] = {VARIANT: p["variants"][VARIANT]}
        p["train"].update(max_steps=20, log_every=5, checkpoint_every=10)
        p["tracking"].update(uri=lab.uri, experiment="sweeps")
    carol = make_repo(tmp_path / "carol", edit)
    sh(["dvc", "remote", "add", "-d", "lab", "s3://ganlab/sweep-test"], carol, lab)
    sh(["dvc", "remote", "modify", "lab", "endpointurl", lab.client["AWS_ENDPOINT_URL_S3"]], carol, lab)
    sh(["dvc", "repro", f"train@{VARIANT}"], carol, lab)  # the baseline, and the data the tasks pull
    sh(["dvc", "push"], carol, lab)
    git_commit_all(carol, "baseline")
    sh(["git", "branch", "-M", "main"], carol, lab)
    sh(["git", "remote", "add", "origin", str(origin)], carol, lab)
    sh(["git", "push", "-q", "-u", "origin", "main"], carol, lab)

    grid = ["-S", f"variants.{VARIANT}.train.lr_d=0.01,0.02"]
    points = sh(["ganlab", "sweep", "points", *grid], carol, lab).stdout.splitlines()
    assert len(points) == 2
    out = tmp_path / "slurm-out"
    out.mkdir()
    env = {**lab.run_env(), **slurm, "GANLAB_REPO": str(origin), "GANLAB_SWEEP_WORKDIR": str(tmp_path / "nodes")}
    submit = subprocess.run(["sbatch", "--array=0-1", "--wait", f"--output={out}/task-%a.out",
                             str(REPO / "docs" / "slurm" / "sweep.sbatch"), SWEEP, *grid, f"train@{VARIANT}"],
                            cwd=carol, env=env, capture_output=True, text=True, timeout=400)
    logs = "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(out.glob("*.out")))
    assert submit.returncode == 0, f"{submit.stdout}{submit.stderr}\n{logs}"
    assert all(f"pushed to origin" in (out / f"task-{i}.out").read_text() for i in (0, 1)), logs

    # the collector, in a fresh clone: both experiments in one dvc exp show and one report
    dave = tmp_path / "dave"
    sh(["git", "clone", "-q", str(origin), str(dave)], tmp_path, lab)
    sh(["ganlab", "sweep", "collect", SWEEP, "--out", str(tmp_path / "report.md")], dave, lab)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], dave, lab).stdout)
    exps = {r["name"]: r["data"] for b in shown for e in b.get("experiments") or [] for r in e["revs"]}
    assert {f"{SWEEP}-0", f"{SWEEP}-1"} <= set(exps)
    lr = {n: exps[n]["params"]["params.yaml"]["data"]["variants"][VARIANT]["train"]["lr_d"] for n in exps}
    assert lr[f"{SWEEP}-0"] == 0.01 and lr[f"{SWEEP}-1"] == 0.02
    report = (tmp_path / "report.md").read_text()
    assert f"# Sweep {SWEEP}: 2 experiments" in report
    rows = [line for line in report.splitlines() if line.startswith(f"| {SWEEP}-")]
    assert len(rows) == 2 and "| 0.01 |" in rows[0] and "| 0.02 |" in rows[1] and all("| 20 |" in r for r in rows)

    # both runs are on the shared tracking server, named after their experiments
    client = MlflowClient(lab.uri)
    os.environ["MLFLOW_TRACKING_USERNAME"] = lab.client["MLFLOW_TRACKING_USERNAME"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = lab.client["MLFLOW_TRACKING_PASSWORD"]
    try:
        runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id],
                                  f"tags.dvc_exp_name LIKE '{SWEEP}-%'")
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    by_name = {r.data.tags["dvc_exp_name"]: r for r in runs}
    assert set(by_name) == {f"{SWEEP}-0", f"{SWEEP}-1"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {by_name[f"{SWEEP}-{i}"].data.params["train.lr_d"] for i in (0, 1)} == {"0.01", "0.02"}
    assert by_name[f"{SWEEP}-0"].data.params["train.lr_d"] == "0.01"
    assert by_name[f"{SWEEP}-0"].info.run_id in report
