"""`catp-blip2 demo`: one question about a synthetic scene, answered by the embedded tiny BLIP-2, unpruned and pruned.

The embedded model was trained on the shapes task (`toy/shapes.py`), so its answers mean something: the demo shows
the answer, the kept query tokens and the prompt length the language model sees at each k.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from .embedded import embedded_model_dir
from ..configuration_catp import PRUNING_METHODS
from ..pipeline_catp import DEFAULT_VQA_PROMPT
from .shapes import draw_scene, questions_for_scene, random_scene

DEFAULT_KEEP = (32, 16, 8, 4)
NUM_QUERY_TOKENS = 32  # the embedded model's


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", default=None,
                        help="the question asked about the scene (default: one the shapes task asks of it, whose "
                             "answer is known)")
    parser.add_argument("--method", default="catp", choices=list(PRUNING_METHODS),
                        help="pruning method that picks the kept query tokens (default: %(default)s)")
    parser.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP),
                        help="numbers of query tokens to keep, each in 1..32, one answer per value "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene (default: %(default)s)")


def _check(args: argparse.Namespace) -> None:
    """Every option, before the model is loaded: a ValueError naming the option, the value and what is allowed."""
    for k in args.keep:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= NUM_QUERY_TOKENS:
            raise ValueError(
                f"`--keep` values must be integers in 1..{NUM_QUERY_TOKENS} (the model's query tokens); got {k!r}."
            )
    if args.question is not None and not args.question.strip():
        raise ValueError(f"`--question` must be a non-empty question; got {args.question!r}.")
    if args.seed < 0:
        raise ValueError(f"`--seed` must be an integer >= 0; got {args.seed!r}.")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoProcessor

    from ..modeling_catp import CatpBlip2ForConditionalGeneration

    _check(args)
    folder = embedded_model_dir("--model")
    model = CatpBlip2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    rng = np.random.default_rng(args.seed)
    objects = random_scene(rng)
    image = draw_scene(objects, rng)
    _, asked, truth = questions_for_scene(objects, rng)[0]
    question = args.question or asked
    inputs = processor(images=image, text=DEFAULT_VQA_PROMPT.format(question), return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    rows = []
    for k in args.keep:
        model.config.pruning_method = args.method
        model.config.num_kept_query_tokens = k
        out = model.generate(**inputs, max_new_tokens=5, num_beams=2, return_dict_in_generate=True)
        kept = model.get_image_features(inputs["pixel_values"]).kept_query_indices[0].tolist()
        answer = processor.batch_decode(out.sequences[:, prompt_length:], skip_special_tokens=True)[0].strip()
        lm_tokens = prompt_length - (NUM_QUERY_TOKENS - len(kept))
        rows.append({"method": args.method, "k": k, "lm_prompt_tokens": lm_tokens, "kept": kept, "answer": answer})
    scene = ", ".join(f"{o.color} {o.shape}" for o in objects)
    print(f"scene: {scene}\nquestion: {question}" + ("" if args.question else f"  (true answer: {truth})"))
    print(f"{'k':>3}  {'LM prompt tokens':>16}  answer")
    for row in rows:
        print(f"{row['k']:>3}  {row['lm_prompt_tokens']:>16}  {row['answer']!r}")
    print(json.dumps(rows))
    return 0
