"""The VQA-style formats (VQAv2, OK-VQA, TextVQA, VizWiz-VQA): one question, ten human answers, VQA accuracy."""

from __future__ import annotations

from typing import Any, Callable

from .checks import answer_strings, row_type
from .sources import UNKNOWN_TYPE

def vqav2_record(row: dict[str, Any]) -> dict[str, Any]:
    """The question record of one lmms-lab/VQAv2 row (its text columns)."""
    return {
        "question_id": row["question_id"],
        "question": row["question"],
        "answers": answer_strings(row["answers"]),
        "answer_type": row_type(row, "answer_type"),
        "question_type": row_type(row, "question_type"),
    }


def _strings_record(answer_type: str | None, question_type: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The record of a format with `question_id`, `question` and a list of answer strings; its types come from the
    columns `answer_type` / `question_type` (None: the format has none)."""

    def record(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "question_id": row["question_id"],
            "question": row["question"],
            "answers": answer_strings(row["answers"]),
            "answer_type": row_type(row, answer_type) if answer_type else UNKNOWN_TYPE,
            "question_type": row_type(row, question_type) if question_type else UNKNOWN_TYPE,
        }

    return record
