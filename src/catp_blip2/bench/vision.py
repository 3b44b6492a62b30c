"""The vision encoder's side of `catp-blip2 bench`: tokens left after ToMe merging, the vision roofline, and the
flags on rows that beat a roofline (a measurement error, never a result).

A vision pass of B images runs each ViT layer over T_l tokens: its attention's linear layers (qkv, projection)
over T_l, the attention itself (4 x T_l^2 x hidden FLOPs), then r tokens merge and the MLP runs over T_l - r
(`vision_merge.merge_count`). Its roofline is max(FLOPs / peak, weight bytes / bandwidth), with the peak and the
bandwidth of `roofline.measure_machine` (the best of the runs interleaved with the timed calls).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..vision_merge import merge_count, tokens_left


def _weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def vision_shape(model: Any) -> dict[str, Any]:
    """What a vision pass costs, independent of the input: tokens, layers, linear weights by part, bytes read."""
    vision = model.vision_model
    config = model.config.vision_config
    layer = vision.encoder.layers[0]
    patches = model.config.num_patch_tokens
    return {
        "tokens": patches + 1,
        "patches": patches,
        "layers": len(vision.encoder.layers),
        "hidden": config.hidden_size,
        "attention_linear_weights": _weights(layer.self_attn),
        "mlp_linear_weights": _weights(layer.mlp),
        "patch_embedding_weights": vision.embeddings.patch_embedding.weight.numel(),
        "weight_bytes": sum(p.numel() * p.element_size() for p in vision.parameters()),
    }


def vision_roofline(shape: dict[str, Any], machine: dict[str, Any], batch_size: int, r: int) -> dict[str, Any]:
    """The roofline of one vision pass of `batch_size` images merging r tokens per layer."""
    tokens = shape["tokens"]
    flops = 2 * shape["patch_embedding_weights"] * shape["patches"]
    for _ in range(shape["layers"]):
        merged = merge_count(tokens, r)
        flops += 2 * shape["attention_linear_weights"] * tokens + 4 * tokens * tokens * shape["hidden"]
        flops += 2 * shape["mlp_linear_weights"] * (tokens - merged)
        tokens -= merged
    flops *= batch_size
    compute_s = flops / machine["matmul_flops_per_s"]
    memory_s = shape["weight_bytes"] / machine["memory_bytes_per_s"]
    return {
        "vision_tokens_left": tokens_left(shape["tokens"], r, shape["layers"]),
        "vision_flops": float(flops),
        "roofline_vision_s": max(compute_s, memory_s),
        "roofline_vision_bound": "compute" if compute_s >= memory_s else "memory",
    }


def add_vision_rooflines(
    rows: list[dict[str, Any]], configs: list[Any], shape: dict[str, Any], machine: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each row (one per configuration, in `configs` order) with its vision tokens, vision roofline and speed-up
    against stock, and both rooflines' measurement-error flags: a stage faster than its roofline means the roofline
    was measured low (a busy CPU during the microbenchmarks) or the stage was mis-timed, not that it beat physics."""
    stock_vision = next(row["vision_s"] for row in rows if row["method"] == "stock")
    for row, config in zip(rows, configs):
        r = getattr(config, "r", 0)
        row["vision_merge_per_layer"] = r
        row.update(vision_roofline(shape, machine, row["batch_size"], r))
        row["vision_speedup_vs_stock"] = stock_vision / row["vision_s"]
        row["vision_fraction_of_roofline"] = row["roofline_vision_s"] / row["vision_s"]
        row["vision_measurement_error"] = row["vision_fraction_of_roofline"] > 1.0
        if "prefill_fraction_of_roofline" in row:
            row["prefill_measurement_error"] = row["prefill_fraction_of_roofline"] > 1.0
    return rows


__all__ = ["add_vision_rooflines", "vision_roofline", "vision_shape"]
