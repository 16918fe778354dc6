"""What README, params.yaml and the code cite about the sources lives in the repository: every `variants.md <label>`
(and params.yaml's `(A3)`-style labels) names a section of docs/variants.md, and nothing points outside the
repository to the developers' shared notes, which users do not have."""

import re

from helpers import REPO

DOC = REPO / "docs" / "variants.md"
CITING = ["README.md", "params.yaml", "dvc.yaml", "src", "stages", "tests", "bench", "docs"]
LABEL = r"[A-E]\d*(?:[-–][A-E]?\d+)?(?!\w)"


def citing_files():
    for name in CITING:
        path = REPO / name
        found = sorted(p for p in path.rglob("*") if p.suffix in (".py", ".md", ".yaml")) if path.is_dir() else [path]
        yield from (p for p in found if p != DOC)  # the doc defines the sections it would cite


def sections() -> set[str]:
    return set(re.findall(r"^#{2,3} ([A-E]\d*)\. ", DOC.read_text(), flags=re.M))


def expand(label: str) -> list[str]:
    """"A2-A9" -> A2 ... A9; "A1" -> A1; "B" -> B."""
    m = re.fullmatch(r"([A-E])(\d+)[-–][A-E]?(\d+)", label)
    return [f"{m[1]}{i}" for i in range(int(m[2]), int(m[3]) + 1)] if m else [label]


def cited() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in citing_files():
        text = path.read_text()
        groups = re.findall(rf"variants\.md ({LABEL}(?:, {LABEL})*)", text)
        if path.name == "params.yaml":
            groups += re.findall(r"\((A\d+)\)", text)
        for group in groups:
            for label in group.split(", "):
                for one in expand(label):
                    found.setdefault(one, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_cited_section_exists():
    have, refs = sections(), cited()
    assert {"A0", "A1", "A10", "B", "C", "D", "E"} <= have, have
    assert len(refs) >= 12, refs  # the citations are found at all
    missing = {label: sorted(files) for label, files in refs.items() if label not in have}
    assert not missing, f"cited but not a section of docs/variants.md: {missing}"


def test_every_variant_has_its_section():
    """Each variant of params.yaml is listed in the doc's index with a section that exists."""
    import yaml

    variants = yaml.safe_load((REPO / "params.yaml").read_text())["variants"]
    index = dict(re.findall(r"`(\w+)` \| ([A-E]\d*)\b", DOC.read_text()))
    index.update({v: "B" for v in ("mnist_vanilla", "mnist_lsgan", "mnist_dcgan")})  # listed on one row
    assert set(variants) <= set(index), set(variants) - set(index)
    assert {index[v] for v in variants} <= sections()


def test_nothing_points_at_the_developers_shared_notes():
    outside = "shared" + "/reference"  # spelt in two parts so that this file does not match itself
    hits = [str(p.relative_to(REPO)) for p in citing_files() if outside in p.read_text()]
    assert not hits, f"{outside} is not in the repository (docs/variants.md is): {hits}"


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def links(page) -> list[str]:
    """The targets of a page's markdown links, outside code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_every_docs_link_resolves():
    broken, count = [], 0
    for page in PAGES:
        for target in links(page):
            if re.match(r"(https?|mailto):", target) or target.startswith("#"):
                continue
            count += 1
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert count >= 20, count  # the links are found at all
    assert not broken, broken


def test_layout_page_names_every_module():
    layout = (REPO / "docs" / "layout.md").read_text()
    modules = sorted(str(p.relative_to(REPO / "src")) for p in (REPO / "src" / "ganlab").rglob("*.py"))
    assert len(modules) > 30
    missing = [m for m in modules if f"`{m}`" not in layout]
    assert not missing, f"docs/layout.md does not name: {missing}"
    stages = sorted(str(p.relative_to(REPO)) for p in (REPO / "stages").glob("*.py"))
    assert not [s for s in stages if f"`{s}`" not in layout]


def test_readme_is_a_front_page():
    """A newcomer reads it in five minutes; the rest lives in docs/."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert 120 <= len(lines) <= 260, len(lines)
