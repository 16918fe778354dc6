"""The page template `dvc plots show` fills, with Vega, Vega-Lite and Vega-Embed inlined, so the plots render offline.

DVC's own page loads the three libraries from a CDN, so without internet it is blank. `.dvc/config` points
`plots.html_template` at `.dvc/plots.html`, which `make setup` writes with this module:

    ganlab plots-page .dvc/plots.html

It fetches the pinned npm packages with `npm pack` (the npm registry; Node.js and npm are on our machines), checks
each tarball against its pinned integrity, and inlines each package's minified browser build and licence into the
page. dvc-render fills `{plot_divs}` (required) and `{refresh_tag}`; we leave out its `{scripts}`, the CDN tags.
The versions are the majors DVC's page targets (its Vega-Lite specs declare the v5 schema).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ganlab.io import atomic_write


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    integrity: str  # npm's sha512 of the tarball, as `npm view NAME@VERSION dist.integrity` prints it
    script: str  # the browser build inside the package (UMD: sets window.vega, vegaLite, vegaEmbed)


# Loaded in this order: vega-lite needs vega; vega-embed needs both.
BUNDLES = (
    Bundle("vega", "5.33.1",
           "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
           "build/vega.min.js"),
    Bundle("vega-lite", "5.23.0",
           "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
           "build/vega-lite.min.js"),
    Bundle("vega-embed", "6.29.0",
           "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
           "build/vega-embed.min.js"),
)
# dvc-render replaces these `{name}` strings anywhere in the template, our inlined scripts included.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

# dvc-render writes each plot as `<div id="ID"><script>var spec = {JSON with every CSV cell}; vegaEmbed('#ID',
# spec);</script></div>` without escaping `</script>` in the cells, so a cell of a teammate's losses.csv can close
# that script and open its own. The page's Content-Security-Policy therefore runs only the scripts whose sha256 it
# lists (the three bundles and LOADER); DVC's inline scripts, and anything a cell injects, never run. LOADER draws
# the plots instead: it reads each DVC script as text, accepts exactly `var spec = <JSON>; vegaEmbed('#<its div>',
# spec);`, parses the JSON with JSON.parse (data, never code) and embeds it with Vega's expression interpreter, so
# no string is ever evaluated ('unsafe-eval' stays off). A plot whose script a cell broke says so in its place.
LOADER = """
document.addEventListener('DOMContentLoaded', function () {
  var form = /^\\s*var spec = ([\\s\\S]*);\\s*vegaEmbed\\('#([A-Za-z0-9_-]+)', spec\\);\\s*$/;
  document.querySelectorAll('body div[id]').forEach(function (div) {
    var scripts = div.querySelectorAll(':scope > script'), m = null, spec = null;
    if (scripts.length === 0) return;  // not a plot of DVC's
    if (scripts.length === 1) m = form.exec(scripts[0].textContent);  // a cell that opened more: refused
    if (m && m[2] === div.id) {
      try { spec = JSON.parse(m[1]); } catch (e) { spec = null; }
    }
    if (spec === null) {
      div.textContent = 'Plot ' + div.id + ' was not drawn: its data broke the page (a cell that is not a ' +
                        'number?). Check that plots CSV file.';
      div.className = 'ganlab-refused';
      return;
    }
    vegaEmbed(div, spec, {ast: true, expr: vega.expressionInterpreter});
  });
});
"""

PAGE = jinja2.Template("""<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <meta http-equiv="Content-Security-Policy" content="{{ csp }}">
    {refresh_tag}
    <title>DVC Plot</title>
{%- for b in bundles %}
    <!-- {{ b.name }} {{ b.version }} from the npm registry: {{ b.script }}. Licence: {{ b.licence_id }}.
{{ b.licence }}
    -->
    <script>{{ b.code }}</script>
{%- endfor %}
    <script>{{ loader }}</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
""", autoescape=False)  # the scripts are inlined verbatim; _inlinable checks they cannot end the tag early


class PlotsPageError(RuntimeError):
    pass


def check_integrity(tarball: Path, bundle: Bundle) -> None:
    algorithm, _, expected = bundle.integrity.partition("-")
    with open(tarball, "rb") as f:
        got = base64.b64encode(hashlib.file_digest(f, algorithm).digest()).decode()
    if got != expected:
        raise PlotsPageError(f"{tarball.name}: not {bundle.name}@{bundle.version} as pinned in {__name__}.BUNDLES "
                             f"(its {algorithm} is {got}, expected {expected}); the registry npm uses served "
                             "another file: check `npm config get registry`")


def _member(tar: tarfile.TarFile, tarball: Path, path: str, required: bool = True) -> str:
    try:
        return tar.extractfile(f"package/{path}").read().decode("utf-8")
    except (KeyError, AttributeError):
        if not required:
            return ""
        raise PlotsPageError(f"{tarball}: has no package/{path}") from None


def _inlinable(text: str, what: str) -> str:
    for bad in ("</script", "<!--", "-->", *DVC_PLACEHOLDERS):
        if bad in text:
            raise PlotsPageError(f"{what} contains {bad!r}, which would break the page; it cannot be inlined")
    return text


def render_page(tarballs: dict[str, Path]) -> str:
    """The template from the npm tarballs of BUNDLES (name -> path), each checked against its pinned integrity."""
    parts = []
    for b in BUNDLES:
        check_integrity(tarballs[b.name], b)
        with tarfile.open(tarballs[b.name], "r:gz") as tar:
            code = _member(tar, tarballs[b.name], b.script)
            licence_id = json.loads(_member(tar, tarballs[b.name], "package.json"))["license"]
            # vega's tarball has no LICENSE file (its package.json names the licence; vega-lite's LICENSE is
            # the same BSD-3-Clause text of the same lab), so the text goes in where the package ships it
            licence = _member(tar, tarballs[b.name], "LICENSE", required=False)
        parts.append({"name": b.name, "version": b.version, "script": b.script, "licence_id": licence_id,
                      "code": _inlinable(code, f"{b.name} {b.script}"), "licence": _inlinable(licence, "LICENSE")})
    return PAGE.render(bundles=parts, loader=LOADER, csp=policy([p["code"] for p in parts] + [LOADER]))


def policy(scripts: list[str]) -> str:
    """The page's Content-Security-Policy: only these inline scripts run (by their sha256), nothing is loaded or
    sent anywhere (no script files, objects, forms, fetches or <base>); styles and images stay allowed, as Vega
    draws with them."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src data: blob:; "
            f"connect-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")


def npm_pack(dest: Path) -> dict[str, Path]:
    """`npm pack NAME@VERSION ...` into dest: the tarballs, as the npm registry serves them."""
    npm = shutil.which("npm")
    if npm is None:
        raise PlotsPageError("npm not found: the offline plots page takes Vega from the npm registry; "
                             "install Node.js and npm (Debian: apt-get install nodejs npm)")
    specs = [f"{b.name}@{b.version}" for b in BUNDLES]
    done = subprocess.run([npm, "pack", "--json", "--pack-destination", str(dest), *specs],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PlotsPageError(f"npm pack {' '.join(specs)} failed:\n{done.stderr.strip()}")
    return {p["name"]: dest / p["filename"] for p in json.loads(done.stdout)}


def write_page(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = render_page(npm_pack(Path(tmp)))
    atomic_write(out, page)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the template to write, e.g. .dvc/plots.html")
    args = ap.parse_args(argv)
    try:
        write_page(args.out)
    except PlotsPageError as err:
        sys.exit(f"plots page: {err}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): "
          + ", ".join(f"{b.name} {b.version}" for b in BUNDLES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
