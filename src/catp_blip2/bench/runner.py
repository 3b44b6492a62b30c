"""`catp-blip2 bench`: speed and memory of CATP against stock BLIP-2 on the same weights, and against the FLOP ideal.

One run builds (or loads) one CATP model and a stock `Blip2ForConditionalGeneration` that shares its modules
(`bench_models.stock_twin`), then for every batch size times `generate` for stock and for CATP at every k, in
interleaved order (repeat r runs every configuration once), after warm-up runs. Every timed run is split into
stages by forward hooks on the shared modules (timestamps taken after a CUDA synchronise):

- `vision_s`: the vision encoder;
- `qformer_scoring_s`: Q-Former start to language projection end (Q-Former, attention recording, scoring,
  selection, projection);
- `scoring_s`: what CATP adds inside that: the voting layers' probability recomputation (from the end of each
  cross-attention module to the start of its output block, where the recording hook runs) plus Q-Former end to
  projection start (scores, top-k, gather). For stock it measures the same gaps, i.e. ~0;
- `prefill_s`: the language model's first forward (the whole prompt; the first new token comes out of it);
- `time_to_first_token_s`: `generate` start to the end of that first forward;
- `decode_per_token_s`: median of the language model's later forwards (one new token each);
- `end_to_end_s`: the whole `generate` call.

Outputs in `--out`: `bench.json` (everything, per configuration and batch size), `bench.md` (tables) and `bench.png`.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import transformers
from torch import nn

from .models import NAMED_MODELS, count_parameters, load_bench_model, parse_dtype, stock_twin
from .report import write_markdown, write_plot
from ..modeling_catp import CatpBlip2ForConditionalGeneration

DEFAULT_KEEP = (32, 16, 8, 4)
STAGES = (
    "end_to_end_s",
    "vision_s",
    "qformer_scoring_s",
    "scoring_s",
    "prefill_s",
    "time_to_first_token_s",
    "decode_per_token_s",
    "other_s",
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- arguments --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny",
        help=f"one of {list(NAMED_MODELS)} (random weights for named architectures), a checkpoint folder or a Hub id",
    )
    parser.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP), help="k values for CATP")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (Q-Former stays fp32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration and batch size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration and batch size first")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="T: text tokens in the prompt (BOS included)")
    parser.add_argument("--new-tokens", type=int, default=4, help="tokens generated per run (forced, greedy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and inputs")
    parser.add_argument("--out", required=True, help="output folder (bench.json, bench.md, bench.png)")


@dataclass(frozen=True)
class BenchSettings:
    """Validated settings of one benchmark run."""

    model: str
    keep: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    repeats: int
    warmup: int
    prompt_tokens: int
    new_tokens: int
    seed: int
    out: Path


def _positive_ints(name: str, values: list[int], minimum: int = 1) -> tuple[int, ...]:
    if not values:
        raise ValueError(f"`{name}` needs at least one value; got none.")
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"`{name}` values must be integers >= {minimum}; got {bad[0]!r} in {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` values must be distinct; got {values}.")
    return tuple(values)


def validate(args: argparse.Namespace) -> BenchSettings:
    """Check the parsed arguments; a bad value raises a ValueError naming the option, the value and what is allowed."""
    keep = _positive_ints("--keep", list(args.keep))
    batch_sizes = _positive_ints("--batch-sizes", list(args.batch_sizes))
    for name, value, minimum, why in (
        ("--repeats", args.repeats, 1, ""),
        ("--warmup", args.warmup, 0, ""),
        ("--prompt-tokens", args.prompt_tokens, 1, " (the BOS token counts)"),
        ("--new-tokens", args.new_tokens, 2, " (the first comes from prefill; decode needs at least one more)"),
    ):
        if value < minimum:
            raise ValueError(f"`{name}` must be an integer >= {minimum}{why}; got {value!r}.")
    dtype = parse_dtype(args.dtype)
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise ValueError(f"`--device` must be 'cpu' or 'cuda[:N]'; got {args.device!r}.") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"`--device` must be 'cpu' or 'cuda[:N]'; got {args.device!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--device` {args.device!r}: CUDA is not available on this machine; use 'cpu'.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder; {str(out)!r} is a file.")
    return BenchSettings(
        model=args.model,
        keep=keep,
        batch_sizes=batch_sizes,
        dtype=dtype,
        device=device,
        repeats=args.repeats,
        warmup=args.warmup,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        seed=args.seed,
        out=out,
    )


# ---- memory -----------------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one run.

    CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (tensors only, not the allocator's
    cache). CPU: the process's resident-set high-water mark (VmHWM in /proc/self/status), reset before each run by
    writing 5 to /proc/self/clear_refs, after handing freed heap back to the OS (glibc `malloc_trim`). That is all
    resident memory of the process: weights, activations, KV cache, allocator slack and the Python runtime. The
    part above the resident size at the start of the run (`above_baseline`) is what the run itself added.
    Where clear_refs cannot be written, the lifetime high-water mark is reported and said so in `method`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._libc = None
        if device.type == "cpu":
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None
            self.resettable = self._try_reset()
        else:
            self.resettable = True
        self.method = self._describe()
        self.baseline = 0

    def _describe(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (tensors), peak counters reset before each run"
        if self.resettable:
            return "process resident-set high-water mark (VmHWM), reset before each run via /proc/self/clear_refs"
        return "process resident-set high-water mark (lifetime; /proc/self/clear_refs not writable)"

    @staticmethod
    def _status(field_name: str) -> int:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    def _try_reset(self) -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # freed heap of earlier runs would otherwise count as this run's residency
        if self.resettable:
            self._try_reset()
        self.baseline = self._status("VmRSS")

    def stop(self) -> tuple[int, int]:
        """(peak bytes, peak bytes above the start of the run)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._status("VmHWM")
        return peak, max(0, peak - self.baseline)


# ---- stage clock ------------------------------------------------------------------------------------------------


@dataclass
class RunTimes:
    """Timestamps of one `generate` call, filled by `StageClock` hooks."""

    marks: dict[str, float] = field(default_factory=dict)
    lm_calls: list[tuple[float, float]] = field(default_factory=list)
    recording_gaps: list[float] = field(default_factory=list)


class StageClock:
    """Forward hooks on the modules the CATP and stock models share, giving per-stage times of each run.

    Hooks run in registration order; these are registered before any `generate`, so on a cross-attention module
    this clock's hook runs before CATP's recording hook (registered inside each call), and the time until the
    module's output block starts is the recording's cost.
    """

    def __init__(self, model: CatpBlip2ForConditionalGeneration, device: torch.device) -> None:
        self.device = device
        self.run: RunTimes | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._open_xattn: float | None = None
        for name, module in (
            ("vision", model.vision_model),
            ("qformer", model.qformer),
            ("projection", model.language_projection),
        ):
            self._handles.append(module.register_forward_pre_hook(self._mark(f"{name}_start")))
            self._handles.append(module.register_forward_hook(self._mark(f"{name}_end")))
        self._handles.append(model.language_model.register_forward_pre_hook(self._lm_start))
        self._handles.append(model.language_model.register_forward_hook(self._lm_end))
        for layer in model.qformer.encoder.layer:
            if layer.has_cross_attention:
                self._handles.append(layer.crossattention.attention.register_forward_hook(self._xattn_end))
                self._handles.append(layer.crossattention.output.register_forward_pre_hook(self._xattn_output))

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _mark(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if self.run is not None:
                self.run.marks[name] = self.now()

        return hook

    def _lm_start(self, *_: Any) -> None:
        if self.run is not None:
            self.run.lm_calls.append((self.now(), float("nan")))

    def _lm_end(self, *_: Any) -> None:
        if self.run is not None:
            start, _ = self.run.lm_calls[-1]
            self.run.lm_calls[-1] = (start, self.now())

    def _xattn_end(self, *_: Any) -> None:
        if self.run is not None:
            self._open_xattn = self.now()

    def _xattn_output(self, *_: Any) -> None:
        if self.run is not None and self._open_xattn is not None:
            self.run.recording_gaps.append(self.now() - self._open_xattn)
            self._open_xattn = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def stage_times(run: RunTimes, start: float, end: float, new_tokens: int) -> dict[str, float]:
    """Seconds per stage of one run (see the module docstring)."""
    m = run.marks
    if len(run.lm_calls) != new_tokens:
        raise RuntimeError(
            f"expected {new_tokens} language-model forwards (1 prefill + {new_tokens - 1} decode), saw "
            f"{len(run.lm_calls)}: the generation loop changed; the stage split would be wrong"
        )
    prefill_start, prefill_end = run.lm_calls[0]
    decode = [b - a for a, b in run.lm_calls[1:]]
    times = {
        "end_to_end_s": end - start,
        "vision_s": m["vision_end"] - m["vision_start"],
        "qformer_scoring_s": m["projection_end"] - m["qformer_start"],
        "scoring_s": sum(run.recording_gaps) + (m["projection_start"] - m["qformer_end"]),
        "prefill_s": prefill_end - prefill_start,
        "time_to_first_token_s": prefill_end - start,
        "decode_per_token_s": float(np.median(decode)),
    }
    accounted = times["vision_s"] + times["qformer_scoring_s"] + times["prefill_s"] + sum(decode)
    times["other_s"] = times["end_to_end_s"] - accounted
    return times


# ---- inputs and runs --------------------------------------------------------------------------------------------


def make_inputs(
    model: CatpBlip2ForConditionalGeneration, batch_size: int, prompt_tokens: int, seed: int
) -> dict[str, torch.Tensor]:
    """Random images and a prompt as `Blip2Processor` lays it out: Q `<image>` placeholders, BOS, T-1 text tokens.

    Returns pixel_values (B, 3, S, S) in the vision dtype, input_ids and attention_mask (B, Q + T).
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
    device = model.device
    return {
        "pixel_values": pixel_values.to(device),
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
    }


@dataclass(frozen=True)
class Configuration:
    """Stock BLIP-2, or CATP keeping k query tokens."""

    name: str
    k: int
    catp: bool


def configurations(keep: tuple[int, ...], num_queries: int) -> list[Configuration]:
    return [Configuration("stock", num_queries, False)] + [Configuration(f"catp-k{k}", k, True) for k in keep]


def summarise(values: list[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation), min and max."""
    array = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


def command_line(settings: BenchSettings) -> list[str]:
    """The arguments that reproduce `settings` (for the record in bench.json)."""
    return [
        "--model", settings.model,
        "--keep", *map(str, settings.keep),
        "--batch-sizes", *map(str, settings.batch_sizes),
        "--dtype", str(settings.dtype).replace("torch.", ""),
        "--device", str(settings.device),
        "--repeats", str(settings.repeats),
        "--warmup", str(settings.warmup),
        "--prompt-tokens", str(settings.prompt_tokens),
        "--new-tokens", str(settings.new_tokens),
        "--seed", str(settings.seed),
        "--out", str(settings.out),
    ]  # fmt: skip


def run_benchmark(settings: BenchSettings, argv: list[str] | None = None) -> dict[str, Any]:
    """Build the model, time every configuration at every batch size, and return the `bench.json` content."""
    load_before = _load_average()
    log(f"building {settings.model!r} ({str(settings.dtype).replace('torch.', '')}, {settings.device})")
    built = time.perf_counter()
    model = load_bench_model(settings.model, settings.dtype, settings.device, seed=settings.seed)
    stock = stock_twin(model)
    num_queries = model.config.num_query_tokens
    too_big = [k for k in settings.keep if k > num_queries]
    if too_big:
        raise ValueError(f"`--keep` values must be in 1..{num_queries} (num_query_tokens); got {too_big[0]}.")
    parameters = count_parameters(model)
    log(f"built in {time.perf_counter() - built:.1f} s: {parameters:,} parameters")

    model.config.pruning_method = "catp"
    clock = StageClock(model, settings.device)
    memory = PeakMemory(settings.device)
    text_pad = model.config.text_config.pad_token_id
    generate_kwargs = {
        "max_new_tokens": settings.new_tokens,
        "min_new_tokens": settings.new_tokens,  # no early EOS: every configuration does the same work
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": text_pad if text_pad is not None else model.config.text_config.eos_token_id,
    }
    configs = configurations(settings.keep, num_queries)
    T = settings.prompt_tokens
    results: list[dict[str, Any]] = []
    try:
        for batch_size in settings.batch_sizes:
            inputs = make_inputs(model, batch_size, T, settings.seed)
            samples: dict[str, list[dict[str, float]]] = {c.name: [] for c in configs}
            peaks: dict[str, list[tuple[int, int]]] = {c.name: [] for c in configs}
            outputs: dict[str, list[torch.Tensor]] = {c.name: [] for c in configs}

            def one_run(config: Configuration, timed: bool) -> None:
                if config.catp:
                    model.config.num_kept_query_tokens = config.k
                runner = model if config.catp else stock
                if timed:
                    memory.start()
                clock.run = RunTimes()
                start = clock.now()
                sequences = runner.generate(**inputs, **generate_kwargs)
                end = clock.now()
                run, clock.run = clock.run, None
                if timed:
                    peaks[config.name].append(memory.stop())
                    samples[config.name].append(stage_times(run, start, end, settings.new_tokens))
                    outputs[config.name].append(sequences[:, inputs["input_ids"].shape[1] :].cpu())

            for round_index in range(settings.warmup):
                for config in configs:
                    log(f"batch {batch_size}: warm-up {round_index + 1}/{settings.warmup} {config.name}")
                    one_run(config, timed=False)
            for repeat in range(settings.repeats):
                for config in configs:  # interleaved, so drift of the machine spreads over all configurations
                    one_run(config, timed=True)
                    log(
                        f"batch {batch_size}: repeat {repeat + 1}/{settings.repeats} {config.name}: "
                        f"{samples[config.name][-1]['end_to_end_s']:.3f} s"
                    )
            results.extend(
                _batch_results(configs, batch_size, samples, peaks, outputs, settings, num_queries)
            )
    finally:
        clock.remove()

    return {
        "model": settings.model,
        "parameters": parameters,
        "architecture": _architecture(model),
        "device": str(settings.device),
        "device_name": _device_name(settings.device),
        "threads": torch.get_num_threads(),
        "dtype": str(settings.dtype).replace("torch.", ""),
        "qformer_dtype": str(next(model.qformer.parameters()).dtype).replace("torch.", ""),
        "num_query_tokens": num_queries,
        "prompt_tokens": T,
        "new_tokens": settings.new_tokens,
        "repeats": settings.repeats,
        "warmup": settings.warmup,
        "keep": list(settings.keep),
        "batch_sizes": list(settings.batch_sizes),
        "seed": settings.seed,
        "memory_measure": memory.method,
        # 1-minute load average before and after: above the thread count means other work shared the machine.
        "load_average_1min": {"start": load_before, "end": _load_average()},
        "timing": (
            "medians over repeats with quartiles (q1, q3) and min/max; stages from forward hooks on the shared "
            "modules" + (" with torch.cuda.synchronize at every mark" if settings.device.type == "cuda" else "")
        ),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "command": "catp-blip2 bench " + " ".join(argv) if argv is not None else None,
        "results": results,
        "targets": evaluate_targets(results, settings),
    }


def _batch_results(
    configs: list[Configuration],
    batch_size: int,
    samples: dict[str, list[dict[str, float]]],
    peaks: dict[str, list[tuple[int, int]]],
    outputs: dict[str, list[torch.Tensor]],
    settings: BenchSettings,
    num_queries: int,
) -> list[dict[str, Any]]:
    T, new = settings.prompt_tokens, settings.new_tokens
    stats = {name: {stage: summarise([s[stage] for s in runs]) for stage in STAGES} for name, runs in samples.items()}
    stock = stats["stock"]
    rows = []
    for config in configs:
        s = stats[config.name]
        e2e, prefill = s["end_to_end_s"]["median"], s["prefill_s"]["median"]
        ideal = (num_queries + T) / (config.k + T)
        prefill_speedup = stock["prefill_s"]["median"] / prefill
        same = None
        if config.k == num_queries:
            same = all(bool(torch.equal(a, b)) for a, b in zip(outputs[config.name], outputs["stock"]))
        rows.append(
            {
                "batch_size": batch_size,
                "config": config.name,
                "method": "catp" if config.catp else "stock",
                "k": config.k,
                "lm_prompt_tokens": config.k + T,
                "end_to_end_s": e2e,
                "prefill_s": prefill,
                "vision_s": s["vision_s"]["median"],
                "qformer_scoring_s": s["qformer_scoring_s"]["median"],
                "scoring_s": s["scoring_s"]["median"],
                "time_to_first_token_s": s["time_to_first_token_s"]["median"],
                "decode_per_token_s": s["decode_per_token_s"]["median"],
                "other_s": s["other_s"]["median"],
                "scoring_overhead_fraction": s["scoring_s"]["median"] / e2e,
                "throughput_samples_per_s": batch_size / e2e,
                "throughput_new_tokens_per_s": batch_size * new / e2e,
                "peak_memory_bytes": max(p for p, _ in peaks[config.name]),
                "peak_memory_above_baseline_bytes": max(a for _, a in peaks[config.name]),
                "end_to_end_ratio_vs_stock": e2e / stock["end_to_end_s"]["median"],
                "end_to_end_speedup_vs_stock": stock["end_to_end_s"]["median"] / e2e,
                "prefill_speedup_vs_stock": prefill_speedup,
                "flop_ideal_prefill_speedup": ideal,
                "prefill_speedup_fraction_of_ideal": prefill_speedup / ideal,
                "time_to_first_token_speedup_vs_stock": stock["time_to_first_token_s"]["median"]
                / s["time_to_first_token_s"]["median"],
                "decode_speedup_vs_stock": stock["decode_per_token_s"]["median"] / s["decode_per_token_s"]["median"],
                "same_new_tokens_as_stock": same,
                "stages": s,
            }
        )
    return rows


def evaluate_targets(results: list[dict[str, Any]], settings: BenchSettings) -> list[dict[str, Any]]:
    """The issue's targets, checked per batch size where the run has the configurations they need."""
    targets = []
    for row in results:
        b = row["batch_size"]
        if row["method"] == "catp" and row["k"] == 32:
            ratio = row["end_to_end_ratio_vs_stock"]
            targets.append(
                {
                    "target": "CATP k=32 end to end within 3% of stock",
                    "batch_size": b,
                    "value": ratio,
                    "limit": "0.97 <= ratio <= 1.03",
                    "met": 0.97 <= ratio <= 1.03,
                }
            )
        if row["method"] == "catp":
            targets.append(
                {
                    "target": f"scoring overhead under 1% of end-to-end generate (k={row['k']})",
                    "batch_size": b,
                    "value": row["scoring_overhead_fraction"],
                    "limit": "< 0.01",
                    "met": row["scoring_overhead_fraction"] < 0.01,
                }
            )
        if row["method"] == "catp" and row["k"] == 8:
            fraction = row["prefill_speedup_fraction_of_ideal"]
            targets.append(
                {
                    "target": "prefill speed-up at k=8 at least 90% of the FLOP ideal",
                    "batch_size": b,
                    "value": fraction,
                    "limit": ">= 0.90",
                    "met": fraction >= 0.90,
                }
            )
    return targets


def _architecture(model: CatpBlip2ForConditionalGeneration) -> dict[str, Any]:
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


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _device_name(device: torch.device) -> str:
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


def run(args: argparse.Namespace) -> int:
    settings = validate(args)
    report = run_benchmark(settings, command_line(settings))
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, settings.out / "bench.md")
    write_plot(report, settings.out / "bench.png")
    for target in report["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        log(f"target (batch {target['batch_size']}): {target['target']}: {target['value']:.4f} {verdict}")
    log(f"wrote {settings.out / 'bench.json'}, bench.md, bench.png")
    return 0


__all__ = ["BenchSettings", "PeakMemory", "StageClock", "add_arguments", "run", "run_benchmark", "validate"]
