"""Learning a per-query prior (`query_score_prior`) on a calibration split, for `catp-blip2 calibrate --learn-prior`.

The Q-Former's learned queries are not equally useful: some carry what most answers need whatever the image. The
`random` method at seed s keeps the same k queries for every question (one seeded draw, see `scoring_baselines`),
so a sweep of seeds is a set of controlled experiments: at each k, a query's value is the mean accuracy of the runs
that kept it minus the mean of the runs that did not. Averaged over k and scaled to a largest magnitude of 1, that is
the prior's shape; its scale against the method's own scores is chosen by evaluating a few scales (0 included, so a
prior that does not help on the calibration split is not adopted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..scoring_baselines import random_scores
from ..selection import select_top_k

DEFAULT_SEEDS = 16
DEFAULT_SCALES = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 10000.0)


def random_kept_set(seed: int, k: int, num_queries: int) -> list[int]:
    """The queries `random` with `pruning_seed=seed` keeps at k (the same for every sample)."""
    return select_top_k(random_scores(1, num_queries, seed), k)[0].tolist()


def seed_items(seeds: int) -> list[str]:
    """The `--methods` items of the random runs the prior is learned from."""
    return [f"random:pruning_seed={seed}" for seed in range(seeds)]


def estimate_prior(runs: Sequence[tuple[int, int, float]], num_queries: int) -> list[float]:
    """runs: (seed, k, accuracy) of `random` runs -> one value per query in [-1, 1] (largest magnitude 1; all zero
    when no query made a difference).

    At each k, value[q] = mean accuracy of the runs keeping q - mean accuracy of the runs not keeping it (0 where
    one side has no run); the values are averaged over the k values.
    """
    by_k: dict[int, list[tuple[list[int], float]]] = {}
    for seed, k, accuracy in runs:
        by_k.setdefault(k, []).append((random_kept_set(seed, k, num_queries), accuracy))
    total = torch.zeros(num_queries, dtype=torch.float64)
    for group in by_k.values():
        kept = torch.zeros(len(group), num_queries, dtype=torch.bool)
        for row, (indices, _) in enumerate(group):
            kept[row, indices] = True
        accuracy = torch.tensor([a for _, a in group], dtype=torch.float64)[:, None]
        with_q, without_q = kept.sum(0), (~kept).sum(0)
        mean_with = (accuracy * kept).sum(0) / with_q.clamp(min=1)
        mean_without = (accuracy * ~kept).sum(0) / without_q.clamp(min=1)
        total += torch.where((with_q > 0) & (without_q > 0), mean_with - mean_without, torch.zeros_like(total))
    total /= max(len(by_k), 1)
    largest = total.abs().max()
    return (total / largest).tolist() if largest > 0 else total.tolist()


def scaled(prior: Sequence[float], scale: float) -> list[float]:
    """The prior at `scale`, rounded so variant files and `--methods` items stay readable."""
    return [round(float(value) * scale, 6) for value in prior]


def prior_items(winner: str, prior: Sequence[float], scales: Sequence[float]) -> list[tuple[float, str]]:
    """(scale, `--methods` item) per scale: the winner itself at scale 0, else with the scaled prior added."""
    joiner = "," if ":" in winner else ":"
    items = []
    for scale in scales:
        if scale == 0:
            items.append((0.0, winner))
        else:
            values = ",".join(repr(v) for v in scaled(prior, scale))
            items.append((float(scale), f"{winner}{joiner}query_score_prior=[{values}]"))
    return items


def check_scales(scales: Any) -> list[float]:
    """`--prior-scales`: distinct finite numbers >= 0 (0 included by the caller's list when wanted)."""
    values = list(scales)
    if not values or any(not isinstance(s, (int, float)) or not s >= 0 or s == float("inf") for s in values):
        raise ValueError(f"`--prior-scales` must be finite numbers >= 0; got {values!r}.")
    if len(set(values)) != len(values):
        raise ValueError(f"`--prior-scales` values must be distinct; got {values!r}.")
    return [float(s) for s in values]


__all__ = [
    "DEFAULT_SCALES",
    "DEFAULT_SEEDS",
    "check_scales",
    "estimate_prior",
    "prior_items",
    "random_kept_set",
    "scaled",
    "seed_items",
]
