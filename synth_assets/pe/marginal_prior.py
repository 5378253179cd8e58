"""A DP prior for the candidate APIs: noisy 1-way marginals and table-presence rates of the wide table.

Drawing candidates uniformly from the public domain wastes the votes: in 60+ dimensions almost every
uniform candidate is far from every real record, and the histogram is mostly noise. Spending a share of
the budget on 1-way marginals first lets the random API draw candidates whose every column is already
plausible; the PE votes then only have to find the combinations that real records support.

The release: one histogram per modelled column over its public bins (synth_assets.evaluation.marginals)
and one two-bin histogram (present, absent) per non-population reporting table. One entity adds 1 to
every histogram, so k histograms with Gaussian noise sigma each compose to mu = sqrt(k) / sigma under
add/remove-one-entity neighbouring. Everything derived from the prior is post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.marginals import bin_table, column_bins, draw_from_bins
from synth_assets.pe.generators import OfflineGenerator


@dataclass(frozen=True)
class MarginalPrior:
    """Noisy (clipped at 0) counts: per column over its bins, per table (present, absent)."""

    columns: dict[str, np.ndarray]
    presence: dict[str, np.ndarray]
    sigma: float
    seed: int
    n_estimate: float = float("nan")
    """DP estimate of the number of entities: the mean total of the histograms before clipping."""

    @property
    def histograms(self) -> int:
        return len(self.columns) + len(self.presence)

    def to_dict(self) -> dict:
        return {
            "sigma": self.sigma,
            "seed": self.seed,
            "columns": {k: v.tolist() for k, v in self.columns.items()},
            "presence": {k: v.tolist() for k, v in self.presence.items()},
            "n_estimate": self.n_estimate,
        }

    def to_frame(self) -> pl.DataFrame:
        """Long form, one row per bin: kind (column or presence), name, bin, noisy_count, sigma, seed."""
        rows = [
            {"kind": kind, "name": name, "bin": b, "noisy_count": float(value)}
            for kind, histograms in (("column", self.columns), ("presence", self.presence))
            for name, counts in histograms.items()
            for b, value in enumerate(counts)
        ]
        schema = {"kind": pl.Utf8, "name": pl.Utf8, "bin": pl.Int64, "noisy_count": pl.Float64}
        return pl.DataFrame(rows, schema=schema).with_columns(
            pl.lit(self.sigma).alias("sigma"),
            pl.lit(self.seed, dtype=pl.Int64).alias("seed"),
            pl.lit(self.n_estimate, dtype=pl.Float64).alias("n_estimate"),
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> MarginalPrior:
        histograms: dict[str, dict[str, list[float]]] = {"column": {}, "presence": {}}
        for kind, name, _bin, value in frame.sort("kind", "name", "bin").select(
            "kind", "name", "bin", "noisy_count"
        ).iter_rows():
            histograms[kind].setdefault(name, []).append(value)
        return cls(
            columns={k: np.asarray(v) for k, v in histograms["column"].items()},
            presence={k: np.asarray(v) for k, v in histograms["presence"].items()},
            sigma=float(frame["sigma"][0]),
            seed=int(frame["seed"][0]),
            n_estimate=float(frame["n_estimate"][0]) if "n_estimate" in frame.columns else float("nan"),
        )

    @classmethod
    def from_dict(cls, data: dict) -> MarginalPrior:
        return cls(
            columns={k: np.asarray(v, dtype=np.float64) for k, v in data["columns"].items()},
            presence={k: np.asarray(v, dtype=np.float64) for k, v in data["presence"].items()},
            sigma=float(data["sigma"]),
            seed=int(data["seed"]),
            n_estimate=float(data.get("n_estimate", float("nan"))),
        )


def prior_tables(dataset: Dataset) -> list[str]:
    """Non-population reporting tables with modelled columns: their presence is released."""
    spec = dataset.spec
    return [
        t for t in spec.reporting_tables if t != spec.entity.population and spec.columns_of(t)
    ]


def prior_histogram_count(dataset: Dataset) -> int:
    return len(dataset.spec.modelled_columns) + len(prior_tables(dataset))


def release_marginal_prior(
    dataset: Dataset, real: pl.DataFrame, *, sigma: float, seed: int
) -> MarginalPrior:
    """The DP release of the prior from the private wide table, with noise sigma on every bin."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A10]))
    binned = bin_table(dataset, real)
    columns, totals = {}, []
    for j, column in enumerate(dataset.spec.modelled_columns):
        counts = np.bincount(binned.codes[:, j], minlength=column_bins(column)).astype(np.float64)
        released = counts + rng.normal(0, sigma, counts.size)
        totals.append(released.sum())
        columns[column.wide_name] = np.maximum(released, 0.0)
    presence = {}
    for table in prior_tables(dataset):
        names = [c.wide_name for c in dataset.spec.columns_of(table)]
        present = int(real.select(pl.any_horizontal(pl.col(n).is_not_null() for n in names).sum()).item())
        released = np.array([present, real.height - present], dtype=np.float64) + rng.normal(0, sigma, 2)
        totals.append(released.sum())
        presence[table] = np.maximum(released, 0.0)
    return MarginalPrior(
        columns=columns, presence=presence, sigma=sigma, seed=seed, n_estimate=float(np.mean(totals))
    )


class MarginalPriorGenerator(OfflineGenerator):
    """The offline generator, drawing from a DP marginal prior instead of uniformly.

    random: each non-population table is present with its noisy presence rate; a present column takes
    a bin with probability proportional to its noisy count among the non-null bins, then a value within
    the bin. A nullable column is null with its own share: a population column with its noisy null
    share; a column of another table, when the table is present, with its nulls beyond the table's
    absences, (null count - absent count) / present count, from the noisy counts (post-processing).
    variation: as the offline generator, except that half of the mutated columns are redrawn from the
    prior instead of taking a local step.
    """

    name = "offline+marginal_prior"

    def __init__(self, dataset: Dataset, prior: MarginalPrior, **options):
        tables = prior_tables(dataset)
        presence = {}
        for table in tables:
            counts = prior.presence[table]
            presence[table] = float(counts[0] / counts.sum()) if counts.sum() > 0 else 0.5
        super().__init__(dataset, presence=presence, **options)
        self.prior = prior
        self._columns = {c.wide_name: c for c in dataset.spec.modelled_columns}

    def describe(self) -> dict:
        return {**super().describe(), "name": self.name, "prior_sigma": self.prior.sigma, "prior_seed": self.prior.seed}

    def _draw(self, name: str, n: int, rng: np.random.Generator, *, allow_null: bool) -> pl.Series:
        column = self._columns[name]
        counts = self.prior.columns[name].copy()
        null_bin = column_bins(column) - 1 if column.nullable else None
        if null_bin is not None and not allow_null:
            counts[null_bin] = 0.0
        if counts.sum() <= 0:
            counts = np.ones_like(counts)
            if null_bin is not None and not allow_null:
                counts[null_bin] = 0.0
        return draw_from_bins(column, counts, n, rng)

    def _null_share_when_present(self, column, table: str) -> float:
        nulls = float(self.prior.columns[column.wide_name][-1])
        present, absent = (float(v) for v in self.prior.presence[table])
        return float(np.clip((nulls - absent) / present, 0.0, 1.0)) if present > 0 else 0.0

    def random(self, n: int, *, seed: int) -> pl.DataFrame:
        rng = np.random.default_rng(seed)
        spec = self.dataset.spec
        data = {}
        for table in spec.reporting_tables:
            columns = spec.columns_of(table)
            if not columns:
                continue
            if table == spec.entity.population:
                present = np.ones(n, dtype=bool)
            else:
                present = rng.random(n) < self.presence.get(table, 1.0)
            for column in columns:
                values = self._draw(column.wide_name, n, rng, allow_null=table == spec.entity.population)
                keep = present
                if column.nullable and table != spec.entity.population:
                    keep = present & (rng.random(n) >= self._null_share_when_present(column, table))
                data[column.wide_name] = pl.select(
                    pl.when(pl.Series(keep)).then(values).otherwise(None).alias(column.wide_name)
                ).to_series()
        return pl.DataFrame(data).select([c.wide_name for c in spec.modelled_columns])

    def variation(
        self, selected: pl.DataFrame, n_per_record: int, *, iteration: int, iterations: int, seed: int
    ) -> pl.DataFrame:
        varied = super().variation(
            selected, n_per_record, iteration=iteration, iterations=iterations, seed=seed
        )
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57]))
        rate = self.rate(iteration, iterations) / 2
        updates = []
        for name, column in self._columns.items():
            current = varied[name]
            redraw = (rng.random(varied.height) < rate) & current.is_not_null().to_numpy()
            if not redraw.any():
                continue
            fresh = self._draw(name, varied.height, rng, allow_null=False)
            updates.append(
                pl.when(pl.Series(redraw)).then(fresh).otherwise(current).alias(name)
            )
        return varied.with_columns(updates) if updates else varied
