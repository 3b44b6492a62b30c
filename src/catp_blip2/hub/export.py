"""`catp-blip2 export`: write a variant as a self-contained, Hub-ready model folder.

The folder holds the CATP config (with `auto_map` for every Auto class and the `visual-question-answering`
custom pipeline), safetensors weights (sharded above `--max-shard-size`), the processor and tokenizer files, the
model's own code (so `trust_remote_code=True` loads it where catp_blip2 is not installed) and the model card.

    catp-blip2 export --variant configs/blip2-opt-2.7b-catp-k8.json --out blip2-opt-2.7b-catp-k8
    catp-blip2 export --variant configs/tiny-embedded-catp-k8.json --out tiny-k8 --results results.json
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoProcessor
from transformers.utils.hub import convert_file_size_to_int

from ..checkpoints import DTYPES, check_dtype, family_of_model_type, looks_local, resolve_checkpoint
from ..configuration_catp import CatpConfig
from .model_card import build_model_card, load_results, resolve_license
from .variants import Variant, load_variant

# The model core as save_pretrained writes it beside the weights (the model's module and what it imports
# relatively): flat modules importing only each other, torch and transformers, as remote code requires. Every
# method module (`scoring_<name>.py`) is imported by methods.py, so each ships: they are found, not listed.
_CORE = Path(__file__).resolve().parent.parent
CODE_FILES = (
    "configuration_catp.py",
    "methods.py",
    "scoring.py",
    *sorted(path.name for path in _CORE.glob("scoring_*.py")),
    "selection.py",
    "modeling_qformer.py",
    "modeling_pruning.py",
    "modeling_generation.py",
    "modeling_prompt.py",
    "modeling_features.py",
    "modeling_vision.py",
    "vision_merge.py",
    "modeling_catp.py",
    "pipeline_catp.py",
)
DEFAULT_MAX_SHARD_SIZE = "5GB"
# What an export writes that a later export might not overwrite (other shard counts): removed by --overwrite.
STALE_PATTERNS = ("*.safetensors", "model.safetensors.index.json")


@dataclass
class ExportResult:
    folder: Path
    variant: Variant
    base_location: str
    license: str
    license_source: str


def check_max_shard_size(size: str | int) -> int:
    """`size` in bytes (an integer, or an integer and a unit: "5GB", "300KB"); a ValueError naming `--max-shard-size`."""
    try:
        parsed = convert_file_size_to_int(size)
    except (ValueError, TypeError):
        parsed = None
    if not isinstance(parsed, int) or parsed <= 0:
        raise ValueError(
            f"`--max-shard-size` must be a positive size, an integer followed by a unit such as '5GB' or '300KB'; "
            f"got {size!r}."
        )
    return parsed


def check_out(out: str | Path, overwrite: bool) -> Path:
    """The export folder `out`, checked without writing: a folder (or a path one can be created at), empty unless
    `overwrite`, and writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` {str(out)!r} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"`--out` {str(out)!r} is not empty; choose an empty folder or pass --overwrite.")
    existing = next(parent for parent in (out, *out.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"`--out` {str(out)!r}: {str(existing)!r} is a file, so no folder can be created there.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"`--out` {str(out)!r}: {str(existing)!r} is not writable.")
    return out


@dataclass(frozen=True)
class BaseSource:
    """Where the base checkpoint comes from, for messages: `--base VALUE`, or the variant file's `base_model`."""

    option: str
    value: str
    context: str = ""  # what precedes the option in a message: the variant file, when the base is its `base_model`

    @classmethod
    def of(cls, variant: Variant, base: str | None) -> "BaseSource":
        if base is not None:
            return cls("--base", base)
        return cls("base_model", variant.base_model, f"Variant file {str(variant.source or variant.name)!r}: ")

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.context}`{self.option}` {self.value!r} {message}")


def _load_base(source: BaseSource, variant: Variant) -> tuple[str, CatpConfig, Any]:
    """(location, the variant's CatpConfig on the base, the base's processor). Loading errors (an unknown Hub id, a
    folder that is no checkpoint) become ValueErrors naming the option and the value."""
    try:
        location = resolve_checkpoint(source.value, source.option)
    except ValueError as error:
        raise ValueError(f"{source.context}{error}") from None
    try:
        base_config = AutoConfig.from_pretrained(location)
        processor = AutoProcessor.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise source.error(f"could not be loaded (a BLIP-2 or InstructBLIP checkpoint folder or a reachable Hub id): {error}") from error
    config = variant.catp_config(base_config)
    processor_queries = getattr(processor, "num_query_tokens", None)
    if processor_queries != config.num_query_tokens:
        # A Blip2Processor without num_query_tokens inserts no image placeholders and the image is silently ignored.
        raise source.error(
            f"has a processor with num_query_tokens={processor_queries!r}, but the model has "
            f"num_query_tokens={config.num_query_tokens}; they must agree for the image tokens to be placed."
        )
    return location, config, processor


def _checkpoint_identity(name: Any) -> str:
    """A name as the checkpoint it loads: a resolved local path, or the Hub id as it is."""
    try:
        location = resolve_checkpoint(str(name), "model")
    except ValueError:
        return str(name)
    return str(Path(location).expanduser().resolve()) if looks_local(location) else location


def check_results_model(results: dict[str, Any], results_path: Any, variant: Variant, base: str | None) -> None:
    """Refuse results measured on another model than the variant's base: the card would publish them as its own."""
    measured = results.get("model")
    bases = [name for name in (variant.base_model, base) if name]
    if measured in bases or _checkpoint_identity(measured) in {_checkpoint_identity(b) for b in bases}:
        return
    raise ValueError(
        f"`--results` {str(results_path)!r} was measured on model {measured!r}, not on this variant's base "
        f"({' / '.join(map(repr, bases))}); the card would publish another model's accuracy. Evaluate the base with "
        "`catp-blip2 eval --model <base>`, or pass --results-of-other-model to publish them anyway."
    )


def export_variant(
    variant: Variant,
    out: str | Path,
    base: str | None = None,
    results_path: str | Path | None = None,
    repo_id: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    dtype: str = "auto",
    overwrite: bool = False,
    results_of_other_model: bool = False,
) -> ExportResult:
    """Export `variant` into the folder `out` (created; must be empty unless `overwrite`).

    Every option is checked, and the base's config and processor are loaded, before anything is written; bad
    input raises a ValueError (or FileNotFoundError) naming the option and the value.

    Args:
        base: where to load the base checkpoint from (folder or Hub id); defaults to the variant's `base_model`.
        results_path: a `catp-blip2 eval` results file: adds the accuracy table and the card's model-index.
        repo_id: the Hub repo the card's usage examples name; defaults to "<your-username>/<repo_name>".
        max_shard_size: weights above this size are split into shards (`save_pretrained`'s `max_shard_size`).
        dtype: "auto" keeps the checkpoint's dtype.
        results_of_other_model: accept results measured on another model than the variant's base (the card then
            publishes them as this model's); refused by default.
    """
    check_dtype(dtype, "--dtype")
    check_max_shard_size(max_shard_size)
    out = check_out(out, overwrite)
    results = load_results(results_path) if results_path is not None else None

    source = BaseSource.of(variant, base)
    if results is not None and not results_of_other_model:
        check_results_model(results, results_path, variant, base)
    location, config, processor = _load_base(source, variant)
    license_, license_source = resolve_license(variant, location)
    card = build_model_card(
        variant,
        config,
        repo_id=repo_id or f"<your-username>/{variant.repo_name}",
        license_=license_,
        results=results,
    )
    try:
        _, model_class = family_of_model_type(config.model_type)
        model = model_class.from_pretrained(location, config=config, dtype=dtype)
    except OSError as error:  # a config and processor without weights beside them
        raise source.error(f"has weights that could not be loaded: {error}") from error

    # The config carries auto_map and the pipeline entry, and save_pretrained writes the core's files: the folder
    # loads with trust_remote_code=True where catp_blip2 is not installed.
    out.mkdir(parents=True, exist_ok=True)
    for pattern in STALE_PATTERNS:  # only reached with an empty folder or --overwrite
        for stale in out.glob(pattern):
            stale.unlink()
    model.save_pretrained(out, max_shard_size=max_shard_size)
    processor.save_pretrained(out)
    missing = [name for name in CODE_FILES if not (out / name).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained did not write the model core's files {missing} into {str(out)!r}")

    card.save(out / "README.md")
    return ExportResult(folder=out, variant=variant, base_location=location, license=license_, license_source=license_source)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `export` and `push`."""
    parser.add_argument("--variant", required=True, help="variant file, e.g. configs/blip2-opt-2.7b-catp-k8.json")
    parser.add_argument("--base", help="load the base checkpoint from this folder or Hub id instead of the variant's")
    parser.add_argument("--results", help="results.json of `catp-blip2 eval`: accuracy table + model-index in the card")
    parser.add_argument(
        "--results-of-other-model",
        action="store_true",
        help="accept --results measured on another model than the variant's base (default: refused)",
    )
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="shard weights above this size")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="weights dtype (auto keeps the checkpoint's)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--out", required=True, help="folder to write (created; must be empty)")
    parser.add_argument("--repo-id", help="Hub repo id the card's usage examples name (default <your-username>/NAME)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder (old weights removed)")


def describe(result: ExportResult) -> str:
    files = sorted(p for p in result.folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    return (
        f"exported {result.variant.name} from {result.base_location} to {result.folder} "
        f"({len(files)} files, {total / 1e6:.1f} MB; license {result.license} from {result.license_source})"
    )


def run(args: argparse.Namespace) -> int:
    print(describe(export_from_arguments(args, args.out, overwrite=args.overwrite)))
    return 0


def export_from_arguments(args: argparse.Namespace, out: str | Path, overwrite: bool = False) -> ExportResult:
    """`export_variant` with the options `add_common_arguments` declares (shared by `export` and `push`)."""
    return export_variant(
        load_variant(args.variant),
        out,
        base=args.base,
        results_path=args.results,
        repo_id=args.repo_id,
        max_shard_size=args.max_shard_size,
        dtype=args.dtype,
        overwrite=overwrite,
        results_of_other_model=args.results_of_other_model,
    )
