"""The shipped pruning methods: importing this module registers each, in this order (the order of `eval --help`
and of the default sweep). A new shipped method is one `scoring_<name>.py` and one import line here; the config
imports this module, so every saved model carries the methods (as remote code too). Core modules read the registry
(`PRUNING_METHODS`, `method_settings`) from here, never from `scoring` alone: a remote-code module graph that
reached `scoring` without this module would see no methods.
"""

from __future__ import annotations

from .scoring import PRUNING_METHODS, method_settings
from .scoring_baselines import l2_scores, no_pruning_scores, position_scores, random_scores, self_attention_scores
from .scoring_catp import IMAGE_TOKEN_WEIGHTINGS, VOTE_AGGREGATIONS, VOTE_LAYER_NAMES, catp_scores
from .scoring_catp_cover import catp_cover_scores

__all__ = [
    "IMAGE_TOKEN_WEIGHTINGS",
    "PRUNING_METHODS",
    "VOTE_AGGREGATIONS",
    "VOTE_LAYER_NAMES",
    "catp_cover_scores",
    "catp_scores",
    "method_settings",
    "l2_scores",
    "no_pruning_scores",
    "position_scores",
    "random_scores",
    "self_attention_scores",
]
