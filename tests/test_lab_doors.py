"""The lab as an attacker sees it (docs/team.md, "The lab's threat model"): every socket its processes listen on,
tried without credentials and with a READ teammate's; a browser origin of another site; the folder's modes;
and a removed person's keys."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import LAB_HOST, parse_exports

pytestmark = pytest.mark.e2e
EVIL = "https://evil.example"


def _stat(pid: int) -> tuple[int, int]:
    """(ppid, session id) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def lab_pids(lab) -> set[int]:
    """The daemons the lab recorded, PostgreSQL's postmaster, and every process below them."""
    roots = {int(p.read_text().split()[0]) for p in (lab.dir / "run").glob("*.pid")}
    roots.add(int((lab.dir / "postgres" / "data" / "postmaster.pid").read_text().split()[0]))
    family, procs = set(roots), {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                procs[int(d.name)] = _stat(int(d.name))
            except (OSError, IndexError):
                pass
    for _ in range(5):  # children of children
        family |= {pid for pid, (ppid, sid) in procs.items() if ppid in family or sid in roots}
    return family


def listening(pids: set[int]) -> set[tuple[str, str, int]]:
    """(network namespace, address, port) of each TCP socket in LISTEN that these processes hold open."""
    found = set()
    for pid in pids:
        try:
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                      if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
            netns = os.readlink(f"/proc/{pid}/ns/net")
            rows = [line.split() for name in ("tcp", "tcp6")
                    for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for row in rows:
            if row[3] == "0A" and row[9] in inodes:  # st == LISTEN, inode
                addr, port = row[1].rsplit(":", 1)
                ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr
                found.add((netns, ip, int(port, 16)))
    return found


def test_only_two_doors_and_a_private_folder(lab):
    """In this machine's network the lab listens on exactly MLflow's and S3's port of its address; PostgreSQL has
    no TCP socket; SeaweedFS's master, volume, filer, admin and gRPC ports live in a namespace no one else reaches."""
    ours = os.readlink("/proc/self/ns/net")
    sockets = listening(lab_pids(lab))
    here = {(ip, port) for ns, ip, port in sockets if ns == ours}
    assert here == {(LAB_HOST, int(lab.env["GANLAB_LAB_MLFLOW_PORT"])), (LAB_HOST, int(lab.env["GANLAB_LAB_S3_PORT"]))}
    hidden = {(ip, port) for ns, ip, port in sockets if ns != ours}
    assert len(hidden) >= 5, hidden  # master, volume, filer, S3 and their gRPC ports: there, but elsewhere
    ours_listening = {(ip, port) for ns, ip, port in listening({os.getpid()}) if ns == ours}
    for ip, port in sorted(hidden):
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((ip, port)) != 0 or (ip, port) in ours_listening, (ip, port)
    if os.geteuid() == 0:  # and all below that namespace's source ports (read there: nsenter needs root), so no
        # connection of one part can hold a port another part is about to listen on
        weed = next(pid for pid in lab_pids(lab) if os.readlink(f"/proc/{pid}/ns/net") != ours)
        low, _ = map(int, subprocess.run(["nsenter", f"--net=/proc/{weed}/ns/net", "cat",
                                          "/proc/sys/net/ipv4/ip_local_port_range"],
                                         capture_output=True, text=True, check=True).stdout.split())
        assert max(port for _, port in hidden) < low, (sorted(hidden), low)
    # PostgreSQL admits one role, by password, through its socket: no other line
    assert (lab.dir / "postgres" / "data" / "pg_hba.conf").read_text() == "local all ganlab scram-sha-256\n"
    # the folder: nothing for other users (the top folder lets group postgres pass, as root)
    top = stat.S_IMODE(lab.dir.stat().st_mode)
    assert top == (0o710 if os.geteuid() == 0 else 0o700), oct(top)
    loose = [p for p in lab.dir.rglob("*") if stat.S_IMODE(p.lstat().st_mode) & 0o077 and not p.is_symlink()]
    assert [str(p) for p in loose if p.is_dir()] == []
    # a few files come with modes of their own (SeaweedFS writes its .vif volume info 0644): a local user
    # (`nobody`) still reads none of them, nor lists the lab's folder
    if os.geteuid() == 0:
        for target in [["ls", str(lab.dir)], *(["cat", str(p)] for p in loose),
                       ["cat", str(lab.dir / "secrets.env")], ["ls", str(lab.dir / "postgres" / "socket")]]:
            tried = subprocess.run(["runuser", "-u", "nobody", "--", *target], capture_output=True, text=True)
            assert tried.returncode != 0 and "Permission denied" in tried.stderr, target


def _s3(lab, keys: dict[str, str]):
    return boto3.client("s3", endpoint_url=lab.client["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"], config=Config(retries={"max_attempts": 1}),
                        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


def _iam(lab, keys: dict[str, str], action: str) -> requests.Response:
    """An IAM call, signed with `keys`, at the S3 door (SeaweedFS serves IAM there unless told not to)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest("POST", lab.client["AWS_ENDPOINT_URL_S3"] + "/", data=f"Action={action}&UserName=mallory"
                     "&Version=2010-05-08", headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials(keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"]), "iam", "us-east-1").add_auth(req)
    return requests.post(req.url, data=req.body, headers=dict(req.headers), timeout=10)


def _denied(call) -> str:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def reader(lab):
    return parse_exports(lab.lab("add-user", "reed", "--role", "read").stdout)


def test_strangers_and_readers_read_and_change_nothing(lab, reader, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", lab.client["MLFLOW_TRACKING_PASSWORD"])
    admin = MlflowClient(lab.uri)
    exp = admin.create_experiment("doors")
    run = admin.create_run(exp).info.run_id
    admin.log_text(run, "secret result", "notes/result.txt")
    api, me = f"{lab.uri}/api/2.0/mlflow", ("reed", reader["MLFLOW_TRACKING_PASSWORD"])
    art = f"{lab.uri}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/notes/result.txt"

    # MLflow: a stranger gets nothing; a reader reads and changes nothing
    for method, url, body in [("GET", f"{api}/experiments/search?max_results=5", None), ("GET", art, None),
                              ("POST", f"{api}/runs/create", {"experiment_id": exp}),
                              ("POST", f"{api}/experiments/delete", {"experiment_id": exp}),
                              ("PUT", art, None), ("DELETE", art, None)]:
        assert requests.request(method, url, json=body, timeout=10).status_code == 401, (method, url)
        if method == "GET":
            assert requests.get(url, auth=me, timeout=10).status_code == 200, url
        else:
            assert requests.request(method, url, json=body, data=b"x" if method == "PUT" else None, auth=me,
                                    timeout=10).status_code == 403, (method, url)
    assert admin.get_experiment(exp).lifecycle_stage == "active"
    assert requests.get(art, auth=me, timeout=10).text == "secret result"
    assert len(admin.search_runs([exp])) == 1
    # a name the lab does not answer to (DNS rebinding) and a browser page of another site
    assert requests.get(f"{api}/experiments/search", auth=me, headers={"Host": "evil.example"},
                        timeout=10).status_code == 403
    for method in ("GET", "OPTIONS"):
        r = requests.request(method, f"{api}/experiments/search", auth=me, timeout=10,
                             headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert r.headers.get("Access-Control-Allow-Origin") in (None, ""), r.headers
    evil = requests.post(f"{api}/experiments/delete", json={"experiment_id": exp}, timeout=10,
                         auth=("admin", lab.client["MLFLOW_TRACKING_PASSWORD"]), headers={"Origin": EVIL})
    assert evil.status_code == 403 and admin.get_experiment(exp).lifecycle_stage == "active"

    # S3: unsigned requests get nothing, the reader reads and lists only
    s3_admin = _s3(lab, lab.client)
    s3_admin.put_object(Bucket="ganlab", Key="doors/object", Body=b"kept")
    obj = f"{lab.client['AWS_ENDPOINT_URL_S3']}/ganlab/doors/object"
    for method in ("GET", "PUT", "DELETE"):
        assert requests.request(method, obj, data=b"gone", timeout=10).status_code == 403, method
    assert requests.get(f"{lab.client['AWS_ENDPOINT_URL_S3']}/ganlab", timeout=10).status_code == 403
    mine = _s3(lab, reader)
    assert mine.get_object(Bucket="ganlab", Key="doors/object")["Body"].read() == b"kept"
    assert mine.list_objects_v2(Bucket="ganlab", Prefix="doors/")["KeyCount"] == 1
    assert _denied(lambda: mine.put_object(Bucket="ganlab", Key="doors/object", Body=b"changed")) == "AccessDenied"
    assert _denied(lambda: mine.delete_object(Bucket="ganlab", Key="doors/object")) == "AccessDenied"
    assert _denied(lambda: mine.create_bucket(Bucket="mine")) == "AccessDenied"
    assert s3_admin.get_object(Bucket="ganlab", Key="doors/object")["Body"].read() == b"kept"
    for keys in ({"AWS_ACCESS_KEY_ID": "stranger", "AWS_SECRET_ACCESS_KEY": "guess"}, reader):  # no IAM API
        for action in ("ListUsers", "CreateUser"):
            assert _iam(lab, keys, action).status_code >= 400, action
    pre = requests.options(obj, timeout=10, headers={"Origin": EVIL, "Access-Control-Request-Method": "DELETE"})
    assert pre.headers.get("Access-Control-Allow-Origin") in (None, ""), pre.headers


def test_removing_a_person_revokes_both_keys(lab):
    keys = parse_exports(lab.lab("add-user", "gone", "--role", "edit", "--experiment", "doors-edit").stdout)
    me = ("gone", keys["MLFLOW_TRACKING_PASSWORD"])
    search = f"{lab.uri}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(search, auth=me, timeout=10).status_code == 200
    _s3(lab, keys).put_object(Bucket="ganlab", Key="doors/by-gone", Body=b"x")  # edit: may write
    assert not {lab.client["MLFLOW_TRACKING_PASSWORD"], lab.client["AWS_SECRET_ACCESS_KEY"]} & set(keys.values())
    lab.lab("remove-user", "gone")
    assert requests.get(search, auth=me, timeout=10).status_code == 401
    deadline = time.monotonic() + 10  # SeaweedFS rereads its identities on SIGHUP, a moment later
    while time.monotonic() < deadline:
        try:
            _s3(lab, keys).get_object(Bucket="ganlab", Key="doors/by-gone")
            time.sleep(0.2)
        except ClientError as err:
            assert err.response["Error"]["Code"] == "InvalidAccessKeyId"
            break
    else:
        pytest.fail("the removed person's S3 key still works")
    again = lab.lab("remove-user", "gone", check=False)
    assert again.returncode == 1 and "no account 'gone'" in again.stderr
