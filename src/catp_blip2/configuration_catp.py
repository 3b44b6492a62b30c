"""Configuration of CATP-pruned BLIP-2: a `Blip2Config` plus the pruning settings, validated."""

from __future__ import annotations

import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import Blip2Config

from .scoring import PRUNING_METHODS as _METHOD_REGISTRY
from .scoring import VOTE_AGGREGATIONS as _AGGREGATION_REGISTRY

PRUNING_METHODS = tuple(_METHOD_REGISTRY)
VOTE_LAYER_NAMES = ("first", "last", "all")
IMAGE_TOKEN_WEIGHTINGS = ("none", "vit_attention")
VOTE_AGGREGATIONS = tuple(_AGGREGATION_REGISTRY)

# Settings that live on CatpConfig and nowhere in a stock Blip2Config.
PRUNING_SETTINGS = (
    "pruning_method",
    "num_kept_query_tokens",
    "vote_layers",
    "vote_layer_weights",
    "image_token_weighting",
    "vote_aggregation",
    "pruning_seed",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"`{name}` must be {allowed}; got {value!r}.")


@strict
class CatpConfig(Blip2Config):
    r"""
    Configuration of [`CatpBlip2ForConditionalGeneration`]: every `Blip2Config` field plus the pruning settings.

    pruning_method (`str`, defaults to `"catp"`):
        How query tokens are scored: `"catp"` (cross-attention votes), `"l2"` (norm of the Q-Former output token),
        `"self_attention"` (attention received in the Q-Former self-attention), `"position"` (keep the first k),
        `"random"` (a seeded random k) or `"none"` (keep all; identical to stock BLIP-2).
    num_kept_query_tokens (`int`, *optional*):
        k, the number of query tokens given to the language model, in 1..`num_query_tokens`. `None` keeps all.
    vote_layers (`str` or `list[int]`, defaults to `"first"`):
        Which Q-Former cross-attention layers vote: `"first"`, `"last"`, `"all"`, or positions among the
        cross-attention layers (0 is the first cross-attention layer, not the first Q-Former layer).
    vote_layer_weights (`list[float]`, *optional*):
        One non-negative weight per voting layer (not all zero). `None` weighs every voting layer 1.
    image_token_weighting (`str`, defaults to `"none"`):
        `"vit_attention"` weights each image token's votes by the attention that token receives in the
        vision encoder's last layer (summed over heads and attending tokens, normalised over tokens).
    vote_aggregation (`str`, defaults to `"rank"`):
        `"rank"`: each voter gives Borda points 0..Q-1 by attention rank (the paper). `"soft"`: each voter splits
        one vote over the queries in proportion to its attention.
    pruning_seed (`int`, defaults to 0):
        Seed of `pruning_method="random"`.
    """

    model_type = "catp_blip2"

    # Typed `Any` on purpose: `@strict` type errors are not ValueErrors, and every bad setting must raise a
    # ValueError that names the setting, the value and what is allowed (see `check_pruning_settings`).
    pruning_method: Any = "catp"
    num_kept_query_tokens: Any = None
    vote_layers: Any = "first"
    vote_layer_weights: Any = None
    image_token_weighting: Any = "none"
    vote_aggregation: Any = "rank"
    pruning_seed: Any = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # A stock checkpoint's config.json carries model_type "blip-2", which the base class would set on the
        # instance; the CATP config must save (and reload) as "catp_blip2".
        vars(self).pop("model_type", None)
        self.check_pruning_settings()

    @property
    def num_cross_attention_layers(self) -> int:
        """How many Q-Former layers have cross-attention (layer i does when i % frequency == 0)."""
        q = self.qformer_config
        return len(range(0, q.num_hidden_layers, q.cross_attention_frequency))

    @property
    def kept_query_tokens(self) -> int:
        """k resolved: `num_kept_query_tokens`, or `num_query_tokens` when that is `None` or the method is `"none"`."""
        if self.pruning_method == "none" or self.num_kept_query_tokens is None:
            return self.num_query_tokens
        return self.num_kept_query_tokens

    def voting_layer_positions(self) -> list[int]:
        """Positions, among the cross-attention layers, of the layers that vote."""
        n = self.num_cross_attention_layers
        if self.vote_layers == "first":
            return [0]
        if self.vote_layers == "last":
            return [n - 1]
        if self.vote_layers == "all":
            return list(range(n))
        return list(self.vote_layers)

    def voting_layer_weights(self) -> list[float]:
        """One weight per entry of `voting_layer_positions()`."""
        positions = self.voting_layer_positions()
        if self.vote_layer_weights is None:
            return [1.0] * len(positions)
        return [float(w) for w in self.vote_layer_weights]

    def check_pruning_settings(self) -> None:
        """Raise a `ValueError` naming the first invalid pruning setting, its value and what is allowed.

        Called at construction and again by the model at every call, since settings may be changed in between.
        """
        if self.pruning_method not in PRUNING_METHODS:
            raise _bad("pruning_method", self.pruning_method, f"one of {PRUNING_METHODS}")
        q = self.num_query_tokens
        k = self.num_kept_query_tokens
        if k is not None and not (_is_int(k) and 1 <= k <= q):
            raise _bad("num_kept_query_tokens", k, f"None or an integer in 1..{q} (num_query_tokens)")

        n = self.num_cross_attention_layers
        layers = self.vote_layers
        if isinstance(layers, str):
            if layers not in VOTE_LAYER_NAMES:
                raise _bad("vote_layers", layers, f"one of {VOTE_LAYER_NAMES} or a list of positions in 0..{n - 1}")
        elif isinstance(layers, (list, tuple)):
            if (
                not layers
                or not all(_is_int(i) and 0 <= i < n for i in layers)
                or len(set(layers)) != len(layers)
            ):
                raise _bad(
                    "vote_layers",
                    layers,
                    f"a non-empty list of distinct positions among the {n} cross-attention layers (0..{n - 1})",
                )
            self.vote_layers = list(layers)
        else:
            raise _bad("vote_layers", layers, f"one of {VOTE_LAYER_NAMES} or a list of positions in 0..{n - 1}")

        weights = self.vote_layer_weights
        if weights is not None:
            expected = len(self.voting_layer_positions())
            if (
                not isinstance(weights, (list, tuple))
                or len(weights) != expected
                or not all(_is_real(w) and w >= 0 for w in weights)
                or not any(w > 0 for w in weights)
            ):
                raise _bad(
                    "vote_layer_weights",
                    weights,
                    f"None or {expected} non-negative finite numbers, not all zero (one per voting layer of "
                    f"vote_layers={self.vote_layers!r})",
                )
            self.vote_layer_weights = list(weights)

        if self.image_token_weighting not in IMAGE_TOKEN_WEIGHTINGS:
            raise _bad("image_token_weighting", self.image_token_weighting, f"one of {IMAGE_TOKEN_WEIGHTINGS}")
        if self.vote_aggregation not in VOTE_AGGREGATIONS:
            raise _bad("vote_aggregation", self.vote_aggregation, f"one of {VOTE_AGGREGATIONS}")
        if not _is_int(self.pruning_seed):
            raise _bad("pruning_seed", self.pruning_seed, "an integer")

    @classmethod
    def from_blip2_config(cls, config: Blip2Config, **pruning_settings: Any) -> "CatpConfig":
        """A `CatpConfig` with every field of a stock `Blip2Config` and the given pruning settings."""
        unknown = set(pruning_settings) - set(PRUNING_SETTINGS)
        if unknown:
            raise ValueError(
                f"Unknown pruning setting(s) {sorted(unknown)}; allowed: {list(PRUNING_SETTINGS)}."
            )
        values = config.to_dict()
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "custom_pipelines"):
            values.pop(key, None)
        values.update(pruning_settings)
        return cls(**values)


__all__ = ["CatpConfig", "PRUNING_METHODS", "PRUNING_SETTINGS"]
