"""`catp-blip2 bench`: speed and memory of CATP against stock BLIP-2 on the same weights, the prefill against the
roofline measured on this machine (`roofline`), and with `--sweep` the evaluation sweep with and without shared
vision + Q-Former features (`sweep`).

This module is the command: its options (`add_arguments`), their checks (`validate` -> `BenchSettings`; a bad value
raises a ValueError naming the option, the value and what is allowed, before any model is built) and `run`, which
times the benchmark (`runner.run_benchmark`) and writes, in `--out`: `bench.json` (everything, per configuration
and batch size), `bench.md` (tables) and `bench.png`. Progress and the targets' verdicts go to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .models import NAMED_MODELS, parse_dtype
from .report import write_markdown, write_plot
from .runner import BenchSettings, SweepSettings, log, run_benchmark
from .sweep import PAPER_METHODS

DEFAULT_KEEP = (32, 16, 8, 4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny",
        help=f"one of {list(NAMED_MODELS)} (random weights for named architectures), a checkpoint folder or a Hub id",
    )
    parser.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP), help="k values for CATP")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    parser.add_argument(
        "--vision-merge", type=int, nargs="+", default=[0], metavar="R",
        help="vision_merge_per_layer values: every CATP k is timed at each r (image tokens merged in each vision "
        "layer, ToMe); 0 is the stock vision encoder (default: %(default)s)",
    )
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (Q-Former stays fp32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration and batch size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration and batch size first")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="T: text tokens in the prompt (BOS included)")
    parser.add_argument("--new-tokens", type=int, default=4, help="tokens generated per run (forced, greedy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and inputs")
    parser.add_argument("--out", required=True, help="output folder (bench.json, bench.md, bench.png)")
    sweep = parser.add_argument_group("sweep (--sweep)")
    sweep.add_argument(
        "--sweep", action="store_true",
        help="also time the evaluation sweep (unpruned + --methods x the --keep values below the query count), "
        "recomputing the vision encoder and Q-Former per configuration and sharing them, on the same weights; its "
        "batches are the largest --batch-sizes",
    )
    sweep.add_argument("--methods", nargs="+", default=list(PAPER_METHODS),
                       help="the sweep's method items, as for eval --methods (default: the paper's six: %(default)s)")
    sweep.add_argument("--questions", type=int, default=10, help="questions in the sweep (default: %(default)s)")
    sweep.add_argument("--images", type=int, default=2,
                       help="distinct images they ask about, consecutive questions sharing one (default: %(default)s)")


def _positive_ints(name: str, values: list[int], minimum: int = 1) -> tuple[int, ...]:
    """`values` as a tuple if it is non-empty, all >= `minimum` and distinct; else a ValueError naming `name`."""
    if not values:
        raise ValueError(f"`{name}` needs at least one value; got none.")
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"`{name}` values must be integers >= {minimum}; got {bad[0]!r} in {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` values must be distinct; got {values}.")
    return tuple(values)


def _device(name: str) -> torch.device:
    """The torch device of `--device`: 'cpu', or 'cuda[:N]' where CUDA is available."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"`--device` must be 'cpu' or 'cuda[:N]'; got {name!r}.") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"`--device` must be 'cpu' or 'cuda[:N]'; got {name!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--device` {name!r}: CUDA is not available on this machine; use 'cpu'.")
    return device


def validate(args: argparse.Namespace) -> BenchSettings:
    """Check the parsed arguments; a bad value raises a ValueError naming the option, the value and what is allowed.

    Checks that need the model's config (`--keep` against its query tokens, `--prompt-tokens` against its text
    positions) follow once it is built: `runner.check_fits_model`.
    """
    keep = _positive_ints("--keep", list(args.keep))
    vision_merge = _positive_ints("--vision-merge", list(args.vision_merge), minimum=0)
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
    device = _device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder; {str(out)!r} is a file.")
    return BenchSettings(
        sweep=_sweep_settings(args, keep, batch_sizes),
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
        vision_merge=vision_merge,
    )


def _sweep_settings(args: argparse.Namespace, keep: tuple[int, ...], batch_sizes: tuple[int, ...]) -> SweepSettings | None:
    if not args.sweep:
        return None
    from ..evaluation.sweep import UNPRUNED

    for name, value in (("--questions", args.questions), ("--images", args.images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1; got {value!r}.")
    if args.images > args.questions:
        raise ValueError(f"`--images` ({args.images}) must be at most `--questions` ({args.questions}).")
    if not args.methods or any(not isinstance(m, str) or not m.strip() or m.split(":")[0] == UNPRUNED for m in args.methods):
        raise ValueError(f"`--methods` must be method items other than 'none' (the unpruned model is always in); got {args.methods}.")
    pruned = tuple(k for k in keep if k < 32)  # 32 keeps everything: the unpruned configuration already is that
    if not pruned:
        raise ValueError(f"`--keep` needs a value below 32 for --sweep; got {list(keep)}.")
    return SweepSettings(tuple(args.methods), pruned, args.questions, args.images, max(batch_sizes))


def command_line(settings: BenchSettings) -> list[str]:
    """The arguments that reproduce `settings` (for the record in bench.json)."""
    return [
        "--model", settings.model,
        "--keep", *map(str, settings.keep),
        "--batch-sizes", *map(str, settings.batch_sizes),
        "--vision-merge", *map(str, settings.vision_merge),
        "--dtype", str(settings.dtype).replace("torch.", ""),
        "--device", str(settings.device),
        "--repeats", str(settings.repeats),
        "--warmup", str(settings.warmup),
        "--prompt-tokens", str(settings.prompt_tokens),
        "--new-tokens", str(settings.new_tokens),
        "--seed", str(settings.seed),
        "--out", str(settings.out),
    ] + ([] if settings.sweep is None else [
        "--sweep", "--methods", *settings.sweep.methods,
        "--questions", str(settings.sweep.questions), "--images", str(settings.sweep.images),
    ])  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """`catp-blip2 bench`: validate, benchmark, write bench.json/md/png to `--out` and log the targets' verdicts."""
    settings = validate(args)
    report = run_benchmark(settings, command_line(settings))
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, settings.out / "bench.md")
    write_plot(report, settings.out / "bench.png")
    if report["sweep"] is not None:
        sweep = report["sweep"]
        log(f"sweep of {sweep['configurations']} configurations: naive {sweep['naive_s']:.2f} s, shared "
            f"{sweep['shared_s']:.2f} s, speed-up {sweep['speedup']:.2f}, predictions identical: {sweep['identical']}")
    for target in report["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        log(f"target (batch {target['batch_size']}): {target['target']}: {target['value']:.4f} {verdict}")
    log(f"wrote {settings.out / 'bench.json'}, bench.md, bench.png")
    return 0


__all__ = ["DEFAULT_KEEP", "BenchSettings", "add_arguments", "command_line", "run", "validate"]
