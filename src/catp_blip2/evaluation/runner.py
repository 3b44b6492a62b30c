"""The VQA evaluation runner: one model, a sweep over pruning methods x k plus the unpruned model, resumable, data
parallel under `accelerate launch`.

Flow: `build_sweep` turns the method items and k values into `Configuration`s (the unpruned one first);
`run_sweep` preprocesses this process's share of the questions (once, when it fits in memory), then for every configuration not yet in the
output folder sets `model.config` (pruning settings are read at call time: no reload), generates, gathers the
answers on the main process, scores them with `catp_blip2.evaluation.metrics`, and writes the predictions file and the
results entry atomically before the next configuration starts.

Output folder (`out`):
- `results.json`: {"model", "dataset", "num_questions", "settings", "results": [entry, ...]}, an entry being
  {"method", "pruning_settings", "num_kept_query_tokens", "accuracy" (0-100), "accuracy_by_answer_type",
  "accuracy_by_question_type", "relative_to_unpruned", "seconds", "predictions_file"};
- `predictions/<configuration>.jsonl`: one line per question (question_id, question, prediction, answers,
  accuracy in 0-100, answer_type, question_type);
- `results.md` and `accuracy_vs_k.png` (`catp_blip2.evaluation.report`).

Resuming: a finished configuration is recognised by its full pruning settings and k; `settings` (model, dataset,
sample, prompt, generation, dtype) must equal the stored ones, or the run is refused.

Test-only hook: with the environment variable `CATP_EVAL_STOP_AFTER=N`, the run raises `RuntimeError` right after
its N-th configuration is written, to simulate a killed run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..configuration_catp import PRUNING_METHODS, CatpConfig
from .datasets import answer_strings, row_type
from .metrics import accuracy_breakdown, mean_percent, vqa_accuracy

DEFAULT_PROMPT = "Question: {} Short answer:"
DEFAULT_METHODS = (
    "catp",
    "catp:image_token_weighting=vit_attention",
    "catp:vote_aggregation=soft",
    "l2",
    "self_attention",
    "position",
    "random",
)
DEFAULT_KEEP = (32, 16, 8, 4, 2)
UNPRUNED = "none"
# The pruning settings every configuration sets (k is set separately): anything an item leaves out takes the
# CatpConfig default, so a "catp" row means the same whatever the checkpoint's config.json says.
SWEPT_SETTINGS = (
    "pruning_method",
    "vote_layers",
    "vote_layer_weights",
    "image_token_weighting",
    "vote_aggregation",
    "pruning_seed",
)
STOP_AFTER_ENV = "CATP_EVAL_STOP_AFTER"
RESULTS_FILE = "results.json"
PREDICTIONS_DIR = "predictions"


# ---- the sweep ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """One evaluated configuration: the method item as given, its full pruning settings and k."""

    method: str
    pruning_settings: dict[str, Any]
    num_kept_query_tokens: int

    @property
    def key(self) -> str:
        """Canonical identity (settings and k), used to recognise finished configurations."""
        return configuration_key(self.pruning_settings, self.num_kept_query_tokens)

    @property
    def file_stem(self) -> str:
        """A readable, unique file name for its predictions: the item, k, and a short hash of the key."""
        readable = re.sub(r"[^A-Za-z0-9=.-]+", "_", self.method).strip("_")
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:8]
        return f"{readable}__k{self.num_kept_query_tokens}__{digest}"


def configuration_key(pruning_settings: dict[str, Any], k: int) -> str:
    return json.dumps({**pruning_settings, "num_kept_query_tokens": k}, sort_keys=True)


def _split_settings(text: str) -> list[str]:
    """Split "a=1,b=[0,2]" at the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _setting_value(text: str) -> Any:
    """JSON when it parses (numbers, lists, null), the plain text otherwise ("all", "vit_attention")."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_method_item(item: str, base_config: CatpConfig) -> dict[str, Any]:
    """Full pruning settings of a `--methods` item: "name" or "name:setting=value,setting=value".

    Values are JSON where they parse ("vote_layers=[0,2]", "pruning_seed=3") and text otherwise
    ("vote_layers=all"). They are checked by `CatpConfig.check_pruning_settings` on a copy of `base_config`; any
    error names the item.
    """
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"`--methods` items must be non-empty strings; got {item!r}.")
    name, _, rest = item.partition(":")
    name = name.strip()
    allowed = [m for m in PRUNING_METHODS if m != UNPRUNED]
    if name == UNPRUNED:
        raise ValueError(f"`--methods` item {item!r}: the unpruned model is always evaluated; leave 'none' out.")
    if name not in allowed:
        raise ValueError(f"`--methods` item {item!r}: method {name!r} is not one of {allowed}.")
    defaults = CatpConfig()
    settings = {key: copy.deepcopy(getattr(defaults, key)) for key in SWEPT_SETTINGS}
    settings["pruning_method"] = name
    if rest.strip():
        for part in _split_settings(rest):
            key, equals, value = part.partition("=")
            key = key.strip()
            if not equals or not key:
                raise ValueError(
                    f"`--methods` item {item!r}: settings must be written setting=value, separated by commas; got {part!r}."
                )
            if key not in SWEPT_SETTINGS or key == "pruning_method":
                raise ValueError(
                    f"`--methods` item {item!r}: {key!r} is not a pruning setting that can be swept; allowed: "
                    f"{[s for s in SWEPT_SETTINGS if s != 'pruning_method']} (k comes from --keep)."
                )
            settings[key] = _setting_value(value.strip())
    trial = copy.deepcopy(base_config)
    for key, value in settings.items():
        setattr(trial, key, value)
    trial.num_kept_query_tokens = None
    try:
        trial.check_pruning_settings()
    except ValueError as error:
        raise ValueError(f"`--methods` item {item!r}: {error}") from None
    # check_pruning_settings turns tuples into lists: take the checked values, so keys compare equal on resume.
    return {key: getattr(trial, key) for key in SWEPT_SETTINGS}


def unpruned_settings() -> dict[str, Any]:
    defaults = CatpConfig()
    settings = {key: copy.deepcopy(getattr(defaults, key)) for key in SWEPT_SETTINGS}
    settings["pruning_method"] = UNPRUNED
    return settings


def build_sweep(methods: list[str], keep: list[int], base_config: CatpConfig) -> list[Configuration]:
    """The unpruned configuration, then every method item at every k (in the order given)."""
    total = base_config.num_query_tokens
    if not keep:
        raise ValueError("`--keep` needs at least one k.")
    for k in keep:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
            raise ValueError(f"`--keep` values must be integers in 1..{total} (the model's num_query_tokens); got {k!r}.")
    if len(set(keep)) != len(keep):
        raise ValueError(f"`--keep` values must be distinct; got {keep}.")
    configurations = [Configuration(UNPRUNED, unpruned_settings(), total)]
    seen: dict[str, str] = {}
    for item in methods:
        settings = parse_method_item(item, base_config)
        canonical = json.dumps(settings, sort_keys=True)
        if canonical in seen:
            raise ValueError(f"`--methods` items {seen[canonical]!r} and {item!r} are the same configuration.")
        seen[canonical] = item
        configurations.extend(Configuration(item, settings, k) for k in keep)
    return configurations


def apply_configuration(model: Any, configuration: Configuration) -> None:
    """Set the model's pruning settings for `configuration` (read by the model at call time)."""
    for key, value in configuration.pruning_settings.items():
        setattr(model.config, key, copy.deepcopy(value))
    model.config.num_kept_query_tokens = configuration.num_kept_query_tokens
    model.config.check_pruning_settings()


# ---- inputs ------------------------------------------------------------------------------------------------------


def lavis_question(question: str) -> str:
    """The question as the reference code (LAVIS's BLIP question processor) fed it to BLIP-2: lower case, the
    characters . ! " ( ) * # : ; ~ deleted, whitespace collapsed, at most 50 words. "?" stays."""
    text = re.sub(r'[.!"()*#:;~]', "", question.lower())
    words = text.split()
    return " ".join(words[:50])


QUESTION_FORMATS = {"lavis": lavis_question, "raw": lambda question: question}


def check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise ValueError(f"`--prompt` must contain exactly one '{{}}' where the question goes; got {prompt!r}.")
    return prompt


# Processed batches are kept for reuse by every configuration up to this size (the embedded set: ~8 MB); beyond it
# (VQAv2's 10% sample at 224 px is ~13 GB of pixel values) each configuration processes its batches again.
CACHE_LIMIT_BYTES = 2 * 1024**3


class EvalInputs:
    """This process's share of the questions as processor batches: computed once and cached when they fit in
    `CACHE_LIMIT_BYTES`, else recomputed on every pass. Iterating yields the batches in question order."""

    def __init__(
        self,
        dataset: Any,
        indices: list[int],
        processor: Any,
        prompt: str,
        question_format: str,
        batch_size: int,
        num_query_tokens: int,
        image_token_id: int | None,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.processor = processor
        self.prompt = prompt
        self.formatter = QUESTION_FORMATS[question_format]
        self.batch_size = batch_size
        self.num_query_tokens = num_query_tokens
        self.image_token_id = image_token_id
        self.starts = list(range(0, len(self.indices), batch_size))
        self.cache: list[dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def make_batch(self, start: int) -> dict[str, torch.Tensor]:
        """Processor output (pixel values, prompt ids, attention mask) of the batch beginning at `start`."""
        chunk = self.indices[start : start + self.batch_size]
        contiguous = chunk == list(range(chunk[0], chunk[-1] + 1))
        rows = self.dataset[chunk[0] : chunk[-1] + 1] if contiguous else self.dataset.select(chunk)[:]
        images = [image.convert("RGB") for image in rows["image"]]  # VQAv2 holds some greyscale images
        texts = [self.prompt.format(self.formatter(q)) for q in rows["question"]]
        batch = dict(self.processor(images=images, text=texts, return_tensors="pt", padding=True))
        if self.image_token_id is not None:
            placeholders = (batch["input_ids"] == self.image_token_id).sum(dim=1)
            if not bool((placeholders == self.num_query_tokens).all()):
                raise ValueError(
                    f"The processor put {placeholders.tolist()} image placeholder tokens in the prompts; the model needs "
                    f"{self.num_query_tokens} (num_query_tokens). Load a processor saved with `num_query_tokens` set "
                    "(`--processor`)."
                )
        return batch

    def prepare(self, progress: bool = False) -> None:
        """Fill the cache when the whole share fits (judged from the first batch's size)."""
        from tqdm.auto import tqdm

        if not self.starts:
            self.cache = []
            return
        first = self.make_batch(self.starts[0])
        size = sum(t.numel() * t.element_size() for t in first.values() if isinstance(t, torch.Tensor))
        if size * len(self.starts) > CACHE_LIMIT_BYTES:
            return
        rest = tqdm(self.starts[1:], desc="preprocess", unit="batch", leave=False, disable=not progress, file=sys.stderr)
        self.cache = [first] + [self.make_batch(start) for start in rest]

    def __iter__(self):
        if self.cache is not None:
            yield from self.cache
        else:
            for start in self.starts:
                yield self.make_batch(start)


def preprocess(
    dataset: Any,
    indices: list[int],
    processor: Any,
    prompt: str,
    question_format: str,
    batch_size: int,
    decoder_only: bool,
    num_query_tokens: int,
    image_token_id: int | None,
    progress: bool = False,
) -> EvalInputs:
    """The batches of `indices` (see `EvalInputs`), with the tokenizer padding on the side the model needs."""
    # Decoder-only language models continue the prompt, so the padding must be on the left.
    processor.tokenizer.padding_side = "left" if decoder_only else "right"
    inputs = EvalInputs(dataset, indices, processor, prompt, question_format, batch_size, num_query_tokens, image_token_id)
    inputs.prepare(progress)
    return inputs


# ---- generation --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """The paper's decoding by default: beam search with 5 beams, 1 to 10 new tokens, length_penalty 0, and
    (LAVIS's OPT setting) a newline ends the answer."""

    num_beams: int = 5
    max_new_tokens: int = 10
    min_new_tokens: int = 1
    length_penalty: float = 0.0
    newline_eos: bool = True

    def check(self) -> None:
        for name, minimum in (("num_beams", 1), ("max_new_tokens", 1), ("min_new_tokens", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`--{name.replace('_', '-')}` must be an integer >= {minimum}; got {value!r}.")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"`--min-new-tokens` ({self.min_new_tokens}) must be <= `--max-new-tokens` ({self.max_new_tokens})."
            )

    def generate_kwargs(self, tokenizer: Any, model: Any) -> dict[str, Any]:
        """transformers `generate` arguments. The reference code's `max_len` and `min_len` count new tokens (it
        generated from embeddings alone), hence `max_new_tokens` / `min_new_tokens` here."""
        kwargs: dict[str, Any] = {
            "do_sample": False,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if self.num_beams > 1:  # length_penalty only means something to beam search
            kwargs["length_penalty"] = self.length_penalty
        if self.newline_eos:
            newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
            eos = model.generation_config.eos_token_id
            eos = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
            # Only where "\n" is one real token (OPT's "Ċ"); a tokenizer that drops or splits it has no newline to stop at.
            if len(newline) == 1 and newline[0] != tokenizer.unk_token_id and newline[0] not in eos:
                kwargs["eos_token_id"] = eos + newline
        return kwargs


def generate_answers(
    model: Any, processor: Any, inputs: EvalInputs, generate_kwargs: dict[str, Any], decoder_only: bool, progress: bool
) -> list[str]:
    """The answers of this process's questions under the model's current pruning settings."""
    from tqdm.auto import tqdm

    answers: list[str] = []
    device = model.device
    # The vision encoder's dtype, not model.dtype: the Q-Former and query tokens stay float32 in half-precision loads.
    pixel_dtype = next(model.vision_model.parameters()).dtype
    batches = tqdm(inputs, total=len(inputs), desc="batches", unit="batch", leave=False, disable=not progress, file=sys.stderr)
    for batch in batches:
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(pixel_dtype)
        with torch.inference_mode():
            out = model.generate(**batch, **generate_kwargs)
        # Decoder-only: the sequences start with our own prompt (the core's contract), whatever k is.
        new_tokens = out[:, batch["input_ids"].shape[1] :] if decoder_only else out
        answers.extend(text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True))
    return answers


# ---- results -----------------------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and os.replace, so a killed run leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_results(out: Path) -> dict[str, Any] | None:
    path = out / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"`--out` {str(out)!r}: {RESULTS_FILE} is not valid JSON ({error}); use another --out.") from None


def check_compatible(stored: dict[str, Any], settings: dict[str, Any], out: Path) -> None:
    """Refuse to add results measured under other settings to an existing output folder."""
    previous = stored.get("settings")
    if previous is None:
        raise ValueError(f"`--out` {str(out)!r} holds a {RESULTS_FILE} without run settings; use another --out.")
    differing = sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))
    if differing:
        details = "; ".join(f"{key}: stored {previous.get(key)!r}, now {settings.get(key)!r}" for key in differing)
        raise ValueError(
            f"`--out` {str(out)!r} holds results of a run with other settings ({details}). Results would mix: "
            "use another --out, or delete that folder to start over."
        )


@dataclass
class SweepOutcome:
    results: dict[str, Any]
    evaluated: list[str] = field(default_factory=list)  # file stems of configurations run (not skipped) this time


def _score(
    configuration: Configuration, rows: dict[str, list[Any]], predictions: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The results entry (without relative/seconds) and the per-question lines of one configuration."""
    references = [answer_strings(answers) for answers in rows["answers"]]
    scores = [vqa_accuracy(p, r) for p, r in zip(predictions, references)]
    lines = [
        {
            "question_id": question_id,
            "question": question,
            "prediction": prediction,
            "answers": answers,
            "accuracy": 100.0 * score,
            "answer_type": answer_type,
            "question_type": question_type,
        }
        for question_id, question, prediction, answers, score, answer_type, question_type in zip(
            rows["question_id"], rows["question"], predictions, references, scores, rows["answer_type"], rows["question_type"]
        )
    ]
    entry = {
        "method": configuration.method,
        "pruning_settings": configuration.pruning_settings,
        "num_kept_query_tokens": configuration.num_kept_query_tokens,
        "accuracy": mean_percent(scores),
        "accuracy_by_answer_type": accuracy_breakdown(scores, rows["answer_type"]),
        "accuracy_by_question_type": accuracy_breakdown(scores, rows["question_type"]),
    }
    return entry, lines


def _text_columns(dataset: Any) -> dict[str, list[Any]]:
    """The non-image columns the scoring needs, for every question (types default to "unknown")."""
    rows = dataset.remove_columns(["image"])[:]
    for column in ("answer_type", "question_type"):
        values = rows.get(column, [None] * len(dataset))
        rows[column] = [row_type({column: value}, column) for value in values]
    return rows


def run_sweep(
    model: Any,
    processor: Any,
    dataset: Any,
    configurations: list[Configuration],
    out: Path,
    header: dict[str, Any],
    settings: dict[str, Any],
    prompt: str = DEFAULT_PROMPT,
    question_format: str = "lavis",
    batch_size: int = 32,
    generation: GenerationSettings = GenerationSettings(),
    state: Any = None,
) -> SweepOutcome:
    """Evaluate every configuration not already finished in `out`; return the results (main process: complete).

    `header` holds the results' "model", "dataset" and "num_questions"; `settings` is what must match for a rerun
    to resume (model, dataset, sample, prompt, generation, ...). `state` is an `accelerate.PartialState` (one is
    made when None): each process answers a contiguous share of the questions, the main process gathers, scores
    and writes.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    state = state or PartialState()
    out = Path(out)
    stored = load_results(out)
    if stored is not None:
        check_compatible(stored, settings, out)
    finished = {configuration_key(e["pruning_settings"], e["num_kept_query_tokens"]): e for e in (stored or {}).get("results", [])}
    pending = [c for c in configurations if c.key not in finished]
    results = {**header, "settings": settings, "results": []}
    if state.is_main_process:
        (out / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)

    def collect() -> list[dict[str, Any]]:
        """This sweep's entries in sweep order, then earlier entries of this folder that the sweep does not name."""
        names = {c.key for c in configurations}
        ordered = [finished[c.key] for c in configurations if c.key in finished]
        return ordered + [e for key, e in finished.items() if key not in names]

    # Relabel finished entries with this run's items (the same settings may have been written differently).
    for configuration in configurations:
        if configuration.key in finished:
            finished[configuration.key]["method"] = configuration.method
    outcome = SweepOutcome(results=results)
    if not pending:
        results["results"] = collect()
        return outcome

    decoder_only = bool(getattr(model.config, "use_decoder_only_language_model", True))
    progress = state.is_main_process
    with state.split_between_processes(list(range(len(dataset)))) as share:
        inputs = preprocess(
            dataset,
            list(share),
            processor,
            prompt,
            question_format,
            batch_size,
            decoder_only,
            model.config.num_query_tokens,
            getattr(model.config, "image_token_id", None),
            progress,
        )
    generate_kwargs = generation.generate_kwargs(processor.tokenizer, model)
    rows = _text_columns(dataset) if state.is_main_process else None
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)

    for done, configuration in enumerate(
        tqdm(pending, desc="configurations", unit="config", disable=not progress, file=sys.stderr), start=1
    ):
        started = time.perf_counter()
        apply_configuration(model, configuration)
        answers = generate_answers(model, processor, inputs, generate_kwargs, decoder_only, progress)
        gathered = gather_object(list(zip(inputs.indices, answers)))
        if state.is_main_process:
            predictions = [answer for _, answer in sorted(gathered)]
            if len(predictions) != len(dataset):
                raise RuntimeError(f"gathered {len(predictions)} answers for {len(dataset)} questions")
            entry, lines = _score(configuration, rows, predictions)
            unpruned = next((e for e in finished.values() if e["pruning_settings"]["pruning_method"] == UNPRUNED), None)
            if configuration.pruning_settings["pruning_method"] == UNPRUNED:
                unpruned = entry
            entry["relative_to_unpruned"] = (
                entry["accuracy"] / unpruned["accuracy"] if unpruned and unpruned["accuracy"] > 0 else None
            )
            entry["seconds"] = round(time.perf_counter() - started, 3)
            entry["predictions_file"] = f"{PREDICTIONS_DIR}/{configuration.file_stem}.jsonl"
            # Predictions first, then the entry that points at them: a kill in between only costs a rerun of this one.
            write_atomic(out / entry["predictions_file"], "".join(json.dumps(line) + "\n" for line in lines))
            finished[configuration.key] = entry
            results["results"] = collect()
            write_atomic(out / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        outcome.evaluated.append(configuration.file_stem)
        state.wait_for_everyone()
        if stop_after and done >= stop_after:
            raise RuntimeError(f"{STOP_AFTER_ENV}={stop_after}: stopping after {done} configuration(s) (test hook).")
    results["results"] = collect()
    return outcome


__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_METHODS",
    "DEFAULT_PROMPT",
    "Configuration",
    "GenerationSettings",
    "QUESTION_FORMATS",
    "apply_configuration",
    "build_sweep",
    "check_compatible",
    "check_prompt",
    "write_atomic",
    "generate_answers",
    "lavis_question",
    "parse_method_item",
    "preprocess",
    "run_sweep",
]
