"""Asset checks of the real half: Great Expectations on every reporting table and the wide table."""

from pathlib import Path

import dagster as dg
import polars as pl

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import build_real_assets, reporting_key, wide_key
from synth_assets.defs.real.checks import TABLE_CHECK, build_real_checks


def _evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_real_checks_pass_on_the_tiny_dataset(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    real = [k for a in build_real_assets(dataset) for k in a.keys]
    checks = build_real_checks(dataset)
    result = dg.materialize(
        [*build_assets(dataset), *checks],
        resources=build_resources(dataset, database=str(tmp_path / "w.duckdb")),
        selection=real,
    )
    assert result.success
    evaluations = _evaluations(result)
    assert set(evaluations) == {
        "reporting/profile", "reporting/usage", "reporting/updates", "real/devices_wide"
    }
    for evaluation in evaluations.values():
        assert evaluation.passed, evaluation.metadata["summary"].value
        assert evaluation.check_name == TABLE_CHECK
        assert evaluation.metadata["failed_expectations"].value == 0
    wide = evaluations["real/devices_wide"].metadata
    assert wide["rows"].value == 400
    assert wide["unexpected_counts"].value["device_id: column_values_to_be_unique"] == 0
    summary = wide["summary"].value
    assert "| purchase_year | column_values_to_be_in_type_list | type integer | — | pass |" in summary
    assert "examples" not in summary  # private data: counts and types only


def test_a_reporting_table_with_duplicate_keys_and_a_wrong_type_fails(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    dataset = load_dataset(tiny_dataset_dir)

    @dg.asset(key=reporting_key("usage"))
    def usage() -> pl.DataFrame:
        return pl.DataFrame(
            {
                "device_id": ["d1", "d1", "d2", None],
                "sessions": [1, 2, 3, 4],
                "minutes": ["1.5", "2", "3", "4"],  # text where the spec declares float
                "crashes": [0, 0, 1, 0],
            }
        )

    checks = [
        c for c in build_real_checks(dataset)
        if {k.asset_key for k in c.check_keys} == {reporting_key("usage")}
    ]
    result = dg.materialize(
        [usage, *checks],
        resources=build_resources(dataset, database=str(tmp_path / "w.duckdb")),
        raise_on_error=False,
    )
    evaluation = _evaluations(result)["reporting/usage"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    counts = evaluation.metadata["unexpected_counts"].value
    assert counts["device_id: column_values_to_be_unique"] == 2
    assert counts["device_id: column_values_to_not_be_null"] == 1
    assert "| minutes | column_values_to_be_in_type_list | type float | — | **FAIL** (observed String) |" in (
        evaluation.metadata["summary"].value
    )
    assert evaluation.metadata["failed_expectations"].value == 3
    # the wide-table check is built for the wide table's key
    assert any(wide_key(dataset) in {k.asset_key for k in c.check_keys} for c in build_real_checks(dataset))
