"""PE's MST prior: its budget, its stored form, the variation API's conditional draws and the raking."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from synth_assets.evaluation.marginals import bin_table
from synth_assets.generators.private_evolution import PrivateEvolution
from synth_assets.pe.evolution import PEConfig, model_prior_plan, plan_budget, release_prior
from synth_assets.pe.generators import validate_candidates
from synth_assets.pe.model_prior import ModelPrior, ModelPriorGenerator
from synth_assets.pe.priors import prior_api, prior_from_frame
from synth_assets.privacy.accounting import gaussian_rho, rho_for_epsilon

DELTA = 1e-6
SMALL = dict(pool_size=300, selected=60, reference_points=3000)


@pytest.fixture(scope="module")
def prior(tiny, wide) -> ModelPrior:
    config = PEConfig(seed=5, **SMALL)
    budget = plan_budget(tiny, 8.0, DELTA, config, with_prior=True)
    model, _release, _resumed = release_prior(tiny, wide, budget, config)
    return model


@pytest.mark.parametrize("share", [0.25, 0.75, 0.9])
@pytest.mark.parametrize("iterations", [1, 4])
def test_mst_takes_its_share_of_rho_and_the_votes_the_rest(tiny, share, iterations):
    config = PEConfig(prior_share=share, iterations=iterations, **SMALL)
    plan = PrivateEvolution(config).plan(tiny, 1.0, DELTA)
    rho = rho_for_epsilon(1.0, DELTA)
    *mst, votes = plan.releases
    assert [r.kind for r in mst] == ["mst_one_way", "mst_selection", "mst_two_way"]
    assert sum(r.rho for r in mst) == pytest.approx(share * rho, rel=1e-12)
    one_way, selection, two_way = (r.rho for r in mst)
    assert one_way == pytest.approx(config.prior_one_way_share * share * rho, rel=1e-12)
    assert selection == pytest.approx(two_way, rel=1e-12)
    assert (votes.kind, votes.histograms) == ("nn_histogram", iterations)
    assert gaussian_rho(votes.sigma, iterations) == pytest.approx((1 - share) * rho, rel=1e-12)
    assert votes.sigma == pytest.approx(math.sqrt(iterations / (2 * (1 - share) * rho)), rel=1e-12)
    assert plan.composition.rule == "zcdp" and plan.spends == pytest.approx(1.0, rel=1e-9)
    budget = PrivateEvolution(config).budget(tiny, 1.0, DELTA)
    assert budget.composed_epsilon() == pytest.approx(1.0, rel=1e-9)
    assert model_prior_plan(tiny, budget, config).releases == tuple(mst)


def test_the_stored_frame_gives_back_the_same_model(tiny, prior):
    frame = prior.to_frame()
    again = prior_from_frame(frame)
    assert isinstance(again, ModelPrior)
    assert again.model.cliques == prior.model.cliques and again.n_estimate == prior.n_estimate
    a, b = prior_api(tiny, prior), prior_api(tiny, again)
    assert a.random(500, seed=3).equals(b.random(500, seed=3))
    assert not a.random(500, seed=3).equals(a.random(500, seed=4))


def test_random_candidates_are_valid_and_keep_the_models_pairs(tiny, wide, prior):
    api = ModelPriorGenerator(tiny, prior)
    candidates = api.random(4000, seed=1)
    assert not any(validate_candidates(tiny, candidates).values())
    # a measured pair is far closer to the real one than the product of its 1-way marginals
    names = list(prior.model.domain.names)
    real, synthetic = bin_table(tiny, wide), bin_table(tiny, candidates)
    errors = []
    for a, b in prior.model.cliques:
        i, j = names.index(a), names.index(b)
        size = (real.sizes[i], real.sizes[j])

        def joint(t):
            return np.bincount(np.ravel_multi_index((t.codes[:, i], t.codes[:, j]), size),
                               minlength=size[0] * size[1]) / t.codes.shape[0]

        p, q = joint(real), joint(synthetic)
        independent = np.outer(q.reshape(size).sum(1), q.reshape(size).sum(0)).ravel()
        errors.append((0.5 * np.abs(p - q).sum(), 0.5 * np.abs(p - independent).sum()))
    kept, dropped = np.mean(errors, axis=0)
    assert kept < dropped


def test_variation_resamples_a_leaf_from_its_conditional_and_keeps_the_other_columns(tiny, prior):
    api = ModelPriorGenerator(tiny, prior)
    tree = nx.Graph(prior.model.cliques)
    leaf = next(n for n in tree.nodes if tree.degree(n) == 1)
    neighbour = next(iter(tree.neighbors(leaf)))
    parent = api.random(1, seed=9)
    children = api.variation(parent, 6000, iteration=0, iterations=1, seed=2)  # rate r0: many columns move
    assert children.height == 6000 and not any(validate_candidates(tiny, children).values())
    names = list(api.schema)
    changed = np.column_stack([(children[c] != parent[c][0]).fill_null(True).to_numpy() for c in names])
    assert changed.any(axis=1).mean() > 0.9  # a resampled column may draw its old value again
    assert 0 < changed.mean() < 0.9
    # the leaf, where its neighbour is unchanged, follows the model's p(leaf | neighbour)
    codes = api.codes(children)
    j, k = names.index(leaf), names.index(neighbour)
    parent_code = api.codes(parent)[0]
    rows = codes[:, k] == parent_code[k]
    pair = np.asarray(prior.model.model.project([leaf, neighbour]).datavector(flatten=False))
    expected = pair[:, parent_code[k]] / pair[:, parent_code[k]].sum()
    moved = rows & changed[:, j]
    kept = rows & ~changed[:, j]
    # a child's leaf is the parent's (not drawn) or a draw from the conditional
    share_drawn = moved.sum() / rows.sum() / (1 - expected[parent_code[j]])
    observed = np.bincount(codes[rows, j], minlength=expected.size) / rows.sum()
    mixture = share_drawn * expected + (1 - share_drawn) * np.eye(expected.size)[parent_code[j]]
    assert kept.sum() > 0 and moved.sum() > 300
    assert 0.5 * np.abs(observed - mixture).sum() < 0.05


def test_raking_reproduces_the_models_measured_marginals(tiny, prior):
    api = ModelPriorGenerator(tiny, prior)
    points = api.random(20000, seed=4)
    rng = np.random.default_rng(0)
    votes = rng.gamma(0.5, size=points.height)  # weights as uneven as noisy votes
    raked = api.calibrate(points, votes, sweeps=30)
    codes = api.codes(points)
    names = list(prior.model.domain.names)
    mrf = prior.model.model
    for clique in [(a,) for a in names] + list(prior.model.cliques):
        columns = [names.index(a) for a in clique]
        shape = [int(mrf.domain.config[a]) for a in clique]
        cells = np.ravel_multi_index(tuple(codes[:, c] for c in columns), shape)
        target = np.asarray(mrf.project(list(clique)).datavector(flatten=True))
        target = target / target.sum()
        before = np.bincount(cells, weights=votes, minlength=target.size) / votes.sum()
        after = np.bincount(cells, weights=raked, minlength=target.size) / raked.sum()
        assert 0.5 * np.abs(after - target).sum() < 0.01, clique
        assert 0.5 * np.abs(after - target).sum() <= 0.5 * np.abs(before - target).sum() + 1e-9
    assert api.calibrate(points, votes, sweeps=0) is not votes
    np.testing.assert_array_equal(api.calibrate(points, votes, sweeps=0), votes)
