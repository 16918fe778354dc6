"""The lab command's checks, before anything starts (the services themselves: test_team.py, test_sweep.py)."""

import stat
import subprocess
import sys

from ganlab.team.lab import SECRET_KEYS, Lab
from ganlab.team.lab_config import start_time
from helpers import env


def lab(args, tmp_path, **settings):
    e = {**env(), "GANLAB_LAB_DIR": str(tmp_path / "lab"), **settings}
    for k in SECRET_KEYS:
        e.pop(k, None)
    e.update(settings)
    return subprocess.run([sys.executable, "-m", "ganlab.cli", "lab", *args], env=e, capture_output=True, text=True)


def test_bad_settings_are_refused_before_anything_starts(tmp_path):
    bad = lab(["up"], tmp_path, GANLAB_LAB_MLFLOW_PORT="50x0")
    assert bad.returncode == 1 and "GANLAB_LAB_MLFLOW_PORT='50x0' is not a TCP port" in bad.stderr
    names = lab(["up"], tmp_path, GANLAB_LAB_NAMES="lab-host,bad name")
    assert names.returncode == 1 and "GANLAB_LAB_NAMES has 'bad name', which is not a host name" in names.stderr
    short = lab(["up"], tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD="short")
    assert short.returncode == 1 and "shorter than 12 characters" in short.stderr
    assert not (tmp_path / "lab" / "postgres").exists()


def test_env_needs_a_lab_and_keeps_secrets_private(tmp_path):
    none = lab(["env", "--admin"], tmp_path)
    assert none.returncode == 1 and "start the lab first (make lab-up)" in none.stderr
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "secrets.env").write_text("".join(f"{k}=value-of-{k.lower()}\n" for k in SECRET_KEYS))
    out = lab(["env"], tmp_path, GANLAB_LAB_MLFLOW_PORT="5999", GANLAB_LAB_S3_ACCESS_KEY="from-the-environment")
    assert out.returncode == 0, out.stderr
    lines = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    # for teammates: where the lab is, and no key of the admin's
    assert lines == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:8333"}
    admin = lab(["env", "--admin"], tmp_path, GANLAB_LAB_MLFLOW_PORT="5999",
                GANLAB_LAB_S3_ACCESS_KEY="from-the-environment")
    lines = dict(line.removeprefix("export ").split("=", 1) for line in admin.stdout.splitlines())
    assert lines == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999", "MLFLOW_TRACKING_USERNAME": "admin",
                     "MLFLOW_TRACKING_PASSWORD": "value-of-mlflow_auth_admin_password",
                     "AWS_ACCESS_KEY_ID": "from-the-environment",  # the environment wins over the file
                     "AWS_SECRET_ACCESS_KEY": "value-of-ganlab_lab_s3_secret_key",
                     "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:8333"}
    status = lab(["status"], tmp_path)
    assert status.returncode == 3 and "mlflow     stopped" in status.stdout
    restore = lab(["restore", str(tmp_path / "nothing")], tmp_path)
    assert restore.returncode == 1 and "is not a lab backup" in restore.stderr


def test_generated_secrets_are_private(tmp_path, monkeypatch):
    for k in SECRET_KEYS:
        monkeypatch.delenv(k, raising=False)
    made = Lab(tmp_path / "lab", "127.0.0.1", 1, 2, 3, "b").secrets(create=True)
    assert all(len(v) >= 12 for v in made.values())
    mode = stat.S_IMODE((tmp_path / "lab" / "secrets.env").stat().st_mode)
    assert mode == 0o600
    assert Lab(tmp_path / "lab", "127.0.0.1", 1, 2, 3, "b").secrets() == made  # kept for the next command


def test_start_time_names_one_process():
    """/proc/<pid>/stat field 22, even when the command name holds spaces and parentheses."""
    proc = subprocess.Popen(["sh", "-c", "exec -a 'a) b (c' sleep 30"])
    try:
        import time
        time.sleep(0.2)
        started = start_time(proc.pid)
        assert started is not None and started > 0 and start_time(proc.pid) == started
    finally:
        proc.kill()
        proc.wait()
    assert start_time(proc.pid) is None
