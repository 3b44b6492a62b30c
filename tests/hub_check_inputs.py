"""The same calls, made once through remote code (hub_remote_check.py) and once with catp_blip2 installed.

Imports only torch and transformers-level objects handed in, so the remote-code process can use it.
"""

from __future__ import annotations

from typing import Any

import torch

QUESTIONS = ["what color is the circle ?", "how many squares are there in this picture ?"]
PROMPT = "Question: {} Short answer:"


def model_probe(model: Any, processor: Any, images: list) -> dict:
    """Kept indices, logits and greedy ids of one processor batch."""
    inputs = processor(
        images=images[:2], text=[PROMPT.format(q) for q in QUESTIONS], return_tensors="pt", padding=True,
        padding_side="left",  # a decoder-only model continues from the last position
    )
    with torch.no_grad():
        qformer = {k: inputs[k] for k in ("qformer_input_ids", "qformer_attention_mask") if k in inputs}  # InstructBLIP
        features = model.get_image_features(inputs["pixel_values"], **qformer)
        decoder = {} if model.config.use_decoder_only_language_model else {
            "decoder_input_ids": torch.zeros(inputs["input_ids"].shape[0], 2, dtype=torch.long)}
        logits = model(**inputs, **decoder).logits
        generated = model.generate(**inputs, max_new_tokens=6)
    return {
        "kept_query_indices": features.kept_query_indices.tolist(),
        "logits": logits[:, -3:, :8].flatten().tolist(),
        "logits_shape": list(logits.shape),
        "generated": generated.tolist(),
        "input_length": inputs["input_ids"].shape[1],
    }


def vqa_calls(vqa: Any, image_paths: list[str], images: list) -> dict:
    return {
        "single": vqa(images[0], QUESTIONS[0]),
        "from_path": vqa(image_paths[1], QUESTIONS[1]),
        "batched": vqa(images, QUESTIONS[0], batch_size=2),
        "pairs": vqa([{"image": im, "question": q} for im, q in zip(images, QUESTIONS * len(images))], batch_size=3),
        "beams": vqa(images[0], QUESTIONS[1], num_beams=3, num_return_sequences=2, max_new_tokens=4),
    }


def itt_calls(itt: Any, images: list) -> dict:
    return {
        "new_text": itt(images=images[0], text=PROMPT.format(QUESTIONS[0]), max_new_tokens=6, return_full_text=False),
        "full_text": itt(images=images[1], text=PROMPT.format(QUESTIONS[1]), max_new_tokens=6),
    }
