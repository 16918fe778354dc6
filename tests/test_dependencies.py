"""Every third-party package that src/, stages/, tests/ or bench/ imports is declared in pyproject.toml, pinned
with `==` at the version requirements.lock holds.

Imports are read with `ast` (top level, in functions and in `try` blocks alike) and mapped to the distributions
that provide them with importlib.metadata, as installed by `make setup`. Our own modules (ganlab, and the helper
modules tests/ and bench/ put on sys.path) and the standard library are not packages to declare.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from helpers import REPO

ROOTS = ("src", "stages", "tests", "bench")
# Imported only inside a `try` that turns its absence into a reason in the output; not installed by make setup.
OPTIONAL = {
    "torch_fidelity": "evaluate.py: the Inception network for CelebA FID/KID, used only when installed by hand",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def python_files() -> list[Path]:
    return [p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))
            if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]  # bench/.deps: a copied venv


def local_modules() -> set[str]:
    """Names our own files answer to: each module's file stem and each folder holding Python files."""
    names = set()
    for p in python_files():
        names.add(p.stem)
        names.update(part for part in p.relative_to(REPO).parent.parts)
    return names


def imports(path: Path) -> dict[str, list[tuple[Path, bool]]]:
    """Top-level module name -> (path, whether inside a `try` body) for each absolute import of it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_try = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for s in t.body for n in ast.walk(s)}
    found: dict[str, list[tuple[Path, bool]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:  # relative imports are ours
            names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], []).append((path, id(node) in in_try))
    return found


def third_party_imports() -> dict[str, list[tuple[Path, bool]]]:
    ours = local_modules()
    found: dict[str, list[tuple[Path, bool]]] = {}
    for path in python_files():
        for name, sites in imports(path).items():
            if name not in sys.stdlib_module_names and name not in ours:
                found.setdefault(name, []).extend(sites)
    return found


def declared() -> dict[str, str]:
    """Normalised distribution name -> the requirement string, from dependencies and every extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {normalise(re.match(r"[A-Za-z0-9._-]+", r).group()): r for r in reqs}


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[normalise(name)] = version.strip()
    return pins


def test_every_imported_package_is_declared():
    providers = importlib.metadata.packages_distributions()
    wanted = declared()
    missing = []
    for module, where in sorted(third_party_imports().items()):
        if module in OPTIONAL:
            continue
        dists = {normalise(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {where[0][0].relative_to(REPO)}) is not installed: run `make setup`"
        if not dists & set(wanted):  # e.g. mlflow: any of mlflow, mlflow-skinny, mlflow-tracing
            missing.append(f"{module} ({' or '.join(sorted(dists))}), imported by "
                           + ", ".join(sorted({str(p.relative_to(REPO)) for p, _ in where})))
    assert not missing, "imported but not declared in pyproject.toml:\n  " + "\n  ".join(missing)


def test_optional_imports_are_guarded():
    """An optional package is imported only inside a `try` body, so its absence cannot break an import."""
    found = third_party_imports()
    for module, why in OPTIONAL.items():
        assert module in found, f"{module} is no longer imported: drop it from OPTIONAL ({why})"
        unguarded = sorted({str(p.relative_to(REPO)) for p, in_try in found[module] if not in_try})
        assert not unguarded, f"{module} is optional ({why}) but imported outside a `try` in {unguarded}"


def test_declared_pins_match_the_lock():
    pins = locked()
    for name, req in declared().items():
        m = re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z,]+\])?==([^\s;]+)", req)
        assert m, f"pyproject.toml: {req!r} is not pinned with =="
        assert pins.get(name) == m.group(2), f"pyproject.toml pins {req}, requirements.lock has {pins.get(name)}"
