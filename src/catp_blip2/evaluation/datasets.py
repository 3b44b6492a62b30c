"""Evaluation data through `datasets`: a registry of dataset formats, and loading by Hub id, local copy or "embedded".

A `DatasetFormat` is one benchmark's layout: its Hub id and default split, the columns it must have, how one of its
rows (without the image) becomes the common question record (`question_id`, `question`, `answers` as strings,
`answer_type`, `question_type`), and the `Metric` that scores predictions against those answers. The runner sees
only records, images and the metric, so a new benchmark is one format entry (`register_dataset_format`).
`DATASET_FORMATS["vqav2"]` is lmms-lab/VQAv2:

every source gives a `datasets.Dataset` with at least the columns of `REQUIRED_COLUMNS`; `answers` may be the
lmms-lab list of 10 dicts (`answer`, `answer_confidence`, `answer_id`) or a plain list of strings, and
`answer_type` / `question_type` are optional (missing ones read as "unknown").

The seeded sample (`fraction`, `seed`): the CATP reference code evaluated on a "UniformSampler" that takes
`torch.randperm(n)[: int(n * fraction)]`. Here the same draw is made from its own generator,
`torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(n * fraction)]`, and the chosen rows are
kept in dataset order. `--fraction 0.1 --seed 42` is therefore the paper's sampling procedure and size (21,435 of
lmms-lab/VQAv2's 214,354 validation questions); it is not guaranteed to be question for question the paper's
subset, because the reference code drew from torch's global generator (whose state depended on what ran before)
over LAVIS's own copy of the annotations. `limit` then keeps the first `limit` rows of that.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..checkpoints import looks_local
from .metrics import VQA_ACCURACY, Metric

EMBEDDED = "embedded"
REQUIRED_COLUMNS = ("question_id", "question", "image", "answers")
OPTIONAL_COLUMNS = ("answer_type", "question_type")
UNKNOWN_TYPE = "unknown"
LMMS_LAB_VQAV2 = "lmms-lab/VQAv2"


def _is_save_to_disk_folder(path: Path) -> bool:
    # `Dataset.save_to_disk` writes state.json; `DatasetDict.save_to_disk` writes dataset_dict.json.
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _pick_split(dataset_dict: Any, split: str, source: str) -> Any:
    """`dataset_dict[split]`, or its only split when it has one; otherwise an error listing the splits."""
    names = list(dataset_dict)
    if split in dataset_dict:
        return dataset_dict[split]
    if len(names) == 1:
        return dataset_dict[names[0]]
    raise ValueError(f"`split` {split!r} is not in dataset {source!r}; it has splits {names}.")


def _load_source(source: str, split: str) -> Any:
    """The raw `datasets.Dataset` of `source` (no checks, no sampling)."""
    import datasets

    if source == EMBEDDED:
        from ..toy.shapes import embedded_eval_dataset

        return embedded_eval_dataset()
    path = Path(source).expanduser()
    if path.is_dir():
        if _is_save_to_disk_folder(path):
            loaded = datasets.load_from_disk(str(path))
            return _pick_split(loaded, split, source) if isinstance(loaded, datasets.DatasetDict) else loaded
        if not any(path.rglob("*.parquet")):
            raise ValueError(
                f"`dataset` {source!r} is a folder but neither a `save_to_disk` folder (state.json or "
                "dataset_dict.json) nor a folder of parquet files."
            )
        # A folder of parquet files: a Hub-style layout ("validation-00000-of-00002.parquet", data/...) is split by
        # file name; any other names form a single split, taken whatever `split` says.
        return _pick_split(datasets.load_dataset(str(path)), split, source)
    if path.is_file() or any(ch in source for ch in "*?["):
        files = [str(path)] if path.is_file() else sorted(glob.glob(str(path)))
        if not files or not all(f.endswith(".parquet") for f in files):
            raise ValueError(
                f"`dataset` {source!r} must be parquet file(s) (*.parquet), a folder, a Hub id or {EMBEDDED!r}; "
                f"matched {files or 'no files'}."
            )
        empty = [f for f in files if _parquet_rows(f) == 0]
        if len(empty) == len(files):
            raise ValueError(f"`dataset` {source!r}: the parquet file(s) {empty} hold no rows.")
        # All files form one dataset (the builder calls it "train"; `split` names nothing here).
        return datasets.load_dataset("parquet", data_files=files, split="train")
    # A Hub id is "owner/name"; anything else that names a file or folder is a local path that is missing.
    if looks_local(source) or source.endswith((".parquet", ".arrow", ".json")) or "/" not in source:
        raise ValueError(f"`dataset` {source!r}: no such file or folder (a Hub id has the form 'owner/name').")
    try:
        return datasets.load_dataset(source, split=split)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise ValueError(
            f"`dataset` {source!r} (split {split!r}) could not be loaded from the Hugging Face Hub: {error}. Pass a Hub "
            f"id such as {LMMS_LAB_VQAV2!r} (online), a local `save_to_disk` folder, parquet files, or {EMBEDDED!r}."
        ) from error


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def check_columns(dataset: Any, source: str) -> None:
    """Raise a ValueError naming the missing columns, or a badly typed `answers` column."""
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"`dataset` {source!r} lacks column(s) {missing}; a VQA evaluation set needs {list(REQUIRED_COLUMNS)} "
            f"(lmms-lab/VQAv2 schema; optional {list(OPTIONAL_COLUMNS)}). It has {dataset.column_names}."
        )
    if len(dataset) == 0:
        return
    answers = dataset[0]["answers"]
    if not isinstance(answers, list) or not answers or not all(
        isinstance(a, str) or (isinstance(a, dict) and isinstance(a.get("answer"), str)) for a in answers
    ):
        raise ValueError(
            f"`dataset` {source!r}: column `answers` must hold lists of answer strings or of dicts with an 'answer' "
            f"string (lmms-lab/VQAv2); the first row has {answers!r}."
        )


def _row_error(source: str, index: int, question_id: Any, column: str, message: str) -> ValueError:
    return ValueError(f"`dataset` {source!r}, row {index} (question_id {question_id!r}): column `{column}` {message}")


def check_vqa_rows(dataset: Any, source: str) -> None:
    """Every row's text fields, and image paths where the column holds paths, before anything is generated.

    Raises a ValueError naming the row, its question_id, the column and what is wrong. Images stored as bytes are
    decoded only when their batch is made.
    """
    rows = dataset.select_columns(["question_id", "question", "answers"])[:]
    for index, (question_id, question, answers) in enumerate(zip(rows["question_id"], rows["question"], rows["answers"])):
        if question_id is None:
            raise _row_error(source, index, question_id, "question_id", "is empty.")
        if not isinstance(question, str) or not question.strip():
            raise _row_error(source, index, question_id, "question", f"must be a non-empty string; got {question!r}.")
        strings = answer_strings(answers) if isinstance(answers, list) else None
        if not strings or not all(isinstance(a, str) for a in strings):
            raise _row_error(
                source, index, question_id, "answers",
                f"must be a non-empty list of answer strings or of dicts with an 'answer' string; got {answers!r}.",
            )
    from datasets import Image as ImageFeature

    if isinstance(dataset.features["image"], ImageFeature):
        return
    for index, (question_id, image) in enumerate(zip(rows["question_id"], dataset.select_columns(["image"])["image"])):
        path = image.get("path") if isinstance(image, dict) and not image.get("bytes") else image
        if isinstance(image, dict) and image.get("bytes"):
            continue
        if not isinstance(path, str) or not Path(path).is_file():
            raise _row_error(
                source, index, question_id, "image", f"must hold an image (bytes, or the path of an image file); got {image!r}."
            )


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


def sample_indices(num_rows: int, fraction: float | None, seed: int) -> list[int]:
    """The rows of the seeded sample (see the module docstring), in dataset order; all rows when `fraction` is None."""
    if fraction is None:
        return list(range(num_rows))
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num_rows, generator=generator)[: int(num_rows * fraction)]
    return sorted(chosen.tolist())


def answer_strings(answers: list[Any]) -> list[str]:
    """The human answers of one row as strings (lmms-lab dicts or plain strings)."""
    return [a.get("answer") if isinstance(a, dict) else a for a in answers]


def row_type(row: dict[str, Any], column: str) -> str:
    """`answer_type` / `question_type` of a row, "unknown" where the dataset lacks it."""
    value = row.get(column)
    return UNKNOWN_TYPE if value is None else str(value)


def check_sample(fraction: float | None, seed: int, limit: int | None) -> None:
    """Raise a ValueError naming the first bad sampling option (before any data is loaded)."""
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"`fraction` must be a number in (0, 1] or None; got {fraction!r}.")
    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        raise ValueError(f"`limit` must be a positive integer or None; got {limit!r}.")
    if not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer; got {seed!r}.")


def vqav2_record(row: dict[str, Any]) -> dict[str, Any]:
    """The question record of one lmms-lab/VQAv2 row (its text columns)."""
    return {
        "question_id": row["question_id"],
        "question": row["question"],
        "answers": answer_strings(row["answers"]),
        "answer_type": row_type(row, "answer_type"),
        "question_type": row_type(row, "question_type"),
    }


@dataclass(frozen=True)
class DatasetFormat:
    """One benchmark's layout (see the module docstring).

    `check(dataset, source)` raises a ValueError naming what is wrong with a loaded dataset's columns;
    `check_rows(dataset, source)` the same for every row to be evaluated (before anything is generated);
    `to_record(row)` maps a row without its `image` to the question record.
    """

    name: str
    hub_id: str | None
    default_split: str
    check: Callable[[Any, str], None]
    check_rows: Callable[[Any, str], None]
    to_record: Callable[[dict[str, Any]], dict[str, Any]]
    metric: Metric


DATASET_FORMATS: dict[str, DatasetFormat] = {}


def register_dataset_format(dataset_format: DatasetFormat, overwrite: bool = False) -> DatasetFormat:
    """Add a format to `DATASET_FORMATS` (under its `name`); `load_vqa_dataset(dataset_format=name)` accepts it."""
    if dataset_format.name in DATASET_FORMATS and not overwrite:
        raise ValueError(f"dataset format {dataset_format.name!r} is already registered; pass overwrite=True.")
    DATASET_FORMATS[dataset_format.name] = dataset_format
    return dataset_format


VQAV2 = register_dataset_format(
    DatasetFormat("vqav2", LMMS_LAB_VQAV2, "validation", check_columns, check_vqa_rows, vqav2_record, VQA_ACCURACY)
)


def get_dataset_format(name: str) -> DatasetFormat:
    if name not in DATASET_FORMATS:
        raise ValueError(f"`--dataset-format` must be one of {list(DATASET_FORMATS)}; got {name!r}.")
    return DATASET_FORMATS[name]


def question_records(dataset: Any, dataset_format: DatasetFormat = VQAV2) -> list[dict[str, Any]]:
    """The question record of every row, in order (images are not decoded)."""
    text = dataset.remove_columns(["image"])[:]
    return [dataset_format.to_record({column: values[i] for column, values in text.items()}) for i in range(len(dataset))]


def load_vqa_dataset(
    source: str = EMBEDDED,
    split: str = "validation",
    fraction: float | None = None,
    seed: int = 42,
    limit: int | None = None,
    dataset_format: str = "vqav2",
) -> Any:
    """Load a VQA evaluation set as a `datasets.Dataset`, sampled and limited.

    Args:
        source: `"embedded"` (the synthetic set of the embedded tiny model), a Hub dataset id (`"lmms-lab/VQAv2"`),
            a `save_to_disk` folder (Dataset or DatasetDict), a parquet file, a glob of parquet files, or a folder of
            parquet files; all in the lmms-lab/VQAv2 schema.
        split: the split of a Hub dataset, DatasetDict folder or Hub-style parquet folder ("validation").
        fraction: keep a seeded random `fraction` (0 < fraction <= 1) of the rows (see the module docstring).
        seed: seed of that sample (42 in the paper).
        limit: then keep at most the first `limit` rows.
        dataset_format: the name of its `DatasetFormat` (`DATASET_FORMATS`), whose check it must pass.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"`dataset` must be a non-empty string (Hub id, local path or {EMBEDDED!r}); got {source!r}.")
    check_sample(fraction, seed, limit)
    checked_format = get_dataset_format(dataset_format)
    dataset = _load_source(source, split)
    checked_format.check(dataset, source)
    indices = sample_indices(len(dataset), fraction, seed)
    if limit is not None:
        indices = indices[:limit]
    if not indices:
        raise ValueError(
            f"`dataset` {source!r} has no rows left to evaluate ({len(dataset)} rows, fraction={fraction!r}, "
            f"limit={limit!r})."
        )
    if len(indices) != len(dataset):
        dataset = dataset.select(indices)
    checked_format.check_rows(dataset, source)  # only the rows to be evaluated
    return _as_images(dataset, source)


__all__ = [
    "DATASET_FORMATS",
    "DatasetFormat",
    "EMBEDDED",
    "VQAV2",
    "LMMS_LAB_VQAV2",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "answer_strings",
    "check_columns",
    "check_vqa_rows",
    "check_sample",
    "get_dataset_format",
    "question_records",
    "register_dataset_format",
    "vqav2_record",
    "load_vqa_dataset",
    "row_type",
    "sample_indices",
]
