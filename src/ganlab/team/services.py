"""The lab's three services, each behind one door (docs/team.md, "The lab's threat model"):

- PostgreSQL: no TCP at all; a Unix socket in <lab>/postgres/socket (0700), one pg_hba line: the `ganlab` role
  with its password through that socket. As root it runs as Debian's `postgres` user.
- SeaweedFS (`weed mini`): in a network namespace of its own (`unshare --net`, only its loopback inside), so its
  master, volume, filer, admin and gRPC ports reach nobody outside it; the S3 gateway also listens on a Unix socket
  in <lab>/seaweedfs (0700), and `socat` relays GANLAB_LAB_HOST:GANLAB_LAB_S3_PORT to that socket: the one door,
  locked by S3 signatures (identities in <lab>/seaweedfs/s3.json; SIGHUP reloads them).
- `mlflow server --app-name basic-auth` (through ganlab.tracking.ui: the runs tables open with the headline scores) on
  GANLAB_LAB_HOST:GANLAB_LAB_MLFLOW_PORT, answering only the lab's names
  (--allowed-hosts) and only the lab's own web origins (--cors-allowed-origins).

Every daemon is recorded as "pid start-time" and stopped only if that pid still has that start time.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Optional

from ganlab.io import alive
from ganlab.team.lab_config import (ADMIN_USER, PG_USER, START_TIMEOUT, Lab, LabError, as_postgres, pg_bin,
                                    port_free, private_dir, program, start_time, tail, wait, write_private)

PROBE = ".ganlab-lab-ready"  # written and deleted once per start
PROBE_WAIT = 120.0  # seconds a probe's put or delete is waited for (a gateway that is not up refuses at once)
SETUP = "run `make setup` (the Python packages) and `make services` (Debian's postgresql and socat)"


class Postgres:
    def __init__(self, lab: Lab):
        self.lab, self.root = lab, lab.dir / "postgres"
        self.data, self.log = self.root / "data", self.root / "postgres.log"

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return subprocess.run(as_postgres() + [pg_bin("pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True).returncode == 0

    def _folders(self) -> None:
        for d in (self.root, self.lab.pg_socket_dir):
            private_dir(d)
            if as_postgres():
                shutil.chown(d, "postgres", "postgres")

    def _initdb(self, password: str) -> None:
        pwfile = self.root / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (password + "\n").encode())
        os.close(fd)
        if as_postgres():
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            proc = subprocess.run(as_postgres() + [pg_bin("initdb"), "-D", str(self.data), "-U", PG_USER,
                                                   f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8",
                                                   "--locale=C.UTF-8"], capture_output=True, text=True)
        finally:
            pwfile.unlink()
        if proc.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)  # nothing half-made left behind
            raise LabError(f"initdb failed:\n{proc.stdout}{proc.stderr}")

    def start(self, password: str) -> None:
        self._folders()
        if not (self.data / "PG_VERSION").exists():
            self._initdb(password)
        # exactly the lab's own connections: the one role, by password, through the private socket
        (self.data / "pg_hba.conf").write_text(f"local all {PG_USER} scram-sha-256\n")
        if self.running():
            return
        opts = " ".join(["-p", str(self.lab.pg_port), "-c", "listen_addresses=''",
                         "-c", shlex.quote(f"unix_socket_directories={self.lab.pg_socket_dir}"),
                         "-c", "unix_socket_permissions=0700"])
        proc = subprocess.run(as_postgres() + [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                                               "-t", str(int(START_TIMEOUT)), "-o", opts, "start"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"PostgreSQL did not start ({proc.stdout.strip()} {proc.stderr.strip()}); "
                           f"the end of {self.log}:\n{tail(self.log)}")
        self.databases(password)

    def connect(self, password: str, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(host=str(self.lab.pg_socket_dir), port=self.lab.pg_port, user=PG_USER,
                               password=password, dbname=dbname, autocommit=True)

    def databases(self, password: str) -> None:
        with self.connect(password) as conn:
            have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            for db in ("mlflow", "mlflow_auth"):
                if db not in have:
                    conn.execute(f'CREATE DATABASE "{db}"')

    def stop(self) -> None:
        if self.running():
            proc = subprocess.run(as_postgres() + [pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                                   "stop"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise LabError(f"pg_ctl stop failed: {proc.stdout}{proc.stderr}")


class Daemon:
    """A background process of ours, recorded as "pid start-time"; stopped only while that pid has that start
    time (a recycled pid belongs to someone else and is left alone)."""

    def __init__(self, lab: Lab, name: str):
        self.lab, self.name = lab, name
        self.pidfile, self.log = lab.dir / "run" / f"{name}.pid", lab.dir / "logs" / f"{name}.log"

    def pid(self) -> Optional[int]:
        try:
            pid, started = map(int, self.pidfile.read_text().split())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) and start_time(pid) == started else None

    def spawn(self, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        private_dir(self.pidfile.parent)
        private_dir(self.log.parent)
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, umask=0o077,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        write_private(self.pidfile, f"{proc.pid} {start_time(proc.pid)}\n")
        return proc

    def stop(self, timeout: float = 20.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)  # its own session (start_new_session): the server and its workers
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid) and start_time(pid) is not None:
                os.killpg(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)


class ObjectStore(Daemon):
    """`weed mini` alone in a network namespace; its S3 gateway's Unix socket is the only way in."""

    # The source ports of connections inside its namespace (the kernel's default, 32768-60999, overlaps the parts'
    # ports: one part's connection to another once held the filer's gRPC port when the filer came to listen on it,
    # and `weed mini` exited with "bind: address already in use"). Per namespace, settable there without root.
    EPHEMERAL = (59000, 65535)

    def __init__(self, lab: Lab):
        super().__init__(lab, "seaweedfs")
        self.root = lab.dir / "seaweedfs"
        self.socket, self.config = self.root / "s3.sock", self.root / "s3.json"

    def reload(self) -> None:
        """Re-read s3.json (identities) without a restart."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    def ports(self) -> list[str]:
        """Its parts' ports inside its network namespace, this lab's own: SeaweedFS also names Unix sockets after
        them in the host's /tmp (/tmp/seaweedfs-master-grpc-<port>.sock ...), so two labs on one host with the
        default ports would talk to each other's master and volumes through those sockets. All below the
        namespace's ephemeral range (EPHEMERAL): a part's outgoing connection never holds a port another part
        has yet to listen on."""
        base = 20000 + zlib.crc32(str(self.lab.dir.resolve()).encode()) % 2900 * 10  # 20000..48990; gRPC +10000
        parts = ("master", "volume", "filer", "s3", "admin")
        return [flag for i, part in enumerate(parts)
                for flag in (f"-{part}.port={base + i}", f"-{part}.port.grpc={base + 10000 + i}")]

    def start(self) -> None:
        if self.pid() is not None:
            return
        data = private_dir(self.root / "data")
        self.socket.unlink(missing_ok=True)
        netns = ["--net"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--net"]
        origins = ",".join(f"http://{n}:{self.lab.mlflow_port}" for n in self.lab.server_names())
        cmd = [program("unshare", "util-linux's unshare is missing"), *netns, "--",
               "sh", "-c", 'ip link set lo up && echo "$0" > /proc/sys/net/ipv4/ip_local_port_range && exec "$@"',
               "%d %d" % self.EPHEMERAL,  # the namespace's own loopback for its parts, and its source ports
               program("weed", SETUP), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-bucket={self.lab.bucket}", "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-webdav=false", "-admin.ui=false", "-s3.iam=false",  # no doors we do not use: identities are s3.json's
               f"-s3.config={self.config}", f"-s3.localSocket={self.socket}",
               f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.allowedOrigins={origins}",
               f"-filer.allowedOrigins={origins}", *self.ports()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        proc = self.spawn(cmd, env, data)
        try:
            wait("SeaweedFS", self.socket.exists, self.log, proc)
        except BaseException:
            self.stop()
            raise


class Relay(Daemon):
    """socat: GANLAB_LAB_HOST:GANLAB_LAB_S3_PORT -> the S3 gateway's Unix socket (bytes as they are, so S3
    signatures, which cover the Host header, still check)."""

    def __init__(self, lab: Lab):
        super().__init__(lab, "s3-relay")

    def ready(self, access: str, secret: str) -> bool:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = boto3.client("s3", endpoint_url=self.lab.s3_endpoint, aws_access_key_id=access,
                          aws_secret_access_key=secret, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=PROBE_WAIT))
        # Ready to write, not only to answer: right after a start the volumes may not take data yet. A put is
        # waited for, never abandoned: one given up on after a few seconds could still land after a later try's
        # delete and leave the probe in the bucket (seen once, on a loaded machine, in a restarted lab's listing).
        try:
            s3.put_object(Bucket=self.lab.bucket, Key=PROBE, Body=b"ready")
            s3.delete_object(Bucket=self.lab.bucket, Key=PROBE)
            return True
        except (BotoCoreError, ClientError):
            return False

    def start(self, access: str, secret: str) -> None:
        if self.pid() is None:
            if not port_free(self.lab.host, self.lab.s3_port):
                raise LabError(f"port {self.lab.s3_port} on {self.lab.host} is taken; stop what uses it or set "
                               f"GANLAB_LAB_S3_PORT")
            sock = ObjectStore(self.lab).socket
            cmd = [program("socat", "install Debian's socat (make services)"),
                   f"TCP-LISTEN:{self.lab.s3_port},bind={self.lab.host},fork,reuseaddr,backlog=128",
                   f"UNIX-CONNECT:{sock}"]
            proc = self.spawn(cmd, dict(os.environ), self.lab.dir)
        else:
            proc = None
        try:
            wait("the S3 gateway", lambda: self.ready(access, secret), self.log, proc)
        except BaseException:
            self.stop()
            raise


class TrackingServer(Daemon):
    def __init__(self, lab: Lab):
        super().__init__(lab, "mlflow")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.lab.tracking_uri}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def command(self) -> list[str]:
        names, port = self.lab.server_names(), self.lab.mlflow_port
        program("mlflow", SETUP)  # installed; served through ganlab.tracking.ui: MLflow's app, ganlab's first page
        return [sys.executable, "-m", "ganlab.tracking.ui", "server", "--app-name", "basic-auth",
                "--backend-store-uri", self.lab.pg_uri("mlflow"), "--artifacts-destination", self.lab.artifacts,
                "--host", self.lab.host, "--port", str(port), "--workers", "1",
                "--allowed-hosts", ",".join([*names, *(f"{n}:{port}" for n in names)]),
                "--cors-allowed-origins", ",".join(f"http://{n}:{port}" for n in names)]

    def start(self, s: dict[str, str]) -> None:
        if self.pid() is not None:
            return
        if not port_free(self.lab.host, self.lab.mlflow_port):
            raise LabError(f"port {self.lab.mlflow_port} on {self.lab.host} is taken; stop what uses it or set "
                           f"GANLAB_LAB_MLFLOW_PORT")
        auth = private_dir(self.lab.dir / "mlflow") / "basic_auth.ini"
        write_private(auth, "[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = {self.lab.pg_uri('mlflow_auth')}\n"
                        f"admin_username = {ADMIN_USER}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "AWS_"))}
        env.update({"PGPASSWORD": s["GANLAB_LAB_PG_PASSWORD"], "AWS_ACCESS_KEY_ID": s["GANLAB_LAB_S3_ACCESS_KEY"],
                    "AWS_SECRET_ACCESS_KEY": s["GANLAB_LAB_S3_SECRET_KEY"],
                    "MLFLOW_S3_ENDPOINT_URL": self.lab.s3_endpoint, "MLFLOW_AUTH_CONFIG_PATH": str(auth),
                    "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
                    "MLFLOW_AUTH_ADMIN_PASSWORD": s["MLFLOW_AUTH_ADMIN_PASSWORD"],
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": s["GANLAB_LAB_FLASK_SECRET"],
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as `ganlab ui` (tracking.telemetry); the admin may set it
        proc = self.spawn(self.command(), env, auth.parent)
        try:
            wait("the MLflow server", self.ready, self.log, proc)
        except BaseException:
            self.stop()
            raise
