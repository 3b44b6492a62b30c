"""Scoring functions and selection on plain tensors: hand-worked examples and properties."""

from __future__ import annotations

import pytest
import torch

from catp_blip2.scoring import PRUNING_METHODS, gather_tokens, select_top_k
from catp_blip2.scoring_baselines import (
    l2_scores,
    no_pruning_scores,
    position_scores,
    random_scores,
    self_attention_scores,
)
from catp_blip2.scoring_catp import borda_points, catp_scores, soft_votes, vit_attention_image_weights


def random_probs(b=2, h=3, q=6, n=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, q, n, generator=g).softmax(dim=-1)


# ---- hand-worked examples ---------------------------------------------------------------------------------

def test_borda_points_by_hand():
    # One voter (image token) per column; 3 queries. Column 0 ranks q1 > q0 > q2, column 1 ranks q2 > q0 > q1.
    probs = torch.tensor([[0.3, 0.2], [0.6, 0.1], [0.1, 0.7]]).view(1, 1, 3, 2)
    assert borda_points(probs).view(3, 2).tolist() == [[1, 1], [2, 0], [0, 2]]


def test_borda_ties_favour_lower_query_index():
    probs = torch.tensor([0.25, 0.25, 0.5]).view(1, 1, 3, 1)
    assert borda_points(probs).view(3).tolist() == [1, 0, 2]


def test_catp_scores_by_hand():
    # Two layers, one head, 3 queries, 2 image tokens.
    layer_a = torch.tensor([[0.3, 0.2], [0.6, 0.1], [0.1, 0.7]]).view(1, 1, 3, 2)  # points [[1,1],[2,0],[0,2]]
    layer_b = torch.tensor([[0.5, 0.5], [0.2, 0.3], [0.3, 0.2]]).view(1, 1, 3, 2)  # points [[2,2],[0,1],[1,0]]
    assert catp_scores([layer_a]).tolist() == [[2, 2, 2]]
    assert catp_scores([layer_a, layer_b]).tolist() == [[6, 3, 3]]
    assert catp_scores([layer_a, layer_b], layer_weights=[1.0, 0.5]).tolist() == [[4, 2.5, 2.5]]
    # Image-token weights multiply each voter's points: token 1 counts 3 times token 0.
    weights = torch.tensor([[1.0, 3.0]])
    assert catp_scores([layer_a], image_token_weights=weights).tolist() == [[4, 2, 6]]


def test_soft_votes_by_hand():
    probs = torch.tensor([[0.2, 0.5], [0.6, 0.5]]).view(1, 1, 2, 2)
    votes = soft_votes(probs).view(2, 2)
    torch.testing.assert_close(votes, torch.tensor([[0.25, 0.5], [0.75, 0.5]]))
    torch.testing.assert_close(catp_scores([probs], aggregation="soft"), torch.tensor([[0.75, 1.25]]))


def test_soft_votes_are_not_raw_sums():
    # Raw sums of probabilities give every query the same total (each row sums to 1 over image tokens);
    # soft votes still rank the queries.
    probs = random_probs(b=1, h=1, q=4, n=7)
    raw = probs.sum(dim=(1, 3))
    torch.testing.assert_close(raw, torch.ones_like(raw))
    soft = catp_scores([probs], aggregation="soft")
    assert soft.std() > 1e-3


def test_l2_self_attention_position_none_by_hand():
    output = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]])
    assert l2_scores(output).tolist() == [[5.0, 1.0, 2.0]]
    # attending x attended; query 2 receives the most.
    layer = torch.tensor([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.5, 0.0, 0.5]]).view(1, 1, 3, 3)
    torch.testing.assert_close(self_attention_scores([layer, layer]), torch.tensor([[1.8, 1.0, 3.2]]))
    assert select_top_k(position_scores(2, 5), 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert select_top_k(no_pruning_scores(1, 4), 4).tolist() == [[0, 1, 2, 3]]


def test_random_scores_seeded_and_shared_by_the_batch():
    a = random_scores(3, 32, seed=7)
    assert torch.equal(a, random_scores(3, 32, seed=7))
    assert torch.equal(a[0], a[2])  # one subset for every sample: independent of batching
    assert not torch.equal(select_top_k(a, 8), select_top_k(random_scores(3, 32, seed=8), 8))


def test_vit_attention_image_weights_by_hand():
    # 1 head, 3 tokens; received = column sums [0.6, 1.2, 1.2] -> normalised.
    attention = torch.tensor([[0.2, 0.4, 0.4], [0.2, 0.4, 0.4], [0.2, 0.4, 0.4]]).view(1, 1, 3, 3)
    torch.testing.assert_close(vit_attention_image_weights(attention), torch.tensor([[0.2, 0.4, 0.4]]))


def test_select_top_k_ties_order_and_bounds():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert select_top_k(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert select_top_k(scores, 4).tolist() == [[0, 1, 2, 4], [0, 1, 2, 3]]
    tokens = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    assert gather_tokens(tokens, select_top_k(scores, 2)).tolist() == [[[2, 3], [4, 5]], [[10, 11], [12, 13]]]
    for bad in (0, 6):
        with pytest.raises(ValueError, match="`k` must be in 1..5"):
            select_top_k(scores, bad)


def test_catp_scores_argument_errors():
    with pytest.raises(ValueError, match="aggregation"):
        catp_scores([random_probs()], aggregation="mean")
    with pytest.raises(ValueError, match="layer_weights"):
        catp_scores([random_probs()], layer_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="cross_attentions"):
        catp_scores([])


# ---- properties ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("aggregation", ["rank", "soft"])
def test_permuting_queries_permutes_catp_scores(aggregation):
    probs = [random_probs(seed=1), random_probs(seed=2)]
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    permuted = [p[:, :, perm] for p in probs]
    torch.testing.assert_close(
        catp_scores(permuted, aggregation=aggregation), catp_scores(probs, aggregation=aggregation)[:, perm]
    )


def test_permuting_queries_permutes_baseline_scores():
    perm = torch.tensor([3, 0, 2, 1])
    output = torch.randn(2, 4, 8)
    torch.testing.assert_close(l2_scores(output[:, perm]), l2_scores(output)[:, perm])
    layer = torch.randn(2, 3, 4, 4).softmax(-1)
    permuted = layer[:, :, perm][:, :, :, perm]
    torch.testing.assert_close(self_attention_scores([permuted]), self_attention_scores([layer])[:, perm])


@pytest.mark.parametrize("transform", [torch.log, torch.exp, lambda p: p**3, lambda p: 5 * p + 2])
def test_rank_votes_invariant_to_increasing_transforms(transform):
    probs = [random_probs(seed=4), random_probs(seed=5)]
    assert torch.equal(catp_scores([transform(p) for p in probs]), catp_scores(probs))


def test_equal_image_weights_change_nothing():
    probs = [random_probs(seed=6)]
    plain = catp_scores(probs)
    weighted = catp_scores(probs, image_token_weights=torch.full((2, 5), 0.2))
    torch.testing.assert_close(weighted, plain * 0.2)
    assert torch.equal(select_top_k(weighted, 3), select_top_k(plain, 3))


def test_image_weights_weight_the_votes_not_the_probabilities():
    # Scaling probabilities column-wise before ranking is a no-op; weighting the points is not.
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).view(1, 1, 2, 2).expand(1, 1, 2, 2).clone()
    weights = torch.tensor([[1.0, 10.0]])
    assert torch.equal(catp_scores([probs * weights[:, None, None, :]]), catp_scores([probs]))
    assert select_top_k(catp_scores([probs], image_token_weights=weights), 1).tolist() == [[1]]
    assert select_top_k(catp_scores([probs]), 1).tolist() == [[0]]


def test_batched_scores_equal_per_sample_scores():
    probs = [random_probs(b=4, seed=7), random_probs(b=4, seed=8)]
    weights = torch.rand(4, 5)
    batched = catp_scores(probs, layer_weights=[1.0, 2.0], image_token_weights=weights)
    for i in range(4):
        single = catp_scores([p[i : i + 1] for p in probs], layer_weights=[1.0, 2.0], image_token_weights=weights[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single)


def test_registry_names_and_inputs_are_consistent():
    known = {"cross_attentions", "all_cross_attentions", "layer_weights", "image_token_weights", "aggregation",
             "self_attentions", "query_output", "batch_size", "num_queries", "seed", "device"}
    assert set(PRUNING_METHODS) == {"catp", "catp_cover", "l2", "self_attention", "position", "random", "none"}
    for method in PRUNING_METHODS.values():
        assert set(method.inputs) <= known | {s.name for s in method.settings}


# ---- catp_cover: the refinements ---------------------------------------------------------------------------

from catp_blip2.scoring_catp_cover import catp_cover_scores, voter_weights  # noqa: E402


def _background_and_object() -> torch.Tensor:
    """(1, 1, 4, 10) probabilities: CLS + 8 background tokens rank q0 > q1 > q3 > q2, one object token q2 > q3 > ...

    q0 and q1 are both background queries; q2 is the only one the object's token favours."""
    background = torch.tensor([0.4, 0.35, 0.05, 0.2])
    obj = torch.tensor([0.05, 0.1, 0.6, 0.25])
    columns = [background] * 9 + [obj]
    return torch.stack(columns, dim=-1)[None, None]


def test_cover_selection_brings_in_the_query_the_object_favours():
    probs = _background_and_object()
    tokens = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    plain = select_top_k(catp_scores([probs]), 2)
    assert plain.tolist() == [[0, 1]]  # a plurality of background tokens keeps two background queries
    covered = catp_cover_scores([probs], tokens, cover_layers="all", cover_voters="all", cover_selection="cover", cover_power=4.0)
    assert select_top_k(covered, 2).tolist() == [[0, 2]]


def test_independent_cover_scores_rank_like_plain_catp_with_every_voter():
    probs = torch.rand(2, 3, 6, 11, generator=torch.Generator().manual_seed(1)).softmax(dim=-1)
    tokens = torch.randn(2, 6, 5)
    independent = catp_cover_scores([probs], tokens, cover_voters="all", cover_selection="independent", cover_redundancy=0.0)
    assert torch.equal(select_top_k(independent, 3), select_top_k(catp_scores([probs]), 3))


def test_greedy_scores_are_one_order_for_every_k():
    probs = [torch.rand(3, 2, 8, 10, generator=torch.Generator().manual_seed(s)).softmax(dim=-1) for s in (2, 3)]
    tokens = torch.randn(3, 8, 6, generator=torch.Generator().manual_seed(4))
    scores = catp_cover_scores(probs, tokens, cover_redundancy=0.5)
    assert sorted(scores[0].tolist()) == list(range(1, 9))  # a full ranking: 8 for the first pick ... 1
    for k in range(1, 8):
        smaller, larger = select_top_k(scores, k), select_top_k(scores, k + 1)
        for row in range(3):
            assert set(smaller[row].tolist()) <= set(larger[row].tolist())


def test_redundancy_skips_a_query_that_repeats_a_kept_one():
    probs = _background_and_object()
    tokens = torch.eye(4)[None].clone()
    tokens[0, 1] = tokens[0, 0]  # q1's output repeats q0's
    without = catp_cover_scores([probs], tokens, cover_voters="all", cover_selection="independent", cover_redundancy=0.0)
    with_penalty = catp_cover_scores([probs], tokens, cover_voters="all", cover_selection="independent", cover_redundancy=2.0)
    assert select_top_k(without, 2).tolist() == [[0, 1]]
    assert 1 not in select_top_k(with_penalty, 2)[0].tolist()


def test_voter_weights_drop_cls_and_weigh_decisive_voters():
    probs = torch.zeros(1, 1, 4, 3)
    probs[..., 0] = 0.25  # CLS
    probs[..., 1] = 0.25  # undecided: the same attention from every query
    probs[0, 0, :, 2] = torch.tensor([0.97, 0.01, 0.01, 0.01])  # decisive
    assert voter_weights(probs, "patches")[0, 0].tolist() == [0.0, 1.0, 1.0]
    decisive = voter_weights(probs, "decisive")[0, 0]
    assert decisive[1].item() == pytest.approx(0.0, abs=1e-6) and decisive[2].item() > 0.8
    assert voter_weights(probs, "decisive_patches")[0, 0, 0].item() == 0.0
