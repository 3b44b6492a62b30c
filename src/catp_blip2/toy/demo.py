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
from .tiny import tiny_model, tiny_processor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", default="what color is the circle ?")
    parser.add_argument("--method", default="catp", choices=PRUNING_METHODS)
    parser.add_argument("--keep", type=int, nargs="+", default=[32, 16, 8, 4])
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    model = tiny_model("opt", seed=args.seed)
    processor = tiny_processor()
    pixels = np.random.default_rng(args.seed).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    inputs = processor(images=Image.fromarray(pixels), text=f"Question: {args.question} Short answer:", return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    rows = []
    for k in args.keep:
        model.config.pruning_method = args.method
        model.config.num_kept_query_tokens = k
        out = model.generate(**inputs, max_new_tokens=5, num_beams=2, return_dict_in_generate=True)
        kept = model.get_image_features(inputs["pixel_values"]).kept_query_indices[0].tolist()
        answer = processor.batch_decode(out.sequences[:, prompt_length:], skip_special_tokens=True)[0]
        rows.append({"method": args.method, "k": k, "lm_prompt_tokens": prompt_length - (32 - k), "kept": kept, "answer": answer})
    print(f"{'k':>3}  {'LM prompt tokens':>16}  answer")
    for row in rows:
        print(f"{row['k']:>3}  {row['lm_prompt_tokens']:>16}  {row['answer']!r}")
    print(json.dumps(rows))
    return 0
