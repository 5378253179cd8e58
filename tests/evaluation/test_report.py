"""The evaluation report: verdicts against the spec's gates, the workload section, recommendations for
one release and across releases, and the pages with their charts."""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import numpy as np
import pytest
from pydantic import ValidationError

from synth_assets import evaluate, split_holdout
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.spec import Evaluation, Gates, HigherIsBetter, LowerIsBetter, Target
from synth_assets.evaluation.fidelity import _cramers_v, association_matrix, worst_marginals
from synth_assets.evaluation.marginals import bin_table
from synth_assets.evaluation.pages import comparison_page
from synth_assets.evaluation.recommendations import across_releases
from synth_assets.evaluation.report import judge
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.privacy.releases import synthesize

DELTA = 1e-5


@pytest.fixture(scope="module")
def split(tiny, wide, tiny_real):
    spec = tiny.spec.model_copy(update={
        "evaluation": Evaluation(targets=[Target(column="sessions", task="regression")]),
        "privacy": tiny.spec.privacy.model_copy(update={"holdout_fraction": 0.4}),
    })
    dataset = dataclasses.replace(tiny, spec=spec)
    training, holdout = split_holdout(dataset, wide)
    answers = run_workload(dataset.queries, tiny_real.reporting)
    release = synthesize(dataset, IndependentMarginals(), 1.0, training, ledger=None).population
    return dataset, training, holdout, answers, release


def with_gates(dataset, **gates):
    evaluation = dataset.spec.evaluation.model_copy(update={"gates": Gates(**gates)})
    return dataclasses.replace(dataset, spec=dataset.spec.model_copy(update={"evaluation": evaluation}))


def test_judge_reads_each_gate_in_its_direction_and_never_passes_a_missing_value():
    lower, higher = LowerIsBetter(green=1.0, amber=2.0), HigherIsBetter(green=0.9, amber=0.5)
    assert [judge(v, lower) for v in (0.5, 1.0, 1.5, 2.0, 2.5)] == ["green", "green", "amber", "amber", "red"]
    assert [judge(v, higher) for v in (1.0, 0.9, 0.7, 0.5, 0.4)] == ["green", "green", "amber", "amber", "red"]
    assert judge(math.nan, lower) == judge(None, higher) == judge(0.1, None) == "not available"


@pytest.mark.parametrize("model, green, amber", [(LowerIsBetter, 2.0, 1.0), (HigherIsBetter, 0.5, 0.9),
                                                 (LowerIsBetter, 1.0, math.inf)])
def test_gates_out_of_order_or_infinite_are_refused(model, green, amber):
    with pytest.raises(ValidationError, match="green"):
        model(green=green, amber=amber)


def test_the_spec_gates_decide_the_verdicts(split):
    dataset, training, holdout, answers, release = split
    report = evaluate(dataset, training, holdout, release, epsilon=1.0, delta=DELTA, answers=answers)
    figures = report.to_dict()
    assert set(figures["verdicts"]) == {"fidelity", "utility", "workload", "privacy"}
    ratio = figures["fidelity"]["worst_ratio_to_holdout"]
    assert ratio == max(figures["fidelity"]["ratio_to_holdout"].values())
    passed = figures["workload"]["metric_pass_rate"]
    tstr = next(u["ratio"]["r2"] for u in figures["utility"]["targets"] if u["model"] == "linear")
    lenient = with_gates(dataset, marginal_tvd_ratio=LowerIsBetter(green=ratio * 1.01, amber=ratio * 2),
                         workload_metric_pass_rate=HigherIsBetter(green=passed, amber=0.0),
                         tstr_ratio=HigherIsBetter(green=-1e9, amber=-1e9))
    strict = with_gates(dataset, marginal_tvd_ratio=LowerIsBetter(green=ratio / 3, amber=ratio / 2),
                        workload_metric_pass_rate=HigherIsBetter(green=1.0, amber=min(1.0, passed + 1e-9)),
                        tstr_ratio=HigherIsBetter(green=tstr + 10, amber=tstr + 5))
    easy = evaluate(lenient, training, holdout, release, epsilon=1.0, delta=DELTA, answers=answers)
    hard = evaluate(strict, training, holdout, release, epsilon=1.0, delta=DELTA, answers=answers)
    assert easy.verdicts["fidelity"] == "green" and hard.verdicts["fidelity"] == "red"
    assert easy.verdicts["workload"] == "green"
    assert hard.verdicts["workload"] == ("green" if passed == 1.0 else "red")
    assert easy.verdicts["utility"] == "green" and hard.verdicts["utility"] == "red"
    assert hard.to_dict()["gates"]["marginal_tvd_ratio"] == {"green": ratio / 3, "amber": ratio / 2}
    assert any("marginals are" in a for a in hard.recommendations)


def test_without_answers_the_workload_is_not_available_and_with_them_it_is_scored(split):
    dataset, training, holdout, answers, release = split
    without = evaluate(dataset, training, holdout, release, epsilon=1.0, delta=DELTA).to_dict()["workload"]
    assert without["verdict"] == "not available" and "answers" in without["reason"]
    scored = evaluate(dataset, training, holdout, release, epsilon=1.0, delta=DELTA, answers=answers).to_dict()
    workload = scored["workload"]
    assert {q["name"] for q in workload["query_scores"]} == set(answers)
    met = sum(v is not None and (v <= q["thresholds"].get(k, q["threshold"]) if q["direction"] == "<="
                                 else v >= q["thresholds"].get(k, q["threshold"]))
              for q in workload["query_scores"] if not q["error"] for k, v in q["metrics"].items())
    total = sum(len(q["metrics"]) if not q["error"] and q["metrics"] else 1 for q in workload["query_scores"])
    assert workload["metric_pass_rate"] == pytest.approx(met / total)


def test_a_leaky_copy_gets_advice_not_to_release(split):
    dataset, training, holdout, answers, _ = split
    report = evaluate(dataset, training, holdout, training, epsilon=1.0, delta=DELTA, answers=answers)
    assert report.verdicts["privacy"] == "red"
    assert report.recommendations[0].startswith("Do not release")


def test_association_matrix_is_cramers_v_on_the_public_bins(split):
    dataset, training, *_ = split
    matrix = association_matrix(dataset, training)
    codes = bin_table(dataset, training).codes
    width = codes.shape[1]
    assert matrix.shape == (width, width) and np.allclose(np.diag(matrix), 1.0)
    for i, j in [(0, 1), (1, width - 1), (0, width - 1)]:
        expected = _cramers_v(codes[:, i].astype(np.int64), codes[:, j].astype(np.int64))
        assert matrix[i, j] == pytest.approx(expected) and matrix[j, i] == matrix[i, j]


def test_the_worst_marginals_are_the_columns_with_the_largest_tvd(split):
    dataset, training, holdout, _, release = split
    chosen = worst_marginals(dataset, training, release, holdout, columns=2)
    every = {m["column"]: m for m in worst_marginals(dataset, training, release, holdout, columns=99)}
    assert len(every) == len(dataset.spec.modelled_columns)
    assert {m["column"] for m in chosen} == set(sorted(every, key=lambda c: -every[c]["tvd"])[:2])
    for m in every.values():
        assert len(m["bins"]) == len(m["training"]) == len(m["synthetic"]) == len(m["holdout"])
        assert sum(m["training"]) == pytest.approx(1.0, abs=1e-3)
        assert m["tvd"] == pytest.approx(0.5 * sum(abs(a - b) for a, b in zip(m["training"], m["synthetic"])),
                                         abs=1e-4)


def _release(generator: str, epsilon: float, **verdicts: str) -> dict:
    sections = {"fidelity": "green", "utility": "green", "workload": "green", "privacy": "green", **verdicts}
    worst = next((v for v in ("red", "amber", "green") if v in sections.values()), "green")
    return {"generator": generator, "epsilon": epsilon, "delta": DELTA, "verdict": worst, "verdicts": sections,
            "fidelity": {"worst_order": "tvd_2way", "synthetic_vs_training": {"tvd_2way": 0.1}},
            "workload": {"metric_pass_rate": 0.5}, "utility": {"targets": []}, "privacy": {}}


def test_across_releases_names_the_generator_or_epsilon_that_would_pass():
    reports = [_release("private_evolution", 0.5, fidelity="red"), _release("aim", 0.5),
               _release("private_evolution", 1.0), _release("mst", 0.5, fidelity="amber", workload="red"),
               _release("mst", 4.0, privacy="red")]
    advice = across_releases(reports)
    assert advice[0] == "The cheapest release that passes every gate: aim at epsilon 0.5."
    assert ("2-way fidelity red for private_evolution at epsilon 0.5: aim at epsilon 0.5 or private_evolution "
            "at epsilon 1 would pass.") in advice
    # mst at epsilon 4 passes the workload and fidelity gates but fails privacy: never an alternative
    assert ("Workload red for mst at epsilon 0.5: aim at epsilon 0.5 or private_evolution at epsilon 0.5 "
            "would pass.") in advice
    assert "2-way fidelity amber for mst at epsilon 0.5: aim at epsilon 0.5 would pass." in advice
    assert any(a.startswith("Privacy red for mst at epsilon 4: do not release") for a in advice)
    nothing = across_releases([_release("mst", 1.0, utility="red")])
    assert nothing[0].startswith("No release passes every gate yet")
    assert "ML utility red for mst at epsilon 1: no release in the warehouse passes it yet." in nothing


def test_pages_are_self_contained_and_draw_the_dp_bound(split, tmp_path):
    dataset, training, holdout, answers, release = split
    reports = []
    for epsilon in (0.5, 2.0):
        report = evaluate(dataset, training, holdout, release, epsilon=epsilon, delta=DELTA, answers=answers,
                          generator="independent_marginals")
        page = report.to_html(tmp_path / f"release_{epsilon}.html").read_text()
        assert "src=\"http" not in page and "<script src" not in page
        for alt in ("DCR histogram", "membership attack ROC", "association heatmaps", "TSTR against TRTR",
                    "worst 1-way marginals"):
            assert re.search(rf'<img alt="{alt}" src="data:image/png;base64,[A-Za-z0-9+/=]{{200,}}"', page), alt
        reports.append(report.to_dict())
    other = copy.deepcopy(reports[0])
    other["generator"] = "copy"
    page = comparison_page(dataset.name, [*reports, other], across_releases([*reports, other]))
    assert page.count('alt="ROC at epsilon') == 2
    assert 'alt="figure against epsilon"' in page and 'alt="TSTR bars"' in page
    for r in reports:
        assert f"<td>{r['epsilon']:g}</td><td>independent_marginals</td>" in page
