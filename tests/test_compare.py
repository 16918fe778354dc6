"""`ganlab compare` on real DVC experiments of the real pipeline (gaussian_2d, a few steps): verdicts that agree
with scipy run on the per-seed values, `workspace`, the one-seed case with and without the noise-floor study,
experiments that differ only in train.seed as one arm (queued by DVC's own queue too), a refused evaluator
(other params or other classifier weights), and the page in Chromium at 1280 px."""

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from helpers import ARTIFACTS, CHROMIUM_ARGS, chromium, run

pytestmark = pytest.mark.e2e
V = "gaussian_2d"


@pytest.fixture
def repo(gaussian_experiments):
    """conftest's experiments of gaussian_2d (mse1, bce, h2), made once for the session."""
    return gaussian_experiments


def compare(root, *args, check=True):
    return run(["ganlab", "compare", *args], root, check=check)


def per_seed(root, exp):
    import dvc.api

    doc = json.loads(dvc.api.read(f"metrics/{V}/eval.json", repo=str(root), rev=exp))
    return [doc["per_seed_headline"][s]["fid"] for s in sorted(doc["per_seed_headline"])] if "per_seed" in doc \
        else [doc["fid_gaussian"]]


def test_verdicts_agree_with_scipy_on_the_per_seed_values(repo):
    status = run(["git", "status", "--porcelain"], repo).stdout
    out = json.loads(compare(repo, "bce", "h2", "--json").stdout)
    assert run(["git", "status", "--porcelain"], repo).stdout == status  # the workspace is untouched
    (row,) = [r for r in out["rows"] if r["metric"] == "fid"]
    assert set(row) == {"variant", "metric", "a", "b", "diff", "p_better", "verdict"}
    a, b = per_seed(repo, "bce"), per_seed(repo, "h2")
    assert (row["a"]["n"], row["b"]["n"], len(a), len(b)) == (3, 2, 3, 2)
    t = sps.ttest_ind(a, b, equal_var=False)
    ci = t.confidence_interval(0.95)
    assert row["diff"]["mean"] == pytest.approx(sum(a) / 3 - sum(b) / 2)
    assert (row["diff"]["lo"], row["diff"]["hi"]) == pytest.approx((ci.low, ci.high))
    assert row["verdict"] == ("none" if t.pvalue >= 0.05 else ("a" if t.statistic < 0 else "b"))
    assert row["p_better"] == pytest.approx(sum((x < y) + 0.5 * (x == y) for x in a for y in b) / 6)
    # the workspace holds h2's run: the same configuration, so the same seeds (each counted once)
    ws = json.loads(compare(repo, "workspace", "bce", "--json").stdout)
    (w,) = [r for r in ws["rows"] if r["metric"] == "fid"]
    assert (w["a"]["n"], w["b"]["n"]) == (2, 3) and w["a"]["mean"] == pytest.approx(row["b"]["mean"])


def test_seeds_queued_the_dvc_way_are_one_arm(repo):
    """The README's queue (`dvc exp run --queue -S train.seed=0,1` and DVC's workers): two experiments, one arm."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    queued = sorted(r["name"] for base in shown for e in base.get("experiments") or [] for r in e["revs"]
                    if r.get("data", {}).get("params", {}).get("params.yaml", {}).get("data", {})
                    .get("model", {}).get("loss") == "lsgan")
    assert len(queued) == 2, queued
    out = json.loads(compare(repo, queued[0], "bce", "--json").stdout)
    (row,) = [r for r in out["rows"] if r["metric"] == "fid"]
    values = sorted(v for name in queued for v in per_seed(repo, name))
    assert (row["a"]["n"], row["b"]["n"]) == (2, 3)
    assert row["a"]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)  # compare rounds to 4 places
    # each ran in DVC's own copy under .dvc/tmp/exps and logged to the repository's store, named for its experiment
    client = MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = [r for r in client.search_runs([client.get_experiment_by_name("ganlab").experiment_id])
            if r.data.params.get("model.loss") == "lsgan"]
    assert sorted(r.data.params["train.seed"] for r in runs) == ["0", "1"], runs
    assert sorted(r.data.tags["dvc_exp_name"] for r in runs) == queued and all(r.info.status == "FINISHED" for r in runs)
    assert all("eval/fid_gaussian" in r.data.metrics for r in runs)  # evaluate@ scored the run train@ logged
    assert not list((repo / ".dvc" / "tmp" / "exps").rglob("mlflow.db"))  # nothing went to the copies


def test_an_experiments_files_read_as_dvc_reads_them(repo):
    """ExpFiles (git objects and DVC's cache, no index of the pipeline) gives DVCFileSystem's bytes and listings."""
    from ganlab.engine.contract import RunPaths
    from ganlab.report.exp_files import ExpFiles

    refs = run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], repo).stdout.split("\n")
    (rev,) = [line.split()[0] for line in refs if line.endswith("/bce")]  # DVC's ref of the experiment
    files, seed1 = ExpFiles(repo), RunPaths.for_variant(V).for_seed(1)
    fs = files.dvc_fs(rev)
    names = files.listdir(rev, seed1.progress)
    assert names and names == sorted(Path(p).name for p in fs.ls(str(seed1.progress), detail=False))
    paths = [RunPaths.for_variant(V).eval_json, seed1.losses_csv, seed1.progress / names[-1], seed1.models / "train.json",
             seed1.models / "generator.pt", Path("dvc.yaml")]
    try:
        for path in paths:  # git-tracked (eval.json, losses.csv, dvc.yaml) and in DVC's cache (pictures, models)
            assert files.read_bytes(rev, path) == fs.read_bytes(str(path)), path
        assert files.read_bytes(rev, seed1.progress / "nope.png") is None and files.listdir(rev, Path("nope")) == []
        # the evaluator each evaluate@ read: train_classifier's output as the same dvc.lock records it
        (out,) = [o["md5"] for o in yaml.safe_load(files.read_bytes(rev, Path("dvc.lock")))["stages"]
                  ["train_classifier"]["outs"] if o["path"] == "models/classifier"]
        assert files.dep_md5s(rev, "models/classifier") == {f"evaluate@{V}": out}
        assert files.dep_md5s(None, "models/classifier") == {f"evaluate@{V}": out}  # the workspace (h2): the same
    finally:
        files.close()


def test_one_seed_cannot_be_judged_and_shows_the_noise_floor(repo, tmp_path):
    text = compare(repo, "mse1", "h2").stdout
    assert "cannot judge (1 seed)" in text and "no noise-floor study" in text and "page:" in text
    floor = tmp_path / "floor.json"
    floor.write_text(json.dumps({V: {"fid": [0.1, 0.3, 0.2], "seeds": [0, 1, 2]}}))
    compare(repo, "mse1", "h2", "--noise-floor", str(floor), "--out", str(tmp_path / "page"))
    html = (tmp_path / "page" / "compare.html").read_text()
    assert "cannot judge: one seed" in html and "seed spread alone: 0.1 to 0.3 over 3 seeds" in html


def test_wrong_names_and_one_configuration_are_sentences(repo):
    bad = compare(repo, "bce", "nope", check=False)
    assert bad.returncode == 2 and "no experiment named nope" in bad.stderr and "Traceback" not in bad.stderr
    same = compare(repo, "h2", "workspace", check=False)
    assert same.returncode == 2 and "1 configuration(s)" in same.stderr


def test_experiments_that_differ_only_in_the_seed_are_one_arm():
    from ganlab.report.compare import Exp, arms

    def exp(name, seed, loss):
        return Exp(name, name, {"train.seed": seed, "model.loss": loss}, {V: {"fid": seed}})
    listing = {e.name: e for e in (exp("s0", 0, "bce"), exp("s1", 1, "bce"), exp("s2", 2, "bce"),
                                   exp("l0", 0, "lsgan"), exp("l1", 1, "lsgan"))}
    a, b = arms(["s1", "l0"], listing)  # the queue's siblings join the arm of the one named
    assert sorted(e.name for e in a.exps) == ["s0", "s1", "s2"] and sorted(e.name for e in b.exps) == ["l0", "l1"]
    assert list(a.seeds(V, None)) == [0, 1, 2]


def test_a_different_evaluator_is_refused():
    from ganlab.report.compare import Arm, Exp, Incomparable, differing

    a = Arm("x", [Exp("x", "1", {"eval.n_samples": 100, "model.loss": "bce"}, {})])
    b = Arm("y", [Exp("y", "2", {"eval.n_samples": 200, "model.loss": "mse"}, {})])
    with pytest.raises(Incomparable, match="eval.n_samples is 100 in x and 200 in y"):
        differing(a, b)
    b.exps[0].params["eval.n_samples"] = 100
    assert differing(a, b) == [("model.loss", "bce", "mse")]


def test_experiments_scored_by_other_classifier_weights_are_refused(tmp_path):
    """Same params, other weights (trained on another machine): told apart by the dvc.lock each experiment has."""
    from ganlab.report.compare import Arm, Exp, Incomparable, _files, same_classifier

    def lock(md5: str) -> str:
        deps = [{"path": "models/classifier", "md5": md5 + ".dir"}, {"path": "models/mnist_dcgan", "md5": "0" * 32}]
        return yaml.safe_dump({"schema": "2.0", "stages": {"evaluate@mnist_dcgan": {"deps": deps},
                                                           "evaluate@gaussian_2d": {"deps": deps[:1]}}})
    run(["git", "init", "-q"], tmp_path)
    revs = []
    for md5 in ("a" * 32, "a" * 32, "b" * 32):
        (tmp_path / "dvc.lock").write_text(lock(md5))
        run(["git", "add", "dvc.lock"], tmp_path)
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", md5[0]], tmp_path)
        revs.append(run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip())
    head = {"mnist_dcgan": {"fid": 1.0}}
    x, y, z = (Exp(n, r, {}, head) for n, r in zip("xyz", revs))
    try:
        same_classifier(Arm("x", [x]), Arm("y", [y]), tmp_path)  # equal weights: compared
        with pytest.raises(Incomparable, match=r"different classifiers.*mnist_dcgan: models/classifier aaaaaaaaaa "
                                               r"in x \(x\) against bbbbbbbbbb in z \(z\)"):
            same_classifier(Arm("x", [x]), Arm("z", [z]), tmp_path)
        with pytest.raises(Incomparable, match=r"in y \(x\) against bbbbbbbbbb in z \(x\)"):  # within one arm too
            same_classifier(Arm("x", [y, z]), Arm("w", [x]), tmp_path)
        z.headline = {"gaussian_2d": {"fid": 1.0}}  # z measured no mnist_dcgan, x no gaussian_2d: nothing to clash
        same_classifier(Arm("x", [x]), Arm("z", [z]), tmp_path)
        (tmp_path / "dvc.lock").write_text(lock("a" * 32))  # the workspace's lock
        same_classifier(Arm("x", [x]), Arm("ws", [Exp("workspace", None, {}, head)]), tmp_path)
    finally:
        _files(str(tmp_path)).close()  # its `git cat-file --batch`, as `ganlab compare` closes it


def test_the_page_fits_a_laptop_in_chromium(repo, tmp_path):
    from playwright.sync_api import sync_playwright

    compare(repo, "bce", "h2", "--out", str(tmp_path))
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto((tmp_path / "compare.html").as_uri(), wait_until="load")
        page.wait_for_function("[...document.images].every(i => i.complete)")
        page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
        found = page.evaluate("""() => ({
            scroll_width: document.documentElement.scrollWidth, client_width: document.documentElement.clientWidth,
            grids: document.querySelectorAll(".grids img").length,
            broken: [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src),
            curves: [...document.querySelectorAll("img.curves")].filter(i => i.naturalWidth > 300).length,
            method: document.querySelector("#method").innerText,
            verdict_rows: document.querySelectorAll("#verdicts tr").length - 1})""")
        browser.close()
    assert found["scroll_width"] <= found["client_width"] == 1280, found
    assert found["grids"] == 5 and not found["broken"] and found["curves"] == 1, found  # 3 + 2 seeds
    assert "Welch" in found["method"] and found["verdict_rows"] >= 2


def test_the_committed_noise_floor_answers_in_the_metrics_compare_shows():
    """docs/studies/noise_floor.json (written by docs/studies/losses.py) is keyed as `ganlab compare`'s rows are
    (fid, err, cover, ...), so a one-seed comparison finds its variant's measured spread."""
    from ganlab.report.compare import NOISE_FLOOR, floor_of, noise_floor
    from ganlab.report.stats import LOWER_IS_BETTER
    from helpers import REPO

    floor = noise_floor(REPO / NOISE_FLOOR)
    assert floor_of(floor, "gaussian_2d", "fid")["n"] >= 5 and floor_of(floor, "pattern_1010", "err")["n"] >= 5
    for variant, arm in floor.items():
        assert set(arm) & set(LOWER_IS_BETTER), f"{variant}: no metric compare shows"


def test_a_one_seed_noise_floor_says_its_spread_is_unknown():
    """A variant with one seed in the study (a slow one, its first seed committed) has no spread to show: the text
    says so instead of "sd 0"; two seeds give the sample sd."""
    from ganlab.report.compare import floor_of

    one = floor_of({"mnist_conv": {"fid": [41.5], "seeds": [0]}}, "mnist_conv", "fid")
    assert one["n"] == 1 and one["sd"] is None and "sd" not in one["text"] and "spread is unknown" in one["text"]
    two = floor_of({"mnist_conv": {"fid": [40.0, 44.0], "seeds": [0, 1]}}, "mnist_conv", "fid")
    assert two["n"] == 2 and abs(two["sd"] - 2.8284) < 1e-3 and "40 to 44 over 2 seeds (sd 2.83)" in two["text"]


def test_the_committed_studies_are_what_their_runs_give(tmp_path):
    """docs/studies/noise_floor.json, losses.json and losses_verdicts.json are docs/studies/losses.py's output for
    the committed runs (docs/studies/runs): a run added without regenerating them, or a hand edit, fails here; and
    mnist_vanilla's floor holds the loss study's bce seeds plus the joint study's sequential ones, each seed once."""
    import subprocess
    import sys

    from helpers import REPO

    subprocess.run([sys.executable, REPO / "docs/studies/losses.py", "--runs", REPO / "docs/studies/runs", "--out",
                    tmp_path], check=True, capture_output=True)
    for name in ("noise_floor.json", "losses.json", "losses_verdicts.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((REPO / "docs/studies" / name).read_text()), name
    vanilla = json.loads((tmp_path / "noise_floor.json").read_text())["mnist_vanilla"]
    assert vanilla["seeds"] == list(range(10)) and len(vanilla["fid"]) == 10 and not vanilla["failed"]
    assert vanilla["from"] == "losses/bce + joint/mnist_vanilla_seq"
