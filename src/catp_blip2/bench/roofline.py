"""The measured roofline of the language model's prefill: what this machine can do at best, not a formula.

A prefill of n prompt tokens on batch B reads every weight of the language model once and does about
2 x (weights of its linear layers) x B x n multiply-adds plus the attention's. On a CPU at batch 1 the read is
the larger cost, so the time has a fixed part that no pruning removes (measured here on blip2-opt-2.7b:
t(n) = 0.149 s + 6.0 ms x n). The roofline time is max(FLOPs / peak, bytes / bandwidth), with the peak matrix
multiply throughput and the memory bandwidth measured on this machine in the bench's dtype by two short
microbenchmarks (`measure_machine`); the bench reports each prefill as a fraction of it.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

# Sizes of the microbenchmarks: a matrix multiply of OPT-2.7b's MLP shape, and a matrix-vector product whose
# matrix (256 MiB) is much larger than any cache, so it streams from memory like the weights do.
MATMUL_SHAPE = (1024, 2560, 10240)
STREAM_BYTES = 256 * 1024**2
REPEATS = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(run: Any, device: torch.device, repeats: int = REPEATS) -> float:
    run()  # warm-up: allocation, kernel selection
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_machine(dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Peak matrix-multiply throughput (FLOP/s) and memory bandwidth (bytes/s) in `dtype` on `device`: the best of
    `REPEATS` runs each, after a warm-up."""
    generator = torch.Generator().manual_seed(0)
    m, k, n = MATMUL_SHAPE
    a = torch.randn(m, k, generator=generator).to(device, dtype)
    b = torch.randn(k, n, generator=generator).to(device, dtype)
    with torch.inference_mode():
        matmul_s = _best_seconds(lambda: a @ b, device)
        element = torch.empty((), dtype=dtype).element_size()
        columns = 16384
        rows = STREAM_BYTES // (element * columns)
        matrix = torch.randn(rows, columns, generator=generator).to(device, dtype)
        vector = torch.randn(columns, generator=generator).to(device, dtype)
        stream_s = _best_seconds(lambda: matrix @ vector, device)
        flat = torch.randn(STREAM_BYTES // 4, generator=generator).to(device)
        read_s = _best_seconds(lambda: flat.sum(), device)
    matvec = rows * columns * element / stream_s
    read = STREAM_BYTES / read_s
    return {
        "matmul_flops_per_s": 2 * m * k * n / matmul_s,
        # The faster of the two reads is what memory can deliver; the weights can be read no faster.
        "memory_bytes_per_s": max(matvec, read),
        "matvec_bytes_per_s": matvec,
        "float32_sum_bytes_per_s": read,
        "method": (
            f"best of {REPEATS} after a warm-up: ({m} x {k}) @ ({k} x {n}) matrix multiply; memory: the faster of a "
            f"({rows} x {columns}) @ ({columns}) matrix-vector product and a float32 sum, {STREAM_BYTES // 1024**2} "
            "MiB each"
        ),
    }


def _weight_bytes_read(lm: nn.Module, head: nn.Module | None) -> int:
    """Bytes a prefill reads: every parameter once, but of the input embedding table only the prompt's rows (left
    out) unless the output layer is tied to it, which reads it whole."""
    table = lm.get_input_embeddings().weight
    tied = head is not None and head.weight is table
    return sum(p.numel() * p.element_size() for p in lm.parameters() if p is not table or tied)


def language_model_shape(model: Any) -> dict[str, Any]:
    """What a prefill of the model's language model costs, independent of the input: weights by kind, bytes."""
    lm = model.language_model
    head = lm.get_output_embeddings()
    linear = {name: m for name, m in lm.named_modules() if isinstance(m, nn.Linear) and m is not head}
    text = model.config.text_config
    # An encoder-decoder's prefill runs the encoder over the prompt and the decoder over one start token.
    decoder = {n for n in linear if n.startswith("decoder.")} if lm.config.is_encoder_decoder else set()
    return {
        "linear_weights": sum(m.weight.numel() for n, m in linear.items() if n not in decoder),
        "decoder_linear_weights": sum(linear[n].weight.numel() for n in decoder),
        "head_weights": head.weight.numel() if head is not None else 0,
        "weight_bytes": _weight_bytes_read(lm, head),
        "layers": getattr(text, "num_hidden_layers", None) or getattr(text, "num_layers", 0),
        "hidden": getattr(text, "hidden_size", None) or getattr(text, "d_model", 0),
    }


def prefill_roofline(shape: dict[str, Any], machine: dict[str, Any], batch_size: int, tokens: int) -> dict[str, float]:
    """The roofline of one prefill of `tokens` prompt tokens per row: FLOPs, bytes read and the bound time.

    FLOPs: 2 per weight of the linear layers per token, the attention's 4 x layers x tokens^2 x hidden per row, and
    the output layer for the last token only (generate keeps only its logits). Encoder-decoder models: the
    encoder's weights per prompt token, the decoder's once per row (its attention is left out: one token)."""
    rows = batch_size * tokens
    flops = (
        2 * shape["linear_weights"] * rows
        + 2 * shape["decoder_linear_weights"] * batch_size
        + 4 * shape["layers"] * tokens * tokens * shape["hidden"] * batch_size
        + 2 * shape["head_weights"] * batch_size
    )
    compute_s = flops / machine["matmul_flops_per_s"]
    memory_s = shape["weight_bytes"] / machine["memory_bytes_per_s"]
    return {
        "prefill_flops": float(flops),
        "prefill_weight_bytes": float(shape["weight_bytes"]),
        "roofline_compute_s": compute_s,
        "roofline_memory_s": memory_s,
        "roofline_prefill_s": max(compute_s, memory_s),
        "roofline_bound": "compute" if compute_s >= memory_s else "memory",
    }


__all__ = ["language_model_shape", "measure_machine", "prefill_roofline"]
