"""`ganlab exps`: DVC's experiments table in 80 columns (the shape of `dvc exp show --json`, DVC 3)."""

from ganlab.report.exps import render


def entry(rev, name, params, headline):
    metrics = {f"metrics/headline/mnist/{v}.json": {"data": h} for v, h in headline.items()}
    metrics["metrics/classifier.json"] = {"data": {"cnn": {"accuracy": 0.98}}}  # not a headline file
    return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}


def show():
    base = {"model": {"loss": None}, "variants": {"mnist_vanilla": {"train": {"lr_g": 0.001}}}}
    head = {"mnist_vanilla": {"fid": 4.6434, "d": 1.2909, "g": 1.2734, "cover": 10, "steps": 100},
            "mnist_lsgan": {"fid": 4.4297, "d": 0.2632, "g": 0.4026, "cover": 9}}
    bce = {"mnist_vanilla": {"fid": 4.3076, "d": 1.4307, "g": 1.0833, "cover": 10}}
    return [{**entry("workspace", None, base, head), "experiments": None},
            {**entry("0123456789abcdef", "main", base, head),
             "experiments": [{"revs": [entry("094c91cdeadbeef", "bce", {**base, "model": {"loss": "bce"}}, bce)]},
                             {"revs": [entry("d4687edfeedface", "a-very-long-name-" + "x" * 70, base, {})]}]}]


def test_each_experiment_names_its_changes_and_each_variant_its_headline_numbers_in_80_columns():
    text = render(show())
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0].split() == ["variant", "fid", "cover", "d", "g"]  # DEFAULT_KEYS order, only keys present
    assert lines[1] == "workspace" and "main  0123456" in lines
    i = lines.index("bce  094c91c  model.loss=bce")
    assert lines[i + 1].split() == ["mnist_vanilla", "4.308", "10", "1.431", "1.083"]
    assert lines[-1].endswith("…") and len(lines[-1]) == 80  # a long title is cut, not wrapped
    assert "classifier" not in text


def test_narrow_terminals_drop_the_least_important_columns():
    lines = render(show(), width=34).splitlines()
    assert lines[0].split() == ["variant", "fid", "cover"] and max(map(len, lines)) <= 34
