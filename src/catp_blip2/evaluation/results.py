"""The output folder of `catp-blip2 eval`: `results.json` and `predictions/`, written atomically, read to resume.

- `results.json`: {"model", "dataset", "metric", "num_questions", "settings", "results": [entry, ...]}, an entry
  being {"method", "pruning_settings", "num_kept_query_tokens" (None under `keep_score_mass`),
  "mean_kept_query_tokens", "accuracy" (0-100), "accuracy_by_answer_type", "accuracy_by_question_type",
  "relative_to_unpruned", "seconds", "predictions_file"};
- `predictions/<configuration>.jsonl`: one line per question (question_id, question, prediction, answers,
  accuracy in 0-100, answer_type, question_type, kept_query_tokens: how many query tokens its language model saw).

A finished configuration is recognised by its full pruning settings and k; `settings` (model, dataset, sample,
prompt, generation, dtype) must equal the stored ones, or the run is refused. `ResultsFolder` is the one place that
writes `results.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import Metric, accuracy_breakdown, mean_percent
from .sweep import UNPRUNED, Configuration, configuration_key

RESULTS_FILE = "results.json"
PREDICTIONS_DIR = "predictions"


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and os.replace, so a killed run leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


ENTRY_KEYS = ("method", "pruning_settings", "num_kept_query_tokens", "accuracy")


def load_results(out: Path) -> dict[str, Any] | None:
    """The stored results, None when there are none; a ValueError saying what is wrong with an unreadable file."""
    path = out / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{RESULTS_FILE} is not valid JSON ({error})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("results"), list):
        raise ValueError(f"{RESULTS_FILE} is not an object with a `results` list")
    for index, entry in enumerate(stored["results"]):
        if not isinstance(entry, dict) or not set(ENTRY_KEYS) <= set(entry):
            raise ValueError(f"{RESULTS_FILE}: results[{index}] lacks some of {list(ENTRY_KEYS)}")
    return stored


def rebuild_entries(out: Path, configurations: list[Configuration], num_questions: int) -> list[dict[str, Any]]:
    """The entries of this sweep's configurations whose predictions file is complete, recomputed from its lines.

    Predictions are written (atomically) before their entry, so a complete file is a finished configuration.
    """
    entries = []
    for configuration in configurations:
        path = out / PREDICTIONS_DIR / f"{configuration.file_stem}.jsonl"
        try:
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if len(lines) != num_questions or not all(isinstance(line, dict) and "accuracy" in line for line in lines):
            continue
        scores = [line["accuracy"] / 100.0 for line in lines]
        entries.append(
            {
                "method": configuration.method,
                "pruning_settings": configuration.pruning_settings,
                "num_kept_query_tokens": configuration.num_kept_query_tokens,
                "mean_kept_query_tokens": _mean_kept([line.get("kept_query_tokens") for line in lines]),
                "accuracy": mean_percent(scores),
                "accuracy_by_answer_type": accuracy_breakdown(scores, [line.get("answer_type") for line in lines]),
                "accuracy_by_question_type": accuracy_breakdown(scores, [line.get("question_type") for line in lines]),
                "relative_to_unpruned": None,
                "seconds": None,  # not recorded in the predictions
                "predictions_file": f"{PREDICTIONS_DIR}/{configuration.file_stem}.jsonl",
            }
        )
    unpruned = [e["accuracy"] for e in entries if e["pruning_settings"]["pruning_method"] == UNPRUNED]
    for entry in entries:
        entry["relative_to_unpruned"] = entry["accuracy"] / unpruned[0] if unpruned and unpruned[0] else None
    return entries


def _mean_kept(counts: list[Any]) -> float | None:
    """The mean number of query tokens kept per question (None for predictions written before it was recorded)."""
    if not counts or any(count is None for count in counts):
        return None
    return round(sum(counts) / len(counts), 3)


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


def score_configuration(
    configuration: Configuration,
    records: list[dict[str, Any]],
    predictions: list[str],
    metric: Metric,
    kept_counts: list[int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The results entry (without relative/seconds/file) and the per-question lines of one configuration;
    `kept_counts`: the query tokens each question kept."""
    kept_counts = kept_counts if kept_counts is not None else [None] * len(records)
    scores = [metric.score(prediction, record["answers"]) for prediction, record in zip(predictions, records)]
    lines = [
        {
            "question_id": record["question_id"],
            "question": record["question"],
            "prediction": prediction,
            "answers": record["answers"],
            "accuracy": 100.0 * score,
            "answer_type": record["answer_type"],
            "question_type": record["question_type"],
            "kept_query_tokens": kept,
        }
        for record, prediction, score, kept in zip(records, predictions, scores, kept_counts)
    ]
    entry = {
        "method": configuration.method,
        "pruning_settings": configuration.pruning_settings,
        "num_kept_query_tokens": configuration.num_kept_query_tokens,
        "mean_kept_query_tokens": _mean_kept(kept_counts),
        "accuracy": mean_percent(scores),
        "accuracy_by_answer_type": accuracy_breakdown(scores, [r["answer_type"] for r in records]),
        "accuracy_by_question_type": accuracy_breakdown(scores, [r["question_type"] for r in records]),
    }
    return entry, lines


class ResultsFolder:
    """The finished entries of one output folder, and their atomic writes (main process only)."""

    def __init__(
        self, out: str | os.PathLike, header: dict[str, Any], settings: dict[str, Any], configurations: list[Configuration]
    ) -> None:
        self.out = Path(out)
        self.header = header
        self.settings = settings
        self.configurations = configurations
        try:
            stored = load_results(self.out)
        except ValueError as problem:
            entries = rebuild_entries(self.out, configurations, header.get("num_questions", 0))
            print(
                f"[eval] {str(self.out)!r}: {problem}; rebuilt {len(entries)} finished configuration(s) from "
                f"{PREDICTIONS_DIR}/ (nothing finished is recomputed; the stored run settings could not be checked).",
                file=sys.stderr,
            )
            stored = {"settings": settings, "results": entries}
        if stored is not None:
            check_compatible(stored, settings, self.out)
        entries = (stored or {}).get("results", [])
        self.finished = {configuration_key(e["pruning_settings"], e["num_kept_query_tokens"]): e for e in entries}
        # This run's item names label its entries (the same settings may have been written differently before).
        for configuration in configurations:
            if configuration.key in self.finished:
                self.finished[configuration.key]["method"] = configuration.method

    def pending(self) -> list[Configuration]:
        return [c for c in self.configurations if c.key not in self.finished]

    def results(self) -> dict[str, Any]:
        """The `results.json` content: this sweep's entries in sweep order, then earlier entries it does not name."""
        names = {c.key for c in self.configurations}
        ordered = [self.finished[c.key] for c in self.configurations if c.key in self.finished]
        rest = [e for key, e in self.finished.items() if key not in names]
        return {**self.header, "settings": self.settings, "results": ordered + rest}

    def _unpruned_accuracy(self) -> float | None:
        unpruned = [e for e in self.finished.values() if e["pruning_settings"]["pruning_method"] == UNPRUNED]
        return unpruned[0]["accuracy"] if unpruned else None

    def record(self, configuration: Configuration, entry: dict[str, Any], lines: list[dict[str, Any]], started: float) -> None:
        """Write one finished configuration: its predictions first, then the entry that points at them, so a kill in
        between only costs a rerun of this configuration."""
        unpruned = entry["accuracy"] if configuration.pruning_settings["pruning_method"] == UNPRUNED else None
        unpruned = self._unpruned_accuracy() if unpruned is None else unpruned
        entry["relative_to_unpruned"] = entry["accuracy"] / unpruned if unpruned else None
        entry["seconds"] = round(time.perf_counter() - started, 3)
        entry["predictions_file"] = f"{PREDICTIONS_DIR}/{configuration.file_stem}.jsonl"
        (self.out / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(line, allow_nan=False) + "\n" for line in lines)
        write_atomic(self.out / entry["predictions_file"], text)
        self.finished[configuration.key] = entry
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        # allow_nan=False: NaN is no JSON; a non-finite number here is a bug to surface, not to store.
        write_atomic(self.out / RESULTS_FILE, json.dumps(self.results(), indent=2, allow_nan=False) + "\n")


@dataclass
class SweepOutcome:
    results: dict[str, Any]
    evaluated: list[str] = field(default_factory=list)  # file stems of configurations run (not skipped) this time


__all__ = [
    "PREDICTIONS_DIR",
    "RESULTS_FILE",
    "ResultsFolder",
    "SweepOutcome",
    "check_compatible",
    "load_results",
    "rebuild_entries",
    "score_configuration",
    "write_atomic",
]
