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

import re
from dataclasses import dataclass
from typing import Any, Callable

from ..metrics import EXACT_MATCH, VQA_ACCURACY, Metric
from .checks import _as_images, _columns_check, answer_strings, check_columns, check_vqa_rows, row_type
from .gqa import LMMS_LAB_GQA, attach_gqa_images, check_gqa_columns, check_gqa_rows, gqa_configs, gqa_record, load_gqa
from .sources import (
    DEFAULT_FORMAT,
    EMBEDDED,
    EMBEDDED_CALIBRATION,
    EMBEDDED_SETS,
    LMMS_LAB_VQAV2,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    _load_source,
    check_sample,
    sample_indices,
)
from .vqa import _strings_record, vqav2_record



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
    "EMBEDDED_CALIBRATION",
    "EMBEDDED_SETS",
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
