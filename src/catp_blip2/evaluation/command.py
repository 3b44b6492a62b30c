"""`catp-blip2 eval`: VQA accuracy of one BLIP-2 checkpoint, unpruned and under every pruning method x k.

With no arguments it evaluates the embedded tiny model on the embedded synthetic set. For real BLIP-2 on VQAv2 with
the paper's protocol, and on OK-VQA, TextVQA, VizWiz-VQA and GQA (`--dataset-format`, inferred from their Hub
ids; each with its default split and metric), see docs/evaluation.md. Runs data parallel under
`accelerate launch` (each process answers a share of the questions; the main process writes). Outputs are described
in `catp_blip2.evaluation.results`; the table is also printed to stdout, progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..checkpoints import DTYPES, EMBEDDED, load_catp_config, load_catp_model, resolve_checkpoint
from ..scoring import PRUNING_METHODS
from .datasets import DATASET_FORMATS, DEFAULT_FORMAT, EMBEDDED_SETS, GQA, check_sample, get_dataset_format, gqa_configs, infer_dataset_format
from .generation import GenerationSettings
from .inputs import DEFAULT_VQA_PROMPT, check_prompt
from .sweep import DEFAULT_KEEP, DEFAULT_METHODS, build_sweep, variant_method_item


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_and_data_arguments(parser)
    parser.add_argument("--out", default="runs/eval", help="output folder (default runs/eval); reruns resume")
    _add_sweep_arguments(parser)
    add_generation_arguments(parser)


def add_model_and_data_arguments(parser: argparse.ArgumentParser, dataset_default: str = EMBEDDED) -> None:
    """The model and data options of `eval` (and `calibrate`, with its own default dataset)."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=EMBEDDED,
        help="checkpoint folder or Hub id of a CATP or stock BLIP-2 / InstructBLIP model (the family is read from its "
        "config); 'embedded' (default) or 'embedded-instructblip': the tiny models shipped in catp_blip2.toy.embedded",
    )
    model.add_argument("--processor", default=None, help="processor folder or Hub id (default: the model's)")
    model.add_argument("--dtype", default="auto", choices=DTYPES, help="weights dtype (auto: the checkpoint's)")
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: accelerate's device for this process)")
    model.add_argument(
        "--device-map", default=None, help="transformers device_map for models larger than one device, e.g. 'auto'"
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default=dataset_default,
        help=f"default: {dataset_default!r}; 'embedded' (the embedded model's evaluation set), a Hub id (lmms-lab/VQAv2, lmms-lab/OK-VQA, lmms-lab/textvqa, lmms-lab/VizWiz-VQA, "
        "lmms-lab/GQA), a local snapshot of one, a save_to_disk folder, parquet file(s) or a folder of them",
    )
    data.add_argument(
        "--dataset-format",
        default=None,
        metavar="NAME",
        help=f"the dataset's format, one of {', '.join(DATASET_FORMATS)} (its columns, metric and default split); "
        "default: the format whose Hub id --dataset is, else vqav2",
    )
    data.add_argument(
        "--split",
        default=None,
        help="split of a Hub, snapshot or multi-split dataset (default: the format's: "
        + ", ".join(f"{name} {f.default_split}" for name, f in DATASET_FORMATS.items())
        + ")",
    )
    data.add_argument("--fraction", type=float, default=None, help="seeded random fraction of the questions (paper: 0.1)")
    data.add_argument("--seed", type=int, default=42, help="seed of --fraction (paper: 42)")
    data.add_argument("--limit", type=int, default=None, help="then at most this many questions")
    model.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 for models under 50M parameters, else torch's default)",
    )


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        help="pruning methods, each 'name' or 'name:setting=value,...' (e.g. catp:vote_layers=all,vote_aggregation=soft); "
        f"names: {', '.join(m for m in PRUNING_METHODS if m != 'none')}; the unpruned model is always evaluated "
        "(default: %(default)s)",
    )
    sweep.add_argument("--keep", type=int, nargs="+", default=list(DEFAULT_KEEP), help="k values, query tokens kept (default: %(default)s)")
    sweep.add_argument(
        "--vision-merge", type=int, nargs="+", default=None, metavar="R",
        help="vision_merge_per_layer values: the whole sweep (unpruned model, every method and k) at each r, image "
        "tokens merged in each vision layer (ToMe); 0 is the stock vision encoder; writes accuracy_vs_r.png and the "
        "accuracy-vs-r table (default: 0 only)",
    )
    sweep.add_argument(
        "--variants", nargs="+", default=[], type=Path, metavar="FILE",
        help="variant files (configs/*.json, or what `calibrate` writes): each adds its method and settings to "
        "--methods, evaluated at every --keep",
    )
    sweep.add_argument(
        "--recompute-features",
        action="store_true",
        help="run the vision encoder and the Q-Former again for every configuration instead of once per image "
        "(BLIP-2) or question (InstructBLIP) for the whole sweep; the predictions are the same, only slower "
        "(for comparison and debugging)",
    )


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    generation = parser.add_argument_group("generation (defaults: the paper's protocol)")
    generation.add_argument("--prompt", default=DEFAULT_VQA_PROMPT, help="prompt with '{}' for the question")
    generation.add_argument(
        "--question-format",
        default="lavis",
        choices=("lavis", "raw"),
        help="lavis (default): lower-case and strip punctuation as the reference code did; raw: as in the dataset",
    )
    generation.add_argument("--batch-size", type=int, default=32, help="questions per generate call (per process)")
    generation.add_argument("--num-beams", type=int, default=5, help="(default: %(default)s)")
    generation.add_argument("--max-new-tokens", type=int, default=10, help="(default: %(default)s)")
    generation.add_argument("--min-new-tokens", type=int, default=1, help="(default: %(default)s)")
    generation.add_argument("--length-penalty", type=float, default=0.0, help="beam search only (default: %(default)s)")
    generation.add_argument(
        "--newline-eos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also stop at a newline token where the tokenizer has one (the reference code's OPT setting)",
    )


def _check_args(args: argparse.Namespace) -> None:
    if isinstance(args.batch_size, bool) or args.batch_size < 1:
        raise ValueError(f"`--batch-size` must be an integer >= 1; got {args.batch_size!r}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder; {str(out)!r} is a file.")
    if args.device is not None:
        import torch

        try:
            device = torch.device(args.device)
        except RuntimeError as error:
            raise ValueError(f"`--device` must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {args.device!r}.") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"`--device` {args.device!r}: CUDA is not available on this machine; use 'cpu'.")
    if args.dtype not in DTYPES:
        raise ValueError(f"`--dtype` must be one of {list(DTYPES)}; got {args.dtype!r}.")
    if args.split is not None and not args.split.strip():
        raise ValueError(f"`--split` must be a split name such as 'validation'; got {args.split!r}.")


def resolve_dataset_format(args: argparse.Namespace) -> Any:
    """The `DatasetFormat` of the run: `--dataset-format`, else the one whose Hub id `--dataset` is, else vqav2;
    and `args.split` set to the format's default split where none was given."""
    name = args.dataset_format if args.dataset_format is not None else infer_dataset_format(args.dataset)
    dataset_format = get_dataset_format(name)
    if args.dataset in EMBEDDED_SETS and dataset_format.name != DEFAULT_FORMAT:
        raise ValueError(
            f"`--dataset-format` {name!r}: the embedded set is in the {DEFAULT_FORMAT} format; give a --dataset in the "
            f"{name} format."
        )
    if args.split is None:
        args.split = dataset_format.default_split
    return dataset_format


def load_model_and_processor(args: argparse.Namespace, device: Any) -> tuple[Any, Any]:
    """One model load, of the checkpoint's family (BLIP-2 or InstructBLIP, stock or CATP), and its processor."""
    from transformers import AutoProcessor

    load_kwargs: dict[str, Any] = {"device_map": args.device_map} if args.device_map else {}
    model = load_catp_model(args.model, "--model", dtype=args.dtype, **load_kwargs)
    if not args.device_map:
        model = model.to(device)
    model.eval()
    processor_source = args.processor or resolve_checkpoint(args.model, "--model")
    try:
        processor = AutoProcessor.from_pretrained(processor_source)
    except (OSError, ValueError) as error:
        raise ValueError(f"`--processor` {str(processor_source)!r} could not be loaded: {error}") from error
    check_processor(processor, model.config, str(processor_source))
    return model, processor


def check_processor(processor: Any, config: Any, source: str) -> None:
    """Refuse a processor whose token ids the model cannot embed, before any generation."""
    vocab_size = config.text_config.vocab_size
    tokens = len(processor.tokenizer)
    if tokens > vocab_size:
        raise ValueError(
            f"`--processor` {source!r}: its tokenizer has {tokens} tokens but the model's language model embeds "
            f"{vocab_size}; give the processor saved with this model."
        )
    image_token = getattr(processor.tokenizer, "image_token_id", None)
    if image_token is not None and image_token != config.image_token_id:
        raise ValueError(
            f"`--processor` {source!r}: its image token is id {image_token}, the model's image_token_id is "
            f"{config.image_token_id}; give the processor saved with this model."
        )


SMALL_MODEL_PARAMETERS = 50_000_000


def set_cpu_threads(model: Any, num_threads: int | None) -> None:
    """Pick torch's CPU thread count. A tiny model's matrices are too small to gain from intra-op threads, and on
    shared cores OpenMP threads waiting on each other cost several times the work (measured: one configuration of
    the embedded model 1.2 s with 1 thread, 8.6 s with 2 on 2 busy cores), so small models get 1 thread."""
    import torch

    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"`--num-threads` must be an integer >= 1; got {num_threads!r}.")
        torch.set_num_threads(num_threads)
    elif model.device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)


def load_base_config(args: argparse.Namespace) -> Any:
    """The checkpoint's config alone (a small file), so the sweep is checked before a model or dataset is loaded."""
    return load_catp_config(args.model, "--model")


def run(args: argparse.Namespace) -> int:
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:  # the thread count is process-wide: give callers (tests, notebooks) theirs back
        torch.set_num_threads(threads)


def _generation(args: argparse.Namespace) -> GenerationSettings:
    generation = GenerationSettings(
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        length_penalty=args.length_penalty,
        newline_eos=args.newline_eos,
    )
    generation.check()
    return generation


def _run_record(
    args: argparse.Namespace, dataset: Any, generation: GenerationSettings, dataset_format: Any = None
) -> tuple[dict, dict]:
    """The results' header, and the settings a resumed run must share (not device, batch size or process count)."""
    dataset_format = dataset_format or get_dataset_format(DEFAULT_FORMAT)
    dataset_entry = {
        "id": args.dataset,
        "split": None if args.dataset in EMBEDDED_SETS else args.split,
        "fraction": args.fraction,
        "seed": args.seed if args.fraction is not None else None,
        "limit": args.limit,
    }
    # The settings name the format where it is not the default, so folders written before formats existed resume.
    settings_dataset = dict(dataset_entry)
    if dataset_format.name != DEFAULT_FORMAT:
        settings_dataset["format"] = dataset_format.name
    header_dataset = {"id": args.dataset, "format": dataset_format.name, "title": dataset_format.title or dataset_format.name}
    if dataset_format is GQA:
        header_dataset["config"] = gqa_configs(args.split)[0]
    header_dataset.update((key, value) for key, value in dataset_entry.items() if key != "id")
    question_ids = json.dumps(list(dataset[dataset_format.id_column]))
    header = {"model": args.model, "dataset": header_dataset, "num_questions": len(dataset)}
    settings = {
        "model": args.model,
        "processor": args.processor,
        "dataset": settings_dataset,
        "question_ids_sha1": hashlib.sha1(question_ids.encode()).hexdigest(),
        "prompt": args.prompt,
        "question_format": args.question_format,
        "generation": asdict(generation),
        "dtype": args.dtype,
    }
    return header, settings


def _report(outcome: Any, out: Path, configurations: list) -> None:
    from .report import merge_values, plot_accuracy_vs_k, plot_accuracy_vs_r, plot_pareto, write_markdown

    table = write_markdown(outcome.results, out / "results.md")
    plot_accuracy_vs_k(outcome.results, out / "accuracy_vs_k.png")
    plot_pareto(outcome.results, out / "pareto.png")
    plots = "accuracy_vs_k.png, pareto.png"
    if len(merge_values(outcome.results)) > 1:
        plot_accuracy_vs_r(outcome.results, out / "accuracy_vs_r.png")
        plots += ", accuracy_vs_r.png"
    skipped = len(configurations) - len(outcome.evaluated)
    print(table)
    print(
        f"[eval] {len(outcome.evaluated)} configuration(s) evaluated, {skipped} already in {out}; wrote "
        f"{out / 'results.json'}, results.md, {plots} and predictions/",
        file=sys.stderr,
    )


def evaluate_sweep(
    args: argparse.Namespace, configurations: list, dataset_format: Any, generation: GenerationSettings,
    share_features: bool = True,
) -> tuple[Any, Any, Path]:
    """Load the data and the model the (checked) options name and run the sweep into `--out`: (outcome, the
    accelerate state, the output folder). Shared by `eval` and `calibrate`."""
    from accelerate import PartialState

    from .datasets import load_vqa_dataset
    from .runner import run_sweep

    state = PartialState()
    dataset = load_vqa_dataset(
        args.dataset, split=args.split, fraction=args.fraction, seed=args.seed, limit=args.limit,
        dataset_format=dataset_format.name,
    )
    model, processor = load_model_and_processor(args, args.device or state.device)
    set_cpu_threads(model, args.num_threads)
    header, settings = _run_record(args, dataset, generation, dataset_format)
    out = Path(args.out)
    outcome = run_sweep(
        model, processor, dataset, configurations, out, header, settings, prompt=args.prompt,
        question_format=args.question_format, batch_size=args.batch_size, generation=generation, state=state,
        dataset_format=dataset_format, share_features=share_features,
    )
    return outcome, state, out


def _run(args: argparse.Namespace) -> int:

    # Every option first, then the small config file, then the sweep: a typo costs no download.
    _check_args(args)
    dataset_format = resolve_dataset_format(args)
    check_prompt(args.prompt)
    generation = _generation(args)
    check_sample(args.fraction, args.seed, args.limit)
    methods = list(args.methods) + [variant_method_item(path) for path in args.variants]
    configurations = build_sweep(methods, list(args.keep), load_base_config(args), args.vision_merge)

    outcome, state, out = evaluate_sweep(
        args, configurations, dataset_format, generation, share_features=not args.recompute_features
    )
    if state.is_main_process:
        _report(outcome, out, configurations)
    state.wait_for_everyone()
    return 0


__all__ = ["add_arguments", "evaluate_sweep", "load_base_config", "load_model_and_processor", "resolve_dataset_format", "run"]
