"""`ganlab lab backup DIR` and `ganlab lab restore DIR`: everything a lab holds, in one folder (mode 0700).

    DIR/mlflow.dump, DIR/mlflow_auth.dump   pg_dump -Fc of MLflow's runs and of its users
    DIR/objects/<key>                       every object of the bucket (MLflow's artifacts, DVC's cache)
    DIR/objects.json                        key -> sha256, checked again on restore
    DIR/secrets.env, DIR/accounts.json      the lab's keys and the people's S3 identities (hence 0700)

A backup is taken from a running lab and written beside DIR first, then renamed: a half-written backup is never
left under DIR's name. A restore goes into a fresh lab (a GANLAB_LAB_DIR that never ran), with the backup's keys,
so every user, password and S3 identity works as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ganlab.team.lab_config import PG_USER, Lab, LabError, pg_bin, private_dir, run, write_private
from ganlab.team.services import Postgres

DATABASES = ("mlflow", "mlflow_auth")


def _s3(lab: Lab):
    import boto3

    s = lab.secrets()
    return boto3.client("s3", endpoint_url=lab.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=s["GANLAB_LAB_S3_ACCESS_KEY"],
                        aws_secret_access_key=s["GANLAB_LAB_S3_SECRET_KEY"])


def _pg_env(lab: Lab) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": lab.secrets()["GANLAB_LAB_PG_PASSWORD"],
            "PGHOST": str(lab.pg_socket_dir), "PGPORT": str(lab.pg_port), "PGUSER": PG_USER}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def backup(lab: Lab, dest: Path) -> dict[str, int]:
    if dest.exists():
        raise LabError(f"{dest} exists; give a new folder (a backup never overwrites another)")
    if not Postgres(lab).running():
        raise LabError("the lab is not running; start it (make lab-up): a backup reads from the live services")
    shutil.rmtree(dest.with_name(f".{dest.name}.partial"), ignore_errors=True)  # a killed backup's remains
    work = private_dir(dest.with_name(f".{dest.name}.partial"))
    try:
        for db in DATABASES:
            run([pg_bin("pg_dump"), "-Fc", "-f", str(work / f"{db}.dump"), db], f"pg_dump {db}", env=_pg_env(lab))
        s3, digests = _s3(lab), {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=lab.bucket):
            for obj in page.get("Contents", []):
                target = work / "objects" / obj["Key"]
                private_dir(target.parent)
                s3.download_file(lab.bucket, obj["Key"], str(target))
                digests[obj["Key"]] = sha256(target)
        write_private(work / "objects.json", json.dumps(digests, indent=1, sort_keys=True) + "\n")
        for name in ("secrets.env", "accounts.json"):
            if (lab.dir / name).exists():
                shutil.copy2(lab.dir / name, work / name)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"objects": len(digests)}


def check_backup(src: Path) -> dict[str, str]:
    """Refuse a folder that is not a whole backup, before anything starts."""
    missing = [n for n in (*(f"{db}.dump" for db in DATABASES), "objects.json", "secrets.env")
               if not (src / n).is_file()]
    if missing:
        raise LabError(f"{src} is not a lab backup (no {', '.join(missing)}); give a folder made by "
                       f"`ganlab lab backup`")
    digests = json.loads((src / "objects.json").read_text())
    for key, digest in digests.items():
        path = src / "objects" / key
        if not path.is_file() or sha256(path) != digest:
            raise LabError(f"{path} is missing or differs from its checksum in objects.json; the backup is damaged")
    return digests


def prepare_restore(lab: Lab, src: Path) -> dict[str, str]:
    """Check the backup and the target, then give the fresh lab the backup's keys."""
    digests = check_backup(src)
    if lab.dir.exists() and any(lab.dir.iterdir()):
        raise LabError(f"{lab.dir} is not empty (it holds a lab already?); restore into a fresh lab: set "
                       f"GANLAB_LAB_DIR to a new or empty folder (a restore never mixes two labs)")
    for name in ("secrets.env", "accounts.json"):
        if (src / name).exists():
            write_private(lab.dir / name, (src / name).read_text())
    return digests


def restore_databases(lab: Lab, src: Path) -> None:
    """Into the empty databases, before the MLflow server first opens them."""
    for db in DATABASES:
        run([pg_bin("pg_restore"), "--no-owner", "-d", db, str(src / f"{db}.dump")], f"pg_restore {db}",
            env=_pg_env(lab))


def restore_objects(lab: Lab, src: Path, digests: dict[str, str]) -> None:
    s3 = _s3(lab)
    for key in digests:
        s3.upload_file(str(src / "objects" / key), lab.bucket, key)
