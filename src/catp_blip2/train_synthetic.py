"""`catp-blip2 train-synthetic`: train the embedded tiny BLIP-2 on the synthetic shapes task, reproducibly, on a CPU.

    catp-blip2 train-synthetic --out runs/train-synthetic            # ~20 min on 2 cores with the defaults
    catp-blip2 train-synthetic --out runs/train-synthetic --steps 50  # a quick smoke run

The run is a pure function of `--seed`: step s draws its scenes from `numpy.random.default_rng([seed, s])`, so
a run killed and restarted from its last checkpoint (`checkpoint.pt`, written every `--save-every` steps) ends with
the same weights as an uninterrupted one. The trained model and its processor are saved to `OUT/model`
(`save_pretrained`), which is what ships as `catp_blip2/embedded/tiny-vqa`.

Query-token dropout: on a fraction `1 - --keep-all-prob` of the steps the language model sees only a random
subset of k < 32 query tokens (k uniform, subset drawn per sample, order kept). A large pretrained language model
tolerates a shorter soft prompt; a 2-layer one trained only on 32 tokens does not, and then every pruning method
collapses to chance at any k < 32 and nothing can be compared. The dropout makes the tiny model tolerate shorter
prompts without telling it which tokens matter: the selection is still up to the pruning method.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .configuration_catp import CatpConfig
from .modeling_catp import CatpBlip2ForConditionalGeneration
from .synthetic import QUESTIONS_PER_IMAGE, VOCABULARY, draw_scene, questions_for_scene, random_scene
from .tiny import tiny_blip2_config, tiny_processor, tiny_tokenizer

PROMPT = "Question: {} Short answer:"
IMAGE_SIZE, PATCH_SIZE = 48, 8


def embedded_processor():
    """The processor of the embedded model: 48 px images, a word-level tokenizer over the task's words."""
    return tiny_processor(tiny_tokenizer(VOCABULARY), image_size=IMAGE_SIZE)


def embedded_config(vocab_size: int) -> CatpConfig:
    """BLIP-2 structure in miniature: 2-layer ViT (6x6 patches), 4-layer Q-Former with 2 cross-attention layers,
    32 query tokens, 2-layer OPT."""
    blip2 = tiny_blip2_config(
        "opt", vocab_size=vocab_size, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64,
        qformer_layers=4, cross_attention_frequency=2, text_layers=2,
    )
    # No dropout: every step sees fresh scenes, so there is nothing to overfit, and dropout only slows learning.
    blip2.vision_config.attention_dropout = 0.0
    blip2.qformer_config.hidden_dropout_prob = blip2.qformer_config.attention_probs_dropout_prob = 0.0
    blip2.text_config.dropout = blip2.text_config.attention_dropout = 0.0
    return CatpConfig.from_blip2_config(blip2, pruning_method="catp")


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """(1 + grid*grid, dim) fixed 2-D sin-cos embedding (a zero row for CLS): where a patch is, from step 0.

    Learned position embeddings start as noise and a tiny ViT trained for minutes never untangles them, so
    "where is the red object" stays at chance; a sin-cos start makes position readable at once.
    """
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    parts = [torch.sin(ys.flatten()[:, None] * freqs), torch.cos(ys.flatten()[:, None] * freqs),
             torch.sin(xs.flatten()[:, None] * freqs), torch.cos(xs.flatten()[:, None] * freqs)]
    table = torch.cat(parts, dim=1)
    return torch.cat([torch.zeros(1, dim), table], dim=0)


def build_model(processor, seed: int) -> CatpBlip2ForConditionalGeneration:
    torch.manual_seed(seed)
    model = CatpBlip2ForConditionalGeneration(embedded_config(len(processor.tokenizer)))
    with torch.no_grad():
        model.query_tokens.normal_(std=0.5)  # distinct queries from the start (stock BLIP-2 starts them at 0)
        grid = IMAGE_SIZE // PATCH_SIZE
        model.vision_model.embeddings.position_embedding.copy_(
            sincos_position_embedding(grid, model.config.vision_config.hidden_size)[None]
        )
    return model


def make_batch(processor, seed: int, step: int, images_per_step: int) -> dict[str, torch.Tensor]:
    """Scenes of one step: pixel_values (I, 3, 48, 48); text_ids/text_mask/labels (I*3, T), right-padded."""
    rng = np.random.default_rng([seed, step])
    images, prompts, answers = [], [], []
    for _ in range(images_per_step):
        objects = random_scene(rng)
        images.append(draw_scene(objects, rng))
        questions = questions_for_scene(objects, rng)
        while len(questions) < QUESTIONS_PER_IMAGE:  # a one-object scene may offer fewer families
            questions.append(questions[-1])
        for _, question, answer in questions:
            prompts.append(PROMPT.format(question))
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
    return {"pixel_values": pixel_values, "text_ids": text_ids, "text_mask": (labels != -100) | (text_ids != tokenizer.pad_token_id),
            "labels": labels}


def training_loss(model, batch: dict[str, torch.Tensor], keep: int | None, generator: torch.Generator) -> torch.Tensor:
    """Answer-token cross-entropy with the language model seeing `keep` random query tokens per sample (None: all)."""
    features = model.get_image_features(batch["pixel_values"]).pooler_output  # (I, 32, D)
    features = features.repeat_interleave(batch["text_ids"].shape[0] // features.shape[0], dim=0)
    if keep is not None:
        order = torch.rand(features.shape[:2], generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values
        features = torch.gather(features, 1, order[..., None].expand(-1, -1, features.shape[-1]))
    text_embeds = model.get_input_embeddings()(batch["text_ids"])
    inputs_embeds = torch.cat([features, text_embeds], dim=1)
    image_mask = torch.ones(features.shape[:2], dtype=torch.long)
    attention_mask = torch.cat([image_mask, batch["text_mask"].long()], dim=1)
    labels = torch.cat([torch.full(features.shape[:2], -100, dtype=torch.long), batch["labels"]], dim=1)
    logits = model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/train-synthetic"), help="checkpoints, log, and OUT/model")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--images-per-step", type=int, default=32, help=f"images per step ({QUESTIONS_PER_IMAGE} questions each)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--keep-all-prob", type=float, default=0.5, help="fraction of steps that show all 32 query tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=250)


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "images_per_step", "save_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)!r}.")
    if not 0.0 <= args.keep_all_prob <= 1.0:
        raise ValueError(f"--keep-all-prob must be in [0, 1]; got {args.keep_all_prob!r}.")
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive; got {args.lr!r}.")


def run(args: argparse.Namespace) -> int:
    _check(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    processor = embedded_processor()
    model = build_model(processor, args.seed).train()
    model.config.pruning_method = "none"  # training sees all tokens from get_image_features; dropout is ours
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    start = 0
    checkpoint_path = out / "checkpoint.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        if state["settings"] != _settings(args):
            raise ValueError(
                f"{checkpoint_path} was written with settings {state['settings']}, not {_settings(args)}; "
                "use another --out or delete it."
            )
        model.load_state_dict(state["model"])
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
        keep = None if rng.random() < args.keep_all_prob else int(rng.integers(1, model.config.num_query_tokens))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        loss = training_loss(model, make_batch(processor, args.seed, step, args.images_per_step), keep, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.3f}", keep=keep or 32)
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), "keep": keep or 32}) + "\n")
            log.flush()
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
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
    return {"steps": args.steps, "images_per_step": args.images_per_step, "lr": args.lr,
            "keep_all_prob": args.keep_all_prob, "seed": args.seed}
