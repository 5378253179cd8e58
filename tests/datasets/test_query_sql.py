"""The SQL of workload queries is checked at load: one statement, reporting tables only, known columns."""

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from synth_assets.datasets.loading import DEFAULT_DATASET, Dataset, DatasetError, load_dataset
from synth_assets.sql import run_sql
from synth_assets.tables.build import RealTables
from synth_assets.tables.decompose import decompose


def _write_query(directory: Path, sql: str, name: str = "extra") -> Path:
    path = directory / "queries" / f"{name}.json"
    path.write_text(json.dumps({"name": name, "type": "aggregate", "sql": sql}))
    return path


def _refusal(directory: Path) -> str:
    with pytest.raises(DatasetError) as error:
        load_dataset(directory)
    return str(error.value)


def test_query_with_two_statements_is_refused(tiny_copy: Path) -> None:
    path = _write_query(tiny_copy, "select count(*) as n from profile; select 2 as n")
    message = _refusal(tiny_copy)
    assert str(path) in message
    assert "2 SQL statements" in message and "exactly one" in message


def test_query_that_does_not_parse_is_refused(tiny_copy: Path) -> None:
    path = _write_query(tiny_copy, "select count(* as n from profile")
    message = _refusal(tiny_copy)
    assert str(path) in message and "does not parse" in message


def test_query_reading_a_table_that_is_not_reporting_is_refused(tiny_copy: Path) -> None:
    # 'devices' is a source: the query would run on the real data and be skipped on synthetic data
    path = _write_query(tiny_copy, "select model, count(*) as n from devices group by model")
    message = _refusal(tiny_copy)
    assert str(path) in message
    assert "'devices'" in message
    assert "['profile', 'updates', 'usage']" in message


def test_schema_qualified_reporting_table_is_refused_with_the_fix(tiny_copy: Path) -> None:
    path = _write_query(tiny_copy, "select count(*) as n from main.profile")
    message = _refusal(tiny_copy)
    assert str(path) in message and "'main.profile'" in message
    assert "without the schema" in message


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (  # a typo behind a table alias
            "select p.regoin, count(*) as n from profile p group by p.regoin",
            ["'regoin'", "'profile'", "['device_id', 'model', 'region', 'purchase_year']",
             "the nearest name is 'region'"],
        ),
        (  # a typo without an alias
            "select modle, count(*) as n from profile group by modle",
            ["'modle'", "'profile' has the columns ['device_id', 'model', 'region', 'purchase_year']"],
        ),
        (  # a column of another reporting table
            "select avg(sessions) as s from profile",
            ["'sessions'", "'profile' has the columns [", "is a column of 'usage'"],
        ),
        (  # a column of the source, not of the reporting table
            "select avg(u.minutes) as m, max(u.device_id) as d, count(u.crash) as c from usage u",
            ["'crash'", "'usage'", "['device_id', 'sessions', 'minutes', 'crashes']"],
        ),
        (  # inside a CTE and a subquery
            "with t as (select p.device_id, p.purchase_yr from profile p) select count(*) as n from t",
            ["'purchase_yr'", "the nearest name is 'purchase_year'"],
        ),
        (
            "select count(*) as n from profile p where p.region in (select f.chanel from updates f)",
            ["'chanel'", "'updates'", "['device_id', 'channel', 'version']"],
        ),
        (  # a USING column
            "select count(*) as n from profile join usage using (device)",
            ["'device'"],
        ),
    ],
)
def test_query_column_that_cannot_be_resolved_is_refused(
    tiny_copy: Path, sql: str, expected: list[str]
) -> None:
    path = _write_query(tiny_copy, sql)
    message = _refusal(tiny_copy)
    assert str(path) in message
    for part in expected:
        assert part in message, message
    assert "\n" not in message


def test_query_columns_are_the_reporting_names_not_the_wide_names(tiny_copy: Path) -> None:
    spec_path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    minutes = next(c for c in spec["wide_table"]["columns"] if c["from"] == "usage.minutes")
    minutes["name"] = "usage_minutes"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    _write_query(tiny_copy, "select avg(minutes) as m from usage")
    load_dataset(tiny_copy)
    path = _write_query(tiny_copy, "select avg(usage_minutes) as m from usage")
    message = _refusal(tiny_copy)
    assert str(path) in message and "'usage_minutes'" in message
    assert "['device_id', 'sessions', 'minutes', 'crashes']" in message


# Valid queries that name things the query defines itself, or that only DuckDB can resolve: never refused.
VALID = [
    "select region as r, count(*) as n from profile group by r having n > 1 order by r",
    (
        "with t(reg, yr) as (select region, purchase_year from profile) "
        "select reg, max(yr) as y from t group by reg"
    ),
    "with t as (select region from profile) select t.region, count(*) as n from t group by t.region",
    "with usage as (select device_id, sessions * 2 as twice from usage) select avg(twice) as m from usage",
    "select s.reg, count(*) as n from (select region from profile) as s(reg) group by s.reg",
    (
        "select s.total, s.regions "
        "from (select {'total': count(*), 'regions': count(distinct region)} as s from profile)"
    ),
    "select (struct_pack(k := region)).k as k, count(*) as n from profile group by 1",
    "select p.*, u.* exclude (device_id) from profile p join usage u using (device_id)",
    "select reg, count(*) as n from (select * rename (region as reg) from profile) group by reg",
    "select list_transform(list(sessions), lambda x: x * 2) as l from usage",
    "select [x * 2 for x in list(sessions)] as l from usage",
    "select list_reduce(list(sessions), lambda a, b: a + b) as total from usage",
    "select count(*) as n, current_date as today from profile",
    (
        "select r.range as yr, count(p.device_id) as n from range(2000, 2030) r "
        "left join profile p on p.purchase_year = r.range group by r.range"
    ),
    "select k, count(*) as n from (values ('north'), ('south')) v(k) join profile on region = k group by k",
    "select region, sum(sessions) as s from profile join usage using (device_id) group by region",
    "select p.region, (select count(*) from usage u where u.device_id = p.device_id) as n from profile p",
    "select REGION, COUNT(*) AS N from PROFILE P group by P.Region",
    'select "region", count(*) as n from "profile" group by "region"',
    "select region, row_number() over (partition by region order by purchase_year) as rn from profile",
    "select region as k from profile union all select channel from updates",
    (
        "select metric, sum(v) as total "
        "from (unpivot usage on sessions, crashes into name metric value v) group by metric"
    ),
    "select region, count(*) as n from profile group by all order by all",
    'select "count_star()" as n from (select count(*) from profile)',
    "select purchase_year - 2000 as age, age * 2 as twice from profile",
    (
        "select region, purchase_year from profile "
        "qualify row_number() over (partition by region order by purchase_year) = 1"
    ),
    "select region, sum(purchase_year) over w as s from profile window w as (partition by region)",
    "select u.crashes, count(*) as n from usage as u(id, s, m) group by u.crashes",
    "from profile select region, count(*) as n group by region",
    "select count(*) filter (where channel = 'beta') as betas from updates",
    "select profile.region, count(*) as n from profile group by profile.region",
    "select quantile_cont(crashes, 0.9) as p90_crashes from usage;",
    "select p.region, sum(u.sessions) as s from profile p natural join usage u group by p.region",
    (
        "select p.region, count(*) as n from profile p "
        "where exists (select 1 from usage where usage.device_id = p.device_id) group by p.region"
    ),
    "select distinct on (region) region, model from profile order by region, purchase_year",
    "select region, model, count(*) as n from profile group by rollup (region, model)",
    "select max(columns(* exclude (device_id))) from usage",
    "select t.s.k, count(*) as n from (select {'k': region} as s from profile) t group by t.s.k",
    'select region as "Region name", count(*) as n from profile group by "Region name"',
    "select device_id from profile intersect select device_id from usage",
    "select r.m, count(*) as n from profile p, lateral (select p.purchase_year % 10 as m) r group by r.m",
    "select year(current_date) - purchase_year as age, count(*) as n from profile group by age",
]


@pytest.mark.parametrize("sql", VALID)
def test_valid_queries_are_not_refused(
    tiny_copy: Path, tiny: Dataset, tiny_real: RealTables, sql: str
) -> None:
    rebuilt = decompose(tiny, tiny_real.wide)
    assert isinstance(run_sql(sql, rebuilt), pl.DataFrame)  # the query really runs on rebuilt tables
    _write_query(tiny_copy, sql)
    load_dataset(tiny_copy)


def test_query_on_a_table_that_is_not_rebuildable_may_read_its_other_columns(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "updates.sql").write_text(
        "select device_id, channel, version, version * 10 as build from firmware"
    )
    spec_path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["reporting_tables"]["updates"].update(
        rebuildable=False, not_rebuildable_reason="'build' is derived and not in the wide table"
    )
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    _write_query(tiny_copy, "select avg(f.build) as b, avg(build) as b2 from updates f")
    load_dataset(tiny_copy)


def test_every_embedded_query_loads() -> None:
    files = sorted((DEFAULT_DATASET / "queries").glob("*.json"))
    assert len(files) == 26
    assert len(load_dataset(DEFAULT_DATASET).queries) == len(files)
