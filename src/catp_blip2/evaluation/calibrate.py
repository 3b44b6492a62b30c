"""`catp-blip2 calibrate`: search a pruning method's settings on a calibration split, write the winner as a variant.

    catp-blip2 calibrate                                   # catp_cover on the embedded model's calibration split
    catp-blip2 calibrate --method catp --search "vote_layers=[0]|[1]|all"   # the paper's layer study, automated
    catp-blip2 calibrate --model Salesforce/blip2-opt-2.7b --dataset HuggingFaceM4/VQAv2 --split train \
        --fraction 0.01 --method catp --keep 8            # real BLIP-2: a slice of VQAv2 *train*
    catp-blip2 calibrate --search "pruned_queries=drop|merge" --learn-prior   # merge or drop, then a query prior

Every candidate (one value per searched setting; by default the values each setting of the method declares as its
`candidates` in the registry) is evaluated at every `--keep` on the calibration questions, through the evaluation
runner: resumable (a rerun skips what is in `--out`), with progress, each image encoded once for all candidates.
The winner has the best mean accuracy over the k values (ties: the earlier candidate). A table of every candidate
is printed and written (`calibration.md`, `calibration.json`), and the winner is written as a variant file that
`eval --variants` and `export` take. The calibration split must not be an evaluation set: `embedded` (the
embedded task's evaluation set) and lmms-lab's validation / test splits are refused.

`--search` takes the method's own settings and `pruned_queries` (drop or merge the pruned queries). `--learn-prior`
then learns a per-query prior for the winner on the same questions (`query_prior`: random runs at `--prior-seeds`
seeds, then the winner with the prior at each `--prior-scales` value, scale 0 being the winner alone) and writes the
best as the variant's `query_score_prior`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from ..scoring import PRUNING_METHODS
from .command import (
    _check_args,
    _generation,
    add_generation_arguments,
    add_model_and_data_arguments,
    evaluate_sweep,
    load_base_config,
    resolve_dataset_format,
)
from .datasets import EMBEDDED, EMBEDDED_CALIBRATION, check_sample
from .inputs import check_prompt
from .query_prior import DEFAULT_SCALES, DEFAULT_SEEDS, check_scales, estimate_prior, prior_items, seed_items
from .sweep import _setting_value, build_sweep, parse_method_item, setting_text as _text

# Selection settings `--search` may try beside the method's own (a fixed-k comparison: no score-mass budget here,
# and the prior is learned by --learn-prior, not searched).
SEARCHABLE_SELECTION = ("pruned_queries",)

DEFAULT_METHOD = "catp_cover"
DEFAULT_KEEP = (16, 8, 4, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_and_data_arguments(parser, dataset_default=EMBEDDED_CALIBRATION)
    search = parser.add_argument_group("search")
    search.add_argument(
        "--method", default=DEFAULT_METHOD,
        help=f"the pruning method whose settings are searched, one of "
        f"{', '.join(m for m in PRUNING_METHODS if m != 'none')} (default: %(default)s)",
    )
    search.add_argument(
        "--search", nargs="+", default=None, metavar="SETTING=V1|V2",
        help="settings and the values to try, '|' between values (JSON where it parses: 'vote_layers=[0]|[1]|all'); "
        "default: every setting of the method with candidate values in the registry, at those values",
    )
    search.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP),
                        help="k values; the winner has the best mean accuracy over them (default: %(default)s)")
    parser.add_argument("--out", default="runs/calibrate", help="output folder; reruns resume (default: %(default)s)")
    parser.add_argument(
        "--variant-out", default=None, type=Path,
        help="where the winner's variant file goes (default: OUT/<method>-calibrated-k<first --keep>.json)",
    )
    prior = parser.add_argument_group("query prior")
    prior.add_argument("--learn-prior", action="store_true",
                       help="after the search, learn a per-query prior (query_score_prior) for the winner on the "
                       "same questions, from random runs; written into the variant when it helps")
    prior.add_argument("--prior-seeds", type=int, default=DEFAULT_SEEDS,
                       help="random runs per k the prior is learned from (default: %(default)s)")
    prior.add_argument("--prior-scales", type=float, nargs="+", default=list(DEFAULT_SCALES),
                       help="scales of the prior (largest value 1) tried against the method's scores; 0 is the "
                       "winner without a prior (default: %(default)s)")
    add_generation_arguments(parser)


def search_space(method: str, search: list[str] | None, base_config: Any) -> dict[str, list[Any]]:
    """setting -> the values to try: from `--search` items, else the method's registered `candidates`."""
    if method not in PRUNING_METHODS or method == "none":
        allowed = [m for m in PRUNING_METHODS if m != "none"]
        raise ValueError(f"`--method` must be one of {allowed}; got {method!r}.")
    settings = {setting.name: setting for setting in PRUNING_METHODS[method].settings}
    if search is None:
        return {name: list(s.candidates(base_config)) for name, s in settings.items() if s.candidates is not None}
    settings.update((name, None) for name in SEARCHABLE_SELECTION)
    space: dict[str, list[Any]] = {}
    for item in search:
        name, equals, values = item.partition("=")
        name = name.strip()
        if not equals or not values.strip():
            raise ValueError(f"`--search` items must be SETTING=V1|V2|...; got {item!r}.")
        if name not in settings:
            raise ValueError(f"`--search` {item!r}: {name!r} is not a setting of {method!r}; allowed: {list(settings)}.")
        if name in space:
            raise ValueError(f"`--search` names {name!r} twice.")
        space[name] = [_setting_value(part.strip()) for part in values.split("|")]
    return space


def candidate_items(method: str, space: dict[str, list[Any]], base_config: Any) -> list[str]:
    """One `--methods` item per point of the grid, each checked by the config (errors name the item)."""
    items = []
    for values in itertools.product(*space.values()):
        settings = ",".join(f"{name}={_text(value)}" for name, value in zip(space, values))
        item = f"{method}:{settings}" if settings else method
        parse_method_item(item, base_config)
        items.append(item)
    return items


def check_calibration_source(dataset: str, split: str | None) -> None:
    """Tuning on the evaluation questions would make the evaluation meaningless: refuse the known evaluation sets."""
    if dataset == EMBEDDED:
        raise ValueError(
            f"`--dataset` {EMBEDDED!r} is the embedded model's evaluation set; calibrate on {EMBEDDED_CALIBRATION!r}."
        )
    if dataset.startswith("lmms-lab/") and split is not None and split.startswith(("val", "test")):
        raise ValueError(
            f"`--dataset` {dataset!r} split {split!r} is an evaluation split; calibrate on a training slice, e.g. "
            "--dataset HuggingFaceM4/VQAv2 --split train --fraction 0.01."
        )


def rank_candidates(results: dict[str, Any], items: list[str], keep: list[int]) -> list[dict[str, Any]]:
    """Per candidate: its accuracy at each k and the mean over them, best first (ties: the earlier candidate)."""
    accuracy = {(e["method"], e["num_kept_query_tokens"]): e["accuracy"] for e in results["results"]}
    rows = []
    for index, item in enumerate(items):
        by_k = {k: accuracy[(item, k)] for k in keep}
        rows.append({"candidate": item, "accuracy": by_k, "mean": sum(by_k.values()) / len(keep), "order": index})
    rows.sort(key=lambda row: (-row["mean"], row["order"]))
    return rows


def calibration_table(rows: list[dict[str, Any]], keep: list[int]) -> str:
    header = "| rank | candidate | " + " | ".join(f"k={k}" for k in keep) + " | mean |"
    lines = [header, "|---:|---|" + "---:|" * (len(keep) + 1)]
    for rank, row in enumerate(rows, start=1):
        cells = " | ".join(f"{row['accuracy'][k]:.2f}" for k in keep)
        lines.append(f"| {rank} | {row['candidate']} | {cells} | {row['mean']:.2f} |")
    return "\n".join(lines)


def winner_variant(winner: dict[str, Any], method: str, model: str, k: int, base_config: Any) -> dict[str, Any]:
    from ..configuration_catp import default_pruning_settings
    from ..scoring import SELECTION_SETTING_NAMES

    settings = parse_method_item(winner["candidate"], base_config)
    defaults = default_pruning_settings()
    own = {s.name for s in PRUNING_METHODS[method].settings}
    own |= {name for name in SELECTION_SETTING_NAMES if settings[name] != defaults[name]}
    pruning = {name: value for name, value in settings.items() if name in own or name == "pruning_method"}
    name = f"{Path(model).name}-{method}-calibrated-k{k}".replace("_", "-")
    return {
        "name": name,
        "description": f"{method} at k={k} with the settings `catp-blip2 calibrate` chose (mean accuracy "
        f"{winner['mean']:.2f} over k={list(winner['accuracy'])} on the calibration split).",
        "base_model": model,
        **pruning,
        "num_kept_query_tokens": k,
    }


def run(args: argparse.Namespace) -> int:
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from ..hub.variants import variant_from_dict

    # Every option, then the small config file, then the grid, before any data or weights.
    _check_args(args)
    dataset_format = resolve_dataset_format(args)
    check_calibration_source(args.dataset, args.split)
    check_prompt(args.prompt)
    generation = _generation(args)
    check_sample(args.fraction, args.seed, args.limit)
    if args.variant_out is not None and args.variant_out.suffix != ".json":
        raise ValueError(f"`--variant-out` must be a .json file; got {str(args.variant_out)!r}.")
    _check_prior_options(args)
    base_config = load_base_config(args)
    if args.learn_prior and getattr(base_config, "num_frames", None) is not None:
        raise ValueError("`--learn-prior` learns one value per query of an image model (BLIP-2, InstructBLIP); "
                         f"{args.model!r} is a video model.")
    space = search_space(args.method, args.search, base_config)
    items = candidate_items(args.method, space, base_config)
    keep = list(args.keep)
    seeds = seed_items(args.prior_seeds) if args.learn_prior else []
    configurations = build_sweep(items + seeds, keep, base_config)
    print(f"[calibrate] {len(items)} candidate(s) x {len(keep)} k on {args.dataset}"
          + (f", and {len(seeds)} random run(s) x {len(keep)} k for the prior" if seeds else ""), file=sys.stderr)

    outcome, state, out = evaluate_sweep(args, configurations, dataset_format, generation)
    if not state.is_main_process:
        return 0
    rows = rank_candidates(outcome.results, items, keep)
    table = calibration_table(rows, keep)
    unpruned = next(e["accuracy"] for e in outcome.results["results"] if e["method"] == "none")
    questions = outcome.results["num_questions"]
    prior_report = None
    if args.learn_prior:
        rows, prior_report = _learn_prior(args, outcome.results, rows[0], keep, base_config, dataset_format, generation)
        table += "\n\nQuery prior for the winner (scale 0: no prior):\n\n" + calibration_table(
            [{**row, "candidate": f"prior x {row['scale']:g}"} for row in prior_report["candidates"]], keep
        )
    variant = winner_variant(rows[0], args.method, args.model, keep[0], base_config)
    variant_from_dict(variant)  # the file must load as any variant does
    variant_path = args.variant_out or out / f"{args.method}-calibrated-k{keep[0]}.json"
    variant_path.parent.mkdir(parents=True, exist_ok=True)
    variant_path.write_text(json.dumps(variant, indent=2) + "\n")
    (out / "calibration.json").write_text(
        json.dumps({"method": args.method, "dataset": args.dataset, "keep": keep, "search": space,
                    "unpruned": unpruned, "candidates": rows, "winner": rows[0]["candidate"],
                    "prior": prior_report, "variant": str(variant_path)}, indent=2) + "\n"
    )
    (out / "calibration.md").write_text(
        f"Calibration of `{args.method}` on `{args.dataset}` ({questions} questions; unpruned {unpruned:.2f}); "
        f"mean accuracy over k = {keep}.\n\n{table}\n"
    )
    print(table)
    print(f"[calibrate] winner: {rows[0]['candidate']} (mean {rows[0]['mean']:.2f}); variant file {variant_path}",
          file=sys.stderr)
    return 0


def _check_prior_options(args: argparse.Namespace) -> list[float]:
    if args.prior_seeds < 2:
        raise ValueError(f"`--prior-seeds` must be an integer >= 2 (runs to compare); got {args.prior_seeds!r}.")
    if args.learn_prior and args.method == "random":
        raise ValueError("`--learn-prior` learns from random runs; give a `--method` other than 'random'.")
    return check_scales(args.prior_scales)


def _learn_prior(
    args: argparse.Namespace, results: dict[str, Any], winner: dict[str, Any], keep: list[int], base_config: Any,
    dataset_format: Any, generation: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The prior from the random runs in `results`, then the winner at every prior scale (same folder: what is
    finished is not rerun). Returns (the scale rows as candidates, best first; the report for calibration.json)."""
    num_queries = base_config.num_query_tokens
    runs = [
        (entry["pruning_settings"]["pruning_seed"], entry["num_kept_query_tokens"], entry["accuracy"])
        for entry in results["results"]
        if entry["method"] in seed_items(args.prior_seeds) and entry["num_kept_query_tokens"] in keep
    ]
    prior = estimate_prior(runs, num_queries)
    scaled_items = prior_items(winner["candidate"], prior, check_scales(args.prior_scales))
    configurations = build_sweep([item for _, item in scaled_items], keep, base_config)
    print(f"[calibrate] prior for {winner['candidate']}: {len(scaled_items)} scale(s) x {len(keep)} k", file=sys.stderr)
    outcome, _, _ = evaluate_sweep(args, configurations, dataset_format, generation)
    rows = rank_candidates(outcome.results, [item for _, item in scaled_items], keep)
    scale_of = dict((item, scale) for scale, item in scaled_items)
    for row in rows:
        row["scale"] = scale_of[row["candidate"]]
    report = {"values": prior, "seeds": args.prior_seeds, "chosen_scale": rows[0]["scale"], "candidates": rows}
    return rows, report


__all__ = ["add_arguments", "candidate_items", "check_calibration_source", "rank_candidates", "run", "search_space"]
