"""Several datasets in one deployment: one Dagster code location per dataset of a deployment file.

The deployment file (``datasets.yaml`` at the top of the checkout, or the file named by
SYNTH_ASSETS_DATASETS) lists the datasets as ``name: directory`` under ``datasets:``; a relative
directory is relative to the file. Each listed name is an attribute of this module: the Definitions of
that dataset's asset graph (its own assets, checks, job, schedule, sensor and resources; its warehouse and
privacy ledger are ``<name>.duckdb``, see :mod:`synth_assets.warehouse`). The attribute is built when it
is first asked for (PEP 562), so a code location builds only its own dataset, and a dataset directory
that does not load breaks only its own location. workspace.yaml loads one location per dataset::

    - python_module: {module_name: synth_assets.locations, attribute: lahman, location_name: lahman}

Every asset key of a location starts with the dataset's name (``lahman/synthetic/dp_prior``), so that
the locations of one deployment never define the same key: Dagster keeps one definition, one partition
set and one materialization history per key. The tables keep their names (the warehouse names a table
by the last two parts of its key, and each dataset has its own warehouse), and
:mod:`synth_assets.definitions` (one dataset, the CLI) keeps the unprefixed keys.

Building the Definitions reads the dataset directory (spec, SQL, queries), never the private data.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from synth_assets.datasets.loading import Dataset, DatasetError, load_dataset
from synth_assets.datasets.spec import SPEC_FILENAME

DATASETS_ENV_VAR = "SYNTH_ASSETS_DATASETS"
DEFAULT_DEPLOYMENT_FILE = Path(__file__).resolve().parents[1] / "datasets.yaml"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def deployment_file() -> Path:
    """The deployment file: $SYNTH_ASSETS_DATASETS, else datasets.yaml at the top of the checkout."""
    value = os.environ.get(DATASETS_ENV_VAR)
    return Path(value).expanduser().resolve() if value else DEFAULT_DEPLOYMENT_FILE


class DeploymentFile(BaseModel):
    """The content of a deployment file: the datasets, by name (the code location's name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: dict[StrictStr, StrictStr] = Field(
        min_length=1,
        description="name: directory of a dataset (relative to the deployment file); the name must be "
        "the dataset's own name (`name` in its dataset.yaml).",
    )

    @field_validator("datasets")
    @classmethod
    def _names_are_location_names(cls, datasets: dict[str, str]) -> dict[str, str]:
        for name, directory in datasets.items():
            if not _NAME.match(name):
                raise ValueError(
                    f"dataset name {name!r} cannot name a code location: use letters, digits, '_' and "
                    f"'-', starting with a letter"
                )
            if name in _RESERVED:
                raise ValueError(
                    f"dataset name {name!r} is taken by synth_assets.locations itself, so it cannot be a "
                    f"code location's attribute; rename the dataset (its `name` in {SPEC_FILENAME})"
                )
            if not directory.strip():
                raise ValueError(f"dataset {name!r}: the directory is empty")
        return datasets


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: {error.error_count()} problem(s) in the deployment file"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key: a deployment file holds only `datasets:` (name: directory)"
        elif item["type"] == "missing":
            message = "required key is missing: list the datasets under `datasets:` (name: directory)"
        elif item["type"] == "string_type":
            message = "expected a directory (a string)"
        shown = ""
        if item["type"] != "missing" and not isinstance(item.get("input"), (dict, list, type(None))):
            shown = f" (got {item['input']!r})"
        lines.append(f"  - {location}: {message}{shown}")
    return "\n".join(lines)


def _read(path: Path) -> DeploymentFile:
    if not path.is_file():
        raise DatasetError(
            f"{path}: deployment file not found; create it (datasets: {{name: directory}}) or set "
            f"{DATASETS_ENV_VAR} to yours"
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{path}: expected a mapping with `datasets:` (name: directory), got {type(raw).__name__}"
        )
    try:
        return DeploymentFile.model_validate(raw)
    except ValidationError as exc:
        raise DatasetError(_format_validation_error(path, exc)) from exc


def listed_datasets(path: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The datasets of a deployment file (default: :func:`deployment_file`), name -> directory, in the
    file's order. Only the file is read and checked; no dataset directory is."""
    path = Path(path).resolve() if path is not None else deployment_file()
    content = _read(path)
    return {
        name: (path.parent / Path(directory).expanduser()).resolve()
        for name, directory in content.datasets.items()
    }


def load_listed_dataset(name: str, path: str | os.PathLike[str] | None = None) -> Dataset:
    """Load the dataset listed as ``name``, checking that it is the dataset of that name."""
    path = Path(path).resolve() if path is not None else deployment_file()
    listed = listed_datasets(path)
    if name not in listed:
        raise DatasetError(
            f"{path}: no dataset {name!r}; it lists {', '.join(listed)}. Add `{name}: <directory>` under "
            f"datasets: to list it"
        )
    directory = listed[name]
    try:
        dataset = load_dataset(directory)
    except DatasetError as exc:
        raise DatasetError(f"{path}: dataset {name!r} ({directory}) does not load: {exc}") from exc
    if dataset.name != name:
        raise DatasetError(
            f"{path}: dataset {name!r} is listed with {directory}, which holds the dataset "
            f"{dataset.name!r} (`name` in its {SPEC_FILENAME}). A listed name must be the dataset's own: "
            f"its warehouse and privacy ledger are {dataset.name}.duckdb whatever it is listed as, so "
            f"another name would let two code locations spend one budget under different names. List it "
            f"as `{dataset.name}: {directory}`, and use that name in workspace.yaml"
        )
    return dataset


def _referenced_keys(definition: dg.AssetsDefinition) -> set[dg.AssetKey]:
    """The asset keys an asset or check definition defines, checks or reads."""
    return {
        *definition.keys,
        *definition.node_keys_by_input_name.values(),
        *(dep.asset_key for spec in definition.specs for dep in spec.deps),
        *(spec.asset_key for spec in definition.node_check_specs_by_output_name.values()),
        *(
            dep.asset_key
            for spec in definition.node_check_specs_by_output_name.values()
            for dep in spec.additional_deps
        ),
    }


def _prefixed_checks(
    checks: dg.AssetChecksDefinition, replacements: dict[dg.AssetKey, dg.AssetKey]
) -> dg.AssetChecksDefinition:
    """``checks`` on the replaced keys: the checked asset, its inputs and its ``additional_deps``.

    ``with_attributes(asset_key_replacements=...)`` (also what ``load_assets_from_modules(key_prefix=)``
    does) moves a check to its asset's new key but leaves the keys of its ``additional_deps``, and then
    drops those inputs: a check reading the reporting tables would lose its upstream assets."""
    from dagster._core.definitions.asset_checks.asset_checks_definition import AssetChecksDefinition
    from dagster_shared.record import replace

    specs = {
        output: replace(
            spec,
            asset_key=replacements[spec.asset_key],
            additional_deps=[
                dep._replace(asset_key=replacements[dep.asset_key]) for dep in spec.additional_deps
            ],
        )
        for output, spec in checks.node_check_specs_by_output_name.items()
    }
    return AssetChecksDefinition.create(
        keys_by_input_name={name: replacements[key] for name, key in checks.node_keys_by_input_name.items()},
        node_def=checks.op,
        check_specs_by_output_name=specs,
        can_subset=checks.can_subset,
        resource_defs=checks.resource_defs,
    )


def deployed_prefix(dataset: Dataset) -> str | None:
    """The asset-key prefix of ``dataset`` in the deployment: its name when the deployment file lists
    it (that name, that directory), else None. A deployment file that is absent or does not load
    deploys nothing."""
    try:
        listed = listed_datasets()
    except DatasetError:
        return None
    return dataset.name if listed.get(dataset.name) == Path(dataset.directory).resolve() else None


def definitions_for(dataset: Dataset, **resource_options) -> tuple[dg.Definitions, str | None]:
    """The Definitions a command runs for ``dataset``, and their key prefix: its code location's graph
    (keys under its name) when the deployment lists it, so that the command's runs and materializations
    are those the UI shows for that location; else the single-dataset graph (unprefixed keys)."""
    from synth_assets.defs.graph import build_definitions

    prefix = deployed_prefix(dataset)
    if prefix is None:
        return build_definitions(dataset, **resource_options), None
    return prefixed_definitions(dataset, **resource_options), prefix


def prefixed_definitions(dataset: Dataset, **resource_options) -> dg.Definitions:
    """The Definitions of ``dataset``'s asset graph, as :func:`~synth_assets.defs.graph.build_definitions`
    assembles them, with every asset key under the dataset's name: the keys of its assets, of their
    inputs and deps, and of its checks' assets and inputs. The tables keep their names (the warehouse
    names a table by the last two parts of its key). The job selects asset groups, which keep their
    names, and the schedule requests partitions; the resume sensor, which compares the keys a run planned
    with those it materialized, is rebuilt with the job's prefixed keys."""
    from synth_assets.defs.graph import build_definitions
    from synth_assets.defs.synthetic.jobs import EPSILON_GRID_JOB, build_resume_sensor

    base = build_definitions(dataset, **resource_options)
    base_assets = list(base.assets or [])
    base_checks = list(base.asset_checks or [])
    replacements = {
        key: key.with_prefix(dataset.name)
        for definition in [*base_assets, *base_checks]
        for key in _referenced_keys(definition)
    }
    assets = [a.with_attributes(asset_key_replacements=replacements) for a in base_assets]
    checks = [_prefixed_checks(c, replacements) for c in base_checks]
    (job,) = [job for job in base.jobs or [] if job.name == EPSILON_GRID_JOB]
    resume = build_resume_sensor(job, set(job.selection.resolve(assets)))
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=base.jobs,
        schedules=base.schedules,
        sensors=[resume if sensor.name == resume.name else sensor for sensor in base.sensors or []],
        resources=base.resources,
        executor=base.executor,
        loggers=base.loggers,
        metadata=base.metadata,
    )


_BUILT: dict[tuple[Path, int, str], dg.Definitions] = {}


def build_location(name: str, path: str | os.PathLike[str] | None = None) -> dg.Definitions:
    """The Definitions of the dataset listed as ``name``, its keys prefixed by its name (built once per
    process and file version)."""
    path = Path(path).resolve() if path is not None else deployment_file()
    key = (path, path.stat().st_mtime_ns if path.is_file() else 0, name)
    if key not in _BUILT:
        _BUILT[key] = prefixed_definitions(load_listed_dataset(name, path))
    return _BUILT[key]


def __getattr__(name: str) -> dg.Definitions:
    """PEP 562: a listed dataset's Definitions, built on first access."""
    if name.startswith("_"):  # dunder probes (copy, pickle, inspect) never read the deployment file
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    path = deployment_file()
    listed = listed_datasets(path)
    if name not in listed:
        raise AttributeError(
            f"module {__name__!r} has no dataset {name!r}: {path} lists {', '.join(listed)}. Add "
            f"`{name}: <directory>` under datasets: there (and a location with attribute: {name} to "
            f"workspace.yaml)"
        )
    return build_location(name, path)


def __dir__() -> list[str]:
    try:
        listed = list(listed_datasets())
    except DatasetError:
        listed = []
    return sorted({*globals(), *listed})


_RESERVED = frozenset(globals())  # a dataset cannot be named like one of this module's own attributes
