"""`catp-blip2 explain`: which query tokens a model keeps for one image and question, and where each one looks.

`explain(model, processor, image, question)` runs the model's own vision encoder and Q-Former once, with the model's
attention recorder (`CatpQFormerMixin._record_attentions`) listening, and selects from that same pass with
`get_image_features`: the kept queries it reports (and frames in the picture) are the ones the language model gets.
The picture shows, per query, its cross-attention over the image patches (mean over heads and voting layers), its
share of the votes, and a frame round the kept ones; beside them the image and the model's answer.

Shapes: Q query tokens, H heads, N = 1 + g * g image tokens (the ViT's CLS token and its g x g patches).
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .pipeline_catp import DEFAULT_VQA_PROMPT

DEFAULT_OUT = "explain.png"
# k when the model itself keeps every query token: a picture with all of them framed would show no selection.
DEFAULT_KEEP = 8
NUM_QUERY_TOKENS = 32  # BLIP-2's and InstructBLIP's; the loaded model's own count is checked again
# The frame round kept queries: red reads well on every colour of the viridis heatmaps.
KEPT_COLOR = "#e6194b"
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


def _open_image(image: Any):
    from PIL import Image

    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise FileNotFoundError(f"`image` {str(image)!r}: no such file.")
        with Image.open(image) as opened:
            return opened.convert("RGB")
    return image.convert("RGB")


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


def draw_explanation(explanation: Explanation, image: Any, out: str | Path) -> Path:
    """Write the PNG: the image with its patch grid, then one heatmap per query (one colour scale for all, so
    panels compare), titled with its vote share, the kept ones framed. Returns the path written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI backend picked up from the environment
    import matplotlib.pyplot as plt

    maps = explanation.maps
    num_queries, grid = maps.shape[0], maps.shape[1]
    cols = min(8, num_queries)
    rows = -(-num_queries // cols)
    kept = set(explanation.kept)
    figure = plt.figure(figsize=(3.4 + 1.3 * cols, 1.5 + 1.45 * rows), layout="constrained")
    try:
        outer = figure.add_gridspec(1, 2, width_ratios=[3.0, 1.3 * cols])
        image_axes = figure.add_subplot(outer[0])
        # The processor resizes to a square: stretched onto the patch grid, each cell is what one image token saw.
        half = grid - 0.5
        image_axes.imshow(image, extent=(-0.5, half, half, -0.5), interpolation="nearest")
        for line in np.arange(0.5, grid - 1):
            image_axes.axhline(line, color="white", linewidth=0.8, alpha=0.7)
            image_axes.axvline(line, color="white", linewidth=0.8, alpha=0.7)
        image_axes.set_xticks([])
        image_axes.set_yticks([])
        image_axes.set_title(f"image ({grid}x{grid} patches)", fontsize=9)

        panels = outer[1].subgridspec(rows, cols)
        top = float(maps.max()) or 1.0
        heat = None
        panel_axes = []
        for q in range(num_queries):
            axes = figure.add_subplot(panels[q // cols, q % cols])
            panel_axes.append(axes)
            heat = axes.imshow(maps[q], cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            chosen = q in kept
            for spine in axes.spines.values():
                spine.set_edgecolor(KEPT_COLOR if chosen else "#bbbbbb")
                spine.set_linewidth(4.0 if chosen else 0.6)
            axes.set_title(
                f"q{q}  {100 * explanation.shares[q]:.1f}%", fontsize=8,
                color=KEPT_COLOR if chosen else "black", fontweight="bold" if chosen else "normal",
            )
        figure.colorbar(heat, ax=panel_axes, shrink=0.6, label="cross-attention (mean over heads, voting layers)")
        layers = ", ".join(str(p) for p in explanation.layers)
        heading = textwrap.shorten(f"Q: {explanation.question}", 110) + f"    answer: {explanation.answer!r}"
        figure.suptitle(
            f"{heading}\nmethod {explanation.method}, k = {explanation.k} of {num_queries} query tokens kept "
            f"(framed); % = share of the method's votes; maps from cross-attention layer(s) {layers}",
            fontsize=10,
        )
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


# ---- the command ------------------------------------------------------------------------------------------------


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
    from .configuration_catp import PRUNING_METHODS

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

    from .checkpoints import load_catp_config, load_catp_model, resolve_checkpoint

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


__all__ = ["DEFAULT_VQA_PROMPT", "Explanation", "add_arguments", "draw_explanation", "explain", "image_grid", "run",
           "vote_shares"]
