"""The lab command's checks, before anything starts (the services themselves: test_team.py, test_sweep.py)."""

import stat
import subprocess
import sys

from ganlab.team.lab import SECRET_KEYS, Lab
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
    high = lab(["up"], tmp_path, GANLAB_LAB_S3_PORT="60000")
    assert high.returncode == 1 and "SeaweedFS also takes the next 5 ports" in high.stderr
    short = lab(["up"], tmp_path, MLFLOW_AUTH_ADMIN_PASSWORD="short")
    assert short.returncode == 1 and "shorter than 12 characters" in short.stderr
    assert not (tmp_path / "lab" / "postgres").exists()


def test_env_needs_a_lab_and_keeps_secrets_private(tmp_path):
    none = lab(["env"], tmp_path)
    assert none.returncode == 1 and "start the lab first (make lab-up)" in none.stderr
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "secrets.env").write_text("".join(f"{k}=value-of-{k.lower()}\n" for k in SECRET_KEYS))
    out = lab(["env"], tmp_path, GANLAB_LAB_MLFLOW_PORT="5999", GANLAB_LAB_S3_ACCESS_KEY="from-the-environment")
    assert out.returncode == 0, out.stderr
    lines = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert lines == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999", "MLFLOW_TRACKING_USERNAME": "admin",
                     "MLFLOW_TRACKING_PASSWORD": "value-of-mlflow_auth_admin_password",
                     "AWS_ACCESS_KEY_ID": "from-the-environment",  # the environment wins over the file
                     "AWS_SECRET_ACCESS_KEY": "value-of-ganlab_lab_s3_secret_key",
                     "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:8333"}
    status = lab(["status"], tmp_path)
    assert status.returncode == 3 and "mlflow     stopped" in status.stdout


def test_generated_secrets_are_private(tmp_path, monkeypatch):
    for k in SECRET_KEYS:
        monkeypatch.delenv(k, raising=False)
    made = Lab(tmp_path / "lab", "127.0.0.1", 1, 2, 3, "b").secrets(create=True)
    assert all(len(v) >= 12 for v in made.values())
    mode = stat.S_IMODE((tmp_path / "lab" / "secrets.env").stat().st_mode)
    assert mode == 0o600
    assert Lab(tmp_path / "lab", "127.0.0.1", 1, 2, 3, "b").secrets() == made  # kept for the next command
