"""`dvc plots show` renders without internet, in headless Chromium.

.dvc/config names the page template (`plots.html_template = plots.html`), and `make setup` writes .dvc/plots.html
with Vega, Vega-Lite and Vega-Embed inlined (ganlab.report.plots_page, from pinned npm packages). Here a copy of the
pipeline with that config and one variant's loss log runs plain `dvc plots show`; Chromium opens the page with
every request to a non-loopback host aborted and recorded. The chart must draw a line in its own colour for each
plotted column, and nothing may be requested from outside. The control: DVC's own page under the same block asks
its CDN and stays blank, so the block is real. Screenshots go to test-artifacts/.
"""

import base64
import dataclasses
import hashlib
import io
import re
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from ganlab.engine.contract import LOG_COLUMNS
from ganlab.report import plots_page
from ganlab.report.plots_page import BUNDLES, PlotsPageError, render_page
from helpers import CHROMIUM_ARGS, REPO, chromium, make_repo, run

pytestmark = pytest.mark.e2e
ARTIFACTS = REPO / "test-artifacts"
TEMPLATE = REPO / ".dvc" / "plots.html"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


TABLEAU = [(0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0xE4, 0x57, 0x56), (0x72, 0xB7, 0xB2), (0x54, 0xA2, 0x4B)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The pipeline with the repository's DVC config and page template, and mnist_vanilla's loss log."""
    assert TEMPLATE.is_file(), f"{TEMPLATE} is missing: `make setup` writes it (ganlab plots-page)"
    assert "Content-Security-Policy" in TEMPLATE.read_text(), f"{TEMPLATE} predates its CSP: rerun `make setup`"
    root = make_repo(tmp_path_factory.mktemp("plots"))
    for line in run(["dvc", "config", "--project", "--list"], REPO).stdout.split():
        key, _, value = line.partition("=")
        run(["dvc", "config", key, value], root)
    (root / ".dvc" / "plots.html").write_bytes(TEMPLATE.read_bytes())
    csv = root / "plots" / "mnist_vanilla" / "losses.csv"
    csv.parent.mkdir(parents=True)
    rows = [",".join(LOG_COLUMNS)]
    for step in range(0, 400, 10):  # four clearly separate curves
        row = {c: 0.0 for c in LOG_COLUMNS} | {"step": step, "epoch": step // 100 + 1, "d_loss": 1.4 - step / 800,
                                                "g_loss": 0.7 + step / 400, "d_x": 0.5 + step / 2000,
                                                "d_gz": 0.5 - step / 2000}
        rows.append(",".join(f"{row[c]:g}" for c in LOG_COLUMNS))
    csv.write_text("\n".join(rows) + "\n")
    return root


def open_offline(page_file: Path, screenshot: str, charts: int) -> dict:
    """Open a page in Chromium with non-loopback requests aborted: what it requested and what its canvas holds."""
    from playwright.sync_api import sync_playwright

    outside, errors = [], []

    def guard(route):
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in LOOPBACK:
            outside.append(url)
            return route.abort()
        return route.continue_()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.route("**/*", guard)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri(), wait_until="load")
        if charts:
            # a selector, not wait_for_function: the page's CSP forbids eval, which a predicate runs through
            page.locator(".vega-embed canvas.marks").nth(charts - 1).wait_for(timeout=15_000)
        else:
            page.wait_for_timeout(1000)  # time for any late script to draw
        # every pixel of every canvas, as (r, g, b, a) bytes, and the canvas's width
        canvases = page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = ''; for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
            return [btoa(s), c.width]; })""")
        embeds = page.locator(".vega-embed").count()
        title, refused = page.title(), page.locator(".ganlab-refused").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        browser.close()
    return {"outside": outside, "errors": errors, "embeds": embeds, "title": title, "refused": refused,
            "canvases": [(base64.b64decode(p), w) for p, w in canvases]}


def colour_pixels(rgba: bytes, width: int, colour: tuple[int, int, int], tol: int = 40) -> "np.ndarray":
    """(row, column) of the opaque pixels within `tol` of a colour (anti-aliasing blends the edges of a line)."""
    px = np.frombuffer(rgba, dtype=np.uint8).reshape(-1, width, 4).astype(int)
    near = (px[..., 3] > 200) & (np.abs(px[..., :3] - np.array(colour)).max(axis=-1) <= tol)
    return np.argwhere(near)


def test_plain_dvc_plots_show_renders_offline(project):
    proc = run(["dvc", "plots", "show"], project)
    page = project / "dvc_plots" / "index.html"
    assert page.as_uri() in proc.stdout
    html = page.read_text()
    charts = html.count("vegaEmbed('#")  # DVC's call, one per plot definition that has data (dvc.yaml's `plots:`)
    assert "cdn.jsdelivr.net" not in html and charts >= 1

    seen = open_offline(page, "dvc_plots_offline.png", charts=charts)
    assert seen["outside"] == [] and seen["errors"] == []
    assert seen["embeds"] == charts and len(seen["canvases"]) == charts
    for rgba, width in seen["canvases"]:
        # dvc.yaml's template (src/ganlab/report/dvc_losses.json) colours each line, not each revision: the four
        # columns cross the 300 x 300 px plot in Vega's first four category colours, one each, and the fifth
        # colour is nowhere
        for colour in TABLEAU[:4]:
            drawn = colour_pixels(rgba, width, colour)
            assert 150 < len(drawn) < 20_000, (colour, len(drawn))
            assert np.ptp(drawn, axis=0)[1] >= 250, colour  # across the plot's width
        assert len(colour_pixels(rgba, width, TABLEAU[4])) < 20


HOSTILE = "</script><script>document.title='pwned'</script>"


def test_a_script_in_a_plots_csv_cell_does_not_run(project, tmp_path):
    """dvc-render pastes every cell unescaped into an inline <script>: a teammate's losses.csv with a cell that
    closes it and opens its own. The page's CSP runs only its own hashed scripts; the broken plot says so in its
    place and the good one still draws. The control: the same page without the CSP runs the cell's script."""
    import shutil

    root = shutil.copytree(project, tmp_path / "hostile", symlinks=True)
    good = root / "plots" / "mnist_vanilla" / "losses.csv"
    lines = good.read_text().splitlines()
    d_loss = lines[0].split(",").index("d_loss")
    evil = lines[2].split(",")
    evil[d_loss] = HOSTILE
    bad = root / "plots" / "mnist_lsgan" / "losses.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("\n".join([*lines[:2], ",".join(evil), *lines[3:]]) + "\n")
    run(["dvc", "plots", "show"], root)
    page = root / "dvc_plots" / "index.html"
    assert HOSTILE in page.read_text()  # DVC pasted it as is: the attack reaches the page
    seen = open_offline(page, "dvc_plots_hostile_cell.png", charts=1)
    assert seen["title"] == "DVC Plot" and seen["errors"] == [] and seen["outside"] == []
    assert len(seen["refused"]) == 1 and "its data broke the page" in seen["refused"][0]
    assert seen["embeds"] == 1 and len(seen["canvases"]) == 1  # mnist_vanilla's plot still draws

    no_csp = page.with_name("no_csp.html")
    no_csp.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text(), count=1))
    assert open_offline(no_csp, "dvc_plots_hostile_cell_no_csp.png", charts=0)["title"] == "pwned"


def test_control_dvc_default_page_is_blank_offline(project):
    """DVC's built-in page under the same block: it asks its CDN for Vega and draws nothing."""
    run(["dvc", "config", "--unset", "plots.html_template"], project)
    try:
        run(["dvc", "plots", "show", "-o", "dvc_plots_cdn"], project)
    finally:
        run(["dvc", "config", "plots.html_template", "plots.html"], project)
    seen = open_offline(project / "dvc_plots_cdn" / "index.html", "dvc_plots_cdn_blocked.png", charts=0)
    assert any(urlsplit(u).hostname == "cdn.jsdelivr.net" for u in seen["outside"]), seen["outside"]
    assert seen["embeds"] == 0 and seen["canvases"] == []


def _tarball(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_tarballs(directory: Path, code: str = "window.x = 1;") -> dict[str, Path]:
    return {b.name: _tarball(directory / f"{b.name}.tgz", {b.script: f"{code} // {b.name}",
                                                           "package.json": '{"license": "BSD-3-Clause"}'})
            for b in BUNDLES}


def pinned_to(tarballs: dict[str, Path]) -> tuple:
    """BUNDLES with each integrity replaced by that of the given tarball, as npm writes an integrity."""
    def sri(path: Path) -> str:
        return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
    return tuple(dataclasses.replace(b, integrity=sri(tarballs[b.name])) for b in BUNDLES)


def test_page_builder_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path):
    fake = fake_tarballs(tmp_path)
    got = pinned_to(fake)[0].integrity.removeprefix("sha512-")
    with pytest.raises(PlotsPageError, match=rf"vega\.tgz: not vega@5\.\d+\.\d+ as pinned .*its sha512 is "
                                             rf"{re.escape(got)}, expected .*npm config get registry"):
        render_page(fake)


def test_page_builder_inlines_each_bundle_in_order_and_keeps_dvc_placeholders(tmp_path, monkeypatch):
    fake = fake_tarballs(tmp_path)
    monkeypatch.setattr(plots_page, "BUNDLES", pinned_to(fake))
    page = render_page(fake)
    at = [page.index(f"window.x = 1; // {b.name}") for b in BUNDLES]
    assert at == sorted(at) and len(set(at)) == 3  # vega, then vega-lite, then vega-embed
    assert page.count("{plot_divs}") == 1 and page.count("{refresh_tag}") == 1 and "{scripts}" not in page
    assert page.count("Licence: BSD-3-Clause.") == 3


def test_page_builder_refuses_a_script_that_would_end_its_tag(tmp_path, monkeypatch):
    fake = fake_tarballs(tmp_path, code="var s = '</script>';")
    monkeypatch.setattr(plots_page, "BUNDLES", pinned_to(fake))
    with pytest.raises(PlotsPageError, match="vega build/vega.min.js contains '</script'"):
        render_page(fake)
