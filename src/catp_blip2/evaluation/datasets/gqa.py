"""GQA: questions and images in two configs of one Hub repo, joined by `imageId` after sampling; exact match."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .checks import _check_image_rows, _check_text_rows, _require_columns, _row_error
from .sources import EMBEDDED, UNKNOWN_TYPE, _is_save_to_disk_folder, _load_source


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
