"""What to do about a verdict, in plain language: for one release (from its own figures) and across the
releases of a dataset (which generator or epsilon would pass a section that fails)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from synth_assets.evaluation.privacy_risk import AMBER, GREEN, RED

SECTION_NAMES = {"fidelity": "marginal fidelity", "utility": "ML utility", "workload": "workload",
                 "privacy": "privacy"}
ORDER_NAMES = {"tvd_1way": "1-way", "tvd_2way": "2-way", "tvd_3way": "3-way"}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _privacy(report: dict) -> list[str]:
    privacy, advice = report["privacy"], []
    epsilon = report["epsilon"]
    if privacy["dp_audit"]["verdict"] == RED:
        advice.append("Do not release: " + privacy["dp_audit"]["finding"] + ". Attach this report to a bug "
                      "report; no setting makes a broken mechanism safe.")
    leaks = []
    if privacy["exact_copies"]["verdict"] == RED:
        copies = privacy["exact_copies"]
        leaks.append(f"{_percent(copies['training_share'])} of the synthetic rows copy a training row "
                     f"({_percent(copies['holdout_share'])} match a holdout row)")
    dcr = privacy["dcr"]
    if dcr["verdict"] == RED:
        leaks.append(f"{_percent(dcr['share_closer_to_training'])} of the synthetic rows are closer to "
                     f"a training row than to a holdout row (0.5 is chance"
                     + (f"; epsilon {epsilon:g} allows at most {_percent(dcr['dp_ceiling'])})" if "dp_ceiling" in dcr
                        else ")"))

    if privacy["membership_inference"]["verdict"] == RED and privacy["dp_audit"]["verdict"] != RED:
        leaks.append(f"a membership attack reaches AUC {privacy['membership_inference']['auc']:.3f}")
    if leaks:
        cure = ("lower epsilon" if epsilon is not None else "use a DP generator: this table claims no guarantee")
        advice.append("Do not release: " + "; ".join(leaks) + f". The table remembers individuals: {cure}.")
    if dcr["verdict"] == AMBER and "dp_ceiling" in dcr:
        advice.append(f"{_percent(dcr['share_closer_to_training'])} of the synthetic rows are closer to a training row "
                      f"than to a holdout row (0.5 is chance): measurably, but within the {_percent(dcr['dp_ceiling'])} "
                      f"epsilon {epsilon:g} allows. Lower epsilon if that is too close.")
    attacks = privacy.get("attacks") or {}
    for name, entries in attacks.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict) and entry.get("verdict") in (RED, AMBER):
                what = name.replace("_", " ") + (f" of {entry['column']}" if "column" in entry else "")
                advice.append(
                    f"{what.capitalize()} succeeds on {_percent(entry['success_targets'])} of training targets "
                    f"against {_percent(entry['success_controls'])} of people it never saw (risk at least "
                    f"{entry['risk_low95']:.3f}): lower epsilon, or coarsen the columns it relies on before "
                    f"release.")
    return advice


def _fidelity(report: dict) -> list[str]:
    fidelity = report["fidelity"]
    if fidelity["verdict"] not in (RED, AMBER):
        return []
    order = ORDER_NAMES.get(fidelity.get("worst_order"), "k-way")
    ratio = fidelity.get("worst_ratio_to_holdout", math.nan)
    return [f"{order} marginals are {ratio:.1f}x further from the training rows than a real sample of the "
            f"holdout's size is ({fidelity['verdict']}): raise epsilon, or use a generator that models column "
            f"pairs (private_evolution, mst or aim) rather than independent columns."]


def _utility(report: dict) -> list[str]:
    advice = []
    for entry in report["utility"]["targets"]:
        if entry.get("verdict") in (RED, AMBER) and "headline" in entry:
            key = entry["headline"]
            advice.append(
                f"A {entry['model'].replace('_', ' ')} model of {entry['target']} trained on the synthetic rows "
                f"scores {key.upper()} {entry['tstr'].get(key, math.nan):.3f} on the holdout against "
                f"{entry['trtr'].get(key, math.nan):.3f} when trained on real rows: the relationships that "
                f"predict {entry['target']} are weakened; raise epsilon, or declare the columns it depends on "
                f"as workload queries so the generator is scored on them.")
    if not report["utility"]["targets"]:
        advice.append("No ML target is declared: add evaluation.targets to dataset.yaml to measure ML utility.")
    return advice


def _workload(report: dict) -> list[str]:
    workload = report["workload"]
    if workload["verdict"] not in (RED, AMBER):
        return []
    failing = []
    for query in workload.get("query_scores", []):
        thresholds = query.get("thresholds") or {}
        for column, value in query["metrics"].items():
            threshold = thresholds.get(column, query["threshold"])
            met = value is not None and (value <= threshold if query["direction"] == "<=" else value >= threshold)
            if not met:
                failing.append(f"{query['name']}.{column}")
    advice = [f"{_percent(1 - workload['metric_pass_rate'])} of the workload's value metrics miss their "
              f"thresholds ({', '.join(failing[:5])}{', ...' if len(failing) > 5 else ''})."]
    small = [b for b in workload.get("buckets", []) if b.get("groups") and b["bucket"] in ("1-9", "10-99")]
    large = [b for b in workload.get("buckets", []) if b.get("groups") and b["bucket"] not in ("1-9", "10-99")]
    if small and large:
        small_error = max(b.get("median_error") or 0.0 for b in small)
        large_error = min(b.get("median_error") or 0.0 for b in large)
        if small_error > 2 * large_error:
            advice.append(f"Groups of fewer than 100 entities are off by {_percent(small_error)} (median) against "
                          f"{_percent(large_error)} for larger ones: DP noise drowns small groups; merge them in "
                          f"the query or raise epsilon.")
    return advice


def recommend(report: dict) -> list[str]:
    """Plain-language advice for one release, most serious first."""
    advice = _privacy(report) + _fidelity(report) + _workload(report) + _utility(report)
    if report["verdict"] == GREEN:
        advice.insert(0, "Every section is green against the gates in dataset.yaml (evaluation.gates).")
    return advice


def across_releases(reports: Sequence[dict]) -> list[str]:
    """For every section a release fails, the releases that pass it at the same epsilon (another
    generator) or with the same generator at a larger epsilon; and the cheapest release that passes all."""
    by_key = {(r["generator"], r["epsilon"]): r for r in reports if r.get("epsilon") is not None}
    safe = {k: r for k, r in by_key.items() if r["verdicts"]["privacy"] != RED}  # never an alternative
    advice = []
    for (generator, epsilon), report in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for section, verdict in report["verdicts"].items():
            if verdict not in (RED, AMBER):
                continue
            if section == "privacy":  # never traded for another release's figures
                advice.append(f"Privacy {verdict} for {generator} at epsilon {epsilon:g}: do not release this "
                              f"table before reading its report's privacy section.")
                continue
            alternatives = [f"{g} at epsilon {e:g}" for (g, e), other in sorted(safe.items())
                            if e == epsilon and g != generator and other["verdicts"][section] == GREEN]
            larger = sorted(e for (g, e), other in safe.items()
                            if g == generator and e > epsilon and other["verdicts"][section] == GREEN)
            if larger:
                alternatives.append(f"{generator} at epsilon {larger[0]:g}")
            name = SECTION_NAMES[section]
            if section == "fidelity" and report["fidelity"].get("worst_order"):
                name = f"{ORDER_NAMES[report['fidelity']['worst_order']]} fidelity"
            advice.append(f"{name[0].upper()}{name[1:]} {verdict} for {generator} at epsilon {epsilon:g}: "
                          + (f"{' or '.join(alternatives)} would pass." if alternatives
                             else "no release in the warehouse passes it yet."))
    green = sorted((e, g) for (g, e), r in by_key.items() if r["verdict"] == GREEN)
    if green:
        advice.insert(0, f"The cheapest release that passes every gate: {green[0][1]} at epsilon {green[0][0]:g}.")
    elif by_key:
        advice.insert(0, "No release passes every gate yet: see the sections below, or relax evaluation.gates "
                         "in dataset.yaml if a gate is stricter than the use needs.")
    return advice
