"""Evaluation data through `datasets`: a registry of dataset formats, and loading by Hub id, local copy or "embedded".

A `DatasetFormat` is one benchmark's layout: its Hub id and default split, the columns it must have, how one of its
rows (without the image) becomes the common question record (`question_id`, `question`, `answers` as strings,
`answer_type`, `question_type`), and the `Metric` that scores predictions against those answers. The runner sees
only records, images and the metric, so a new benchmark is one format entry (`register_dataset_format`).

| format | Hub id | default split | answers | metric | answer_type / question_type from |
|---|---|---|---|---|---|
| `vqav2` | lmms-lab/VQAv2 | validation | 10 {answer, answer_confidence, answer_id} | VQA accuracy | answer_type / question_type |
| `okvqa` | lmms-lab/OK-VQA | val2014 | 10 strings | VQA accuracy | answer_type / question_type |
| `textvqa` | lmms-lab/textvqa | validation | 10 strings (+ unused `ocr_tokens`) | VQA accuracy | (none) |
| `vizwiz` | lmms-lab/VizWiz-VQA | val | 10 strings (`question_id` a string) | VQA accuracy | category / (none) |
| `gqa` | lmms-lab/GQA | testdev | one `answer` | exact match (case, punctuation ignored) | types.structural / types.semantic |

Every format loads from its Hub id, from a local snapshot of the Hub repo (the folder
`huggingface_hub.snapshot_download(repo_id, repo_type="dataset")` makes: README.md whose YAML `configs` list the
data files, and the parquet files; read with `datasets.load_dataset(folder, name=config)`), from `save_to_disk`
folders and from parquet files. GQA keeps its questions (`<split>_balanced_instructions`) and its images
(`<split>_balanced_images`, keyed `id`) in two configs of one repo: `load_gqa` reads the questions, and only after
sampling attaches the images of the questions kept, by `imageId` (`attach_gqa_images`): their encoded bytes are
written once to files under the `datasets` cache and the `image` column refers to those files, so no image is
decoded before its batch is made and none is copied once per question. A `save_to_disk` folder or parquet file of
GQA questions that already carry an `image` column (a joined copy) loads as it is.

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
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..checkpoints import looks_local
from .metrics import EXACT_MATCH, VQA_ACCURACY, Metric

EMBEDDED = "embedded"
REQUIRED_COLUMNS = ("question_id", "question", "image", "answers")
OPTIONAL_COLUMNS = ("answer_type", "question_type")
UNKNOWN_TYPE = "unknown"
LMMS_LAB_VQAV2 = "lmms-lab/VQAv2"
DEFAULT_FORMAT = "vqav2"


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


def _load_source(source: str, split: str, config: str | None = None, hub_example: str = LMMS_LAB_VQAV2) -> Any:
    """The raw `datasets.Dataset` of `source` (no checks, no sampling); `config` names the config of a Hub repo or
    of a local snapshot of one (None: its default)."""
    import datasets

    if source == EMBEDDED:
        from ..toy.shapes import embedded_eval_dataset

        return embedded_eval_dataset()
    path = Path(source).expanduser()
    if path.is_dir():
        if config is not None and _is_save_to_disk_folder(path / config):
            path = path / config  # a folder holding one save_to_disk folder per config
        if _is_save_to_disk_folder(path):
            loaded = datasets.load_from_disk(str(path))
            return _pick_split(loaded, split, source) if isinstance(loaded, datasets.DatasetDict) else loaded
        if not any(path.rglob("*.parquet")):
            raise ValueError(
                f"`dataset` {source!r} is a folder but neither a `save_to_disk` folder (state.json or "
                "dataset_dict.json) nor a folder of parquet files."
            )
        # A folder of parquet files: a Hub snapshot (README.md with `configs`), or a Hub-style layout
        # ("validation-00000-of-00002.parquet", data/...) split by file name; any other names form a single split,
        # taken whatever `split` says.
        from datasets.exceptions import DatasetGenerationError

        try:
            loaded = datasets.load_dataset(str(path), name=config, cache_dir=_folder_cache_dir(path))
        except ValueError as error:  # e.g. a snapshot with several configs and no default: datasets names them
            raise ValueError(f"`dataset` {source!r}: {error}") from error
        except DatasetGenerationError as error:  # files that do not match the README's features, unreadable parquet
            raise ValueError(f"`dataset` {source!r} could not be read: {error.__cause__ or error}") from error
        return _pick_split(loaded, split, source)
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
    where = f"split {split!r}" + (f", config {config!r}" if config else "")
    try:
        return datasets.load_dataset(source, name=config, split=split)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise ValueError(
            f"`dataset` {source!r} ({where}) could not be loaded from the Hugging Face Hub: {error}. Pass a Hub "
            f"id such as {hub_example!r} (online), a local snapshot of it, a `save_to_disk` folder, parquet files, "
            f"or {EMBEDDED!r}."
        ) from error
    except ValueError as error:  # an unknown split or config of a reachable repo
        raise ValueError(f"`dataset` {source!r} ({where}): {error}") from error


def _folder_cache_dir(path: Path) -> str:
    """A `datasets` cache folder of its own for a local folder of parquet files. `datasets` names the cache of a
    folder with README `configs` by the folder's name and the configs' file patterns, so two snapshots called
    "GQA" in different places would share one cache and the second would silently load the first's rows."""
    import datasets

    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "catp_blip2" / "local" / digest)


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


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


# ---- GQA: questions and images in two configs of one repo --------------------------------------------------------

LMMS_LAB_GQA = "lmms-lab/GQA"
GQA_REQUIRED_COLUMNS = ("id", "imageId", "question", "answer")
GQA_OPTIONAL_COLUMNS = ("types", "image")


def gqa_configs(split: str) -> tuple[str, str]:
    """(questions config, images config) of a GQA split in lmms-lab/GQA: `<split>_balanced_instructions` and
    `<split>_balanced_images` (testdev: `testdev_balanced_instructions`, `testdev_balanced_images`)."""
    return f"{split}_balanced_instructions", f"{split}_balanced_images"


def _holds_configs(source: str, config: str) -> bool:
    """Whether `source` is read config by config (a Hub id, or a snapshot folder with a folder per config) rather
    than as one joined table (save_to_disk folder, parquet files, a folder of parquet files)."""
    path = Path(source).expanduser()
    if source == EMBEDDED or path.is_file() or any(ch in source for ch in "*?["):
        return False
    if path.is_dir():
        return not _is_save_to_disk_folder(path) and (path / config).is_dir()
    return True  # a Hub id (or a missing path, which `_load_source` reports)


def load_gqa(source: str, split: str) -> Any:
    """GQA questions: the questions config of a Hub id or snapshot folder, or a joined copy as it is."""
    questions_config, _ = gqa_configs(split)
    config = questions_config if _holds_configs(source, questions_config) else None
    return _load_source(source, split, config=config, hub_example=LMMS_LAB_GQA)


def check_gqa_columns(dataset: Any, source: str) -> None:
    _require_columns(dataset, source, GQA_REQUIRED_COLUMNS, GQA_OPTIONAL_COLUMNS, "lmms-lab/GQA questions")


def _image_cache_folder(images: Any) -> Path:
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "catp_blip2" / "gqa_images" / images._fingerprint


def _image_files(images: Any, rows: list[int]) -> dict[int, str]:
    """{row of `images`: the path of a file holding that row's encoded image}: rows stored as files are used where
    they are, the others' bytes are written once under the `datasets` cache (atomically, so concurrent processes and
    killed runs leave whole files). Nothing is decoded."""
    from datasets import Image as ImageFeature

    folder = _image_cache_folder(images)
    raw = images.select(rows).select_columns(["image"]).cast_column("image", ImageFeature(decode=False))
    paths: dict[int, str] = {}
    position = 0
    for batch in raw.iter(batch_size=64):
        for image in batch["image"]:
            row = rows[position]
            position += 1
            stored = image.get("path") if isinstance(image, dict) else None
            if isinstance(image, dict) and not image.get("bytes") and stored and Path(stored).is_file():
                paths[row] = stored
                continue
            if not isinstance(image, dict) or not image.get("bytes"):
                raise ValueError(f"row {row} of the images holds no image: {image!r}")
            suffix = Path(stored).suffix if stored and re.fullmatch(r"\.[A-Za-z0-9]{1,5}", Path(stored).suffix) else ""
            path = folder / f"{row}{suffix}"
            if not path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                tmp.write_bytes(image["bytes"])
                os.replace(tmp, path)
            paths[row] = str(path)
    return paths


def attach_gqa_images(dataset: Any, source: str, split: str) -> Any:
    """The questions with an `image` column: each question's image, found by its `imageId` among the `id`s of the
    images config. Only the images of these questions are read (after sampling: a `--limit 10` run reads about 10),
    and none is decoded here. A joined copy (with an `image` column) is returned as it is."""
    from datasets import Image as ImageFeature

    if "image" in dataset.column_names:
        return dataset
    _, images_config = gqa_configs(split)
    if not _holds_configs(source, images_config):
        raise ValueError(
            f"`dataset` {source!r}: GQA questions without an `image` column need the images config {images_config!r}: "
            f"give the Hub id {LMMS_LAB_GQA!r} or a local snapshot of it (a folder with {images_config}/), or questions "
            "that carry their images."
        )
    images = _load_source(source, split, config=images_config, hub_example=LMMS_LAB_GQA)
    if "id" not in images.column_names or "image" not in images.column_names:
        raise ValueError(
            f"`dataset` {source!r}: the images config {images_config!r} must have columns ['id', 'image']; it has "
            f"{images.column_names}."
        )
    row_of = {image_id: row for row, image_id in enumerate(images["id"])}
    text = dataset.select_columns(["id", "imageId"])[:]
    for index, (question_id, image_id) in enumerate(zip(text["id"], text["imageId"])):
        if image_id not in row_of:
            raise _row_error(
                source, index, question_id, "imageId",
                f"{image_id!r} is not an `id` of the images config {images_config!r} ({len(row_of)} images).", "id",
            )
    files = _image_files(images, sorted({row_of[image_id] for image_id in text["imageId"]}))
    column = [files[row_of[image_id]] for image_id in text["imageId"]]
    return dataset.add_column("image", column).cast_column("image", ImageFeature())


def check_gqa_rows(dataset: Any, source: str) -> None:
    """Every row's id, question and answer, and its image, named like the VQAv2 checks (row, id, column)."""
    ids = _check_text_rows(dataset, source, "id", "answer")
    _check_image_rows(dataset, source, ids, "id")


def _nested_type(row: dict[str, Any], key: str) -> str:
    types = row.get("types")
    value = types.get(key) if isinstance(types, dict) else None
    return UNKNOWN_TYPE if value is None else str(value)


def gqa_record(row: dict[str, Any]) -> dict[str, Any]:
    """A GQA question: its one answer; answer_type = its structural type (verify, query, choose, logical,
    compare), question_type = its semantic type (obj, attr, cat, rel, global)."""
    return {
        "question_id": row["id"],
        "question": row["question"],
        "answers": [row["answer"]],
        "answer_type": _nested_type(row, "structural"),
        "question_type": _nested_type(row, "semantic"),
    }


# ---- the registry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFormat:
    """One benchmark's layout (see the module docstring).

    `check(dataset, source)` raises a ValueError naming what is wrong with a loaded dataset's columns;
    `check_rows(dataset, source)` the same for every row to be evaluated (before anything is generated);
    `to_record(row)` maps a row without its `image` to the question record. Optional: `title` (its name in
    tables), `id_column` (the column `question_id` comes from), `types` (the columns the record's answer_type and
    question_type come from, None where it has none; written to results.json), `load(source, split)` (replaces
    the generic loading) and `prepare(dataset, source, split)` (runs on the sampled rows before `check_rows`).
    """

    name: str
    hub_id: str | None
    default_split: str
    check: Callable[[Any, str], None]
    check_rows: Callable[[Any, str], None]
    to_record: Callable[[dict[str, Any]], dict[str, Any]]
    metric: Metric
    title: str = ""
    id_column: str = "question_id"
    types: tuple[str | None, str | None] = ("answer_type", "question_type")
    load: Callable[[str, str], Any] | None = None
    prepare: Callable[[Any, str, str], Any] | None = None

    def describe(self) -> dict[str, Any]:
        """What results.json says about the format: its name, title, Hub id, metric and where its types come from."""
        return {
            "name": self.name,
            "title": self.title or self.name,
            "hub_id": self.hub_id,
            "metric": self.metric.name,
            "answer_type_from": self.types[0],
            "question_type_from": self.types[1],
        }


DATASET_FORMATS: dict[str, DatasetFormat] = {}


def register_dataset_format(dataset_format: DatasetFormat, overwrite: bool = False) -> DatasetFormat:
    """Add a format to `DATASET_FORMATS` (under its `name`); `load_vqa_dataset(dataset_format=name)` accepts it."""
    if dataset_format.name in DATASET_FORMATS and not overwrite:
        raise ValueError(f"dataset format {dataset_format.name!r} is already registered; pass overwrite=True.")
    DATASET_FORMATS[dataset_format.name] = dataset_format
    return dataset_format


VQAV2 = register_dataset_format(
    DatasetFormat("vqav2", LMMS_LAB_VQAV2, "validation", check_columns, check_vqa_rows, vqav2_record, VQA_ACCURACY,
                  title="VQAv2")
)
OKVQA = register_dataset_format(
    DatasetFormat("okvqa", "lmms-lab/OK-VQA", "val2014", _columns_check("lmms-lab/OK-VQA", OPTIONAL_COLUMNS),
                  check_vqa_rows, _strings_record("answer_type", "question_type"), VQA_ACCURACY, title="OK-VQA")
)
TEXTVQA = register_dataset_format(
    DatasetFormat("textvqa", "lmms-lab/textvqa", "validation", _columns_check("lmms-lab/textvqa", ("ocr_tokens",)),
                  check_vqa_rows, _strings_record(None, None), VQA_ACCURACY, title="TextVQA", types=(None, None))
)
VIZWIZ = register_dataset_format(
    DatasetFormat("vizwiz", "lmms-lab/VizWiz-VQA", "val", _columns_check("lmms-lab/VizWiz-VQA", ("category",)),
                  check_vqa_rows, _strings_record("category", None), VQA_ACCURACY, title="VizWiz-VQA",
                  types=("category", None))
)
GQA = register_dataset_format(
    DatasetFormat("gqa", LMMS_LAB_GQA, "testdev", check_gqa_columns, check_gqa_rows, gqa_record, EXACT_MATCH,
                  title="GQA", id_column="id", types=("types.structural", "types.semantic"), load=load_gqa,
                  prepare=attach_gqa_images)
)


def get_dataset_format(name: str) -> DatasetFormat:
    if name not in DATASET_FORMATS:
        raise ValueError(f"`--dataset-format` must be one of {list(DATASET_FORMATS)}; got {name!r}.")
    return DATASET_FORMATS[name]


# A snapshot in the Hugging Face cache: .../datasets--<owner>--<name>/snapshots/<revision>
_CACHED_SNAPSHOT = re.compile(r"datasets--(?P<owner>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\][^/\\]+[/\\]?$")


def infer_dataset_format(source: str) -> str:
    """The format whose Hub id `source` is (or whose snapshot it is, in the Hugging Face cache layout); else the
    default, "vqav2" (the embedded set, and any local copy whose format is not named)."""
    if isinstance(source, str):
        match = _CACHED_SNAPSHOT.search(source)
        repo = f"{match['owner']}/{match['name']}" if match else source
        for dataset_format in DATASET_FORMATS.values():
            if dataset_format.hub_id and dataset_format.hub_id.lower() == repo.lower():
                return dataset_format.name
    return DEFAULT_FORMAT


def question_records(dataset: Any, dataset_format: DatasetFormat = VQAV2) -> list[dict[str, Any]]:
    """The question record of every row, in order (images are not decoded)."""
    text = dataset.remove_columns(["image"])[:]
    return [dataset_format.to_record({column: values[i] for column, values in text.items()}) for i in range(len(dataset))]


def load_vqa_dataset(
    source: str = EMBEDDED,
    split: str | None = None,
    fraction: float | None = None,
    seed: int = 42,
    limit: int | None = None,
    dataset_format: str = DEFAULT_FORMAT,
) -> Any:
    """Load a VQA evaluation set as a `datasets.Dataset`, sampled and limited.

    Args:
        source: `"embedded"` (the synthetic set of the embedded tiny model), a Hub dataset id (`"lmms-lab/VQAv2"`),
            a local snapshot of a Hub dataset repo, a `save_to_disk` folder (Dataset or DatasetDict), a parquet file,
            a glob of parquet files, or a folder of parquet files; all in the schema of `dataset_format`.
        split: the split of a Hub dataset, snapshot, DatasetDict folder or Hub-style parquet folder; None: the
            format's default split (`DatasetFormat.default_split`).
        fraction: keep a seeded random `fraction` (0 < fraction <= 1) of the rows (see the module docstring).
        seed: seed of that sample (42 in the paper).
        limit: then keep at most the first `limit` rows.
        dataset_format: the name of its `DatasetFormat` (`DATASET_FORMATS`), whose checks it must pass.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"`dataset` must be a non-empty string (Hub id, local path or {EMBEDDED!r}); got {source!r}.")
    check_sample(fraction, seed, limit)
    checked_format = get_dataset_format(dataset_format)
    split = checked_format.default_split if split is None else split
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"`split` must be a non-empty string or None (the format's default); got {split!r}.")
    if checked_format.load is not None:
        dataset = checked_format.load(source, split)
    else:
        dataset = _load_source(source, split, hub_example=checked_format.hub_id or LMMS_LAB_VQAV2)
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
    if checked_format.prepare is not None:
        dataset = checked_format.prepare(dataset, source, split)  # GQA: the images of these rows only
    checked_format.check_rows(dataset, source)  # only the rows to be evaluated
    return _as_images(dataset, source)


__all__ = [
    "DATASET_FORMATS",
    "DEFAULT_FORMAT",
    "DatasetFormat",
    "EMBEDDED",
    "GQA",
    "LMMS_LAB_GQA",
    "LMMS_LAB_VQAV2",
    "OKVQA",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "TEXTVQA",
    "VIZWIZ",
    "VQAV2",
    "answer_strings",
    "attach_gqa_images",
    "check_columns",
    "check_sample",
    "check_vqa_rows",
    "get_dataset_format",
    "gqa_configs",
    "gqa_record",
    "infer_dataset_format",
    "load_gqa",
    "load_vqa_dataset",
    "question_records",
    "register_dataset_format",
    "row_type",
    "sample_indices",
    "vqav2_record",
]
