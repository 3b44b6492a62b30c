"""Where the tools get a model from: `"embedded"`, a checkpoint folder or a Hub id, and in which dtype.

Every command that loads a model (`eval`, `bench`, `export`, `push`) resolves its source here, so they accept the
same names and fail with the same messages, before anything heavy is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..toy.embedded import EMBEDDED_MODELS, embedded_model_dir

# The tiny trained model shipped in `catp_blip2.toy.embedded`.
EMBEDDED = "embedded"
# Weight dtypes a command accepts; "auto" keeps the checkpoint's own.
DTYPES = ("auto", "float32", "float16", "bfloat16")


def check_dtype(name: Any, option: str = "--dtype", allow_auto: bool = True) -> str:
    """`name` if it is one of `DTYPES` (without "auto" unless `allow_auto`), else a ValueError naming `option`."""
    allowed = DTYPES if allow_auto else DTYPES[1:]
    if name not in allowed:
        raise ValueError(f"`{option}` must be one of {list(allowed)}; got {name!r}.")
    return name


def torch_dtype(name: str, option: str = "--dtype"):
    """The torch dtype of a `DTYPES` name other than "auto"."""
    import torch

    return getattr(torch, check_dtype(name, option, allow_auto=False))


def embedded_names() -> tuple[str, ...]:
    """The names of the shipped tiny models ("embedded", "embedded-instructblip")."""
    return tuple(EMBEDDED_MODELS)


def looks_local(source: str) -> bool:
    """True for what can only be a local path: it exists, starts with '.', '/' or '~', or has more than one '/'."""
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def resolve_checkpoint(source: Any, option: str = "--model") -> str:
    """Where to load `source` from: the embedded model's folder, a checkpoint folder, or a Hub id (unchanged).

    Raises a ValueError naming `option` for an empty value, a missing local path or a folder without config.json.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"`{option}` must be one of {list(embedded_names())}, a checkpoint folder or a Hub id; got {source!r}.")
    if source in embedded_names():
        return str(embedded_model_dir(option, source))
    if looks_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise ValueError(f"`{option}` {source!r}: no such folder (a Hub id has the form 'owner/name').")
        if not (path / "config.json").is_file():
            raise ValueError(f"`{option}` {source!r} is a local path without config.json; give a checkpoint folder.")
    return source


def catp_family(source: str, option: str = "--model") -> tuple[type, type]:
    """(CATP config class, CATP model class) of the checkpoint at `source`, from its config.json's model_type:
    a stock checkpoint (blip-2, instructblip) or a CATP one. Reads only config.json."""
    from transformers import PretrainedConfig

    location = resolve_checkpoint(source, option)
    try:
        model_type = PretrainedConfig.get_config_dict(location)[0].get("model_type")
    except OSError as error:  # an unknown Hub id, or the Hub out of reach
        raise ValueError(f"`{option}` {source!r} could not be loaded (a folder or a reachable Hub id): {error}") from error
    return family_of_model_type(model_type, f"`{option}` {source!r}")


def family_of_model_type(model_type: Any, what: str = "the checkpoint") -> tuple[type, type]:
    """(CATP config class, CATP model class) for a stock or CATP model_type ("blip-2", "catp_instructblip", ...)."""
    from .. import FAMILIES

    for config_class, model_class in FAMILIES:
        if model_type == config_class.model_type or model_type in config_class.base_model_types:
            return config_class, model_class
    known = [t for config_class, _ in FAMILIES for t in (*config_class.base_model_types, config_class.model_type)]
    raise ValueError(f"{what} is a {model_type!r} checkpoint; CATP takes one of {known}.")


def load_catp_config(source: str, option: str = "--model") -> Any:
    """The CATP config of the checkpoint at `source` (config.json only), for checks before the weights load."""
    config_class, _ = catp_family(source, option)
    return config_class.from_pretrained(resolve_checkpoint(source, option))


def load_catp_model(source: str, option: str = "--model", dtype: Any = "auto", **kwargs: Any):
    """The CATP model of the checkpoint's family (`catp_family`), loaded with `from_pretrained`.

    `dtype` is a `DTYPES` name or a torch dtype; `kwargs` go to `from_pretrained` (`device_map`, ...).
    """
    _, model_class = catp_family(source, option)
    location = resolve_checkpoint(source, option)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = torch_dtype(dtype)
    try:
        return model_class.from_pretrained(location, dtype=dtype, **kwargs)
    except OSError as error:  # weights missing or out of reach
        raise ValueError(f"`{option}` {source!r} could not be loaded (a folder or a reachable Hub id): {error}") from error


__all__ = ["DTYPES", "EMBEDDED", "catp_family", "check_dtype", "family_of_model_type", "load_catp_config", "embedded_model_dir", "embedded_names", "load_catp_model", "looks_local", "resolve_checkpoint", "torch_dtype"]
