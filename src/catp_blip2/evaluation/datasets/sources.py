"""Where evaluation data comes from: a Hub id, a local snapshot of a Hub repo, a `save_to_disk` folder, parquet
files or "embedded"; and the seeded sample of its rows (see the package docstring for the paper's protocol)."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

from ...checkpoints import looks_local

EMBEDDED = "embedded"
EMBEDDED_CALIBRATION = "embedded-calibration"  # the embedded task's calibration split, disjoint from "embedded"
EMBEDDED_SETS = (EMBEDDED, EMBEDDED_CALIBRATION)
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
        from ...toy.shapes import embedded_eval_dataset

        return embedded_eval_dataset()
    if source == EMBEDDED_CALIBRATION:
        from ...toy.shapes import embedded_calibration_dataset

        return embedded_calibration_dataset()
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


def sample_indices(num_rows: int, fraction: float | None, seed: int) -> list[int]:
    """The rows of the seeded sample (see the module docstring), in dataset order; all rows when `fraction` is None."""
    if fraction is None:
        return list(range(num_rows))
    import torch

    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num_rows, generator=generator)[: int(num_rows * fraction)]
    return sorted(chosen.tolist())


def check_sample(fraction: float | None, seed: int, limit: int | None) -> None:
    """Raise a ValueError naming the first bad sampling option (before any data is loaded)."""
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"`fraction` must be a number in (0, 1] or None; got {fraction!r}.")
    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        raise ValueError(f"`limit` must be a positive integer or None; got {limit!r}.")
    if not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer; got {seed!r}.")
