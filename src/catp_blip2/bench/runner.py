"""The benchmark itself: `run_benchmark(settings, argv)` returns the content of bench.json.

It builds (or loads) one CATP model and a stock `Blip2ForConditionalGeneration` that shares its modules
(`models.stock_twin`), then for every batch size times `generate` for stock and for CATP at every k
(`configurations`), in interleaved order (repeat r times every configuration once), after warm-up calls. Stage
times and peak memory of each call come from `timing`; per batch size they are summarised into one result row per
configuration (`_batch_results`, ratios against stock and the FLOP ideal) and checked against the issue's targets
(`evaluate_targets`); `describe` adds the model's architecture and the machine.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import Blip2ForConditionalGeneration

from ..configuration_catp import CatpConfig
from ..modeling_catp import CatpBlip2ForConditionalGeneration
from .describe import architecture, device_name, load_average
from .inputs import make_inputs
from .models import count_parameters, load_bench_model, stock_twin
from .roofline import language_model_shape, measure_machine, prefill_roofline
from .vision import add_vision_rooflines, vision_shape
from .timing import STAGES, PeakMemory, RunTimes, StageClock, stage_times, summarise


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- inputs and configurations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """Validated settings of one benchmark."""

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
    sweep: "SweepSettings | None" = None
    vision_merge: tuple[int, ...] = (0,)  # r values (`vision_merge_per_layer`) every CATP k is timed at


@dataclass(frozen=True)
class SweepSettings:
    """`bench --sweep`: the paper-shaped evaluation sweep (unpruned + `methods` x `keep`), timed recomputing the
    vision encoder and Q-Former per configuration ("naive") and sharing them ("shared")."""

    methods: tuple[str, ...]
    keep: tuple[int, ...]
    questions: int
    images: int
    batch_size: int


@dataclass(frozen=True)
class Configuration:
    """Stock BLIP-2 (k = all Q query tokens), or CATP keeping k query tokens with r image tokens merged in each
    vision layer."""

    name: str
    k: int
    catp: bool
    r: int = 0


def configurations(keep: tuple[int, ...], num_queries: int, vision_merge: tuple[int, ...] = (0,)) -> list[Configuration]:
    """Stock first (every ratio is against it), then CATP at every r of `vision_merge` and k of `keep`."""
    configs = [Configuration("stock", num_queries, False)]
    for r in vision_merge:
        configs += [Configuration(f"catp-k{k}" + (f"-r{r}" if r else ""), k, True, r) for k in keep]
    return configs


def check_fits_model(settings: BenchSettings, config: CatpConfig) -> None:
    """The checks of `settings` that need the model's config, as ValueErrors naming the option like `validate`."""
    num_queries = config.num_query_tokens
    too_big = [k for k in settings.keep if k > num_queries]
    if too_big:
        raise ValueError(f"`--keep` values must be in 1..{num_queries} (num_query_tokens); got {too_big[0]}.")
    limit_r = config.num_patch_tokens // 2
    too_many = [r for r in settings.vision_merge if r > limit_r]
    if too_many:
        raise ValueError(
            f"`--vision-merge` values must be in 0..{limit_r} for {settings.model!r} (vision_merge_per_layer: at most half "
            f"of its {config.num_patch_tokens} patch tokens); got {too_many[0]}."
        )
    # Stock keeps all Q query tokens, so its sequence is the longest; past the limit generate fails mid-timing.
    limit = getattr(config.text_config, "max_position_embeddings", None)
    T, new = settings.prompt_tokens, settings.new_tokens
    needed = num_queries + T + new
    if isinstance(limit, int) and needed > limit:
        most = limit - num_queries - new
        allowed = f"at most {most}" if most >= 1 else "none at this `--new-tokens`; lower it first"
        raise ValueError(
            f"`--prompt-tokens` {T} does not fit {settings.model!r}: {num_queries} query tokens + {T} prompt tokens "
            f"+ {new} new tokens = {needed} text positions, more than its {limit} (max_position_embeddings); "
            f"allowed: {allowed}."
        )


# ---- timed calls ------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """The models under test and the instruments on them, shared by every call."""

    model: CatpBlip2ForConditionalGeneration
    stock: Blip2ForConditionalGeneration  # shares every module of `model`
    clock: StageClock
    memory: PeakMemory
    generate_kwargs: dict[str, Any]
    new_tokens: int


@dataclass
class Measurement:
    """One timed `generate` call: seconds per stage, (peak, above-baseline) bytes, the new tokens (B, new)."""

    stages: dict[str, float]
    peak: tuple[int, int]
    new_tokens: torch.Tensor


@dataclass
class ConfigurationSamples:
    """Every timed call of one configuration at one batch size, in repeat order."""

    measurements: list[Measurement] = field(default_factory=list)

    def stage(self, name: str) -> list[float]:
        return [m.stages[name] for m in self.measurements]


def generate_kwargs(config: CatpConfig, new_tokens: int) -> dict[str, Any]:
    """Greedy decoding of exactly `new_tokens` tokens."""
    text_pad = config.text_config.pad_token_id
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,  # no early EOS: every configuration does the same work
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": text_pad if text_pad is not None else config.text_config.eos_token_id,
    }


def call_generate(
    bench: Bench, config: Configuration, inputs: dict[str, torch.Tensor]
) -> tuple[RunTimes, float, float, torch.Tensor]:
    """One `generate` of `config` under the stage clock: (its timestamps, start, end, sequences (B, Q + T + new))."""
    if config.catp:
        bench.model.config.num_kept_query_tokens = config.k
        bench.model.config.vision_merge_per_layer = config.r
    model = bench.model if config.catp else bench.stock
    bench.clock.current = RunTimes()
    start = bench.clock.now()
    sequences = model.generate(**inputs, **bench.generate_kwargs)
    end = bench.clock.now()
    times, bench.clock.current = bench.clock.current, None
    return times, start, end, sequences


def time_generate(bench: Bench, config: Configuration, inputs: dict[str, torch.Tensor]) -> Measurement:
    """One timed `generate` of `config`: stage times, peak memory and the tokens it generated."""
    bench.memory.start()
    times, start, end, sequences = call_generate(bench, config, inputs)
    peak = bench.memory.stop()
    return Measurement(
        stages=stage_times(times, start, end, bench.new_tokens),
        peak=peak,
        new_tokens=sequences[:, inputs["input_ids"].shape[1] :].cpu(),
    )


def time_batch_size(
    bench: Bench, configs: list[Configuration], batch_size: int, settings: BenchSettings,
    machines: list[dict[str, Any]] | None = None,
) -> dict[str, ConfigurationSamples]:
    """Warm-up calls, then `settings.repeats` timed calls of every configuration at `batch_size`. After every round
    of timed calls the machine's microbenchmarks run again into `machines`: the roofline takes the best of them all,
    so a roofline measured while the CPU was busy cannot understate what the timed calls could reach."""
    inputs = make_inputs(bench.model, batch_size, settings.prompt_tokens, settings.seed)
    samples = {c.name: ConfigurationSamples() for c in configs}
    for round_index in range(settings.warmup):
        for config in configs:
            log(f"batch {batch_size}: warm-up {round_index + 1}/{settings.warmup} {config.name}")
            call_generate(bench, config, inputs)
    for repeat in range(settings.repeats):
        for config in configs:  # interleaved, so drift of the machine spreads over all configurations
            measurement = time_generate(bench, config, inputs)
            samples[config.name].measurements.append(measurement)
            log(
                f"batch {batch_size}: repeat {repeat + 1}/{settings.repeats} {config.name}: "
                f"{measurement.stages['end_to_end_s']:.3f} s"
            )
        if machines is not None:
            machines.append(measure_machine(settings.dtype, settings.device))
    return samples


def best_machine(machines: list[dict[str, Any]]) -> dict[str, Any]:
    """The best throughput and bandwidth over the microbenchmark runs (each run's own figures are kept too)."""
    best = dict(max(machines, key=lambda m: m["matmul_flops_per_s"]))
    for key in ("memory_bytes_per_s", "matvec_bytes_per_s", "float32_sum_bytes_per_s"):
        best[key] = max(m[key] for m in machines)
    best["method"] = f"{machines[0]['method']}; measured {len(machines)} times interleaved with the timed runs, best kept"
    best["runs"] = [{k: m[k] for k in ("matmul_flops_per_s", "memory_bytes_per_s")} for m in machines]
    return best


def build_models(settings: BenchSettings) -> tuple[CatpBlip2ForConditionalGeneration, int]:
    """The CATP model (pruning method "catp"), checked against `settings`, and its parameter count."""
    log(f"building {settings.model!r} ({str(settings.dtype).replace('torch.', '')}, {settings.device})")
    started = time.perf_counter()
    model = load_bench_model(settings.model, settings.dtype, settings.device, seed=settings.seed)
    check_fits_model(settings, model.config)
    parameters = count_parameters(model)
    log(f"built in {time.perf_counter() - started:.1f} s: {parameters:,} parameters")
    model.config.pruning_method = "catp"
    return model, parameters


def run_benchmark(settings: BenchSettings, argv: list[str] | None = None) -> dict[str, Any]:
    """Build the model, time every configuration at every batch size, and return the `bench.json` content."""
    load_before = load_average()
    model, parameters = build_models(settings)
    bench = Bench(
        model=model,
        stock=stock_twin(model),
        clock=StageClock(model, settings.device),
        memory=PeakMemory(settings.device),
        generate_kwargs=generate_kwargs(model.config, settings.new_tokens),
        new_tokens=settings.new_tokens,
    )
    num_queries = model.config.num_query_tokens
    configs = configurations(settings.keep, num_queries, settings.vision_merge)
    log("measuring the machine's matrix-multiply throughput and memory bandwidth (again after every round)")
    machines = [measure_machine(settings.dtype, settings.device)]
    shape = language_model_shape(model)
    vision = vision_shape(model)
    results: list[dict[str, Any]] = []
    sweep = None
    try:
        timed = [(b, time_batch_size(bench, configs, b, settings, machines)) for b in settings.batch_sizes]
        machine = best_machine(machines)
        for batch_size, samples in timed:
            rows = _batch_results(configs, batch_size, samples, settings, num_queries, shape, machine)
            results.extend(add_vision_rooflines(rows, configs, vision, machine))
        if settings.sweep is not None:
            from .sweep import time_sweep

            sweep = time_sweep(bench, settings)
    finally:
        bench.clock.remove()
    report = _report(settings, argv, bench, parameters, load_before, results)
    report["machine"] = machine
    report["sweep"] = sweep
    return report


# ---- results ----------------------------------------------------------------------------------------------------


def _report(
    settings: BenchSettings,
    argv: list[str] | None,
    bench: Bench,
    parameters: int,
    load_before: float | None,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """The bench.json content: the setup, the machine, every result row and the targets."""
    model = bench.model
    return {
        "model": settings.model,
        "parameters": parameters,
        "architecture": architecture(model),
        "device": str(settings.device),
        "device_name": device_name(settings.device),
        "threads": torch.get_num_threads(),
        "dtype": str(settings.dtype).replace("torch.", ""),
        "qformer_dtype": str(next(model.qformer.parameters()).dtype).replace("torch.", ""),
        "num_query_tokens": model.config.num_query_tokens,
        "prompt_tokens": settings.prompt_tokens,
        "new_tokens": settings.new_tokens,
        "repeats": settings.repeats,
        "warmup": settings.warmup,
        "keep": list(settings.keep),
        "vision_merge": list(settings.vision_merge),
        "batch_sizes": list(settings.batch_sizes),
        "seed": settings.seed,
        "memory_measure": bench.memory.method,
        # 1-minute load average before and after: above the thread count means other work shared the machine.
        "load_average_1min": {"start": load_before, "end": load_average()},
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
    samples: dict[str, ConfigurationSamples],
    settings: BenchSettings,
    num_queries: int,
    shape: dict[str, Any],
    machine: dict[str, Any],
) -> list[dict[str, Any]]:
    """One bench.json result row per configuration at `batch_size`: stage medians, memory, ratios against stock,
    and the prefill against the measured roofline."""
    stats = {name: {stage: summarise(calls.stage(stage)) for stage in STAGES} for name, calls in samples.items()}
    stock_tokens = [m.new_tokens for m in samples["stock"].measurements]
    rows = []
    for config in configs:
        measurements = samples[config.name].measurements
        same = None
        if config.k == num_queries and not config.r:  # same weights, nothing pruned or merged: stock's tokens
            same = all(bool(torch.equal(m.new_tokens, b)) for m, b in zip(measurements, stock_tokens))
        peaks = [m.peak for m in measurements]
        s, stock = stats[config.name], stats["stock"]
        row = _result_row(config, batch_size, s, stock, peaks, same, settings, num_queries)
        roofline = prefill_roofline(shape, machine, batch_size, row["lm_prompt_tokens"])
        row.update(roofline, prefill_fraction_of_roofline=roofline["roofline_prefill_s"] / row["prefill_s"])
        rows.append(row)
    return rows


def _result_row(
    config: Configuration,
    batch_size: int,
    s: dict[str, dict[str, float]],
    stock: dict[str, dict[str, float]],
    peaks: list[tuple[int, int]],
    same: bool | None,
    settings: BenchSettings,
    num_queries: int,
) -> dict[str, Any]:
    """The row of one configuration from its stage statistics `s` and stock's."""
    T = settings.prompt_tokens
    e2e, prefill = s["end_to_end_s"]["median"], s["prefill_s"]["median"]
    ideal = (num_queries + T) / (config.k + T)  # prefill cost ~ LM prompt length
    prefill_speedup = stock["prefill_s"]["median"] / prefill
    return {
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
        "throughput_new_tokens_per_s": batch_size * settings.new_tokens / e2e,
        "peak_memory_bytes": max(p for p, _ in peaks),
        "peak_memory_above_baseline_bytes": max(a for _, a in peaks),
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


def _target(target: str, batch_size: int, value: float, limit: str, met: bool) -> dict[str, Any]:
    return {"target": target, "batch_size": batch_size, "value": value, "limit": limit, "met": met}


def evaluate_targets(results: list[dict[str, Any]], settings: BenchSettings) -> list[dict[str, Any]]:
    """The issue's targets, checked per batch size where the benchmark has the configurations they need."""
    targets = []
    for row in results:
        if row["method"] != "catp":
            continue
        # The configuration names the row (catp-k8-r6), so rows of one k at several r stay apart.
        b, k, name = row["batch_size"], row["k"], row["config"]
        if k == 32 and not row.get("vision_merge_per_layer"):
            ratio = row["end_to_end_ratio_vs_stock"]
            targets.append(_target("CATP k=32 end to end within 3% of stock", b, ratio, "0.97 <= ratio <= 1.03",
                                   0.97 <= ratio <= 1.03))
        overhead = row["scoring_overhead_fraction"]
        targets.append(_target(f"scoring overhead under 1% of end-to-end generate ({name})", b, overhead, "< 0.01",
                               overhead < 0.01))
        if k in (32, 16, 8, 4) and "prefill_fraction_of_roofline" in row and not row.get("prefill_measurement_error"):
            # The FLOP ratio (32 + T) / (k + T) ignores the weights' read, which no pruning shortens; the roofline
            # measured on this machine is what a prefill can reach. The FLOP ratio stays in the rows as information.
            fraction = row["prefill_fraction_of_roofline"]
            targets.append(_target(f"prefill at least 90% of the measured roofline ({name})", b, fraction, ">= 0.90",
                                   fraction >= 0.90))
    return targets


__all__ = [
    "Bench",
    "SweepSettings",
    "Configuration",
    "Measurement",
    "call_generate",
    "check_fits_model",
    "configurations",
    "evaluate_targets",
    "run_benchmark",
    "time_batch_size",
    "time_generate",
]
