"""What a benchmark ran: the model's architecture and the machine, as bench.json records them."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ..modeling_catp import CatpBlip2ForConditionalGeneration
from .models import count_parameters


def architecture(model: CatpBlip2ForConditionalGeneration) -> dict[str, Any]:
    """Sizes of the model's parts and their parameter counts (bench.json `architecture`)."""
    config = model.config
    vision, qformer, text = config.vision_config, config.qformer_config, config.text_config
    return {
        "vision": {
            "hidden_size": vision.hidden_size,
            "layers": vision.num_hidden_layers,
            "heads": vision.num_attention_heads,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "image_tokens": (vision.image_size // vision.patch_size) ** 2 + 1,
        },
        "qformer": {
            "hidden_size": qformer.hidden_size,
            "layers": qformer.num_hidden_layers,
            "cross_attention_frequency": qformer.cross_attention_frequency,
        },
        "language_model": {
            "type": text.model_type,
            "hidden_size": getattr(text, "hidden_size", getattr(text, "d_model", None)),
            "layers": text.num_hidden_layers,
            "vocab_size": text.vocab_size,
        },
        "parameters_by_part": {
            name: count_parameters(getattr(model, name))
            for name in ("vision_model", "qformer", "language_projection", "language_model")
        },
    }


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and the thread count torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


__all__ = ["architecture", "device_name", "load_average"]
