"""A lab's shared services on one machine: PostgreSQL, an S3 object store (SeaweedFS) and MLflow's tracking server.

    ganlab lab up | down | status                 (make lab-up / lab-down / lab-status)
    ganlab lab env [--admin]                      where the lab is; --admin: the lab host's own admin keys
    ganlab lab add-user NAME --role read|edit [--experiment E ...]   a person's keys, printed once
    ganlab lab remove-user NAME                   revokes both of that person's keys
    ganlab lab backup DIR | restore DIR           everything the lab holds; restore into a fresh lab

Only two doors face the network, both on GANLAB_LAB_HOST: the MLflow server (basic auth) and the S3 gateway (S3
signatures); PostgreSQL and SeaweedFS's own parts listen on no address anyone else can use (ganlab.team.services).
The lab's folder is private: every folder 0700 (the top one 0710 with group `postgres` as root, so that PostgreSQL
reaches its own folder), our files 0600 (SeaweedFS's .vif files are 0644, unreachable inside 0700 folders).
Settings: ganlab.team.lab_config; accounts: ganlab.team.accounts; backups: ganlab.team.backup.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Optional

from ganlab.team import accounts, backup
from ganlab.team.lab_config import ADMIN_USER, SECRET_KEYS, Lab, LabError, as_postgres, private_dir
from ganlab.team.services import ObjectStore, Postgres, Relay, TrackingServer

__all__ = ["Lab", "LabError", "SECRET_KEYS", "up", "down", "status", "main"]


def _private_folder(lab: Lab) -> None:
    private_dir(lab.dir)
    if as_postgres():  # root: PostgreSQL (user postgres) must pass through to <lab>/postgres, and no one else
        shutil.chown(lab.dir, group="postgres")
        os.chmod(lab.dir, 0o710)


def up(lab: Lab, restore_from: Optional[Path] = None) -> None:
    digests = backup.prepare_restore(lab, restore_from) if restore_from else None
    _private_folder(lab)
    s = lab.secrets(create=True)
    started: list = []
    try:
        pg = Postgres(lab)
        pg.start(s["GANLAB_LAB_PG_PASSWORD"])
        started.append(pg)
        if restore_from:
            backup.restore_databases(lab, restore_from)
        accounts.write_s3_identities(lab, accounts.load(lab))
        store, door = ObjectStore(lab), Relay(lab)
        started += [store, door]
        store.start()
        door.start(s["GANLAB_LAB_S3_ACCESS_KEY"], s["GANLAB_LAB_S3_SECRET_KEY"])
        if digests is not None:
            backup.restore_objects(lab, restore_from, digests)
        server = TrackingServer(lab)
        started.append(server)
        server.start(s)
    except BaseException:
        for service in reversed(started):  # no half-started lab: what came up goes down again
            service.stop()
        if restore_from:  # nor a half-restored one (prepare_restore checked the folder was new or empty)
            shutil.rmtree(lab.dir, ignore_errors=True)
        raise


def down(lab: Lab) -> None:
    for service in (TrackingServer(lab), Relay(lab), ObjectStore(lab), Postgres(lab)):
        service.stop()


def status(lab: Lab) -> dict[str, bool]:
    return {"postgres": Postgres(lab).running(), "seaweedfs": ObjectStore(lab).pid() is not None,
            "s3-gateway": Relay(lab).pid() is not None, "mlflow": TrackingServer(lab).ready()}


def _exports(values: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ganlab lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        sub.add_parser(name)
    sub.add_parser("env").add_argument("--admin", action="store_true",
                                       help="also the admin's keys (the lab host only; never hand them over)")
    add = sub.add_parser("add-user", help="a person's MLflow user and S3 identity")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=accounts.ROLES)
    add.add_argument("--experiment", action="append", default=[],
                     help="edit: the experiments to edit (made if missing); default every experiment existing now")
    sub.add_parser("remove-user").add_argument("name")
    for name in ("backup", "restore"):
        sub.add_parser(name).add_argument("folder", type=Path)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        lab = Lab.from_env()
        if args.command in ("up", "restore"):
            up(lab, args.folder.resolve() if args.command == "restore" else None)
            print(f"lab up in {lab.dir}:\n  MLflow   {lab.tracking_uri}  (admin user {ADMIN_USER}, names "
                  f"{', '.join(lab.server_names())})\n  S3       {lab.s3_endpoint}  bucket {lab.bucket}\n"
                  f"  Postgres socket {lab.pg_socket_dir}\nteammates: ganlab lab add-user NAME --role read|edit",
                  file=sys.stderr)
        elif args.command == "down":
            down(lab)
            print(f"lab down (data kept in {lab.dir})", file=sys.stderr)
        elif args.command == "status":
            st = status(lab)
            for name, ok in st.items():
                print(f"{name:10s} {'running' if ok else 'stopped'}")
            return 0 if all(st.values()) else 3
        elif args.command == "env":
            print(_exports(lab.client_env(admin=args.admin)), end="")
        elif args.command == "add-user":
            print(_exports(accounts.add_user(lab, args.name, args.role, args.experiment)), end="")
            print(f"{args.name} ({args.role}): hand these lines over privately; the password is not shown again",
                  file=sys.stderr)
        elif args.command == "remove-user":
            accounts.remove_user(lab, args.name)
            print(f"{args.name}: MLflow user and S3 identity removed", file=sys.stderr)
        else:
            made = backup.backup(lab, args.folder.resolve())
            print(f"backup in {args.folder}: both databases and {made['objects']} objects", file=sys.stderr)
    except LabError as err:
        print(f"lab {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
