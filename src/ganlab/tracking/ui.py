"""`ganlab ui`: MLflow's own UI on this project's store, opening in its model-training mode and staying there.

MLflow 3.17's UI keeps its mode (GenAI or model training) in the browser's localStorage (`mlflow.workflowType_v1`,
GenAI unless set); a `?workflowType=machine_learning` link switches one page, and the next click (a run) falls
back to the stored GenAI mode; its assistant panel opens by itself on a first visit. The server has no setting for
either. So `ganlab ui` runs `mlflow ui` itself (its options, store set-up and security middleware unchanged) with
one difference: the HTML page it serves first stores model-training mode and a closed assistant panel when the
browser has stored nothing for them yet. A user who picks GenAI mode, or opens the assistant, keeps that.
The same goes for the runs tables: MLflow shows only Source, Models and Dataset until the user picks columns, so a
table sorted by FID would not show the FID. Where the browser has stored no view of an experiment yet, the page
stores one whose columns are the headline scores (`eval/fid_mnist`, ...), the loss and the logged model; the user's
own choice of columns, once made, is kept as MLflow keeps it. A run page's charts open in the pipeline's order
(`run_page_view`), its image cards without the run's parameters as a caption (`patched_bundle`).

    ganlab ui [--port 5000] [--host 127.0.0.1]          the store of params.yaml's `tracking` section

The lab's server (ganlab.team.services) is MLflow's `mlflow server --app-name basic-auth` served the same way:
`python -m ganlab.tracking.ui server ARGS` is `mlflow ARGS`, with this page in front of MLflow's app.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

# MLflow's useLocalStorage keys (`${key}_v${version}`, values JSON-encoded) and what ganlab stores when a browser
# has none yet: model-training mode, and the GenAI assistant's panel closed rather than opened on the first visit
DEFAULTS = {"mlflow.workflowType_v1": '"machine_learning"',
            "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false"}
# The runs table's columns, as MLflow names them (`<type>.` + the key in backquotes): the logged model, the loss,
# and every score evaluate@ writes under eval/ that the headline numbers take (evaluation.evaluate.HEADLINE; a
# test keeps the two lists equal). A column no run has stays out of the table.
SCORES = ("fid_mnist", "fid_inception", "fid_pixels16", "fid_gaussian", "kid_mnist", "kid_inception", "pattern_mae",
          "mean_error", "class_coverage", "unrecognisable_share", "cgan_accuracy")
COLUMNS = ["attributes.`Models`", "params.`model.loss`", *(f"metrics.`eval/{k}`" for k in SCORES)]


# A run page's charts (the "Model metrics" tab), where the browser has stored none for that run yet: MLflow sorts
# its sections by name, so the 30 single-point eval/ charts came before the loss curves and pictures. ganlab's
# default view puts the sections in the pipeline's order: training (curves, the fixed-noise grids), the sample
# stage's pictures, the final scores. MLflow fills them with a chart per metric and image as it does on its own
# (RunsChartsCard: updateChartAndSectionConfigs keeps sections the user has "reordered").
SECTIONS = ("train", "sample", "eval", "Model metrics")  # "Model metrics": keys without a prefix


def run_page_view() -> dict:
    """The chart state MLflow's run page (RunViewMetricChartsV2) starts from, as it stores it."""
    return {"isAccordionReordered": True, "compareRunCharts": [],
            "compareRunSections": [{"uuid": f"ganlab-{s.split()[0].lower()}", "name": s, "display": True,
                                    "isReordered": False, "deleted": False, "isGenerated": True} for s in SECTIONS],
            "autoRefreshEnabled": True,
            "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""}}


# An image card's caption: MLflow's cards open with every run parameter listed under the picture ("Show run
# parameters" on; some 70 lines for a ganlab run, the picture pushed out of view). ganlab serves MLflow's bundle
# with that switch off by default (the card's own switch turns it on). The bundle is MLflow's (the pinned version's
# main.<hash>.js); the one change is this default in its image card's class, checked by tests/test_ui_mode.py.
CAPTION_ON, CAPTION_OFF = b"this.imageKeys=[],this.step=0,this.showRunParams=!0", \
                          b"this.imageKeys=[],this.step=0,this.showRunParams=!1"


def patched_bundle() -> tuple[str, bytes]:
    """The URL path of MLflow's main bundle and its bytes with image cards captioned by the run's name only;
    refused (RuntimeError, the server does not start) where the bundle is not the one this was written for."""
    import mlflow.server

    found = sorted((Path(mlflow.server.__file__).parent / "js" / "build" / "static" / "js").glob("main.*.js"))
    js = found[0].read_bytes() if len(found) == 1 else b""
    if js.count(CAPTION_ON) != 1:
        raise RuntimeError("ganlab ui: MLflow's UI bundle has no image-card caption default to set (another "
                           "MLflow than requirements.lock pins?): reinstall with `make setup`")
    return f"/static-files/static/js/{found[0].name}", js.replace(CAPTION_ON, CAPTION_OFF)


# The key MLflow's run page reads its state from (LocalStorageUtils.getStoreForComponent("RunPage",
# `${runUuid}-${mode}`)), model mode only (the system-metrics tab keeps MLflow's own view).
RUN_PAGE_KEY = r"^MLflowLocalStorage-1\.1-RunPage-[0-9a-f]{32}-model-chartUIState$"


def view_key(experiment_id: str) -> str:
    """MLflow's localStorage key of an experiment page's view (LocalStorageUtils, version 1.1; persist key: the
    sorted experiment ids as JSON)."""
    return f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([experiment_id], separators=(',', ':'))}" \
           "-ReactComponentState"


def snippet(experiments: tuple[str, ...] | list[str] = ()) -> bytes:
    """The script that stores ganlab's defaults where this browser has stored nothing for them: the mode, the
    assistant, and the runs table's columns of each experiment id in `experiments`; and that answers a run page's
    first read of its chart state (nothing stored for that run yet) with `run_page_view()`. A run page stores its
    state as soon as it opens, so from then on MLflow's stored state, and the user's changes to it, are read."""
    items = dict(DEFAULTS)
    view = json.dumps({"selectedColumns": COLUMNS})
    items.update({view_key(e): view for e in experiments})
    run_page = ("var get = Storage.prototype.getItem, key = new RegExp(" + json.dumps(RUN_PAGE_KEY) + "), view = "
                + json.dumps(json.dumps(run_page_view())) + "; Storage.prototype.getItem = function (k) { "
                "var v = get.call(this, k); return v === null && this === window.localStorage && key.test(k) ? "
                "view : v; };")
    return ("<script>/* ganlab ui: MLflow's defaults for this browser, unless it chose otherwise */ try { "
            + " ".join(f"if (localStorage.getItem({json.dumps(k)}) === null) "
                       f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in items.items())
            + " " + run_page + " } catch (e) {}</script>").encode()


def inject(html: bytes, script: bytes) -> bytes:
    """The page with `script` first in <head>, before MLflow's scripts read the mode."""
    i = html.find(b"<head>")
    return html if i < 0 else html[:i + 6] + script + html[i + 6:]


MAX_VIEWS = 200  # experiments whose view a first visit stores (the most recently active first)


def experiment_ids() -> list[str]:
    """The ids of the store's active experiments, from the server's own tracking store (the one `mlflow ui` or
    `mlflow server` opened in this worker: no second connection, no credentials of ours)."""
    from mlflow.entities import ViewType
    from mlflow.server.handlers import _get_tracking_store

    found = _get_tracking_store().search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=MAX_VIEWS,
                                                     order_by=["last_update_time DESC"])
    return [e.experiment_id for e in found]


class ModelTrainingFirst:
    """ASGI middleware: HTML answers (uncompressed) get `snippet`; MLflow's main bundle is served as
    `patched_bundle()` has it; everything else passes through untouched."""

    def __init__(self, app: Callable[..., Any]):
        self.app = app
        self.bundle_path, self.bundle = patched_bundle()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []
        bundle = scope.get("path", "").endswith(self.bundle_path)  # under MLflow's --static-prefix, if any

        async def relay(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                if b"content-encoding" not in headers and (
                        bundle and message["status"] == 200
                        or headers.get(b"content-type", b"").startswith(b"text/html")):
                    held["start"] = message  # sent with the body, once its length is known
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                if not bundle:  # the bundle's own bytes are replaced, not read
                    chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = self.bundle if bundle else inject(b"".join(chunks), snippet(experiment_ids()))
                start = held.pop("start")
                drop = {b"content-length", b"etag", b"last-modified"}  # not MLflow's file's: no 304 to the original
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in drop]
                await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
                message = {"type": "http.response.body", "body": body}
            await send(message)

        await self.app(scope, receive, relay)


def _app() -> Any:
    from mlflow.server.fastapi_app import app as mlflow_app

    return ModelTrainingFirst(mlflow_app)


def basic_auth_app() -> Any:
    """The lab's app: MLflow's basic-auth app (its factory, as `mlflow server --app-name basic-auth` serves it)
    with the page in front."""
    from mlflow.server.auth import create_app

    return ModelTrainingFirst(create_app())


def __getattr__(name: str) -> Any:  # `app`, built when uvicorn's workers import it (not on `ganlab ui -h`)
    if name == "app":
        return _app()
    raise AttributeError(name)


OURS = {"mlflow.server.fastapi_app:app": "ganlab.tracking.ui:app",  # MLflow's app -> ours, in uvicorn's command
        "mlflow.server.auth:create_app": "ganlab.tracking.ui:basic_auth_app"}


def mlflow_cli(argv: list[str]) -> int:
    """`mlflow ARGV` (`ui`, or `server` with or without `--app-name basic-auth`) with its options, store set-up and
    security middleware unchanged, serving our app in place of MLflow's (uvicorn only; other servers refused)."""
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job runner: ganlab submits none
    import mlflow.server
    from mlflow.cli import cli

    build = mlflow.server._build_uvicorn_command

    def ours(uvicorn_opts, host, port, workers, app, *rest):
        if app not in OURS:
            raise SystemExit(f"ganlab: MLflow would serve {app!r}; ganlab serves only {', '.join(OURS)}")
        return build(uvicorn_opts, host, port, workers, OURS[app], *rest)

    mlflow.server._build_uvicorn_command = ours
    return cli.main(argv, prog_name="mlflow", standalone_mode=False) or 0


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
    url = f"http://{args.host}:{args.port}"
    print(f"ganlab runs: {runs_table_url(url, tracking)}", file=sys.stderr)
    return mlflow_cli(["ui", "--backend-store-uri", tracking_uri(tracking), "--host", args.host,
                       "--port", str(args.port)])


if __name__ == "__main__":  # the lab's server: python -m ganlab.tracking.ui server --app-name basic-auth ...
    sys.exit(mlflow_cli(sys.argv[1:]))
