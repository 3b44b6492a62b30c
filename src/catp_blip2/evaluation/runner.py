"""The VQA evaluation runner: one model, a sweep over pruning methods x k plus the unpruned model, resumable, data
parallel under `accelerate launch`.

Flow: `sweep.build_sweep` turns the method items and k values into `Configuration`s (the unpruned one first);
`run_sweep` preprocesses this process's share of the questions (once, when it fits in memory), then for every
configuration not yet in the output folder sets `model.config` (pruning settings are read at call time: no reload),
generates, gathers the answers on the main process, scores them with the dataset format's metric, and writes the
predictions file and the results entry atomically (`results.ResultsFolder`) before the next configuration starts.

Shared features: the vision encoder and the Q-Former do not depend on the method or k, so the first configuration
encodes each input row once, scored under every pending configuration's settings (`QFormerEncodingCache`), and
the others reuse it: for BLIP-2 one pass per distinct image (questions about one image share it), for InstructBLIP
one per question. Memory is bounded by `FEATURE_CACHE_LIMIT_BYTES`; rows beyond it are encoded again when needed.
`share_features=False` (`--recompute-features`) runs the full model for every configuration, as before.

Test-only hook: with the environment variable `CATP_EVAL_STOP_AFTER=N`, the run raises `RuntimeError` right after
its N-th configuration is written, to simulate a killed run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from ..modeling_features import QFormerEncodingCache
from .datasets import VQAV2, DatasetFormat, question_records
from .generation import GenerationSettings, generate_answers
from .inputs import DEFAULT_VQA_PROMPT, EvalInputs
from .results import ResultsFolder, SweepOutcome, score_configuration
from .sweep import Configuration, apply_configuration

STOP_AFTER_ENV = "CATP_EVAL_STOP_AFTER"
# Per process: VQAv2's 10% sample on BLIP-2 (~4,300 images x 32 query tokens x 768 floats + scores) needs ~0.5 GB.
FEATURE_CACHE_LIMIT_BYTES = 2 * 1024**3


def _share_inputs(
    model: Any, processor: Any, dataset: Any, prompt: str, question_format: str, batch_size: int, state: Any
) -> EvalInputs:
    """This process's contiguous share of the questions, as processor batches."""
    decoder_only = bool(getattr(model.config, "use_decoder_only_language_model", True))
    with state.split_between_processes(list(range(len(dataset)))) as share:
        inputs = EvalInputs(
            dataset,
            list(share),
            processor,
            prompt,
            question_format,
            batch_size,
            model.config.num_query_tokens,
            getattr(model.config, "image_token_id", None),
            # Decoder-only language models continue the prompt, so the padding must be on the left.
            padding_side="left" if decoder_only else "right",
        )
    inputs.prepare(progress=state.is_main_process)
    return inputs


def _gathered_predictions(
    model: Any,
    processor: Any,
    inputs: EvalInputs,
    generate_kwargs: dict[str, Any],
    state: Any,
    total: int,
    features: QFormerEncodingCache | None,
) -> tuple[list[str], list[int]] | None:
    """Every question's answer under the model's current settings and the query tokens it kept, in dataset order
    (main process; else None)."""
    from accelerate.utils import gather_object

    decoder_only = bool(getattr(model.config, "use_decoder_only_language_model", True))
    counts: list[int] = []
    answers = generate_answers(
        model, processor, inputs, generate_kwargs, decoder_only, state.is_main_process, features, kept_counts=counts
    )
    gathered = gather_object(list(zip(inputs.indices, answers, counts)))
    if not state.is_main_process:
        return None
    rows = sorted(gathered)
    if len(rows) != total:
        raise RuntimeError(f"gathered {len(rows)} answers for {total} questions")
    return [answer for _, answer, _ in rows], [count for _, _, count in rows]


def run_sweep(
    model: Any,
    processor: Any,
    dataset: Any,
    configurations: list[Configuration],
    out: Path,
    header: dict[str, Any],
    settings: dict[str, Any],
    prompt: str = DEFAULT_VQA_PROMPT,
    question_format: str = "lavis",
    batch_size: int = 32,
    generation: GenerationSettings = GenerationSettings(),
    state: Any = None,
    dataset_format: DatasetFormat = VQAV2,
    share_features: bool = True,
) -> SweepOutcome:
    """Evaluate every configuration not already finished in `out`; return the results (main process: complete).

    `header` holds the results' "model", "dataset" and "num_questions"; `settings` is what must match for a rerun
    to resume (model, dataset, sample, prompt, generation, ...). `state` is an `accelerate.PartialState` (one is
    made when None): each process answers a contiguous share of the questions, the main process gathers, scores
    and writes. `dataset_format` turns rows into question records and gives the metric. `share_features`: encode
    images once for the whole sweep (see the module docstring) rather than once per configuration.
    """
    from accelerate import PartialState
    from tqdm.auto import tqdm

    state = state or PartialState()
    described = {
        "metric": dataset_format.metric.name,
        "metric_label": dataset_format.metric.label,
        # Where the per-type breakdowns come from (None: the format has no such type, all questions are "unknown").
        "breakdowns": {"accuracy_by_answer_type": dataset_format.types[0], "accuracy_by_question_type": dataset_format.types[1]},
    }
    folder = ResultsFolder(out, {**header, **described}, settings, configurations)
    outcome = SweepOutcome(results=folder.results())
    pending = folder.pending()
    if not pending:
        if state.is_main_process:
            folder.write()  # the relabelled entries
        return outcome

    inputs = _share_inputs(model, processor, dataset, prompt, question_format, batch_size, state)
    generate_kwargs = generation.generate_kwargs(processor.tokenizer, model)
    records = question_records(dataset, dataset_format) if state.is_main_process else None
    features = None
    if share_features:
        features = QFormerEncodingCache([c.pruning_settings for c in pending], max_bytes=FEATURE_CACHE_LIMIT_BYTES)
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    progress = tqdm(pending, desc="configurations", unit="config", disable=not state.is_main_process, file=sys.stderr)
    for done, configuration in enumerate(progress, start=1):
        started = time.perf_counter()
        apply_configuration(model, configuration)
        gathered = _gathered_predictions(model, processor, inputs, generate_kwargs, state, len(dataset), features)
        if state.is_main_process:
            predictions, counts = gathered
            entry, lines = score_configuration(configuration, records, predictions, dataset_format.metric, counts)
            folder.record(configuration, entry, lines, started)
        outcome.evaluated.append(configuration.file_stem)
        state.wait_for_everyone()
        if stop_after and done >= stop_after:
            raise RuntimeError(f"{STOP_AFTER_ENV}={stop_after}: stopping after {done} configuration(s) (test hook).")
    outcome.results = folder.results()
    if state.is_main_process:
        folder.write()
    return outcome


__all__ = ["FEATURE_CACHE_LIMIT_BYTES", "STOP_AFTER_ENV", "run_sweep"]
