"""Pruned-configuration variants: one small JSON file each (see `configs/`), read and validated here.

A variant names a base BLIP-2 checkpoint and the pruning settings of `CatpConfig`, plus what the published Hub
repo is called. Example (`configs/blip2-opt-2.7b-catp-k8.json`):

    {
      "name": "blip2-opt-2.7b-catp-k8",
      "description": "BLIP-2 OPT-2.7b whose language model sees 8 of the 32 query tokens, chosen by CATP.",
      "base_model": "Salesforce/blip2-opt-2.7b",
      "repo_name": "blip2-opt-2.7b-catp-k8",
      "pruning_method": "catp",
      "num_kept_query_tokens": 8,
      "vote_layers": "first"
    }

Pruning settings left out take `CatpConfig`'s defaults. Values are validated by `CatpConfig` itself (the same
`check_pruning_settings` the model runs), first against the standard BLIP-2 shape (32 query tokens, 6
cross-attention layers) when the file is read, and again against the real base checkpoint when it is exported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import PretrainedConfig

from ..checkpoints import EMBEDDED, family_of_model_type
from ..configuration_catp import PRUNING_SETTINGS, CatpConfig, default_pruning_settings

# A base that names the tiny model embedded in this package (`catp_blip2.toy.embedded.EMBEDDED_MODEL_DIR`).
EMBEDDED_BASE = EMBEDDED

REQUIRED_KEYS = ("name", "base_model")
OPTIONAL_KEYS = ("description", "repo_name", "license")


@dataclass(frozen=True)
class Variant:
    """One pruned configuration of one base checkpoint.

    name: short identifier; base_model: Hub id, local folder, or "embedded"; repo_name: suggested Hub repo name
    (defaults to `name`); license: the base model's license if the file states it (else it is looked up at
    export); pruning: every `CatpConfig` pruning setting, defaults filled in; source: the file it was read from.
    """

    name: str
    base_model: str
    pruning: dict[str, Any]
    description: str = ""
    repo_name: str = ""
    license: str | None = None
    source: Path | None = field(default=None, compare=False)

    @property
    def num_kept_query_tokens(self) -> int | None:
        return self.pruning["num_kept_query_tokens"]

    def catp_config(self, base_config: PretrainedConfig) -> Any:
        """The CATP config of this variant on `base_config`, of the base's family (a stock `Blip2Config` gives a
        `CatpConfig`, an `InstructBlipConfig` a `CatpInstructBlipConfig`; a CATP config its own class).

        Raises a `ValueError` naming the variant, the base and the offending setting when the pruning settings do
        not fit the base (e.g. `num_kept_query_tokens` above its `num_query_tokens`).
        """
        config_class, _ = family_of_model_type(base_config.model_type, f"Variant {self.name!r}: its base")
        try:
            return config_class.from_stock_config(base_config, **self.pruning)
        except ValueError as error:
            raise ValueError(
                f"Variant {self.name!r} ({self.source or 'in memory'}) does not fit its base checkpoint "
                f"(num_query_tokens={base_config.num_query_tokens}): {error}"
            ) from None


def variant_keys() -> tuple[str, ...]:
    """Every key a variant file may hold: its own, then every pruning setting (read live from the registry)."""
    return REQUIRED_KEYS + OPTIONAL_KEYS + tuple(PRUNING_SETTINGS)


def _error(source: Path | str, message: str) -> ValueError:
    return ValueError(f"Invalid variant file {str(source)!r}: {message}")


def _nonempty_string(source: Path | str, data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise _error(source, f"`{key}` must be a non-empty string; got {value!r}.")
    return value


def variant_from_dict(data: Any, source: Path | str = "<dict>") -> Variant:
    """Validate a variant's JSON content and build the `Variant`. Raises `ValueError` saying what is wrong."""
    if not isinstance(data, dict):
        raise _error(source, f"the top level must be a JSON object; got {type(data).__name__}.")
    allowed = variant_keys()
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _error(source, f"unknown key(s) {unknown}; allowed keys: {list(allowed)}.")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise _error(source, f"missing required key(s) {missing}.")

    name = _nonempty_string(source, data, "name")
    base_model = _nonempty_string(source, data, "base_model")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _error(source, f"`description` must be a string; got {description!r}.")
    license_ = data.get("license")
    if license_ is not None:
        license_ = _nonempty_string(source, data, "license")
    repo_name = _nonempty_string(source, data, "repo_name") if "repo_name" in data else name
    try:
        validate_repo_id(repo_name)
    except HFValidationError as error:
        raise _error(source, f"`repo_name` {repo_name!r} is not a valid Hub repo name: {error}") from None
    if "/" in repo_name:
        raise _error(source, f"`repo_name` is the name without the owner (push takes --repo-id); got {repo_name!r}.")

    # Defaults first, then the file's values; CatpConfig is the single place that judges them. The standard
    # BLIP-2 shape (32 query tokens, 12 Q-Former layers, cross-attention every 2nd) is what every public
    # checkpoint has; the real base is checked again at export.
    pruning = {**default_pruning_settings(), **{key: data[key] for key in PRUNING_SETTINGS if key in data}}
    try:
        checked = CatpConfig(**pruning)
    except ValueError as error:
        raise _error(source, str(error)) from None
    pruning = {key: getattr(checked, key) for key in PRUNING_SETTINGS}  # normalised (tuples -> lists)
    return Variant(
        name=name,
        base_model=base_model,
        pruning=pruning,
        description=description,
        repo_name=repo_name,
        license=license_,
        source=Path(source) if not str(source).startswith("<") else None,
    )


def load_variant(path: str | os.PathLike) -> Variant:
    """Read and validate a variant file (JSON). Raises `FileNotFoundError` or `ValueError` with what is wrong."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            available = sorted(p.name for p in path.parent.glob("*.json"))
            hint = f" Variant files in {str(path.parent)!r}: {available}." if available else ""
        raise FileNotFoundError(f"Variant file {str(path)!r} does not exist.{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise _error(path, f"not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}.") from None
    return variant_from_dict(data, source=path)


def is_hub_model_id(base: str) -> bool:
    """True for "owner/name" strings that are Hub repo ids rather than local paths or symbolic names."""
    if base == EMBEDDED_BASE or os.path.exists(base) or base.count("/") != 1:
        return False
    try:
        validate_repo_id(base)
    except HFValidationError:
        return False
    return True


__all__ = [
    "EMBEDDED_BASE",
    "variant_keys",
    "Variant",
    "is_hub_model_id",
    "load_variant",
    "variant_from_dict",
]
