"""A dataset directory loads when it is right, and fails fast naming the file and field when it is not."""

import json
import math
from pathlib import Path

import pytest
import yaml

from synth_assets.datasets.loading import DEFAULT_DATASET, DatasetError, load_dataset
from synth_assets.datasets.spec import CategoricalColumn, NumericColumn


def _edit_spec(directory: Path, edit) -> None:
    path = directory / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def _column(spec: dict, source: str) -> dict:
    return next(c for c in spec["wide_table"]["columns"] if c["from"] == source)


def test_tiny_dataset_loads_with_its_sql_and_queries(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    assert dataset.name == "devices"
    assert set(dataset.reporting_sql) == {"profile", "usage", "updates"}
    assert "from sessions" in dataset.reporting_sql["usage"]
    assert sorted(q.type for q in dataset.queries) == [
        "aggregate",
        "aggregate",
        "coverage",
        "distribution",
        "ranking",
    ]
    model = next(c for c in dataset.spec.wide_table.columns if c.wide_name == "model")
    assert isinstance(model, CategoricalColumn) and model.map_to == "other"
    minutes = next(c for c in dataset.spec.wide_table.columns if c.wide_name == "minutes")
    assert isinstance(minutes, NumericColumn) and minutes.type == "float" and minutes.nullable
    assert dataset.spec.key_column.wide_name == "device_id"
    assert [c.wide_name for c in dataset.spec.columns_of("updates")] == ["channel", "version"]


def test_fingerprint_changes_with_any_file(tiny_copy: Path) -> None:
    before = load_dataset(tiny_copy).fingerprint
    assert load_dataset(tiny_copy).fingerprint == before
    sql = tiny_copy / "reporting" / "usage.sql"
    sql.write_text(sql.read_text() + "\n-- changed\n")
    assert load_dataset(tiny_copy).fingerprint != before


def test_fingerprint_follows_a_query_sql_but_not_how_it_is_scored(tiny_copy: Path) -> None:
    before = load_dataset(tiny_copy).fingerprint
    path = sorted((tiny_copy / "queries").glob("*.json"))[0]
    query = json.loads(path.read_text())
    rescored = {**query, "description": "scored differently", "pass_when": "all"}
    path.write_text(json.dumps(rescored))
    assert load_dataset(tiny_copy).fingerprint == before
    path.write_text(json.dumps({**query, "sql": query["sql"] + "\n-- changed"}))
    assert load_dataset(tiny_copy).fingerprint != before


def test_embedded_default_is_valid() -> None:
    dataset = load_dataset(DEFAULT_DATASET)
    assert dataset.name == "lahman"
    assert dataset.spec.entity.key == "player_id"
    assert len(dataset.spec.reporting_tables) >= 9
    assert len(dataset.queries) >= 18
    assert {q.type for q in dataset.queries} == {"aggregate", "distribution", "ranking", "coverage"}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update(spec_version=2), "spec_version is 2"),
        (lambda s: s.update(colour="blue"), "colour: unknown field"),
        (lambda s: s.pop("entity"), "entity: required field is missing"),
        (
            lambda s: s["entity"].update(population="nowhere"),
            "entity.population 'nowhere' is not one of the reporting_tables",
        ),
        (
            lambda s: s["sources"]["devices"].update(format="excel"),
            "sources.devices: Input tag 'excel' found using 'format' does not match",
        ),
        (
            lambda s: _column(s, "usage.crashes").update(min=10, max=5),
            "min (10.0) must be below max (5.0)",
        ),
        (
            lambda s: _column(s, "usage.crashes").update(max="lots"),
            "wide_table.columns.6.numeric.max: Input should be a valid number",
        ),
        (
            lambda s: _column(s, "profile.model").update(map_to="omega"),
            "map_to 'omega' is not one of the categories",
        ),
        (
            lambda s: _column(s, "profile.region").update(unseen="null"),
            "unseen is 'null' but the column is not nullable",
        ),
        (
            lambda s: _column(s, "usage.sessions").update(**{"from": "usage_table.sessions"}),
            "'usage_table' is not one of the reporting_tables",
        ),
        (
            lambda s: _column(s, "usage.minutes").update(name="sessions"),
            "wide_table has two columns named 'sessions'",
        ),
        (
            lambda s: s["wide_table"]["columns"].pop(0),
            "wide_table must hold the entity key as an identifier column",
        ),
        (
            lambda s: _column(s, "profile.purchase_year").update(role="ordinal"),
            "does not match any of the expected tags: 'categorical', 'numeric', 'identifier'",
        ),
        (
            lambda s: s["privacy"].update(epsilon_grid=[1, -2]),
            "every epsilon must be > 0, got [-2.0]",
        ),
        (
            lambda s: s["reporting_tables"]["usage"].update(rebuildable=False),
            "rebuildable is false: give not_rebuildable_reason",
        ),
    ],
)
def test_bad_spec_names_file_field_and_problem(tiny_copy: Path, edit, expected: str) -> None:
    _edit_spec(tiny_copy, edit)
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    message = str(error.value)
    assert str(tiny_copy / "dataset.yaml") in message
    assert expected in message


def test_spec_that_is_not_yaml(tiny_copy: Path) -> None:
    (tiny_copy / "dataset.yaml").write_text("spec_version: 1\nname: [unclosed\n")
    with pytest.raises(DatasetError, match=r"dataset\.yaml: not valid YAML"):
        load_dataset(tiny_copy)


def test_missing_directory_and_missing_sql(tiny_copy: Path) -> None:
    with pytest.raises(DatasetError, match="dataset directory not found"):
        load_dataset(tiny_copy / "nope")
    (tiny_copy / "reporting" / "usage.sql").unlink()
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    assert "usage.sql: SQL file of reporting table 'usage' not found" in str(error.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"type": "histogram"}, "does not match any of the expected tags"),
        ({"max_tvd": 3}, "max_tvd: Input should be less than or equal to 1"),
        ({"keys": []}, "a distribution query needs keys"),
        ({"name": "my query"}, "query name 'my query' is not a valid SQL identifier"),
        ({"sql": None}, "sql: Input should be a valid string"),
    ],
)
def test_bad_query_file_names_file_and_field(tiny_copy: Path, change: dict, expected: str) -> None:
    path = tiny_copy / "queries" / "models.json"
    query = json.loads(path.read_text())
    query.update(change)
    path.write_text(json.dumps(query))
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_query_file_that_is_not_json_and_duplicate_names(tiny_copy: Path) -> None:
    broken = tiny_copy / "queries" / "broken.json"
    broken.write_text("{'name': 'single quotes'}")
    with pytest.raises(DatasetError, match=r"broken\.json: not valid JSON"):
        load_dataset(tiny_copy)
    broken.write_text((tiny_copy / "queries" / "models.json").read_text())
    with pytest.raises(DatasetError, match="query name 'models' is already used"):
        load_dataset(tiny_copy)


def test_empty_workload_is_refused(tiny_copy: Path) -> None:
    for path in (tiny_copy / "queries").glob("*.json"):
        path.unlink()
    with pytest.raises(DatasetError, match="no query files"):
        load_dataset(tiny_copy)


def _replace_in_spec(directory: Path, old: str, new: str) -> Path:
    """Edit dataset.yaml as text, so that YAML's own spellings (``.inf``, ``.nan``) reach the loader."""
    path = directory / "dataset.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("min: 0, max: 500", "min: 0, max: .inf", "give the largest value the column can take"),
        ("min: 0, max: 100000", "min: 0, max: .inf", "give the largest value the column can take"),
        ("min: 0, max: 1000", "min: -.inf, max: 1000", "give the smallest value the column can take"),
        ("min: 1, max: 20", "min: .nan, max: 20", "give the smallest value the column can take"),
        ("min: 0, max: 100000", "min: 0, max: .NaN", "give the largest value the column can take"),
        ("epsilon_grid: [1, 4]", "epsilon_grid: [1, .inf]", "privacy.epsilon_grid"),
        ("epsilon_grid: [1, 4]", "epsilon_grid: [.nan, 4]", "privacy.epsilon_grid"),
        ("epsilon_grid: [1, 4]", "epsilon_grid: [1, 4]\n  budget_epsilon: .inf", "privacy.budget_epsilon"),
        ("epsilon_grid: [1, 4]", "epsilon_grid: [1, 4]\n  budget_epsilon: .nan", "privacy.budget_epsilon"),
        ("epsilon_grid: [1, 4]", "epsilon_grid: [1, 4]\n  delta: .nan", "privacy.delta"),
        ("epsilon_grid: [1, 4]", "epsilon_grid: [1, 4]\n  delta: -.inf", "privacy.delta"),
    ],
)
def test_non_finite_numbers_are_refused(tiny_copy: Path, old: str, new: str, expected: str) -> None:
    path = _replace_in_spec(tiny_copy, old, new)
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    message = str(error.value)
    assert str(path) in message
    assert expected in message
    assert "finite number" in message


def test_yaml_inf_reaches_the_model_as_float_inf(tiny_copy: Path) -> None:
    path = _replace_in_spec(tiny_copy, "min: 0, max: 500", "min: 0, max: .inf")
    raw = yaml.safe_load(path.read_text())
    assert _column(raw, "usage.crashes")["max"] == math.inf
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    message = str(error.value)
    assert "wide_table.columns.6.numeric.max" in message
    assert "public bounds must be finite numbers" in message
    assert "(got inf)" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: _column(s, "usage.minutes").update(name="__minutes"), "'__minutes'"),
        (lambda s: _column(s, "updates.version").update(**{"from": "updates.__version"}), "'__version'"),
        (lambda s: s["entity"].update(key="__device_id"), "entity key '__device_id'"),
    ],
)
def test_reserved_double_underscore_names_are_refused(tiny_copy: Path, edit, expected: str) -> None:
    _edit_spec(tiny_copy, edit)
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    message = str(error.value)
    assert str(tiny_copy / "dataset.yaml") in message
    assert expected in message
    assert "names starting with '__' are reserved for the platform's own columns" in message


def test_reporting_column_starting_with_double_underscore_may_be_renamed(tiny_copy: Path) -> None:
    _edit_spec(tiny_copy, lambda s: _column(s, "updates.version").update(
        **{"from": "updates.__version", "name": "version"}
    ))
    spec = load_dataset(tiny_copy).spec
    assert [c.wide_name for c in spec.columns_of("updates")] == ["channel", "version"]
