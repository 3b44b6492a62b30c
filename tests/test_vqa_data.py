"""Loading VQA evaluation sets through `datasets`: local copies in the lmms-lab/VQAv2 schema, sampling, errors."""

from __future__ import annotations

import datasets
import pytest
import torch
from vqa_standin import VQAV2_FEATURES, standin_dataset

from catp_blip2.evaluation.datasets import REQUIRED_COLUMNS, answer_strings, load_vqa_dataset, sample_indices


@pytest.fixture(scope="module")
def standin():
    return standin_dataset(12)


@pytest.fixture(scope="module")
def copies(standin, tmp_path_factory):
    """The stand-in as a save_to_disk folder, a DatasetDict folder, one parquet file and a Hub-style parquet folder."""
    root = tmp_path_factory.mktemp("vqa_copies")
    standin.save_to_disk(str(root / "disk"))
    datasets.DatasetDict({"validation": standin, "testdev": standin.select(range(3))}).save_to_disk(str(root / "dict"))
    standin.to_parquet(str(root / "one.parquet"))
    (root / "hub" / "data").mkdir(parents=True)
    standin.select(range(6)).to_parquet(str(root / "hub" / "data" / "validation-00000-of-00002.parquet"))
    standin.select(range(6, 12)).to_parquet(str(root / "hub" / "data" / "validation-00001-of-00002.parquet"))
    standin.select(range(2)).to_parquet(str(root / "hub" / "data" / "test-00000-of-00001.parquet"))
    (root / "flat").mkdir()
    standin.select(range(5)).to_parquet(str(root / "flat" / "part-a.parquet"))
    standin.select(range(5, 12)).to_parquet(str(root / "flat" / "part-b.parquet"))
    return root


@pytest.mark.parametrize("layout", ["disk", "dict", "one.parquet", "hub", "flat"])
def test_local_copies_load_in_the_lmms_lab_schema(standin, copies, layout):
    loaded = load_vqa_dataset(str(copies / layout))
    assert len(loaded) == 12
    assert loaded.features == VQAV2_FEATURES
    assert loaded["question_id"] == standin["question_id"]
    assert answer_strings(loaded[1]["answers"]) == ["red"] * 4 + ["blue"] * 6
    assert loaded[4]["image"].mode == "L"  # a greyscale image survives (the runner converts to RGB)


def test_split_selection_and_errors(copies):
    assert len(load_vqa_dataset(str(copies / "dict"), split="testdev")) == 3
    assert len(load_vqa_dataset(str(copies / "hub"), split="test")) == 2
    with pytest.raises(ValueError, match=r"`split` 'train' is not in .*\['validation', 'testdev'\]"):
        load_vqa_dataset(str(copies / "dict"), split="train")


def test_glob_of_parquet_files(copies):
    assert len(load_vqa_dataset(str(copies / "flat" / "*.parquet"))) == 12


def test_plain_string_answers_and_missing_optional_columns(standin, tmp_path):
    plain = standin.map(lambda row: {"answers": [a["answer"] for a in row["answers"]]}).remove_columns(
        ["answer_type", "question_type"]
    )
    plain.save_to_disk(str(tmp_path / "plain"))
    loaded = load_vqa_dataset(str(tmp_path / "plain"))
    assert loaded[0]["answers"] == ["left"] * 10


def test_seeded_fraction_and_limit(copies):
    full = load_vqa_dataset(str(copies / "disk"))
    sample = load_vqa_dataset(str(copies / "disk"), fraction=0.5, seed=42)
    expected = sorted(torch.randperm(12, generator=torch.Generator().manual_seed(42))[:6].tolist())
    assert sample["question_id"] == [full["question_id"][i] for i in expected]
    assert load_vqa_dataset(str(copies / "disk"), fraction=0.5, seed=42)["question_id"] == sample["question_id"]
    assert load_vqa_dataset(str(copies / "disk"), fraction=0.5, seed=7)["question_id"] != sample["question_id"]
    assert load_vqa_dataset(str(copies / "disk"), fraction=0.5, seed=42, limit=2)["question_id"] == sample["question_id"][:2]
    assert load_vqa_dataset(str(copies / "disk"), limit=3)["question_id"] == full["question_id"][:3]


def test_paper_sample_size():
    # 10% of lmms-lab/VQAv2 validation (214,354 questions), as the reference code's int(n * fraction).
    assert len(sample_indices(214_354, 0.1, 42)) == 21_435


def test_missing_columns_are_named(standin, tmp_path):
    standin.remove_columns(["answers", "question_id"]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['question_id', 'answers'\]"):
        load_vqa_dataset(str(tmp_path / "bad"))
    assert REQUIRED_COLUMNS == ("question_id", "question", "image", "answers")


def test_bad_answers_column(standin, tmp_path):
    standin.map(lambda row: {"answers": "yes"}, remove_columns=["answers"]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="column `answers` must hold lists"):
        load_vqa_dataset(str(tmp_path / "bad"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 0.0}, "`fraction` must be a number in \\(0, 1\\]"),
        ({"fraction": 1.5}, "`fraction`"),
        ({"limit": 0}, "`limit` must be a positive integer"),
        ({"source": ""}, "`dataset` must be a non-empty string"),
        ({"source": "./no/such/folder"}, "no such file or folder"),
        ({"source": "data.parquet"}, "no such file or folder"),
        ({"source": "no/such/dir/x"}, "no such file or folder"),
        ({"source": "missing-*.parquet"}, "must be parquet file"),
    ],
)
def test_argument_errors(kwargs, message):
    kwargs = {"source": "embedded", **kwargs}
    with pytest.raises(ValueError, match=message):
        load_vqa_dataset(**kwargs)


def test_folder_without_data(tmp_path):
    with pytest.raises(ValueError, match="neither a `save_to_disk` folder"):
        load_vqa_dataset(str(tmp_path))


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(ValueError, match="could not be loaded from the Hugging Face Hub"):
        load_vqa_dataset("nobody-here/no-such-vqa-set-catp")


def test_embedded_set():
    embedded = load_vqa_dataset("embedded", limit=5)
    assert len(embedded) == 5
    assert set(VQAV2_FEATURES) <= set(embedded.column_names)
    assert len(embedded[0]["answers"]) == 10


def _rows_with(tmp_path, name: str, change) -> str:
    """The stand-in with one row changed, as parquet written without datasets' metadata (plain columns)."""
    import pandas as pd

    from vqa_standin import standin_dataset

    frame = standin_dataset(6).to_pandas()
    change(frame)
    path = tmp_path / f"{name}.parquet"
    pd.DataFrame(frame).to_parquet(path)
    return str(path)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("no-question", lambda f: f.__setitem__("question", [None] + list(f["question"][1:])), r"row 0 \(question_id \d+\): column `question` must be a non-empty string; got None"),
        ("empty-answers", lambda f: f.__setitem__("answers", list(f["answers"][:3]) + [[]] + list(f["answers"][4:])), r"row 3 \(question_id \d+\): column `answers` must be a non-empty list"),
        ("text-images", lambda f: f.__setitem__("image", ["not an image"] * len(f)), r"row 0 \(question_id \d+\): column `image` must hold an image"),
    ],
)
def test_bad_rows_are_named_before_anything_is_generated(tmp_path, name, change, message):
    with pytest.raises(ValueError, match=message):
        load_vqa_dataset(_rows_with(tmp_path, name, change))


def test_empty_parquet_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"question_id": pa.array([], pa.int64())}), path)
    with pytest.raises(ValueError, match="hold no rows"):
        load_vqa_dataset(str(path))
