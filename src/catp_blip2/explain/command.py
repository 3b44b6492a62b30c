"""`catp-blip2 explain --image PATH --question TEXT [--model ...] [--method ...] [--keep K] [--out file.png]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .explanation import explain

DEFAULT_OUT = "explain.png"
# k when the model itself keeps every query token: a picture with all of them framed would show no selection.
DEFAULT_KEEP = 8
NUM_QUERY_TOKENS = 32  # BLIP-2's and InstructBLIP's; the loaded model's own count is checked again


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the image file to explain (required; default: none)")
    parser.add_argument("--question", required=True, help="the question asked about it (required; default: none)")
    parser.add_argument("--model", default="embedded",
                        help="'embedded', 'embedded-instructblip', a checkpoint folder or a Hub id (BLIP-2 or "
                             "InstructBLIP, stock or CATP; default: %(default)s)")
    parser.add_argument("--method", default=None,
                        help="pruning method that picks the kept query tokens (default: the model's own, catp for "
                             "the embedded models)")
    parser.add_argument("--keep", type=int, default=None,
                        help=f"number of query tokens to keep, in 1..{NUM_QUERY_TOKENS} (default: the model's own k, "
                             f"or {DEFAULT_KEEP} where it keeps all)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the PNG picture to write (default: %(default)s)")


def _check(args: argparse.Namespace) -> None:
    """Every option that needs no model: a ValueError naming the option, the value and what is allowed."""
    from ..configuration_catp import PRUNING_METHODS

    if not Path(args.image).is_file():
        raise ValueError(f"`--image` {args.image!r}: no such file.")
    if not args.question.strip():
        raise ValueError(f"`--question` must be a non-empty question; got {args.question!r}.")
    if args.method is not None and args.method not in PRUNING_METHODS:
        raise ValueError(f"`--method` must be one of {list(PRUNING_METHODS)}; got {args.method!r}.")
    if args.keep is not None and not 1 <= args.keep <= NUM_QUERY_TOKENS:
        raise ValueError(f"`--keep` must be an integer in 1..{NUM_QUERY_TOKENS} (the query tokens); got {args.keep!r}.")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"`--out` must name a .png file; got {args.out!r}.")
    if out.is_dir():
        raise ValueError(f"`--out` {args.out!r} is a folder; give a .png file.")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as image:
            image.verify()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"`--image` {args.image!r} is not an image PIL can read: {error}") from error


def run(args: argparse.Namespace) -> int:
    from transformers import AutoProcessor

    from ..checkpoints import load_catp_config, load_catp_model, resolve_checkpoint

    _check(args)
    config = load_catp_config(args.model, "--model")  # config.json only: refuse a video model before its weights
    if getattr(config, "num_frames", None) is not None:
        raise ValueError(f"`--model` {args.model!r} is a video model; explain takes BLIP-2 and InstructBLIP models.")
    if args.keep is not None and args.keep > config.num_query_tokens:
        raise ValueError(f"`--keep` must be in 1..{config.num_query_tokens} for this model; got {args.keep!r}.")
    model = load_catp_model(args.model, "--model").eval()
    processor = AutoProcessor.from_pretrained(resolve_checkpoint(args.model, "--model"))
    if args.method is not None:
        model.config.pruning_method = args.method
    if args.keep is not None:
        model.config.num_kept_query_tokens = args.keep
    elif model.config.num_kept_query_tokens is None:
        model.config.num_kept_query_tokens = min(DEFAULT_KEEP, model.config.num_query_tokens)
    result = explain(model, processor, args.image, args.question, out=args.out)
    total = len(result.shares)
    print(f"picture: {result.path}")
    print(f"answer:  {result.answer!r}")
    print(f"kept:    {' '.join(f'q{q}' for q in result.kept)}  ({result.k} of {total}, method {result.method})")
    return 0


__all__ = ["DEFAULT_KEEP", "DEFAULT_OUT", "add_arguments", "run"]
