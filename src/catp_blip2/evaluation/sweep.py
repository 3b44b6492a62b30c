"""The sweep of `catp-blip2 eval`: which configurations (pruning method x k, plus the unpruned model) it evaluates.

A `--methods` item is a method name, optionally with settings: "catp:vote_layers=all,vote_aggregation=soft". Every
name in `scoring.PRUNING_METHODS` is accepted, and every pruning setting (read live from the registry, so a method
registered at run time brings its own settings); the values are checked by `CatpConfig` itself. An item with
`keep_score_mass` keeps a number of queries per sample, so it runs once, not once per `--keep` value.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ..configuration_catp import PRUNING_METHODS, CatpConfig, default_pruning_settings, pruning_settings
from ..scoring import SELECTION_SETTING_NAMES

DEFAULT_METHODS = (
    "catp",
    "catp:image_token_weighting=vit_attention",
    "catp:vote_aggregation=soft",
    "l2",
    "self_attention",
    "position",
    "random",
    "catp_cover",
)
DEFAULT_KEEP = (32, 16, 8, 4, 2)
UNPRUNED = "none"


@dataclass(frozen=True)
class Configuration:
    """One evaluated configuration: the method item as given, its full pruning settings and k (None: the item sets
    `keep_score_mass`, each sample keeps its own number)."""

    method: str
    pruning_settings: dict[str, Any]
    num_kept_query_tokens: int | None

    @property
    def key(self) -> str:
        """Canonical identity (settings and k), used to recognise finished configurations."""
        return configuration_key(self.pruning_settings, self.num_kept_query_tokens)

    @property
    def file_stem(self) -> str:
        """A readable, unique file name for its predictions: the item, k, and a short hash of the key."""
        # Cut long items (a prior's 32 values): file names have a length limit, and the hash keeps them unique.
        readable = re.sub(r"[^A-Za-z0-9=.-]+", "_", self.method).strip("_")[:100]
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:8]
        k = "adaptive" if self.num_kept_query_tokens is None else self.num_kept_query_tokens
        return f"{readable}__k{k}__{digest}"


def configuration_key(pruning_settings: dict[str, Any], k: int | None) -> str:
    # No vision merging is what entries written before `vision_merge_per_layer` existed mean: same key, so they resume.
    settings = {key: value for key, value in pruning_settings.items() if (key, value) != (VISION_MERGE, 0)}
    return json.dumps({**settings, "num_kept_query_tokens": k}, sort_keys=True)


VISION_MERGE = "vision_merge_per_layer"


MERGE_LABEL_SUFFIX = " @ r="


def vision_merge_label(item: str, r: int) -> str:
    """A configuration's label at vision merging r: the item itself at r = 0, "item @ r=R" otherwise."""
    return item if r == 0 else f"{item}{MERGE_LABEL_SUFFIX}{r}"


def merge_label_item(label: str) -> str:
    """The item a `vision_merge_label` was made from (the label itself at r = 0)."""
    item, suffix, r = label.rpartition(MERGE_LABEL_SUFFIX)
    return item if suffix and r.isdigit() else label


def check_vision_merge(values: list[Any], base_config: CatpConfig) -> list[int]:
    """`--vision-merge` values: distinct integers, each a valid `vision_merge_per_layer` of the model's config."""
    if not values:
        raise ValueError("`--vision-merge` needs at least one r (0: no merging).")
    checked = []
    for value in values:
        trial = copy.deepcopy(base_config)
        trial.vision_merge_per_layer = value
        try:
            trial.check_pruning_settings()
        except ValueError as error:
            raise ValueError(f"`--vision-merge` value {value!r}: {error}") from None
        checked.append(trial.vision_merge_per_layer)
    if len(set(checked)) != len(checked):
        raise ValueError(f"`--vision-merge` values must be distinct; got {values}.")
    return checked


def _split_settings(text: str) -> list[str]:
    """Split "a=1,b=[0,2]" at the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _setting_value(text: str) -> Any:
    """JSON when it parses (numbers, lists, null), the plain text otherwise ("all", "vit_attention")."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_method_item(item: str, base_config: CatpConfig) -> dict[str, Any]:
    """Full pruning settings of a `--methods` item: "name" or "name:setting=value,setting=value".

    Values are JSON where they parse ("vote_layers=[0,2]", "pruning_seed=3") and text otherwise
    ("vote_layers=all"). They are checked by `CatpConfig.check_pruning_settings` on a copy of `base_config`; any
    error names the item.
    """
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"`--methods` items must be non-empty strings; got {item!r}.")
    name, _, rest = item.partition(":")
    name = name.strip()
    allowed = [m for m in PRUNING_METHODS if m != UNPRUNED]
    if name == UNPRUNED:
        raise ValueError(f"`--methods` item {item!r}: the unpruned model is always evaluated; leave 'none' out.")
    if name not in allowed:
        raise ValueError(f"`--methods` item {item!r}: method {name!r} is not one of {allowed}.")
    swept = swept_settings()
    settings = {key: value for key, value in default_pruning_settings().items() if key in swept}
    settings["pruning_method"] = name
    if rest.strip():
        for part in _split_settings(rest):
            key, equals, value = part.partition("=")
            key = key.strip()
            if not equals or not key:
                raise ValueError(
                    f"`--methods` item {item!r}: settings must be written setting=value, separated by commas; got {part!r}."
                )
            if key not in swept or key in ("pruning_method", VISION_MERGE):
                raise ValueError(
                    f"`--methods` item {item!r}: {key!r} is not a pruning setting that can be swept; allowed: "
                    f"{[s for s in swept if s not in ('pruning_method', VISION_MERGE)]} (k comes from --keep, r from "
                    "--vision-merge)."
                )
            settings[key] = _setting_value(value.strip())
    trial = copy.deepcopy(base_config)
    for key, value in settings.items():
        setattr(trial, key, value)
    trial.num_kept_query_tokens = None
    try:
        trial.check_pruning_settings()
    except ValueError as error:
        raise ValueError(f"`--methods` item {item!r}: {error}") from None
    # check_pruning_settings turns tuples into lists: take the checked values, so keys compare equal on resume.
    return {key: getattr(trial, key) for key in swept}


def setting_text(value: Any) -> str:
    """A setting's value as a `--methods` item writes it: names plain ("all"), anything else JSON ("[0,1]", "null")."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) and value not in ("null", "true", "false"):
        return value
    return json.dumps(value, separators=(",", ":"))


def variant_method_item(path: Any) -> str:
    """The `--methods` item of a variant file: its method with the settings of that method the file sets, and the
    selection settings (merge, score-mass budget, prior) where they differ from their defaults."""
    from ..hub.variants import load_variant

    variant = load_variant(path)
    method = variant.pruning["pruning_method"]
    defaults = default_pruning_settings()
    own = [s.name for s in PRUNING_METHODS[method].settings]
    own = [n for n in SELECTION_SETTING_NAMES if n not in own and variant.pruning[n] != defaults[n]] + own
    settings = ",".join(f"{name}={setting_text(variant.pruning[name])}" for name in own)
    return f"{method}:{settings}" if settings else method


def swept_settings() -> tuple[str, ...]:
    """The pruning settings every configuration sets (k is set separately): anything an item leaves out takes its
    default, so a "catp" row means the same whatever the checkpoint's config.json says. Read live from the registry."""
    return tuple(key for key in pruning_settings() if key != "num_kept_query_tokens")


def unpruned_settings() -> dict[str, Any]:
    swept = swept_settings()
    settings = {key: value for key, value in default_pruning_settings().items() if key in swept}
    settings["pruning_method"] = UNPRUNED
    return settings


def build_sweep(
    methods: list[str], keep: list[int], base_config: CatpConfig, vision_merge: list[int] | None = None
) -> list[Configuration]:
    """The unpruned configuration, then every method item at every k (in the order given); an item with
    `keep_score_mass` once, with k None. With `vision_merge` (r values, `--vision-merge`): all of that at each r in
    turn, labelled "item @ r=R" where r > 0."""
    merges = check_vision_merge(list(vision_merge), base_config) if vision_merge is not None else [0]
    configurations = _sweep_at_r0(methods, keep, base_config)
    swept = []
    for r in merges:
        for c in configurations:
            settings = {**c.pruning_settings, VISION_MERGE: r}
            swept.append(Configuration(vision_merge_label(c.method, r), settings, c.num_kept_query_tokens))
    return swept


def _sweep_at_r0(methods: list[str], keep: list[int], base_config: CatpConfig) -> list[Configuration]:
    total = base_config.num_query_tokens
    if not keep:
        raise ValueError("`--keep` needs at least one k.")
    for k in keep:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
            raise ValueError(f"`--keep` values must be integers in 1..{total} (the model's num_query_tokens); got {k!r}.")
    if len(set(keep)) != len(keep):
        raise ValueError(f"`--keep` values must be distinct; got {keep}.")
    configurations = [Configuration(UNPRUNED, unpruned_settings(), total)]
    seen: dict[str, str] = {}
    for item in methods:
        settings = parse_method_item(item, base_config)
        canonical = json.dumps(settings, sort_keys=True)
        if canonical in seen:
            raise ValueError(f"`--methods` items {seen[canonical]!r} and {item!r} are the same configuration.")
        seen[canonical] = item
        if settings.get("keep_score_mass") is not None:
            configurations.append(Configuration(item, settings, None))
        else:
            configurations.extend(Configuration(item, settings, k) for k in keep)
    return configurations


def apply_configuration(model: Any, configuration: Configuration) -> None:
    """Set the model's pruning settings for `configuration` (read by the model at call time)."""
    for key, value in configuration.pruning_settings.items():
        setattr(model.config, key, copy.deepcopy(value))
    model.config.num_kept_query_tokens = configuration.num_kept_query_tokens
    model.config.check_pruning_settings()


__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_METHODS",
    "UNPRUNED",
    "Configuration",
    "apply_configuration",
    "build_sweep",
    "configuration_key",
    "merge_label_item",
    "parse_method_item",
    "setting_text",
    "swept_settings",
    "variant_method_item",
    "unpruned_settings",
    "vision_merge_label",
]
