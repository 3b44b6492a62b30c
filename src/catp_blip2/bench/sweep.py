"""`catp-blip2 bench --sweep`: the evaluation sweep timed both ways on the same weights, in one run.

The sweep is the paper's shape: the unpruned model plus every method at every k (by default 6 methods x k = 16, 8,
4: 19 configurations) over `questions` questions about `images` images (questions about one image are
consecutive, as in VQAv2). "naive" calls `generate` on the pixel values for every configuration, so the vision
encoder and the Q-Former run once per question and configuration; "shared" goes through the evaluation's
`QFormerEncodingCache`, so they run once per image (BLIP-2) or question (InstructBLIP) for the whole sweep.
Both are timed whole, after warm-up, alternating which goes first; the predictions of every configuration must
be identical.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from ..evaluation.sweep import apply_configuration, build_sweep
from ..modeling_features import QFormerEncodingCache
from .inputs import make_inputs

# The paper's six: CATP, CATP with ViT-weighted image tokens, and the four baselines.
PAPER_METHODS = ("catp", "catp:image_token_weighting=vit_attention", "l2", "self_attention", "position", "random")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def sweep_batches(model: Any, questions: int, images: int, batch_size: int, prompt_tokens: int, seed: int) -> list[dict]:
    """The questions as processor-shaped batches; question i is about image i * images // questions."""
    inputs = make_inputs(model, questions, prompt_tokens, seed)
    pictures = make_inputs(model, images, prompt_tokens, seed + 1)["pixel_values"]
    inputs["pixel_values"] = pictures[torch.arange(questions) * images // questions]
    return [{name: t[start : start + batch_size] for name, t in inputs.items()} for start in range(0, questions, batch_size)]


def _run(model: Any, configs: list, batches: list[dict], generate_kwargs: dict, shared: bool) -> tuple[float, dict]:
    """One whole sweep; (seconds, configuration key -> generated sequences of every batch)."""
    cache = QFormerEncodingCache([c.pruning_settings for c in configs]) if shared else None
    outputs: dict[str, list[torch.Tensor]] = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for config in configs:
            apply_configuration(model, config)
            outputs[config.key] = []
            for index, batch in enumerate(batches):
                if cache is None:
                    sequences = model.generate(**batch, **generate_kwargs)
                else:
                    sequences = cache.generate(model, batch, batch_id=index, **generate_kwargs)
                outputs[config.key].append(sequences.cpu())
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - start, outputs


def time_sweep(bench: Any, settings: Any) -> dict[str, Any]:
    """The `sweep` entry of bench.json: both ways timed `settings.repeats` times, interleaved, after warm-up."""
    sweep = settings.sweep
    model = bench.model
    saved = {name: getattr(model.config, name) for name in ("pruning_method", "num_kept_query_tokens")}
    configs = build_sweep(list(sweep.methods), list(sweep.keep), model.config)
    batches = sweep_batches(model, sweep.questions, sweep.images, sweep.batch_size, settings.prompt_tokens, settings.seed)
    for round_index in range(settings.warmup):  # two configurations each way: kernels, allocator, caches
        log(f"sweep: warm-up {round_index + 1}/{settings.warmup}")
        _run(model, configs[:2], batches, bench.generate_kwargs, shared=False)
        _run(model, configs[:2], batches, bench.generate_kwargs, shared=True)
    naive_s, shared_s, identical = [], [], True
    try:
        for repeat in range(settings.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            runs = {}
            for shared in order:
                seconds, outputs = _run(model, configs, batches, bench.generate_kwargs, shared)
                runs[shared] = outputs
                (shared_s if shared else naive_s).append(seconds)
                log(f"sweep: repeat {repeat + 1}/{settings.repeats} {'shared' if shared else 'naive'}: {seconds:.2f} s")
            identical = identical and all(
                all(torch.equal(a, b) for a, b in zip(runs[False][key], runs[True][key])) for key in runs[False]
            )
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)
    naive, shared = statistics.median(naive_s), statistics.median(shared_s)
    per_question = not model.family.extra_inputs  # BLIP-2's Q-Former does not read the question
    return {
        "configurations": len(configs),
        "methods": list(sweep.methods),
        "keep": list(sweep.keep),
        "questions": sweep.questions,
        "images": sweep.images,
        "batch_size": sweep.batch_size,
        "vision_passes": {
            "naive": len(configs) * sweep.questions,
            "shared": sweep.images if per_question else sweep.questions,
        },
        "naive_s": naive,
        "shared_s": shared,
        "speedup": naive / shared,
        "naive_runs_s": naive_s,
        "shared_runs_s": shared_s,
        "identical": identical,
    }


__all__ = ["PAPER_METHODS", "sweep_batches", "time_sweep"]
