"""`ganlab ui`: MLflow's own UI on this project's store, opening in its model-training mode and staying there.

MLflow 3.17's UI keeps its mode (GenAI or model training) in the browser's localStorage (`mlflow.workflowType_v1`,
GenAI unless set); a `?workflowType=machine_learning` link switches one page, and the next click (a run) falls
back to the stored GenAI mode; its assistant panel opens by itself on a first visit. The server has no setting for
either. So `ganlab ui` runs `mlflow ui` itself (its options, store set-up and security middleware unchanged) with
one difference: the HTML page it serves first stores model-training mode and a closed assistant panel when the
browser has stored nothing for them yet. A user who picks GenAI mode, or opens the assistant, keeps that.

    ganlab ui [--port 5000] [--host 127.0.0.1]          the store of params.yaml's `tracking` section
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

# MLflow's useLocalStorage keys (`${key}_v${version}`, values JSON-encoded) and what ganlab stores when a browser
# has none yet: model-training mode, and the GenAI assistant's panel closed rather than opened on the first visit
DEFAULTS = {"mlflow.workflowType_v1": '"machine_learning"',
            "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false"}
SNIPPET = ("<script>/* ganlab ui: MLflow's defaults for this browser, unless it chose otherwise */ try { "
           + " ".join(f"if (localStorage.getItem('{k}') === null) localStorage.setItem('{k}', '{v}');"
                      for k, v in DEFAULTS.items()) + " } catch (e) {}</script>").encode()


def inject(html: bytes) -> bytes:
    """The page with SNIPPET first in <head>, before MLflow's scripts read the mode."""
    i = html.find(b"<head>")
    return html if i < 0 else html[:i + 6] + SNIPPET + html[i + 6:]


class ModelTrainingFirst:
    """ASGI middleware: HTML answers (uncompressed) get SNIPPET; everything else passes through untouched."""

    def __init__(self, app: Callable[..., Any]):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def relay(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                if headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers:
                    held["start"] = message  # sent with the body, once its length is known
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = inject(b"".join(chunks))
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
                message = {"type": "http.response.body", "body": body}
            await send(message)

        await self.app(scope, receive, relay)


def _app() -> Any:
    from mlflow.server.fastapi_app import app as mlflow_app

    return ModelTrainingFirst(mlflow_app)


def __getattr__(name: str) -> Any:  # `app`, built when uvicorn's workers import it (not on `ganlab ui -h`)
    if name == "app":
        return _app()
    raise AttributeError(name)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ganlab ui", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)
    from ganlab.config import load_params
    from ganlab.tracking.store import runs_table_url, telemetry, tracking_uri

    tracking = load_params(args.params).tracking
    telemetry(tracking)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job runner: ganlab submits none
    import mlflow.server
    from mlflow.cli import cli

    build = mlflow.server._build_uvicorn_command  # mlflow ui's own command line, with our app in place of its

    def ours(uvicorn_opts, host, port, workers, app, *rest):
        return build(uvicorn_opts, host, port, workers, "ganlab.tracking.ui:app", *rest)

    mlflow.server._build_uvicorn_command = ours
    url = f"http://{args.host}:{args.port}"
    print(f"ganlab runs: {runs_table_url(url, tracking)}", file=sys.stderr)
    return cli.main(["ui", "--backend-store-uri", tracking_uri(tracking), "--host", args.host,
                     "--port", str(args.port)], prog_name="mlflow", standalone_mode=False) or 0
