"""What `catp-blip2 explain` shows: which query tokens a model keeps for one image and question, and where each one looks.

`explain(model, processor, image, question)` runs the model's own vision encoder and Q-Former once, with the model's
attention recorder (`CatpQFormerMixin._record_attentions`) listening, and selects from that same pass with
`get_image_features`: the kept queries it reports (and frames in the picture) are the ones the language model gets.
The picture shows, per query, its cross-attention over the image patches (mean over heads and voting layers), its
share of the votes, and a frame round the kept ones; beside them the image and the model's answer.

Shapes: Q query tokens, H heads, N = 1 + g * g image tokens (the ViT's CLS token and its g x g patches).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..pipeline_catp import DEFAULT_VQA_PROMPT, _open_image as _load_image
from .picture import draw_explanation

MAX_NEW_TOKENS = 10  # the BLIP-2 / CATP VQA protocol's answer length


@dataclass
class Explanation:
    """What the model kept for one image and question, and why.

    kept: the kept query indices, ascending (`get_image_features(...).kept_query_indices[0]`).
    scores: the configured method's score per query (Q floats; higher is kept first).
    shares: `scores` as shares summing to 1 over the queries (see `vote_shares`): for "catp" each query's share of
        the Borda points (or soft votes) of all voters, for "self_attention" its share of the attention received.
    maps: (Q, g, g) float32 cross-attention probabilities of each query over the image patches, mean over heads and
        voting layers (`layers`). The CLS token's column is left out and nothing is renormalised, so a map sums to
        1 minus the attention its query gives the CLS token.
    layers: the positions, among the Q-Former's cross-attention layers, of the layers averaged into `maps` (the
        config's voting layers, also when the method itself reads no cross-attention).
    answer: the model's answer, generated from the same pass with the same kept queries.
    method, k: the pruning method and the number of query tokens kept.
    question: the question asked.
    path: where the picture was written; `None` when none was asked for.
    """

    kept: list[int]
    scores: list[float]
    shares: list[float]
    maps: np.ndarray
    layers: list[int]
    answer: str
    method: str
    k: int
    question: str
    path: Path | None = None


def vote_shares(scores: np.ndarray) -> np.ndarray:
    """(Q,) scores -> (Q,) shares summing to 1, in the order of the scores.

    Non-negative scores (every method but "position") are divided by their sum: for "catp" that is each query's
    share of all Borda points (or soft votes), for "self_attention" of all attention received, for "l2" and "random"
    of the summed norms or draws. Scores with negatives ("position": -index) are shifted so the lowest is 0 first.
    Equal scores ("none", which keeps everything) give equal shares.
    """
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - min(0.0, float(scores.min()))
    total = float(shifted.sum())
    if not np.isfinite(total) or total <= 0:
        return np.full(scores.shape, 1.0 / scores.size)
    return shifted / total


def image_grid(model: Any) -> int:
    """g, the side of the vision encoder's patch grid (image_size // patch_size)."""
    vision = model.config.vision_config
    return int(vision.image_size) // int(vision.patch_size)


def _check_image_model(model: Any) -> None:
    if getattr(model.config, "num_frames", None) is not None:
        raise ValueError(
            f"explain takes image models (BLIP-2, InstructBLIP); {type(model).__name__} is a video model, whose kept "
            "tokens are chosen over frames x queries."
        )
    if not hasattr(model, "_record_attentions"):
        raise ValueError(f"explain needs a CATP model (catp_blip2.load_catp_model); got {type(model).__name__}.")


def explain(
    model: Any,
    processor: Any,
    image: Any,
    question: str,
    out: str | Path | None = None,
    prompt: str = DEFAULT_VQA_PROMPT,
) -> Explanation:
    """Explain the model's selection for one image and question under its config's pruning settings.

    Args:
        model: a CATP BLIP-2 or InstructBLIP model (not video); `config.pruning_method` and
            `config.num_kept_query_tokens` choose what is kept, as for every other call of the model.
        processor: its processor (InstructBLIP's also makes the Q-Former's copy of the question, so the votes, and
            the picture, change with the question; BLIP-2's Q-Former sees only the image).
        image: a PIL image or the path of an image file.
        question: the question, put into `prompt` at "{}".
        out: where to write the PNG picture (`draw_explanation`); `None`: no picture.
    Returns:
        An [`Explanation`]; its `kept` equals `model.get_image_features(...).kept_query_indices[0]`.
    """
    import torch

    _check_image_model(model)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"`question` must be a non-empty question; got {question!r}.")
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise ValueError(f"`prompt` must be a string with exactly one '{{}}' for the question; got {prompt!r}.")
    picture = _open_image(image)
    grid = image_grid(model)
    inputs = processor(images=picture, text=prompt.format(question), return_tensors="pt").to(model.device)
    pixel_values = inputs["pixel_values"].to(model.dtype)
    extra = {name: inputs[name] for name in model.family.extra_inputs if name in inputs}

    # Maps for every method: a "catp" view of the config records the voting layers' cross-attention even where the
    # configured method reads none. The recorder listens to the very pass that the selection and the answer use.
    # catp_cover votes with its own layers: draw those.
    layers = {"vote_layers": model.config.cover_layers} if model.config.pruning_method == "catp_cover" else {}
    (view,) = model.scoring_configs([{"pruning_method": "catp", **layers}])
    was_training = model.training
    model.eval()  # the recorder computes expected probabilities; the answer should not see dropout either
    try:
        with torch.no_grad():
            with model._record_attentions([view]) as recorder:
                encoding = model.encode_qformer(pixel_values, **extra)
            cross = torch.stack([probs[0].float() for probs in recorder.cross_attentions])  # (L, H, Q, N)
            if cross.shape[-1] != 1 + grid * grid:
                raise ValueError(
                    f"the Q-Former attends to {cross.shape[-1]} image tokens, not 1 + {grid}x{grid} (CLS + patches "
                    "of image_size // patch_size); explain draws square patch grids only."
                )
            features = model.get_image_features(qformer_encoding=encoding)
            sequences = model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs.get("attention_mask"),
                qformer_encoding=encoding,
                max_new_tokens=MAX_NEW_TOKENS,
            )
    finally:
        model.train(was_training)

    if model.config.use_decoder_only_language_model:
        sequences = sequences[:, inputs["input_ids"].shape[1] :]  # CATP's generate returns the prompt first
    answer = processor.batch_decode(sequences, skip_special_tokens=True)[0].strip()
    maps = cross.mean(dim=(0, 1))[:, 1:].reshape(-1, grid, grid).cpu().numpy()  # (Q, g, g), CLS column dropped
    scores = features.query_token_scores[0].float().cpu().numpy()
    explanation = Explanation(
        kept=features.kept_query_indices[0].tolist(),
        scores=scores.tolist(),
        shares=vote_shares(scores).tolist(),
        maps=maps,
        layers=list(recorder.cross_positions),
        answer=answer,
        method=model.config.pruning_method,
        k=model.config.kept_query_tokens,
        question=question,
    )
    if out is not None:
        explanation.path = draw_explanation(explanation, picture, out)
    return explanation



def _open_image(image: Any):
    """A PIL image in RGB from an image, a path or a URL (the pipeline's loader: a missing file is named as such)."""
    return (_load_image(str(image), timeout=None) if isinstance(image, (str, Path)) else image).convert("RGB")


__all__ = ["DEFAULT_VQA_PROMPT", "Explanation", "explain", "image_grid", "vote_shares"]
