"""Per-person accounts of a lab: `ganlab lab add-user NAME --role read|edit` and `remove-user NAME`.

A person gets two keys, both revoked together:
- an MLflow basic-auth user. Every user reads every experiment (the server's default_permission READ); `edit` adds
  EDIT on the experiments named with --experiment (made if missing), else on every experiment existing now.
- an S3 identity in <lab>/seaweedfs/s3.json limited to the lab's bucket: `read` may list and get, `edit` also
  put and delete (what `dvc push` needs). The admin's root identity stays on the lab host.
The records live in <lab>/accounts.json (0600): the S3 secret is needed there (SeaweedFS checks signatures with it);
the MLflow password is printed once and stored only as MLflow's hash.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from ganlab.team.lab_config import ADMIN_USER, Lab, LabError, write_private
from ganlab.team.services import ObjectStore, Relay

ROLES = ("read", "edit")
USER = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")
S3_ACTIONS = {"read": ("Read", "List"), "edit": ("Read", "List", "Write", "Tagging")}


def accounts_file(lab: Lab) -> Path:
    return lab.dir / "accounts.json"


def load(lab: Lab) -> dict[str, dict]:
    path = accounts_file(lab)
    return json.loads(path.read_text()) if path.exists() else {}


def write_s3_identities(lab: Lab, people: dict[str, dict]) -> None:
    """s3.json: the lab's root identity (the admin's, for MLflow's artifact proxy and backups) and one per person."""
    s = lab.secrets()
    root = {"name": ADMIN_USER, "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            "credentials": [{"accessKey": s["GANLAB_LAB_S3_ACCESS_KEY"], "secretKey": s["GANLAB_LAB_S3_SECRET_KEY"]}]}
    people_ids = [{"name": name, "actions": [f"{a}:{lab.bucket}" for a in S3_ACTIONS[p["role"]]],
                   "credentials": [{"accessKey": p["access_key"], "secretKey": p["secret_key"]}]}
                  for name, p in sorted(people.items())]
    write_private(ObjectStore(lab).config, json.dumps({"identities": [root, *people_ids]}, indent=1) + "\n")


def _mlflow(lab: Lab, method: str, path: str, **body):
    import requests

    s = lab.secrets()
    try:
        r = requests.request(method, f"{lab.tracking_uri}{path}", json=body or None, timeout=30,
                             auth=(ADMIN_USER, s["MLFLOW_AUTH_ADMIN_PASSWORD"]))
    except requests.RequestException as err:
        raise LabError(f"the MLflow server at {lab.tracking_uri} did not answer ({err}); start the lab "
                       f"(make lab-up) on this machine") from None
    if not r.ok:
        raise LabError(f"MLflow refused {method} {path}: {r.status_code} {r.text[:300]}")
    return r.json() if r.content else {}


def _experiment_ids(lab: Lab, names: list[str]) -> list[str]:
    if not names:
        found = _mlflow(lab, "POST", "/api/2.0/mlflow/experiments/search", max_results=1000)
        return [e["experiment_id"] for e in found.get("experiments", [])]
    ids = []
    for name in names:
        try:
            ids.append(_mlflow(lab, "GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
                       ["experiment"]["experiment_id"])
        except LabError:
            ids.append(_mlflow(lab, "POST", "/api/2.0/mlflow/experiments/create", name=name)["experiment_id"])
    return ids


def add_user(lab: Lab, name: str, role: str, experiments: list[str]) -> dict[str, str]:
    """Make both keys; returns the lines the person exports."""
    if not USER.match(name) or name == ADMIN_USER:
        raise LabError(f"user name {name!r}: use 2-32 lower-case letters, digits, '-' or '_', starting with a "
                       f"letter, and not {ADMIN_USER!r}")
    if role not in ROLES:
        raise LabError(f"role {role!r}: use one of {', '.join(ROLES)}")
    people = load(lab)
    if name in people:
        raise LabError(f"{name} has an account already; `ganlab lab remove-user {name}` first to give new keys")
    password = secrets.token_urlsafe(18)
    _mlflow(lab, "POST", "/api/2.0/mlflow/users/create", username=name, password=password)
    if role == "edit":
        for exp_id in _experiment_ids(lab, experiments):
            _mlflow(lab, "POST", "/api/3.0/mlflow/users/permissions/grant", username=name,
                    resource_type="experiment", resource_id=exp_id, permission="EDIT")
    people[name] = {"role": role, "access_key": "GL" + secrets.token_hex(9).upper(),
                    "secret_key": secrets.token_urlsafe(30)}
    write_s3_identities(lab, people)
    write_private(accounts_file(lab), json.dumps(people, indent=1) + "\n")
    ObjectStore(lab).reload()
    return {**lab.client_env(), "MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password,
            "AWS_ACCESS_KEY_ID": people[name]["access_key"], "AWS_SECRET_ACCESS_KEY": people[name]["secret_key"]}


def remove_user(lab: Lab, name: str) -> None:
    people = load(lab)
    if name not in people:
        raise LabError(f"no account {name!r} in {accounts_file(lab)}; the accounts are: "
                       f"{', '.join(sorted(people)) or 'none'}")
    del people[name]
    write_s3_identities(lab, people)  # the S3 key goes first: no window where it works and MLflow's does not
    write_private(accounts_file(lab), json.dumps(people, indent=1) + "\n")
    store = ObjectStore(lab)
    if store.pid() is not None:  # SIGHUP adds identities but keeps removed ones: restart (a few seconds)
        s = lab.secrets()
        store.stop()
        store.start()
        Relay(lab).start(s["GANLAB_LAB_S3_ACCESS_KEY"], s["GANLAB_LAB_S3_SECRET_KEY"])
    _mlflow(lab, "DELETE", "/api/2.0/mlflow/users/delete", username=name)
