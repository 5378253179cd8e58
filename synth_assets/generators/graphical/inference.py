"""Exact marginals of a graphical model in numpy, for AIM's selection.

AIM scores every candidate marginal against the current model in every round. mbi computes a marginal
outside the model's cliques by variable elimination compiled per query (about a second each on CPU), so
the scores are computed here instead: the model's log-potentials are calibrated on mbi's own junction tree
(sum-product in log space, two passes per connected component), and a query is answered from the
calibrated clique marginals, exactly, by collecting the smallest subtree that covers it
(``P(subtree) = prod P(C) / prod P(S)``, summed down to the query). Attributes in different components
are independent. Nothing here reads private data: it is post-processing of the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property

import networkx as nx
import numpy as np
from mbi import Domain
from mbi.junction_tree import make_junction_tree
from scipy.special import logsumexp

Vars = tuple[str, ...]


def _align(vars_: Vars, values: np.ndarray, target: Vars) -> np.ndarray:
    """``values`` (axes ``vars_``, a subset of ``target``) transposed and reshaped to broadcast over
    ``target``."""
    order = sorted(range(len(vars_)), key=lambda i: target.index(vars_[i]))
    moved = np.transpose(values, order)
    shape = [1] * len(target)
    for i in order:
        shape[target.index(vars_[i])] = values.shape[i]
    return moved.reshape(shape)


def _contract(factors: Sequence[tuple[Vars, np.ndarray]], out: Vars) -> np.ndarray:
    """Sum over everything not in ``out`` of the product of ``factors`` (einsum)."""
    labels: dict[str, int] = {}
    for vars_, _ in factors:
        for v in vars_:
            labels.setdefault(v, len(labels))
    if len(labels) > 52:
        raise ValueError(f"a contraction over {len(labels)} attributes is too large")
    operands: list = []
    for vars_, values in factors:
        operands += [values, [labels[v] for v in vars_]]
    return np.einsum(*operands, [labels[v] for v in out], optimize="greedy")


class TreeMarginals:
    """Calibrated junction tree of a model given by log-potentials over cliques (every attribute of
    ``sizes`` is in the model; one without a potential is uniform)."""

    def __init__(self, sizes: Mapping[str, int], potentials: Sequence[tuple[Vars, np.ndarray]]):
        self.sizes = dict(sizes)
        cliques = [tuple(v) for v, _ in potentials]
        domain = Domain(list(self.sizes), list(self.sizes.values()))
        tree, _ = make_junction_tree(domain, cliques)
        self.tree: nx.Graph = tree
        self.nodes: list[Vars] = [tuple(n) for n in tree.nodes]
        log_psi = {n: np.zeros([self.sizes[a] for a in n]) for n in self.nodes}
        for vars_, values in potentials:
            node = min((n for n in self.nodes if set(vars_) <= set(n)), key=len)
            log_psi[node] = log_psi[node] + _align(tuple(vars_), np.asarray(values, dtype=np.float64), node)
        self.component: dict[Vars, int] = {}
        self.probabilities: dict[Vars, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for index, nodes in enumerate(nx.connected_components(tree)):
                self._calibrate(index, sorted(nodes), log_psi)
        self.home: dict[str, int] = {a: self.component[n] for n in self.nodes for a in n}
        self._conditionals: dict[tuple[Vars, Vars], np.ndarray] = {}

    def _calibrate(self, index: int, nodes: list[Vars], log_psi: dict[Vars, np.ndarray]) -> None:
        root = nodes[0]
        order = list(nx.dfs_preorder_nodes(self.tree, root))
        parent = dict(nx.dfs_predecessors(self.tree, root))
        children: dict[Vars, list[Vars]] = {n: [] for n in order}
        for child, up in parent.items():
            children[up].append(child)
        messages: dict[tuple[Vars, Vars], np.ndarray] = {}  # (from, to): log message over the separator

        def send(source: Vars, target: Vars) -> None:
            incoming = log_psi[source]
            for other in self.tree.neighbors(source):
                if other != target:
                    separator = tuple(a for a in source if a in other)
                    incoming = incoming + _align(separator, messages[(other, source)], source)
            separator = tuple(a for a in source if a in target)
            axes = tuple(i for i, a in enumerate(source) if a not in separator)
            messages[(source, target)] = logsumexp(incoming, axis=axes) if axes else incoming

        for node in reversed(order):  # collect
            if node in parent:
                send(node, parent[node])
        for node in order:  # distribute
            for child in children[node]:
                send(node, child)
        for node in order:
            belief = log_psi[node]
            for other in self.tree.neighbors(node):
                separator = tuple(a for a in node if a in other)
                belief = belief + _align(separator, messages[(other, node)], node)
            self.probabilities[node] = np.exp(belief - logsumexp(belief))
            self.component[node] = index

    @cached_property
    def _holders(self) -> dict[str, list[Vars]]:
        holders: dict[str, list[Vars]] = {}
        for node in sorted(self.nodes, key=lambda n: int(np.prod([self.sizes[a] for a in n]))):
            for a in node:
                holders.setdefault(a, []).append(node)
        return holders

    def _conditional(self, node: Vars, parent: Vars) -> np.ndarray:
        """P(node) / P(separator with parent), 0 where the separator has no mass."""
        key = (node, parent)
        if key not in self._conditionals:
            separator = tuple(a for a in node if a in parent)
            joint = self.probabilities[node]
            axes = tuple(i for i, a in enumerate(node) if a not in separator)
            marginal = joint.sum(axis=axes, keepdims=True)
            self._conditionals[key] = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
        return self._conditionals[key]

    def _within(self, query: Vars) -> np.ndarray:
        """P(query) for attributes of one component."""
        holders = [n for n in self._holders[query[0]] if set(query) <= set(n)]
        if holders:
            node = holders[0]
            axes = tuple(i for i, a in enumerate(node) if a not in query)
            values = self.probabilities[node].sum(axis=axes) if axes else self.probabilities[node]
            return _align(tuple(a for a in node if a in query), values, query)
        chosen = [self._holders[a][0] for a in query]
        root = chosen[0]
        sub: set[Vars] = {root}
        for node in chosen[1:]:
            sub.update(nx.shortest_path(self.tree, root, node))
        wanted = set(query)

        def collect(node: Vars, parent: Vars | None) -> tuple[Vars, np.ndarray]:
            factors = [(node, self._conditional(node, parent) if parent else self.probabilities[node])]
            for child in self.tree.neighbors(node):
                if child != parent and child in sub:
                    factors.append(collect(child, node))
            present = {a for vars_, _ in factors for a in vars_}
            keep = tuple(a for a in node if parent and a in parent) + tuple(
                sorted(a for a in present & wanted if not (parent and a in parent))
            )
            return keep, _contract(factors, keep)

        vars_, values = collect(root, None)
        return _align(vars_, values, query) if vars_ != query else values

    def marginal(self, query: Sequence[str]) -> np.ndarray:
        """P(query): probabilities with one axis per attribute of ``query``, in that order."""
        query = tuple(query)
        groups: dict[int, list[str]] = {}
        for a in query:
            groups.setdefault(self.home[a], []).append(a)
        result = np.ones([1] * len(query))
        for attrs in groups.values():
            result = result * _align(tuple(attrs), self._within(tuple(attrs)), query)
        return np.broadcast_to(result, [self.sizes[a] for a in query]).copy()


def project_to_simplex(values: np.ndarray, total: float, weights: np.ndarray | None = None) -> np.ndarray:
    """The non-negative vector summing to ``total`` closest to ``values`` in weighted least squares
    (``sum w_i (x_i - values_i)^2``): what a graphical model's L2 fit gives a marginal measured alone."""
    values = np.asarray(values, dtype=np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    if total <= 0:
        return np.zeros_like(values)

    def mass(shift: float) -> float:  # x_i = max(0, values_i - shift / w_i), decreasing in shift
        return float(np.maximum(values - shift / w, 0.0).sum())

    lo = float(np.min((values - total) * w)) - 1.0  # mass(lo) >= total
    hi = float(np.max(values * w)) + 1.0  # mass(hi) == 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mass(mid) > total:
            lo = mid
        else:
            hi = mid
    x = np.maximum(values - 0.5 * (lo + hi) / w, 0.0)
    return x * (total / x.sum()) if x.sum() > 0 else np.full_like(values, total / values.size)
