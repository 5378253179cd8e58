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

import math
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


class JunctionTree:
    """mbi's junction tree of a set of cliques over ``sizes`` (every attribute is in it; one in no clique
    is a node of its own), with each component's message schedule: built once, calibrated many times."""

    def __init__(self, sizes: Mapping[str, int], cliques: Sequence[Vars]):
        self.sizes = dict(sizes)
        domain = Domain(list(self.sizes), list(self.sizes.values()))
        tree, _ = make_junction_tree(domain, [tuple(c) for c in cliques])
        self.tree: nx.Graph = tree
        self.nodes: list[Vars] = [tuple(n) for n in tree.nodes]
        self.component: dict[Vars, int] = {}
        self.schedules: list[tuple[list[Vars], dict[Vars, Vars], dict[Vars, list[Vars]]]] = []
        for index, nodes in enumerate(nx.connected_components(tree)):
            root = sorted(nodes)[0]
            order = list(nx.dfs_preorder_nodes(tree, root))
            parent = dict(nx.dfs_predecessors(tree, root))
            children: dict[Vars, list[Vars]] = {n: [] for n in order}
            for child, up in parent.items():
                children[up].append(child)
            self.schedules.append((order, parent, children))
            for node in order:
                self.component[node] = index
        self.home: dict[str, int] = {a: self.component[n] for n in self.nodes for a in n}
        self._separators = {(a, b): tuple(x for x in a if x in b) for a, b in self.tree.edges}
        self._separators.update({(b, a): tuple(x for x in b if x in a) for a, b in self.tree.edges})
        self._placement: dict[Vars, Vars] = {}

    def node_of(self, clique: Vars) -> Vars:
        """The smallest node holding ``clique``."""
        if clique not in self._placement:
            self._placement[clique] = min((n for n in self.nodes if set(clique) <= set(n)),
                                          key=lambda n: int(np.prod([self.sizes[a] for a in n])))
        return self._placement[clique]

    def calibrate(self, potentials: Sequence[tuple[Vars, np.ndarray]]) -> dict[Vars, np.ndarray]:
        """Sum-product in log space: the probability table of every node (each component sums to 1)."""
        log_psi = {n: np.zeros([self.sizes[a] for a in n]) for n in self.nodes}
        for vars_, values in potentials:
            node = self.node_of(tuple(vars_))
            log_psi[node] = log_psi[node] + _align(tuple(vars_), np.asarray(values, dtype=np.float64), node)
        probabilities: dict[Vars, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for order, parent, children in self.schedules:
                messages: dict[tuple[Vars, Vars], np.ndarray] = {}

                def send(source: Vars, target: Vars) -> None:
                    incoming = log_psi[source]
                    for other in self.tree.neighbors(source):
                        if other != target:
                            incoming = incoming + _align(self._separators[(source, other)],
                                                         messages[(other, source)], source)
                    separator = self._separators[(source, target)]
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
                        belief = belief + _align(self._separators[(node, other)], messages[(other, node)], node)
                    probabilities[node] = np.exp(belief - logsumexp(belief))
        return probabilities


class TreeMarginals:
    """A model given by log-potentials over cliques, calibrated: exact marginals of any attributes
    (every attribute of ``sizes`` is in the model; one without a potential is uniform)."""

    def __init__(self, sizes: Mapping[str, int], potentials: Sequence[tuple[Vars, np.ndarray]],
                 tree: JunctionTree | None = None):
        self.junction = tree or JunctionTree(sizes, [tuple(v) for v, _ in potentials])
        self.sizes = self.junction.sizes
        self.tree = self.junction.tree
        self.nodes = self.junction.nodes
        self.home = self.junction.home
        self.probabilities = self.junction.calibrate(potentials)
        self._conditionals: dict[tuple[Vars, Vars], np.ndarray] = {}

    def project(self, clique: Vars) -> np.ndarray:
        """P(clique) for a clique inside one node (axes in the clique's order)."""
        node = self.junction.node_of(tuple(clique))
        axes = tuple(i for i, a in enumerate(node) if a not in clique)
        values = self.probabilities[node].sum(axis=axes) if axes else self.probabilities[node]
        return _align(tuple(a for a in node if a in clique), values, tuple(clique))

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


def lipschitz(sizes: Mapping[str, int], routed: Sequence[tuple[Vars, Vars, float]]) -> float:
    """Lipschitz constant of the L2 loss's gradient in the clique marginals, for identity measurements
    (clique, maximal clique it is routed to, sigma): ``max_C sum_{m -> C} |C| / |m| / sigma_m^2``, exact
    for marginal queries (mbi's ``calculate_l2_lipschitz_from_metadata``)."""
    blocks: dict[Vars, float] = {}
    for clique, target, sigma in routed:
        cells = math.prod(sizes[a] for a in target) / math.prod(sizes[a] for a in clique)
        blocks[target] = blocks.get(target, 0.0) + cells / max(sigma, 1e-12) ** 2
    return max(blocks.values()) if blocks else 1.0


def mirror_descent(
    sizes: Mapping[str, int],
    measurements: Sequence[tuple[Vars, np.ndarray, float]],
    total: float,
    iterations: int,
    start: Sequence[tuple[Vars, np.ndarray]] = (),
    tolerance: float = 1e-4,
) -> tuple[dict[Vars, np.ndarray], TreeMarginals]:
    """The L2 fit of a graphical model to noisy marginals (clique, noisy counts flattened, sigma) with a
    known total, by mirror descent on the log-potentials with mbi's Armijo step rule (Algorithm 1 of
    McKenna et al. 2019), in numpy on a :class:`JunctionTree`: no compilation, so it suits AIM's many
    small refits (the model AIM releases is fitted by mbi). ``start``: log-potentials to warm-start from
    (each added to a clique holding it). Stops early once 10 iterations improve the loss by less than
    ``tolerance`` (relative). Returns the log-potentials and the calibrated model."""
    sizes = dict(sizes)
    cliques: list[Vars] = []
    for clique in sorted({tuple(c) for c, _, _ in measurements}, key=len, reverse=True):
        if not any(set(clique) <= set(c) for c in cliques):
            cliques.append(clique)
    junction = JunctionTree(sizes, cliques)
    routed = [(tuple(c), min((k for k in cliques if set(c) <= set(k)), key=len), float(s))
              for c, _, s in measurements]
    targets = [(c, k, np.asarray(y, dtype=np.float64).reshape([sizes[a] for a in c]), s)
               for (c, k, s), (_, y, _) in zip(routed, measurements)]
    theta = {c: np.zeros([sizes[a] for a in c]) for c in cliques}
    for vars_, values in start:
        target = next((c for c in cliques if set(vars_) <= set(c)), None)
        if target is not None:
            theta[target] = theta[target] + _align(tuple(vars_), np.asarray(values, dtype=np.float64), target)

    def marginals(potentials: dict[Vars, np.ndarray]) -> tuple[dict[Vars, np.ndarray], TreeMarginals]:
        model = TreeMarginals(sizes, list(potentials.items()), tree=junction)
        return {c: total * model.project(c) for c in cliques}, model

    def loss(mu: dict[Vars, np.ndarray]) -> float:
        value = 0.0
        for clique, target, y, sigma in targets:
            axes = tuple(i for i, a in enumerate(target) if a not in clique)
            r = mu[target].sum(axis=axes) if axes else mu[target]
            r = _align(tuple(a for a in target if a in clique), r, clique)
            value += 0.5 * float(np.sum((r - y) ** 2)) / sigma**2
        return value

    def gradient(mu: dict[Vars, np.ndarray]) -> dict[Vars, np.ndarray]:
        grads = {c: np.zeros_like(mu[c]) for c in cliques}
        for clique, target, y, sigma in targets:
            axes = tuple(i for i, a in enumerate(target) if a not in clique)
            r = mu[target].sum(axis=axes) if axes else mu[target]
            kept = tuple(a for a in target if a in clique)
            diff = (r - _align(clique, y, kept).reshape(r.shape)) / sigma**2
            grads[target] += _align(kept, diff, target)
        return grads

    alpha = 2.0 / (lipschitz(sizes, routed) * total)
    mu, model = marginals(theta)
    current = loss(mu)
    checkpoint = current
    for iteration in range(iterations):
        if iteration and iteration % 10 == 0:
            if checkpoint - current <= tolerance * max(abs(current), 1.0):
                break
            checkpoint = current
        grads = gradient(mu)
        proposal = {c: theta[c] - alpha * grads[c] for c in cliques}
        mu2, model2 = marginals(proposal)
        loss2 = loss(mu2)
        decrease = 0.5 * alpha * sum(float(np.sum(grads[c] * (mu[c] - mu2[c]))) for c in cliques)
        if current - loss2 >= decrease:
            theta, mu, model, current = proposal, mu2, model2, loss2
            alpha *= 1.01
        else:
            alpha *= 0.5
    return theta, model
