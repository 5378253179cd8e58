"""ML utility: TSTR against TRTR on the holdout, for the targets the spec declares."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import yaml

from synth_assets import split_holdout
from synth_assets.datasets.loading import DatasetError, load_dataset
from synth_assets.datasets.spec import CategoricalColumn, Evaluation, Target
from synth_assets.evaluation.utility import ml_utility


@pytest.fixture(scope="module")
def with_targets(tiny, wide):
    categorical = next(c for c in tiny.spec.modelled_columns if isinstance(c, CategoricalColumn))
    numeric = next(c for c in tiny.spec.modelled_columns if c.wide_name == "sessions")  # minutes predict it
    targets = [Target(column=categorical.wide_name, task="classification"),
               Target(column=numeric.wide_name, task="regression")]
    spec = tiny.spec.model_copy(update={
        "evaluation": Evaluation(targets=targets),
        "privacy": tiny.spec.privacy.model_copy(update={"holdout_fraction": 0.4}),
    })
    dataset = dataclasses.replace(tiny, spec=spec)
    training, holdout = split_holdout(dataset, wide)
    return dataset, training, holdout


def test_a_copy_of_training_keeps_all_the_utility_and_shuffled_columns_lose_it(with_targets):
    dataset, training, holdout = with_targets
    copy = ml_utility(dataset, training, holdout, training)
    assert {(e["target"], e["model"]) for e in copy} == {
        (t.column, m) for t in dataset.spec.evaluation.targets for m in ("gradient_boosting", "linear")}
    for entry in copy:
        assert entry["tstr"] == entry["trtr"]
        assert all(v == pytest.approx(1.0) for v in entry["ratio"].values())
        assert entry["rows"]["holdout"] > 0
    rng = np.random.default_rng(0)
    shuffled = training.with_columns([
        training[c.wide_name][rng.permutation(training.height)]
        for c in dataset.spec.modelled_columns
    ])
    independent = ml_utility(dataset, training, holdout, shuffled)
    checked = 0
    for entry, real in zip(independent, copy):
        key = "auc" if entry["task"] == "classification" else "r2"
        assert entry["ratio"][key] == pytest.approx(entry["tstr"][key] / entry["trtr"][key])
        if real["trtr"][key] > 0.65 if key == "auc" else real["trtr"][key] > 0.2:
            assert entry["tstr"][key] < real["trtr"][key]  # a target the others predict: lost by shuffling
            checked += 1
    assert checked >= 1


def test_without_targets_nothing_and_without_a_holdout_not_available(tiny, wide, with_targets):
    assert ml_utility(tiny, wide, wide.head(50), wide) == []
    dataset, training, _ = with_targets
    entries = ml_utility(dataset, training, training.head(0), training)
    assert {e["verdict"] for e in entries} == {"not available"}


def test_targets_are_checked_when_the_spec_is_read(tiny_copy):
    path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    categorical = next(c for c in spec["wide_table"]["columns"] if c.get("role") == "categorical")
    name = categorical.get("name") or categorical["from"].split(".")[1]
    spec["evaluation"] = {"targets": [{"column": name, "task": "regression"}]}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DatasetError, match="categorical: use task: classification"):
        load_dataset(tiny_copy)
    spec["evaluation"] = {"targets": [{"column": "no_such_column", "task": "classification"}]}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DatasetError, match="no_such_column"):
        load_dataset(tiny_copy)


def test_a_column_null_in_every_training_row_is_left_out_not_a_crash(with_targets):
    dataset, training, holdout = with_targets
    numeric = next(c.wide_name for c in dataset.spec.modelled_columns
                   if c.wide_name not in {t.column for t in dataset.spec.evaluation.targets} and c.nullable)
    blank = training.with_columns(training[numeric].clear(training.height))
    results = ml_utility(dataset, training, holdout, blank)
    assert all("tstr" in r and not math.isnan(next(iter(r["tstr"].values()))) for r in results)
