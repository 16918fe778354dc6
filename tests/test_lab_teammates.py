"""Two teammates on "other machines": processes whose /etc/hosts (their own, bind-mounted in a private mount
namespace; this machine's file is never touched) maps the lab's name to its address, 127.0.0.2. Alice (role edit)
runs an experiment logging to http://lab-host:PORT and pushes it to the lab's S3; Bob (role read) pulls it and
finds the same run on the server. Neither has the admin's keys: only what `ganlab lab add-user` printed."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from conftest import LAB_HOST, LAB_NAME, parse_exports
from helpers import env, git_commit_all, make_repo

pytestmark = pytest.mark.e2e
VARIANT = "gaussian_2d"


def as_teammate(cmd: list[str], cwd: Path, keys: dict[str, str], hosts: Path) -> str:
    """`cmd` with the teammate's own environment and /etc/hosts."""
    e = {**env(), **keys}
    e.pop("MLFLOW_TRACKING_URI")  # the address comes from params.yaml: tracking.uri, as docs/team.md has it
    wrapped = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *cmd]
    proc = subprocess.run(wrapped, cwd=cwd, env=e, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def test_teammates_reach_the_lab_by_name(lab, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{LAB_HOST} {LAB_NAME}\n")
    mlflow_port, s3_port = lab.env["GANLAB_LAB_MLFLOW_PORT"], lab.env["GANLAB_LAB_S3_PORT"]
    alice_keys = parse_exports(lab.lab("add-user", "alice", "--role", "edit", "--experiment", "teammates").stdout)
    bob_keys = parse_exports(lab.lab("add-user", "bob", "--role", "read").stdout)
    assert alice_keys["MLFLOW_TRACKING_USERNAME"] == "alice" and bob_keys["MLFLOW_TRACKING_USERNAME"] == "bob"

    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)

    def edit(p):
        p["variants"] = {VARIANT: p["variants"][VARIANT]}
        p["train"].update(max_steps=10, log_every=5, checkpoint_every=10)
        p["tracking"].update(uri=f"http://{LAB_NAME}:{mlflow_port}", experiment="teammates")
    alice = make_repo(tmp_path / "alice", edit)
    # docs/team.md's teammate recipe, by the lab's name
    for cmd in (["dvc", "remote", "add", "-d", "lab", "s3://ganlab/teammates"],
                ["dvc", "remote", "modify", "lab", "endpointurl", f"http://{LAB_NAME}:{s3_port}"]):
        as_teammate(cmd, alice, alice_keys, hosts)
    git_commit_all(alice)
    for cmd in (["git", "branch", "-M", "main"], ["git", "remote", "add", "origin", str(origin)],
                ["git", "push", "-q", "-u", "origin", "main"]):
        subprocess.run(cmd, cwd=alice, check=True)
    as_teammate(["dvc", "exp", "run", "-n", "by-name", f"train@{VARIANT}"], alice, alice_keys, hosts)
    as_teammate(["dvc", "exp", "push", "origin", "by-name"], alice, alice_keys, hosts)

    bob = tmp_path / "bob"
    subprocess.run(["git", "clone", "-q", str(origin), str(bob)], check=True)
    as_teammate(["dvc", "exp", "pull", "origin", "by-name"], bob, bob_keys, hosts)
    shown = json.loads(as_teammate(["dvc", "exp", "show", "--json"], bob, bob_keys, hosts))
    (exp,) = [r for b in shown for e in b.get("experiments") or [] for r in e["revs"] if r.get("name") == "by-name"]
    # the experiment's model came with it: in Bob's cache, the bytes Alice trained
    lock = yaml.safe_load(subprocess.run(["git", "show", f"{exp['rev']}:dvc.lock"], cwd=bob, check=True,
                                         capture_output=True, text=True).stdout)
    cache = bob / ".dvc" / "cache" / "files" / "md5"
    (tree,) = [o["md5"] for o in lock["stages"][f"train@{VARIANT}"]["outs"] if o["path"] == f"models/{VARIANT}"]
    (md5,) = [f["md5"] for f in json.loads((cache / tree[:2] / tree[2:]).read_text())
              if f["relpath"] == "generator.pt"]
    mine = hashlib.md5((cache / md5[:2] / md5[2:]).read_bytes()).hexdigest()
    assert mine == md5 == hashlib.md5((alice / "models" / VARIANT / "generator.pt").read_bytes()).hexdigest()
    run_id = json.loads(subprocess.run(["git", "show", f"{exp['rev']}:metrics/{VARIANT}/train.json"], cwd=bob,
                                       check=True, capture_output=True, text=True).stdout)["run_id"]

    # Bob sees Alice's run on the server, by the lab's name, with MLflow's client and his own read-only keys
    show = ("import json, sys; from mlflow.tracking import MlflowClient; r = MlflowClient(sys.argv[1]).get_run("
            "sys.argv[2]); print(json.dumps([r.info.status, r.data.tags, r.data.metrics, r.data.params]))")
    status, tags, metrics, params = json.loads(as_teammate(
        ["python", "-c", show, f"http://{LAB_NAME}:{mlflow_port}", run_id], bob, bob_keys, hosts))
    assert status == "FINISHED" and tags["dvc_exp_name"] == "by-name"
    assert metrics["train/steps"] == 10 and params["train.max_steps"] == "10"
    # a name the lab was not told of is refused (DNS rebinding), the lab's own name is answered
    for name, code in ((LAB_NAME, 401), (LAB_HOST, 401), (socket.gethostname(), 401), (socket.getfqdn(), 401),
                       ("other-host", 403)):
        r = requests.get(f"http://{LAB_HOST}:{mlflow_port}/api/2.0/mlflow/experiments/search",
                         headers={"Host": f"{name}:{mlflow_port}"}, timeout=10)
        assert r.status_code == code, (name, r.status_code)
