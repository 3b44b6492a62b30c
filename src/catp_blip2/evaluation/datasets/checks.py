"""Checks of loaded evaluation data, before anything is generated: the columns a format needs, and every row to be
evaluated (errors name the row, its question id and the column); the answers and types of a row as strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .sources import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, UNKNOWN_TYPE

def _require_columns(dataset: Any, source: str, required: tuple[str, ...], optional: tuple[str, ...], schema: str) -> None:
    missing = [column for column in required if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"`dataset` {source!r} lacks column(s) {missing}; a VQA evaluation set needs {list(required)} "
            f"({schema} schema; optional {list(optional)}). It has {dataset.column_names}."
        )


def check_columns(dataset: Any, source: str) -> None:
    """Raise a ValueError naming the missing columns, or a badly typed `answers` column (lmms-lab/VQAv2 and the
    formats with a list of answers: OK-VQA, TextVQA, VizWiz-VQA)."""
    _require_columns(dataset, source, REQUIRED_COLUMNS, OPTIONAL_COLUMNS, "lmms-lab/VQAv2")
    _check_answers_column(dataset, source, "lmms-lab/VQAv2")


def _check_answers_column(dataset: Any, source: str, schema: str) -> None:
    if len(dataset) == 0:
        return
    answers = dataset[0]["answers"]
    if not isinstance(answers, list) or not answers or not all(
        isinstance(a, str) or (isinstance(a, dict) and isinstance(a.get("answer"), str)) for a in answers
    ):
        raise ValueError(
            f"`dataset` {source!r}: column `answers` must hold lists of answer strings or of dicts with an 'answer' "
            f"string ({schema}); the first row has {answers!r}."
        )


def _columns_check(schema: str, optional: tuple[str, ...]) -> Callable[[Any, str], None]:
    """The column check of a format whose `answers` are a list of strings (`schema` names it in errors)."""

    def check(dataset: Any, source: str) -> None:
        _require_columns(dataset, source, REQUIRED_COLUMNS, optional, schema)
        _check_answers_column(dataset, source, schema)

    return check


def _row_error(source: str, index: int, question_id: Any, column: str, message: str, id_column: str = "question_id") -> ValueError:
    return ValueError(f"`dataset` {source!r}, row {index} ({id_column} {question_id!r}): column `{column}` {message}")


def _check_text_rows(dataset: Any, source: str, id_column: str, answers_column: str) -> list[Any]:
    """Every row's id, question and answers (a non-empty list of strings / 'answer' dicts, or one non-empty string);
    returns the ids."""
    rows = dataset.select_columns([id_column, "question", answers_column])[:]
    for index, (question_id, question, answers) in enumerate(zip(rows[id_column], rows["question"], rows[answers_column])):
        if question_id is None or (isinstance(question_id, str) and not question_id.strip()):
            raise _row_error(source, index, question_id, id_column, "is empty.", id_column)
        if not isinstance(question, str) or not question.strip():
            raise _row_error(source, index, question_id, "question", f"must be a non-empty string; got {question!r}.", id_column)
        if answers_column == "answers":
            strings = answer_strings(answers) if isinstance(answers, list) else None
            if not strings or not all(isinstance(a, str) for a in strings):
                raise _row_error(
                    source, index, question_id, "answers",
                    f"must be a non-empty list of answer strings or of dicts with an 'answer' string; got {answers!r}.",
                    id_column,
                )
        elif not isinstance(answers, str) or not answers.strip():
            raise _row_error(source, index, question_id, answers_column, f"must be a non-empty string; got {answers!r}.", id_column)
    return rows[id_column]


def _check_image_rows(dataset: Any, source: str, ids: list[Any], id_column: str) -> None:
    """Image paths where the column holds paths (images stored as bytes are decoded only when their batch is made)."""
    from datasets import Image as ImageFeature

    if "image" not in dataset.column_names:
        raise ValueError(f"`dataset` {source!r} has no `image` column; it has {dataset.column_names}.")
    if isinstance(dataset.features["image"], ImageFeature):
        return  # an Image feature: reading it to check would read every image's bytes
    for index, (question_id, image) in enumerate(zip(ids, dataset.select_columns(["image"])["image"])):
        if isinstance(image, dict) and image.get("bytes"):
            continue
        path = image.get("path") if isinstance(image, dict) else image
        if not isinstance(path, str) or not Path(path).is_file():
            raise _row_error(
                source, index, question_id, "image",
                f"must hold an image (bytes, or the path of an image file); got {image!r}.", id_column,
            )


def check_vqa_rows(dataset: Any, source: str) -> None:
    """Every row's text fields, and image paths where the column holds paths, before anything is generated.

    Raises a ValueError naming the row, its question_id, the column and what is wrong. Images stored as bytes are
    decoded only when their batch is made.
    """
    ids = _check_text_rows(dataset, source, "question_id", "answers")
    _check_image_rows(dataset, source, ids, "question_id")


def _as_images(dataset: Any, source: str) -> Any:
    """The dataset with an `Image` feature for `image` (parquet written without datasets' metadata holds
    {bytes, path} structs or paths)."""
    from datasets import Image as ImageFeature

    if isinstance(dataset.features["image"], ImageFeature):
        return dataset
    try:
        return dataset.cast_column("image", ImageFeature())
    except Exception as error:  # any cast failure means the column holds no images
        raise ValueError(
            f"`dataset` {source!r}: column `image` must hold images (datasets.Image, or {{bytes, path}} / file paths); "
            f"it is {dataset.features['image']}: {error}"
        ) from error


def answer_strings(answers: list[Any]) -> list[str]:
    """The human answers of one row as strings (lmms-lab dicts or plain strings)."""
    return [a.get("answer") if isinstance(a, dict) else a for a in answers]


def row_type(row: dict[str, Any], column: str) -> str:
    """`answer_type` / `question_type` of a row, "unknown" where the dataset lacks it."""
    value = row.get(column)
    return UNKNOWN_TYPE if value is None else str(value)
