"""Study: *Are GANs created equal?* on MNIST (Lucic et al. 2018), and the seed noise floor of every variant.

    python docs/studies/losses.py --runs RUNS [--out docs/studies]

RUNS holds what docs/studies/run_study.sh copied out of each `dvc exp run`: RUNS/losses/<loss>/s<seed>/ and
RUNS/noise_floor/<variant>/s<seed>/, each with run.json ({cmd, rc, wall_s}) and, when the run succeeded, the
pipeline's own eval.json and train.json. Writes:
- losses.json and noise_floor.json: {arm: {metric: [per-seed values], "seeds": [...], "failed": [...],
  "wall_s": [...], "train_wall_time_s": [...]}}; a seed whose run failed or whose number is not finite is listed
  in "failed", never dropped silently (its value is absent from the metric's list, and the tables count it);
  the metric keys are eval.json's (`fid_mnist`, ...) and the headline's (`fid`, `err`, ...: what `ganlab compare`
  shows beside a one-seed comparison); noise_floor.json also holds `mnist_vanilla` and `mnist_lsgan`, which are the
  `bce` and `lsgan` arms of the loss study key for key (marked "from");
- losses_<metric>.png: each loss's per-seed values (strip) over its box;
- losses_verdicts.json: each loss against bce per metric, judged by `ganlab compare`'s statistics
  (ganlab.report.stats: Welch's 95 % interval of the difference of means and two-sided t-test at 0.05, the
  probability of improvement P(a better than b) = U / (n_a n_b), the seeds per arm that would detect the
  observed difference); its error rates are checked by simulation in tests/test_compare_stats.py;
and prints the markdown tables that docs/studies/losses.md shows.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ganlab.evaluation.evaluate import headline
from ganlab.report.stats import LOWER_IS_BETTER

# eval.json keys of the headline metrics (ganlab.evaluation.evaluate.HEADLINE's sources), and which way is better
LOWER_BETTER = {"fid_mnist": True, "kid_mnist": True, "unrecognisable_share": True, "class_coverage": False,
                "fid_gaussian": True, "mean_error": True, "pattern_mae": True, "cgan_accuracy": False}
PLOTTED = ("fid_mnist", "kid_mnist", "class_coverage", "unrecognisable_share")
SAME_AS = {"mnist_vanilla": "bce", "mnist_lsgan": "lsgan"}  # noise-floor variants that are a loss arm, key for key
# more seeds of a noise-floor variant as params.yaml has it, from another study run with the same evaluator: the
# joint study's sequential arm (train.joint: off, the CPU's default; its seeds 0-4 are bitwise the bce arm's)
MORE_SEEDS = {"mnist_vanilla": "joint/mnist_vanilla_seq"}
BASELINE = "bce"  # the non-saturating GAN, Lucic et al.'s reference
ORDER = ("bce", "mse", "lsgan", "hinge", "wgan_gp", "pattern_1010", "gaussian_2d", "mnist_mlp_first", "mnist_linear",
         "mnist_mlp", "mnist_vanilla", "mnist_lsgan", "mnist_dcgan", "mnist_cgan")


def collect(study_dir: Path, only: str | None = None) -> dict[str, dict]:
    """{arm: {metric: [values in seed order], "seeds", "failed", "wall_s", "train_wall_time_s"}} (`only`: one arm)."""
    arms = {}
    order = {name: i for i, name in enumerate(ORDER)}  # bce first, then the losses as the project lists them
    folders = sorted((p for p in study_dir.iterdir() if p.is_dir() and only in (None, p.name)),
                     key=lambda p: (order.get(p.name, 99), p.name))
    for arm_dir in folders:
        arm = {"seeds": [], "failed": [], "wall_s": [], "train_wall_time_s": []}
        done = (p for p in arm_dir.glob("s*")  # a run still going has no run.json yet; s0-4: a multi-seed run,
                if p.name[1:].isdigit() and (p / "run.json").exists())  # which run_study.sh split into s0 .. s4
        for run_dir in sorted(done, key=lambda p: int(p.name[1:])):
            seed, run = int(run_dir.name[1:]), json.loads((run_dir / "run.json").read_text())
            ev = json.loads((run_dir / "eval.json").read_text()) if run["rc"] == 0 else {}
            values = {k: ev.get(k) for k in LOWER_BETTER if k in ev}
            if run["rc"] != 0 or not all(v is not None and math.isfinite(v) for v in values.values()):
                arm["failed"].append(seed)
                continue
            train = json.loads((run_dir / "train.json").read_text())
            arm["seeds"].append(seed)
            arm["wall_s"].append(run["wall_s"])
            arm["train_wall_time_s"].append(train["wall_time_s"])
            for k, v in values.items():
                arm.setdefault(k, []).append(v)
            for k, v in headline(ev, train).items():  # the headline keys `ganlab compare` reads (fid, err, ...)
                if k in LOWER_IS_BETTER:
                    arm.setdefault(k, []).append(v)
        arms[arm_dir.name] = arm
    return arms


def with_seeds(arm: dict, more: dict, where: str) -> dict:
    """`arm` with `more`'s seeds that it lacks (a seed both have is the same run: the arm's is kept), in seed order;
    "from" names both sources."""
    out = {k: list(v) if isinstance(v, list) else v for k, v in arm.items()}
    new = [i for i, seed in enumerate(more["seeds"]) if seed not in arm["seeds"] + arm["failed"]]
    for k, v in more.items():
        if isinstance(v, list) and k != "failed" and len(v) == len(more["seeds"]):
            out.setdefault(k, []).extend(v[i] for i in new)
    out["failed"] = sorted(set(arm["failed"]) | (set(more["failed"]) - set(arm["seeds"])))
    out["from"] = " + ".join(x for x in (arm.get("from"), where) if x)
    order = sorted(range(len(out["seeds"])), key=lambda i: out["seeds"][i])
    return {k: [v[i] for i in order] if isinstance(v, list) and k != "failed" and len(v) == len(order) else v
            for k, v in out.items()}


def compare(a: list[float], b: list[float], lower_better: bool) -> dict:
    """Arm a against arm b with `ganlab compare`'s own statistics (ganlab.report.stats): the difference of means
    a − b with Welch's interval, P(a better), the verdict, and the seeds per arm that would detect it."""
    from ganlab.report.stats import compare as judge

    row = judge(np.asarray(a, float), np.asarray(b, float), lower_better)
    n_a, n_b = row["a"]["n"], row["b"]["n"]
    verdict = {"a": "a better", "b": "b better"}.get(row["verdict"]) or (
        f"no detectable difference with {n_a} and {n_b} seeds" if row["judged"] else "cannot judge: fewer than 2 seeds")
    return {"n_a": n_a, "n_b": n_b, "diff": row["diff"]["mean"], "lo": row["diff"]["lo"], "hi": row["diff"]["hi"],
            "p_better": row["p_better"], "verdict": verdict, "seeds_needed": row["seeds_needed"]}


def verdicts(arms: dict[str, dict]) -> list[dict]:
    rows = []
    for loss in (a for a in arms if a != BASELINE):
        for metric in PLOTTED:
            if metric in arms[loss] and metric in arms.get(BASELINE, {}):
                rows.append({"a": loss, "b": BASELINE, "metric": metric,
                             **compare(arms[loss][metric], arms[BASELINE][metric], LOWER_BETTER[metric])})
    return rows


def plot(arms: dict[str, dict], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for metric in PLOTTED:
        names = [a for a in arms if arms[a].get(metric)]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
        ax.boxplot([arms[a][metric] for a in names], widths=0.5, showfliers=False)
        jitter = np.random.default_rng(0)  # the strip's horizontal jitter only
        for i, a in enumerate(names, start=1):
            ys = arms[a][metric]
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(ys)), ys, s=18, zorder=3, color="tab:blue")
            if arms[a]["failed"]:
                ax.annotate(f"{len(arms[a]['failed'])} failed", (i, ax.get_ylim()[1]), ha="center", va="top",
                            color="tab:red", fontsize=8)
        ax.set_xticks(range(1, len(names) + 1), [f"{a}\n(n={len(arms[a][metric])})" for a in names])
        better = "lower" if LOWER_BETTER[metric] else "higher"
        ax.set_title(f"mnist_vanilla networks: {metric} per seed ({better} is better)", fontsize=9)
        fig.tight_layout()
        path = out / f"losses_{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _f(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def markdown(arms: dict[str, dict], rows: list[dict] | None) -> str:
    lines = []
    if rows is not None:
        lines += ["| a vs bce | metric | n a, b | mean a − b [95 % Welch] | P(a better) | verdict |", "|---" * 6 + "|"]
        lines += [f"| {r['a']} | {r['metric']} | {r['n_a']}, {r['n_b']} | {_f(r['diff'])} [{_f(r['lo'])}, "
                  f"{_f(r['hi'])}] | {_f(r['p_better'], 2)} | {r['verdict']} |" for r in rows]
        lines.append("")
    lines += ["| arm | metric | n (failed) | mean ± sd | min – max |", "|---" * 5 + "|"]
    for arm, d in arms.items():
        for metric in (m for m in LOWER_BETTER if m in d):
            v = np.asarray(d[metric], float)
            sd = _f(float(v.std(ddof=1))) if len(v) > 1 else "–"
            lines.append(f"| {arm} | {metric} | {len(v)} ({len(d['failed'])}) | {_f(float(v.mean()))} ± {sd} | "
                         f"{_f(float(v.min()))} – {_f(float(v.max()))} |")
        if not any(m in d for m in LOWER_BETTER):
            lines.append(f"| {arm} | – | 0 ({len(d['failed'])}) | – | – |")
    return "\n".join(lines)


def wall_times(arms: dict[str, dict]) -> str:
    """The training time of each arm's seeds (train.json's wall_time_s) and what 5 seeds of it cost: 5 × the
    median seed, the way a `train.seeds: 5` experiment trains them (one after another on a CPU); the median, as a
    run paused on a shared machine (losses.md says which) would inflate a sum."""
    lines = ["| arm | seeds | training a seed: median (min – max) | 5 seeds of training |", "|---|---|---|---|"]
    for arm, d in arms.items():
        t = d.get("train_wall_time_s") or []
        if t:
            med = float(np.median(t))
            lines.append(f"| {arm} | {len(t)} | {med:,.0f} s ({min(t):,.0f} – {max(t):,.0f}) | "
                         f"{5 * med / 60:,.1f} min |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="the folder run_study.sh wrote (losses/, noise_floor/)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    for study in ("losses", "noise_floor"):
        if not (args.runs / study).is_dir():
            print(f"{args.runs / study}: no runs yet")
            continue
        arms = collect(args.runs / study)
        if study == "noise_floor":
            if (args.runs / "losses").is_dir():  # the loss arms that are variants as they are
                losses = collect(args.runs / "losses")
                arms.update({v: {**losses[a], "from": f"losses/{a}"} for v, a in SAME_AS.items() if a in losses})
            for v, where in MORE_SEEDS.items():
                study_dir, arm = (args.runs / where).parent, (args.runs / where).name
                if v in arms and (study_dir / arm).is_dir():
                    arms[v] = with_seeds(arms[v], collect(study_dir, only=arm)[arm], where)
        (args.out / f"{study}.json").write_text(json.dumps(arms, indent=1) + "\n")
        rows = None
        if study == "losses":
            rows = verdicts(arms)
            (args.out / "losses_verdicts.json").write_text(json.dumps(rows, indent=1) + "\n")
            plot(arms, args.out)
        print(f"## {study}\n\n{markdown(arms, rows)}\n")
        if study == "noise_floor":
            print(f"## noise_floor training time\n\n{wall_times(arms)}\n")


if __name__ == "__main__":
    main()
