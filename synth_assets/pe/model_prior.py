"""A graphical-model prior for Private Evolution: MST fitted on a share of the budget.

The random API draws candidates from the model (so every candidate carries the model's pairwise
structure), the variation API resamples a few columns of a record from the model's conditional given its
other columns (one Gibbs step per column, so the rest of the record, which won the votes, is kept), and
the output is calibrated back to the model's measured marginals (raking). The votes then spend their share
of the budget only on what the model misses: which combinations of columns real records support beyond
the tree of pairs the model measured.

Everything here is post-processing of DP releases (the MST measurements and the vote histograms).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl
from mbi import CliqueVector, Domain, Factor, MarkovRandomField

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.temporal import as_numbers
from synth_assets.evaluation.marginals import bin_table, values_from_bins
from synth_assets.generators.graphical.domain import Compression, PublicDomain, to_wide_table
from synth_assets.generators.graphical.model import GraphicalModel, sample_codes
from synth_assets.pe.generators import EXPONENT, R0, R_END, candidate_schema, mutation_rate


@dataclass
class ModelPrior:
    """The DP graphical model PE draws from (an MST fit), and the frame form the graph stores."""

    model: GraphicalModel

    @property
    def n_estimate(self) -> float:
        return self.model.n_estimate

    @property
    def histograms(self) -> int:
        return len(self.model.domain.names) + len(self.model.cliques)

    def to_frame(self) -> pl.DataFrame:
        """One row per array: part (meta, potential, marginal, mapping, merged), key, values."""
        m = self.model
        mrf = m.model
        meta = {
            "generator": m.generator, "seed": m.seed, "sampler": m.sampler, "total": float(mrf.total),
            "names": list(m.domain.names), "sizes": list(m.domain.sizes),
            "model_sizes": [int(mrf.domain.config[a]) for a in m.domain.names],
            "cliques": [list(c) for c in m.cliques],
        }
        rows = [("meta", json.dumps(meta), [])]
        rows += [("potential", json.dumps(list(c)), _flat(mrf.potentials[c].values)) for c in mrf.potentials.cliques]
        rows += [("marginal", json.dumps(list(c)), _flat(mrf.marginals[c].values)) for c in mrf.marginals.cliques]
        rows += [("mapping", name, v.astype(np.float64).tolist()) for name, v in m.compression.mapping.items()]
        rows += [("merged", name, np.asarray(v, np.float64).tolist()) for name, v in m.compression.merged.items()]
        return pl.DataFrame(
            {"part": [r[0] for r in rows], "key": [r[1] for r in rows], "values": [r[2] for r in rows]},
            schema={"part": pl.Utf8, "key": pl.Utf8, "values": pl.List(pl.Float64)},
        )

    @classmethod
    def is_frame(cls, frame: pl.DataFrame) -> bool:
        return "part" in frame.columns and frame.height > 0

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> ModelPrior:
        parts = frame.to_dicts()
        meta = json.loads(next(r["key"] for r in parts if r["part"] == "meta"))
        domain = Domain(meta["names"], meta["model_sizes"])

        def vector(part: str) -> CliqueVector:
            tables = {}
            for r in parts:
                if r["part"] == part:
                    clique = tuple(json.loads(r["key"]))
                    shape = [domain.config[a] for a in clique]
                    tables[clique] = Factor(domain.project(clique), np.asarray(r["values"]).reshape(shape))
            return CliqueVector(domain, list(tables), tables)

        mrf = MarkovRandomField(potentials=vector("potential"), marginals=vector("marginal"), total=meta["total"])
        compression = Compression(
            mapping={r["key"]: np.asarray(r["values"], dtype=np.int64) for r in parts if r["part"] == "mapping"},
            merged={r["key"]: np.asarray(r["values"]) for r in parts if r["part"] == "merged"},
        )
        model = GraphicalModel(meta["generator"], mrf, PublicDomain(tuple(meta["names"]), tuple(meta["sizes"])),
                               compression, [tuple(c) for c in meta["cliques"]], meta["seed"], meta["sampler"])
        return cls(model)


def _flat(values) -> list[float]:
    return np.asarray(values, dtype=np.float64).ravel().tolist()


class ModelPriorGenerator:
    """Candidate API on a :class:`ModelPrior` (see the module docstring)."""

    name = "offline+mst_prior"

    def __init__(self, dataset: Dataset, prior: ModelPrior, *, r0: float = R0, r_end: float = R_END,
                 exponent: float = EXPONENT):
        self.dataset = dataset
        self.prior = prior
        self.schema = candidate_schema(dataset)
        self.r0, self.r_end, self.exponent = r0, r_end, exponent
        model = prior.model
        self._names = list(model.domain.names)
        self._columns = {c.wide_name: c for c in dataset.spec.modelled_columns}
        self._potentials = [(tuple(c), np.asarray(model.model.potentials[c].values, dtype=np.float64))
                            for c in model.model.potentials.cliques]

    def describe(self) -> dict:
        m = self.prior.model
        return {"name": self.name, "model": m.generator, "pairs": [list(c) for c in m.cliques], "seed": m.seed,
                "variation": "Gibbs resampling of a share r0 - (r0 - r_end) (t / T) ** exponent of the columns",
                "r0": self.r0, "r_end": self.r_end, "exponent": self.exponent}

    def random(self, n: int, *, seed: int) -> pl.DataFrame:
        m = self.prior.model
        codes = sample_codes(m.model, n, seed, m.sampler)
        frame = to_wide_table(self.dataset, m.domain, codes, m.compression,
                              np.random.default_rng([seed, 0x7A1E]), "candidate")
        return as_numbers(self.dataset.spec, frame.select(list(self.schema)))

    def codes(self, frame: pl.DataFrame) -> np.ndarray:
        """Model codes (rows x columns, in the model's column order) of candidate rows."""
        m = self.prior.model
        binned = bin_table(self.dataset, frame.select(list(self.schema)))
        return m.compression.compress(m.domain, binned.codes.astype(np.int64))

    def variation(
        self, selected: pl.DataFrame, n_per_record: int, *, iteration: int, iterations: int, seed: int
    ) -> pl.DataFrame:
        rng = np.random.default_rng([seed, 0x61BB])
        children = selected.select(list(self.schema))[np.repeat(np.arange(selected.height), n_per_record)]
        codes = self.codes(children)
        rate = mutation_rate(iteration, iterations, r0=self.r0, r_end=self.r_end, exponent=self.exponent)
        resample = rng.random(codes.shape) < rate
        none = ~resample.any(axis=1)  # every child differs from its parent in at least one column
        resample[none, rng.integers(0, codes.shape[1], size=int(none.sum()))] = True
        m = self.prior.model
        updates = []
        for j in rng.permutation(codes.shape[1]):
            rows = np.flatnonzero(resample[:, j])
            if rows.size == 0:
                continue
            codes[rows, j] = self._conditional_draw(codes[rows], j, rng)
            name = self._names[j]
            bins = m.compression.decompress(name, codes[rows, j], rng)
            fresh = values_from_bins(self._columns[name], bins, rng)
            mask = np.zeros(children.height, dtype=bool)
            mask[rows] = True
            full = pl.Series(name, [None] * children.height, dtype=fresh.dtype).scatter(rows, fresh)
            updates.append(pl.when(pl.Series(mask)).then(full).otherwise(pl.col(name)).alias(name))
        return children.with_columns(updates) if updates else children

    def _conditional_draw(self, codes: np.ndarray, j: int, rng: np.random.Generator) -> np.ndarray:
        """Column j of each row drawn from the model given the row's other columns: proportional to the
        product of the potentials of the cliques holding j."""
        name = self._names[j]
        size = int(self.prior.model.model.domain.config[name])
        logits = np.zeros((codes.shape[0], size))
        for clique, theta in self._potentials:
            if name not in clique:
                continue
            axis = clique.index(name)
            moved = np.moveaxis(theta, axis, -1)
            others = [self._names.index(a) for a in clique if a != name]
            logits += moved[tuple(codes[:, k] for k in others)] if others else moved[None, :]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        cumulative = np.cumsum(p, axis=1)
        u = rng.random(codes.shape[0]) * cumulative[:, -1]
        return np.minimum((cumulative < u[:, None]).sum(axis=1), size - 1)

    def calibrate(self, frame: pl.DataFrame, weights: np.ndarray, sweeps: int) -> np.ndarray:
        """Weights of ``frame``'s rows raked (iterative proportional fitting, ``sweeps`` passes) so that
        the weighted rows reproduce the model's marginals on every column and on every measured pair.
        Rows keep the relative weights the votes gave them within each cell of those marginals."""
        w = np.asarray(weights, dtype=np.float64).copy()
        if sweeps <= 0 or w.sum() <= 0:
            return w
        mrf = self.prior.model.model
        codes = self.codes(frame)
        sizes = [int(mrf.domain.config[a]) for a in self._names]
        cliques = [(a,) for a in self._names] + [tuple(c) for c in self.prior.model.cliques]
        targets = []
        for clique in cliques:
            columns = [self._names.index(a) for a in clique]
            cell = np.ravel_multi_index(tuple(codes[:, k] for k in columns), [sizes[k] for k in columns])
            target = np.maximum(np.asarray(mrf.project(list(clique)).datavector(flatten=True), dtype=np.float64), 0)
            targets.append((cell, target / target.sum() * w.sum()))
        for _ in range(sweeps):
            for cell, target in targets:
                current = np.bincount(cell, weights=w, minlength=target.size)
                w *= np.where(current > 0, target / np.maximum(current, 1e-300), 0.0)[cell]
        return w
