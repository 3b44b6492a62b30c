"""The bench's inputs: random images and a prompt laid out as the model's processor lays it out."""

from __future__ import annotations

from typing import Any

import torch


def make_inputs(
    model: Any, batch_size: int, prompt_tokens: int, seed: int
) -> dict[str, torch.Tensor]:
    """Random images and a prompt as `Blip2Processor` lays it out: Q `<image>` placeholders, BOS, T-1 text tokens.

    Returns pixel_values (B, 3, S, S) in the vision dtype, input_ids and attention_mask (B, Q + T), and for
    InstructBLIP qformer_input_ids / qformer_attention_mask (B, T).
    """
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    vision_dtype = model.vision_model.embeddings.patch_embedding.weight.dtype
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator).to(vision_dtype)
    text = config.text_config
    special = {config.image_token_id, text.bos_token_id, text.eos_token_id, text.pad_token_id}
    vocabulary = torch.tensor([i for i in range(min(text.vocab_size, 60_000)) if i not in special])
    words = vocabulary[torch.randint(len(vocabulary), (batch_size, prompt_tokens - 1), generator=generator)]
    placeholders = torch.full((batch_size, config.num_query_tokens), config.image_token_id)
    bos = torch.full((batch_size, 1), text.bos_token_id)
    input_ids = torch.cat([placeholders, bos, words], dim=1)
    inputs = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if "qformer_input_ids" in model.family.extra_inputs:  # InstructBLIP's Q-Former reads the prompt too
        qformer_vocabulary = config.qformer_config.vocab_size
        inputs["qformer_input_ids"] = torch.randint(
            1, qformer_vocabulary, (batch_size, prompt_tokens), generator=generator
        )
        inputs["qformer_attention_mask"] = torch.ones_like(inputs["qformer_input_ids"])
    return {name: tensor.to(model.device) for name, tensor in inputs.items()}


__all__ = ["make_inputs"]
