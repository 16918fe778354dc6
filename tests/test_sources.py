"""The verdict on a source's claim, computed from our numbers: each rule on both sides of its tolerance, and the
conditions under which our run is not like the source's."""

import math

import pytest

from ganlab.report.sources import (FAILS, HOLDS, MISSING, STATED, UNLIKE, Bound, Close, Factor, Stated, judge)

FULL = {"full_run": True, "device": "cpu", "batch_size": 1, "long_enough": True}


def verdict(rule, value, ours, like=None, context=FULL):
    return judge(Stated("v", "q", value, "src", rule=rule, like=like if like is not None else {"full_run": True}),
                 ours, context)


@pytest.mark.parametrize("ours,outcome", [(0.6931 + 0.099, HOLDS), (0.6931 - 0.099, HOLDS), (0.6931 + 0.101, FAILS),
                                          (0.6931 - 0.101, FAILS)])
def test_close_absolute_both_sides(ours, outcome):
    v = verdict(Close(rel=0.0, absolute=0.1), 0.6931, ours)
    assert v.outcome == outcome and "tolerance ±0.1" in v.text


def test_close_relative_and_vectors_take_the_worst_element():
    assert verdict(Close(rel=0.3), 1.34, 1.34 * 1.29).outcome == HOLDS
    assert verdict(Close(rel=0.3), 1.34, 1.34 * 0.69).outcome == FAILS
    stated = (0.9387, 0.0527, 0.9389, 0.0474)
    assert verdict(Close(rel=0.0, absolute=0.1), stated, (0.9, 0.1, 0.95, 0.0)).outcome == HOLDS
    v = verdict(Close(rel=0.0, absolute=0.1), stated, (0.9, 0.2, 0.95, 0.0))  # one element off by 0.147
    assert v.outcome == FAILS and "+0.147" in v.text


def test_a_claim_in_words_is_a_bound_on_our_number():
    collapse = Bound(at_most=2, reads="one look")
    assert verdict(collapse, None, 1).outcome == HOLDS
    assert verdict(collapse, None, 3).outcome == FAILS  # "mode collapse" next to 3 digits does not hold
    varied = Bound(at_least=8)
    assert [verdict(varied, None, n).outcome for n in (7, 8, 10)] == [FAILS, HOLDS, HOLDS]
    every = verdict(Bound(at_most=0.75), None, {"a": 0.5, "b": 0.9})  # one number per variant: all must pass
    assert every.outcome == FAILS and "b 0.9" in every.text


@pytest.mark.parametrize("ratio,outcome", [(2.9, HOLDS), (1 / 2.9, HOLDS), (3.1, FAILS), (1 / 3.1, FAILS)])
def test_a_timing_holds_within_a_factor(ratio, outcome):
    assert verdict(Factor(3.0), 0.004, 0.004 * ratio, like={"device": "cpu"}).outcome == outcome


def test_unlike_runs_are_not_compared_and_say_why():
    v = verdict(Factor(), 0.004, 0.001, like={"device": "cuda", "batch_size": 1})
    assert v.outcome == UNLIKE and v.text == "the source: device cuda; ours: device cpu"
    short = {**FULL, "full_run": False, "full_run_why": "ours trained 40 steps"}
    assert verdict(Close(), 3.0, 3.0, context=short) == verdict(Close(), 3.0, 0.0, context=short)
    assert verdict(Close(), 3.0, 3.0, context=short).text == "ours trained 40 steps"
    assert verdict(Close(), 3.0, None).outcome == MISSING


def test_every_stated_entry_judges_its_own_value_as_holding():
    """The oracle: a measurement equal to what the source states holds under every entry's rule (and a claim in
    words gets a rule, not a free text)."""
    for s in STATED:
        if s.value is None:
            assert isinstance(s.rule, Bound), s
            continue
        assert judge(s, s.value, {**FULL, "device": s.like.get("device", "cpu"), **s.like}).outcome == HOLDS, s
    assert any(s.quantity == "seconds_per_image" and s.value == pytest.approx(286 / 60_000) for s in STATED)
    assert math.isclose([s for s in STATED if s.quantity == "ideal_bce"][0].value, math.log(2))


def test_lucic_claim_is_judged_on_the_committed_loss_study(tmp_path):
    """Lucic et al.'s claim in the ledger: judged on the study's verdicts file, FID rows against bce. It holds when no
    loss is judged better, fails naming the loss that is, is not comparable while an arm has one seed, and is not
    measured where the repository has no study; the committed study is read as it is."""
    import json

    from ganlab.config import load_params
    from ganlab.report.claims import claims
    from ganlab.report.sources import STUDY_FILES
    from helpers import REPO

    params = load_params(REPO / "params.yaml")

    def lucic(rows):
        path = tmp_path / STUDY_FILES["study.losses"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if rows is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps(rows))
        (c,) = [c for c in claims(params, {}, None, tmp_path) if c.stated.subject == "study.losses"]
        return c

    def row(loss, verdict, n=5, metric="fid_mnist"):
        return {"a": loss, "b": "bce", "metric": metric, "n_a": n, "n_b": n, "verdict": verdict}
    none = "no detectable difference with 5 and 5 seeds"
    held = lucic([row("mse", none), row("hinge", "b better"), row("lsgan", "a better", metric="kid_mnist")])
    assert held.verdict.outcome == HOLDS and held.ours == {"mse": 0.0, "hinge": 0.0}
    failed = lucic([row("mse", none), row("lsgan", "a better")])
    assert failed.verdict.outcome == FAILS and "lsgan 1" in failed.verdict.text
    unjudged = lucic([row("mse", "cannot judge: fewer than 2 seeds", n=1)])
    assert unjudged.verdict.outcome == UNLIKE and "mse 1 and bce 1 seeds" in unjudged.verdict.text
    absent = lucic(None)
    assert absent.verdict.outcome == MISSING and "losses_verdicts.json" in absent.verdict.text
    committed = [c for c in claims(params, {}, None, REPO) if c.stated.subject == "study.losses"][0]
    assert committed.ran and committed.verdict.outcome in (HOLDS, FAILS, UNLIKE)
