"""`catp-blip2 train-synthetic`: train the embedded tiny BLIP-2 on the synthetic shapes task, reproducibly, on a CPU.

    catp-blip2 train-synthetic --out runs/train-synthetic            # ~19 min on 1 core with the defaults
    catp-blip2 train-synthetic --out runs/train-synthetic --steps 50  # a quick smoke run

The run is a pure function of `--seed`: step s draws its scenes from `numpy.random.default_rng([seed, s])`, so
a run killed and restarted from its last checkpoint (`checkpoint.pt`, written every `--save-every` steps) ends with
the same weights as an uninterrupted one. The trained model and its processor are saved to `OUT/model`
(`save_pretrained`), which is what ships as `catp_blip2/embedded/tiny-vqa`.

Query-token dropout: on a fraction `1 - --keep-all-prob` of the steps the language model sees only a random
subset of k query tokens, k uniform in [`--min-keep`, 31] (subset drawn per sample, order kept). A large pretrained
language model tolerates a shorter soft prompt; a 2-layer one trained only on 32 tokens does not, and then every
pruning method collapses to chance at any k < 32 and nothing can be compared. The dropout makes the tiny model
tolerate shorter prompts without telling it which tokens matter: the selection is still up to the pruning method.
The floor matters: trained down to k = 1, every query token learns to carry the whole scene and any 2 tokens
answer 90% of the questions (the 32 tokens no longer matter); with a floor of 16, k < 16 is as unfamiliar to the
language model as any k < 32 is to BLIP-2's OPT, and accuracy falls as tokens are pruned.

Two more departures from a stock random start make the model learn in minutes (see `build_model` and `PatchProbe`):
queries that start out attending to single grid cells, and a throw-away patch-classification head on the ViT.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import InstructBlipProcessor
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from ..configuration_catp import CatpConfig
from ..configuration_catp_instructblip import CatpInstructBlipConfig
from ..modeling_catp import CatpBlip2ForConditionalGeneration
from ..modeling_catp_instructblip import CatpInstructBlipForConditionalGeneration
from ..pipeline_catp import DEFAULT_VQA_PROMPT
from .shapes import COLORS, GRID, QUESTIONS_PER_IMAGE, SHAPES, VOCABULARY, draw_scene, questions_for_scene, random_scene
from .tiny import as_instructblip_config, tiny_blip2_config, tiny_processor, tiny_tokenizer

IMAGE_SIZE, PATCH_SIZE = 48, 16  # one patch per cell of the scenes' 3x3 grid
POSITION_SCALE, CROSS_ATTENTION_SCALE = 3.0, 2.0  # see build_model
PROBE_SPLITS = (1 + len(COLORS), 1 + len(SHAPES), GRID, GRID)  # colour / shape (0 = empty cell), row, column
PROBE_CLASSES = sum(PROBE_SPLITS)


FAMILIES = ("blip2", "instructblip")


def embedded_processor(family: str = "blip2"):
    """The processor of an embedded model: 48 px images, a word-level tokenizer over the task's words (InstructBLIP:
    the same tokenizer for the Q-Former's copy of the prompt)."""
    if family == "instructblip":
        image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        return InstructBlipProcessor(
            image_processor, tiny_tokenizer(VOCABULARY), tiny_tokenizer(VOCABULARY), num_query_tokens=32
        )
    return tiny_processor(tiny_tokenizer(VOCABULARY), image_size=IMAGE_SIZE)


def embedded_config(vocab_size: int, family: str = "blip2") -> Any:
    """BLIP-2 structure in miniature: 2-layer ViT (3x3 patches of 16 px), 4-layer Q-Former with 2 cross-attention layers,
    32 query tokens, 2-layer OPT; for InstructBLIP the same, its Q-Former also reading the prompt."""
    blip2 = tiny_blip2_config(
        "opt", vocab_size=vocab_size, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64,
        qformer_layers=4, cross_attention_frequency=2, text_layers=2,
    )
    # No dropout: every step sees fresh scenes, so there is nothing to overfit, and dropout only slows learning.
    blip2.vision_config.attention_dropout = 0.0
    blip2.qformer_config.hidden_dropout_prob = blip2.qformer_config.attention_probs_dropout_prob = 0.0
    blip2.text_config.dropout = blip2.text_config.attention_dropout = 0.0
    if family == "instructblip":
        return CatpInstructBlipConfig.from_stock_config(as_instructblip_config(blip2), pruning_method="catp")
    return CatpConfig.from_blip2_config(blip2, pruning_method="catp")


def build_model(processor, seed: int, family: str = "blip2") -> Any:
    """A freshly initialised embedded model whose query tokens start out looking at single grid cells.

    Trained from a stock random start, the Q-Former's queries attend to every patch alike, each query token carries
    a blend of the whole scene, and what is where (which colour goes with which shape, which column) is lost: in
    short CPU runs it learned to count but left the colour-to-shape and position questions at chance. So the start
    is spatial, like the anchor queries of DETR: the position embeddings of the 9 patches (one per grid cell) are
    orthogonal, each query starts on the direction of one cell, and the first cross-attention layer's query and key
    projections start as scaled identities, so each query first attends mostly to its cell. Every cell gets 3 or 4
    queries, and which ones is a seeded random permutation: with cell j mod 9 for query j, the first 9 queries
    covered the 9 cells and "keep the first k" (`position`) was favoured by construction; real BLIP-2 queries have
    no such order. Everything stays trainable; only the starting point differs, and the result is a stock BLIP-2
    checkpoint.
    """
    torch.manual_seed(seed)
    config = embedded_config(len(processor.tokenizer), family)
    model = (CatpInstructBlipForConditionalGeneration if family == "instructblip" else CatpBlip2ForConditionalGeneration)(
        config
    )
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.vision_config.hidden_size
    with torch.no_grad():
        directions, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator))  # orthonormal rows
        num_positions = model.vision_model.embeddings.position_embedding.shape[1]  # CLS + one patch per cell
        model.vision_model.embeddings.position_embedding.copy_(POSITION_SCALE * directions[None, :num_positions])
        queries = model.config.num_query_tokens
        cells = (torch.arange(queries) % (num_positions - 1))[torch.randperm(queries, generator=generator)]
        noise = 0.1 * torch.randn(model.config.num_query_tokens, hidden, generator=generator)
        model.query_tokens.copy_((directions[1 + cells] + noise)[None])  # distinct queries, even on one cell
        first_cross = model.qformer.encoder.layer[0].crossattention.attention
        for projection in (first_cross.query, first_cross.key):
            projection.weight.copy_(CROSS_ATTENTION_SCALE * torch.eye(hidden))
            projection.bias.zero_()
    return model


class PatchProbe(nn.Module):
    """Stand-in for vision pre-training: predicts each patch's colour, shape, row and column from the ViT output.

    BLIP-2's ViT comes pre-trained; ours starts from noise, and learning to see only through the answers is slow.
    This linear head adds a supervised loss on the patches (the task's generator knows what each cell holds) and is
    thrown away after training: it is not part of the saved model.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.head = nn.Linear(hidden_size, PROBE_CLASSES)

    def loss(self, patch_states: torch.Tensor, cell_contents: torch.Tensor) -> torch.Tensor:
        """patch_states (I, 9, D) without CLS; cell_contents (I, 9, 2) long: colour, shape (0 = empty).
        Patches are in row-major order, so each one's row and column follow from its index."""
        cell = torch.arange(patch_states.shape[1], device=patch_states.device).expand(patch_states.shape[0], -1)
        targets = torch.cat([cell_contents, torch.stack([cell // GRID, cell % GRID], dim=-1)], dim=-1)
        logits = self.head(patch_states).split(PROBE_SPLITS, dim=-1)
        return sum(
            nn.functional.cross_entropy(part.flatten(0, 1), targets[..., i].flatten()) for i, part in enumerate(logits)
        )


def make_batch(processor, seed: int, step: int, images_per_step: int) -> dict[str, torch.Tensor]:
    """Scenes of one step: pixel_values (I, 3, 48, 48); text_ids/text_mask/labels (I*3, T), right-padded;
    cell_contents (I, 9, 2): each grid cell's colour and shape (0 = empty, else 1 + index), row-major."""
    rng = np.random.default_rng([seed, step])
    images, prompts, answers = [], [], []
    cell_contents = torch.zeros(images_per_step, GRID * GRID, 2, dtype=torch.long)
    colors = list(COLORS)
    for index in range(images_per_step):
        objects = random_scene(rng)
        for obj in objects:
            cell_contents[index, obj.row * GRID + obj.column] = torch.tensor(
                [1 + colors.index(obj.color), 1 + SHAPES.index(obj.shape)]
            )
        images.append(draw_scene(objects, rng))
        questions = questions_for_scene(objects, rng)
        while len(questions) < QUESTIONS_PER_IMAGE:  # a one-object scene may offer fewer families
            questions.append(questions[-1])
        for _, question, answer in questions:
            prompts.append(DEFAULT_VQA_PROMPT.format(question))
            answers.append(answer)
    tokenizer = processor.tokenizer
    pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    prompt_ids = tokenizer(prompts)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    rows = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompt_ids, answer_ids)]
    length = max(map(len, rows))
    text_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (row, prompt) in enumerate(zip(rows, prompt_ids)):
        text_ids[i, : len(row)] = torch.tensor(row)
        labels[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :])
    batch = {"pixel_values": pixel_values, "text_ids": text_ids, "text_mask": (labels != -100) | (text_ids != tokenizer.pad_token_id),
             "labels": labels, "cell_contents": cell_contents}
    if hasattr(processor, "qformer_tokenizer"):  # InstructBLIP: the Q-Former reads each question's prompt
        qformer = processor.qformer_tokenizer(prompts, padding=True, return_tensors="pt")
        batch["qformer_ids"], batch["qformer_mask"] = qformer["input_ids"], qformer["attention_mask"]
    return batch


def training_loss(
    model, probe: PatchProbe, batch: dict[str, torch.Tensor], keep: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Answer-token cross-entropy, the language model seeing `keep` random query tokens per sample (None: all),
    plus the patch probe's loss."""
    questions_per_image = batch["text_ids"].shape[0] // batch["pixel_values"].shape[0]
    if "qformer_ids" in batch:  # InstructBLIP: features per question, the Q-Former given its prompt
        image_outputs = model.get_image_features(
            batch["pixel_values"].repeat_interleave(questions_per_image, dim=0),
            qformer_input_ids=batch["qformer_ids"], qformer_attention_mask=batch["qformer_mask"],
        )
        patches = image_outputs.last_hidden_state[::questions_per_image, 1:]
        features = image_outputs.pooler_output  # (I*3, 32, D)
    else:
        image_outputs = model.get_image_features(batch["pixel_values"])
        patches = image_outputs.last_hidden_state[:, 1:]
        features = image_outputs.pooler_output.repeat_interleave(questions_per_image, dim=0)  # (I, 32, D) -> (I*3, ...)
    probe_loss = probe.loss(patches, batch["cell_contents"])
    if keep is not None:
        order = torch.rand(features.shape[:2], generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values
        features = torch.gather(features, 1, order[..., None].expand(-1, -1, features.shape[-1]))
    text_embeds = model.get_input_embeddings()(batch["text_ids"])
    inputs_embeds = torch.cat([features, text_embeds], dim=1)
    image_mask = torch.ones(features.shape[:2], dtype=torch.long)
    attention_mask = torch.cat([image_mask, batch["text_mask"].long()], dim=1)
    labels = torch.cat([torch.full(features.shape[:2], -100, dtype=torch.long), batch["labels"]], dim=1)
    logits = model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
    answer_loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    return answer_loss + probe_loss


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/train-synthetic"),
                        help="folder for checkpoint.pt, train_log.jsonl and the trained OUT/model; a rerun resumes "
                             "from its checkpoint (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10000, help="optimizer steps in the whole run (default: %(default)s)")
    parser.add_argument("--images-per-step", type=int, default=32,
                        help=f"scenes per step, {QUESTIONS_PER_IMAGE} questions each (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak AdamW learning rate, after a 200-step warmup and before the cosine decay "
                             "(default: %(default)s)")
    parser.add_argument("--keep-all-prob", type=float, default=0.5,
                        help="fraction of steps on which the language model sees all 32 query tokens; the others "
                             "drop tokens (default: %(default)s)")
    parser.add_argument("--min-keep", type=int, default=16,
                        help="fewest query tokens a dropout step shows, k uniform in [this, 31] (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights, the scenes and the dropout; the run is a function of it "
                             "(default: %(default)s)")
    parser.add_argument("--family", default="blip2", choices=FAMILIES,
                        help="which model to train: BLIP-2 (ships as 'embedded') or InstructBLIP, whose Q-Former also "
                             "reads the question (ships as 'embedded-instructblip') (default: %(default)s)")
    parser.add_argument("--save-every", type=int, default=250,
                        help="write checkpoint.pt every this many steps (default: %(default)s)")


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "images_per_step", "save_every"):
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be an integer >= 1; got {value!r}.")
    if not 0.0 <= args.keep_all_prob <= 1.0:
        raise ValueError(f"`--keep-all-prob` must be in [0, 1]; got {args.keep_all_prob!r}.")
    if isinstance(args.min_keep, bool) or not isinstance(args.min_keep, int) or not 1 <= args.min_keep < 32:
        raise ValueError(f"`--min-keep` must be an integer in 1..31 (fewer than the 32 query tokens); got {args.min_keep!r}.")
    if not args.lr > 0:
        raise ValueError(f"`--lr` must be positive; got {args.lr!r}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder; {str(out)!r} is a file.")


def run(args: argparse.Namespace) -> int:
    _check(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    processor = embedded_processor(args.family)
    model = build_model(processor, args.seed, args.family).train()
    model.config.pruning_method = "none"  # training sees all tokens from get_image_features; dropout is ours
    probe = PatchProbe(model.config.vision_config.hidden_size)
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    start = 0
    checkpoint_path = out / "checkpoint.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        if state["settings"] != _settings(args):
            raise ValueError(
                f"`--out` {str(out)!r}: {checkpoint_path} was written with settings {state['settings']}, not "
                f"{_settings(args)}; use another `--out` or delete it."
            )
        model.load_state_dict(state["model"])
        probe.load_state_dict(state["probe"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
        start = state["step"]
        print(f"resuming from step {start}")

    log = (out / "train_log.jsonl").open("a")
    began = time.perf_counter()
    progress = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="train-synthetic")
    for step in progress:
        rng = np.random.default_rng([args.seed, step, 1])
        keep = None if rng.random() < args.keep_all_prob else int(rng.integers(args.min_keep, model.config.num_query_tokens))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        loss = training_loss(model, probe, make_batch(processor, args.seed, step, args.images_per_step), keep, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.3f}", keep=keep or 32)
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), "keep": keep or 32}) + "\n")
            log.flush()
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            state = {"model": model.state_dict(), "probe": probe.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                     "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                     "settings": _settings(args)}
            torch.save(state, checkpoint_path.with_suffix(".tmp"))
            checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)  # atomic: a kill never leaves half a file
    log.close()

    model.eval()
    model.config.pruning_method = "catp"
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    print(f"saved {out / 'model'} after {args.steps} steps ({time.perf_counter() - began:.0f} s this run)")
    return 0


def _settings(args: argparse.Namespace) -> dict:
    settings = {"steps": args.steps, "images_per_step": args.images_per_step, "lr": args.lr,
                "keep_all_prob": args.keep_all_prob, "min_keep": args.min_keep, "seed": args.seed,
                "query_cells": "seeded permutation"}  # checkpoints of the j mod 9 start are not resumed into this one
    if args.family != "blip2":
        settings["family"] = args.family
    return settings
