"""Query-token scoring for pruning: the method registry, the settings methods declare, and one selection step.

Shapes: B batch, Q query tokens, N image tokens, H heads, D hidden size, L voting layers.
Every score function returns a float tensor of shape (B, Q); higher means "keep".
The shipped methods live one family per module (`scoring_catp`, `scoring_catp_cover`, `scoring_baselines`), each
registering itself when `methods` imports it; this module imports none of them. Adding a method = one score
function + one `register_pruning_method` call (in a new `scoring_<name>.py` imported by `methods`, or at run time
from any module): its settings are declared in that call, and `CatpConfig`, the model and `catp-blip2 eval` accept
it at once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .selection import gather_tokens, select_top_k  # the generic step, re-exported beside the registry

# ---- settings: what a method can be told, each declared once with its default and its check -------------------


def as_int(value: Any) -> int | None:
    """`value` as a Python int when it is an integral number (int, numpy integer, 0-dim integer tensor), else None."""
    if isinstance(value, bool) or (torch.is_tensor(value) and value.dtype == torch.bool):
        return None
    if torch.is_tensor(value):
        return int(value.item()) if value.dim() == 0 and not value.is_floating_point() and not value.is_complex() else None
    return int(value) if isinstance(value, numbers.Integral) else None


# Scores are float32: a setting beyond this would be infinite there.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Setting:
    """A pruning setting that a method takes, stored on `CatpConfig` under `name`.

    `check(value, config)` returns the value as it is stored (normalised: a tuple becomes a list) or raises a
    ValueError whose message says what is allowed; `config` is the `CatpConfig` being checked, for limits that
    depend on the model's shape or on settings checked before (settings are checked in registration order).
    """

    name: str
    default: Any
    check: Callable[[Any, Any], Any]
    help: str = ""
    # The values `catp-blip2 calibrate` tries when told nothing else, given the config (None: it does not search it).
    candidates: Callable[[Any], Sequence[Any]] | None = None


def one_of(choices: Callable[[], Sequence[str]]) -> Callable[[Any, Any], Any]:
    """A check accepting the names `choices()` gives at check time (a registry may grow)."""

    def check(value: Any, config: Any) -> Any:
        allowed = tuple(choices())
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"one of {allowed}")
        return value

    return check


# What torch.Generator.manual_seed takes.
SEED_RANGE = (0, 2**64 - 1)


def check_seed(value: Any, config: Any) -> Any:
    seed = as_int(value)
    if seed is None or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"an integer in {SEED_RANGE[0]}..2**64-1")
    return seed


def number_in(low: float, high: float, low_open: bool = False) -> Callable[[Any, Any], Any]:
    def check(value: Any, config: Any) -> Any:
        if is_real(value) and (low < value if low_open else low <= value) and value <= high:
            return value
        raise ValueError(f"a finite number in {'(' if low_open else '['}{low}, {high}]")

    return check


# ---- the registry ------------------------------------------------------------------------------------------------

# What the model computes and hands to a score function, by name. A method may also take its own settings by name.
MODEL_INPUTS = (
    "cross_attentions",  # L x (B, H, Q, N): the voting layers' cross-attention probabilities
    "all_cross_attentions",  # every cross-attention layer's (B, H, Q, N), for a method that picks its own layers
    "layer_weights",  # L floats, from vote_layers / vote_layer_weights
    "image_token_weights",  # (B, N) or None, from image_token_weighting
    "aggregation",  # vote_aggregation
    "self_attentions",  # one (B, H, Q, Q) per Q-Former layer
    "query_output",  # (B, Q, D) Q-Former output
    "batch_size",
    "num_queries",
    "seed",  # pruning_seed
    "device",
)


@dataclass(frozen=True)
class PruningMethod:
    """A score function, the inputs the model must pass it (by keyword), and the settings it takes.

    `inputs` name entries of `MODEL_INPUTS` or of this method's own `settings`.
    """

    score: Callable[..., torch.Tensor]
    inputs: tuple[str, ...]
    settings: tuple[Setting, ...] = ()


PRUNING_METHODS: dict[str, PruningMethod] = {}
# Settings every config has whatever the method: not for a method to declare. `vision_merge_per_layer` (ToMe
# merging inside the vision encoder) changes the image tokens every method reads, so scores depend on it.
CORE_SETTINGS = ("pruning_method", "num_kept_query_tokens", "vision_merge_per_layer")


def method_settings() -> dict[str, Setting]:
    """Every setting a method takes, by name: the selection settings (`SELECTION_SETTINGS`, every method's), then
    each registered method's own, in registration order (read live)."""
    found: dict[str, Setting] = {setting.name: setting for setting in SELECTION_SETTINGS}
    for method in PRUNING_METHODS.values():
        for setting in method.settings:
            found.setdefault(setting.name, setting)
    return found


def register_pruning_method(
    name: str,
    score: Callable[..., torch.Tensor],
    inputs: Sequence[str],
    settings: Sequence[Setting] = (),
    overwrite: bool = False,
) -> PruningMethod:
    """Add a method to `PRUNING_METHODS`; `CatpConfig`, the model and `catp-blip2 eval --methods` accept it at once.

    Args:
        name: the `pruning_method` value that selects it.
        score: returns (B, Q) float scores, higher kept first; called with the keyword arguments named in `inputs`.
        inputs: names from `MODEL_INPUTS` or of `settings`.
        settings: the method's own `Setting`s (a name another method declares must be that same `Setting`).
        overwrite: replace a method registered under `name`.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"`name` must be a Python identifier (a `pruning_method` value); got {name!r}.")
    if name in PRUNING_METHODS and not overwrite:
        raise ValueError(f"`name` {name!r} is already a pruning method; pass overwrite=True to replace it.")
    known = method_settings()
    for setting in settings:
        if setting.name in CORE_SETTINGS or setting.name in MODEL_INPUTS or setting.name in SELECTION_SETTING_NAMES:
            raise ValueError(f"`settings`: {setting.name!r} is reserved; pick another setting name.")
        if setting.name in known and known[setting.name] is not setting:
            raise ValueError(
                f"`settings`: {setting.name!r} is already declared by another method; reuse that `Setting` or rename."
            )
    allowed = set(MODEL_INPUTS) | {s.name for s in settings}
    unknown = [i for i in inputs if i not in allowed]
    if unknown:
        raise ValueError(f"`inputs` {unknown} are neither model inputs {list(MODEL_INPUTS)} nor the method's settings.")
    method = PruningMethod(score, tuple(inputs), tuple(settings))
    PRUNING_METHODS[name] = method
    return method


# ---- selection: what happens after any method scored, so every method takes these ------------------------------


def _check_pruned_queries(value: Any, config: Any) -> Any:
    return one_of(lambda: PRUNED_QUERIES)(value, config)


def _check_keep_score_mass(value: Any, config: Any) -> Any:
    if value is None:
        return None
    number_in(0.0, 1.0, low_open=True)(value, config)
    if config.num_kept_query_tokens is not None:
        raise ValueError(
            "None while num_kept_query_tokens is set (it is a fixed k; the score-mass budget replaces it: set "
            "num_kept_query_tokens=None)"
        )
    return float(value)


def _check_min_kept(value: Any, config: Any) -> Any:
    count = as_int(value)
    if count is None or not 1 <= count <= config.total_query_tokens:
        raise ValueError(f"an integer in 1..{config.total_query_tokens}")
    return count


def _check_max_kept(value: Any, config: Any) -> Any:
    if value is None:
        return None
    count = as_int(value)
    low = config.min_kept_query_tokens
    if count is None or not low <= count <= config.total_query_tokens:
        raise ValueError(f"None or an integer in min_kept_query_tokens={low}..{config.total_query_tokens}")
    return count


def _check_prior(value: Any, config: Any) -> Any:
    if value is None:
        return None
    q = config.num_query_tokens
    if torch.is_tensor(value):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != q or not all(is_real(v) and abs(v) <= FLOAT32_MAX for v in value):
        raise ValueError(f"None or a list of num_query_tokens={q} finite numbers (one per query token)")
    return [float(v) for v in value]


# What happens to the pruned query outputs: "drop" (the paper) or "merge" (folded into the most similar kept ones).
PRUNED_QUERIES = ("drop", "merge")
SELECTION_SETTINGS = (
    Setting("pruned_queries", "drop", _check_pruned_queries,
            "drop: the language model never sees pruned queries (the paper); merge: each is averaged into its most "
            "similar kept query"),
    Setting("keep_score_mass", None, _check_keep_score_mass,
            "instead of a fixed k: keep per sample the fewest queries holding this share (0, 1] of the score mass"),
    Setting("min_kept_query_tokens", 1, _check_min_kept, "lower bound of the per-sample k of keep_score_mass"),
    Setting("max_kept_query_tokens", None, _check_max_kept, "upper bound of the per-sample k (None: all queries)"),
    Setting("query_score_prior", None, _check_prior,
            "one number per query token added to every method's scores before selection (calibrate --learn-prior)"),
)
SELECTION_SETTING_NAMES = tuple(setting.name for setting in SELECTION_SETTINGS)


__all__ = [
    "CORE_SETTINGS",
    "FLOAT32_MAX",
    "MODEL_INPUTS",
    "PRUNING_METHODS",
    "PRUNED_QUERIES",
    "SELECTION_SETTINGS",
    "SELECTION_SETTING_NAMES",
    "PruningMethod",
    "Setting",
    "as_int",
    "check_seed",
    "gather_tokens",
    "is_real",
    "method_settings",
    "number_in",
    "one_of",
    "register_pruning_method",
    "select_top_k",
]
