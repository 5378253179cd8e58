"""Prompts of the LLM candidate API, built ONLY from public material:

* the dataset spec: title, description, entity name, reporting-table descriptions, and per modelled
  column its name, description, type, domain (categories or [min, max], scale) and nullability;
* the optional public population description (``Dataset.population_description``);
* for variation, the SELECTED synthetic records passed in (DP outputs: post-processing).

Nothing here reads a source file, a reporting table, the wide table or any statistic of them; source
paths, SQL and workload queries are not used either. ``tests/pe/llm/test_privacy.py`` checks that no
value that occurs only in the private data reaches a request.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime

import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn, DateColumn, NumericColumn
from synth_assets.datasets.temporal import as_dates
from synth_assets.pe.llm.schema import PARENT_FIELD, RECORDS_FIELD, schema_text

__all__ = ["PROMPT_VERSION", "random_messages", "render_records", "variation_messages"]

PROMPT_VERSION = "1"
SCHEMA_MARKER = "Reply with a single JSON object that matches this JSON schema:"


def _number(value: float, kind: str) -> str:
    return str(int(value)) if kind == "integer" else f"{value:g}"


def _column_line(dataset: Dataset, column: CategoricalColumn | NumericColumn) -> str:
    spec = dataset.spec
    if isinstance(column, CategoricalColumn):
        domain = "one of " + ", ".join(json.dumps(c, ensure_ascii=False) for c in column.categories)
    elif isinstance(column, DateColumn):
        low, high = (column.value(v).isoformat() for v in (column.min, column.max))
        form = "YYYY-MM-DD" if column.role == "date" else "YYYY-MM-DDTHH:MM:SS"
        domain = f"{'date' if column.role == 'date' else 'date and time'} ({form}) from {low} to {high}"
    else:
        domain = f"{column.type} from {_number(column.min, column.type)} to {_number(column.max, column.type)}"
        if column.scale == "log":
            domain += " (heavy-tailed: most values near the minimum, a few large ones)"
    parts = [f"- `{column.wide_name}`: {domain}"]
    if column.description:
        parts.append(f"; {column.description.strip()}")
    if column.nullable:
        if column.table == spec.entity.population:
            parts.append("; may be null (unknown)")
        else:
            parts.append(f"; null when the {spec.entity.name} has no `{column.table}` record")
    else:
        parts.append("; never null")
    return "".join(parts)


def _structure_lines(dataset: Dataset) -> list[str]:
    spec = dataset.spec
    lines = []
    tables: dict[str, list] = {}
    for column in spec.modelled_columns:
        tables.setdefault(column.table, []).append(column)
    for table, columns in tables.items():
        if table == spec.entity.population:
            continue
        names = ", ".join(f"`{c.wide_name}`" for c in columns)
        described = spec.reporting_tables[table].description.strip()
        about = f" ({described.rstrip('.')})" if described else ""
        if all(c.nullable for c in columns):
            lines.append(
                f"- {names} come from `{table}`{about}: a {spec.entity.name} with no `{table}` record "
                "has ALL of them null, otherwise all of them are filled."
            )
        else:
            lines.append(f"- {names} come from `{table}`{about}: every {spec.entity.name} has one.")
    return lines


def _context(dataset: Dataset) -> str:
    spec = dataset.spec
    lines = []
    title = spec.title.strip() or spec.name
    lines.append(f"Dataset: {title}." if not spec.description else f"Dataset: {title}. {spec.description.strip()}")
    lines.append(f"Each record describes one {spec.entity.name}.")
    if dataset.population_description and dataset.population_description.strip():
        lines += ["", "About the population (public description):", dataset.population_description.strip()]
    lines += ["", "Columns of a record (use exactly these names and respect every domain):"]
    lines += [_column_line(dataset, c) for c in spec.modelled_columns]
    structure = _structure_lines(dataset)
    if structure:
        lines += ["", "Structure:"] + structure
    return "\n".join(lines)


def _system(dataset: Dataset, schema: dict | None) -> str:
    entity = dataset.spec.entity.name
    text = (
        f"You write realistic synthetic records of {entity}s for a statistical table, from general "
        f"knowledge only: plausible {entity}s, never real identifiable ones. Answer with JSON only, "
        f'in the form {{"{RECORDS_FIELD}": [...]}}.'
    )
    if schema is not None:
        text += f"\n{SCHEMA_MARKER}\n```json\n{schema_text(schema)}\n```"
    return text


def random_messages(dataset: Dataset, count: int, *, label: str, schema_in_prompt: dict | None) -> list[dict]:
    """Messages of one RANDOM_API request for ``count`` records. ``label`` makes requests of one call
    differ (e.g. ``"batch 3, seed 12345"``)."""
    user = (
        f"{_context(dataset)}\n\n"
        f"Write {count} different records. Together they should look like a random sample of the whole "
        f"population: common and rare kinds of {dataset.spec.entity.name} in realistic proportions, "
        f"realistic relations between the columns, varied values. ({label})"
    )
    return [
        {"role": "system", "content": _system(dataset, schema_in_prompt)},
        {"role": "user", "content": user},
    ]


def render_records(dataset: Dataset, selected: pl.DataFrame) -> list[str]:
    """One JSON object per selected record, in wide-table column order."""
    names = [c.wide_name for c in dataset.spec.modelled_columns]
    lines = []
    for row in as_dates(dataset.spec, selected.select(names)).iter_rows(named=True):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v.isoformat()
                     if isinstance(v, (date, datetime)) else v) for k, v in row.items()}
        lines.append(json.dumps(clean, ensure_ascii=False))
    return lines


def variation_messages(
    dataset: Dataset,
    parents: pl.DataFrame,
    per_parent: int,
    *,
    rate: float,
    label: str,
    schema_in_prompt: dict | None,
) -> list[dict]:
    """Messages of one VARIATION_API request: ``per_parent`` variations of each of ``parents`` (selected
    synthetic records, DP outputs). ``rate`` is the Tab-PE mutation rate r(t)."""
    numbered = [f"{i}. {line}" for i, line in enumerate(render_records(dataset, parents), start=1)]
    share = max(1, round(100 * rate))
    entity = dataset.spec.entity.name
    user = (
        f"{_context(dataset)}\n\n"
        f"Here are {parents.height} synthetic records, numbered:\n" + "\n".join(numbered) + "\n\n"
        f"For EACH record write {per_parent} variation(s): a realistic {entity} similar to it, with "
        f"about {share}% of its columns changed (numbers by a moderate amount, categories to another "
        f"plausible category), following the structure rules. Return {parents.height * per_parent} records; each has \"{PARENT_FIELD}\": the "
        f"number of the record it varies, {per_parent} per number. ({label})"
    )
    return [
        {"role": "system", "content": _system(dataset, schema_in_prompt)},
        {"role": "user", "content": user},
    ]
