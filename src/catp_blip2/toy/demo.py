"""`catp-blip2 demo`: one question answered by a tiny, locally built BLIP-2, unpruned and with CATP at several k.

The weights are random, so the answers are noise: the demo shows the plumbing (processor -> pruning ->
generate), the kept query indices and the prompt length the language model sees.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image

from ..configuration_catp import PRUNING_METHODS
from ..pipeline_catp import DEFAULT_VQA_PROMPT
from .tiny import tiny_blip2_config, tiny_model, tiny_processor

DEFAULT_KEEP = (32, 16, 8, 4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", default="what color is the circle ?",
                        help="the question asked about a random image (default: %(default)r)")
    parser.add_argument("--method", default="catp", choices=PRUNING_METHODS,
                        help="pruning method that picks the kept query tokens (default: %(default)s)")
    parser.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP),
                        help="numbers of query tokens to keep, each in 1..32, one answer per value "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and image (default: %(default)s)")


def _check(args: argparse.Namespace, total: int) -> None:
    """Every option, before the model is built: a ValueError naming the option, the value and what is allowed."""
    for k in args.keep:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
            raise ValueError(f"`--keep` values must be integers in 1..{total} (the model's query tokens); got {k!r}.")
    if not isinstance(args.question, str) or not args.question.strip():
        raise ValueError(f"`--question` must be a non-empty question; got {args.question!r}.")


def run(args: argparse.Namespace) -> int:
    total = tiny_blip2_config("opt").num_query_tokens
    _check(args, total)
    model = tiny_model("opt", seed=args.seed)
    processor = tiny_processor()
    pixels = np.random.default_rng(args.seed).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    inputs = processor(images=Image.fromarray(pixels), text=DEFAULT_VQA_PROMPT.format(args.question), return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    rows = []
    for k in args.keep:
        model.config.pruning_method = args.method
        model.config.num_kept_query_tokens = k
        out = model.generate(**inputs, max_new_tokens=5, num_beams=2, return_dict_in_generate=True)
        kept = model.get_image_features(inputs["pixel_values"]).kept_query_indices[0].tolist()
        answer = processor.batch_decode(out.sequences[:, prompt_length:], skip_special_tokens=True)[0]
        rows.append({"method": args.method, "k": k, "lm_prompt_tokens": prompt_length - (total - k), "kept": kept, "answer": answer})
    print(f"{'k':>3}  {'LM prompt tokens':>16}  answer")
    for row in rows:
        print(f"{row['k']:>3}  {row['lm_prompt_tokens']:>16}  {row['answer']!r}")
    print(json.dumps(rows))
    return 0
