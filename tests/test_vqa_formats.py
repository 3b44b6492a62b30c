"""The dataset formats beyond VQAv2 (OK-VQA, TextVQA, VizWiz-VQA, GQA): stand-ins in the lmms-lab schemas as Hub
snapshots, Hub ids (through `datasets.load_dataset`, redirected to the snapshots: the Hub is out of reach here),
save_to_disk copies; the GQA join; bad rows; hand-checked scores and breakdowns; format inference."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pytest
from vqa_standin import (
    AGREEMENT,
    FEATURES,
    GQA_IMAGE_IDS,
    GQA_IMAGES_FEATURES,
    GQA_INSTRUCTIONS_FEATURES,
    HAND_SCORES,
    SNAPSHOTS,
    gqa_image_rows,
    gqa_rows,
)

from catp_blip2.evaluation.datasets import (
    DATASET_FORMATS,
    gqa_configs,
    infer_dataset_format,
    load_vqa_dataset,
    question_records,
)
from catp_blip2.evaluation.metrics import EXACT_MATCH, VQA_ACCURACY, exact_match
from catp_blip2.evaluation.results import score_configuration
from catp_blip2.evaluation.sweep import Configuration

FORMATS = ["okvqa", "textvqa", "vizwiz", "gqa"]
DEFAULT_SPLITS = {"vqav2": "validation", "okvqa": "val2014", "textvqa": "validation", "vizwiz": "val", "gqa": "testdev"}
HUB_IDS = {
    "vqav2": "lmms-lab/VQAv2", "okvqa": "lmms-lab/OK-VQA", "textvqa": "lmms-lab/textvqa",
    "vizwiz": "lmms-lab/VizWiz-VQA", "gqa": "lmms-lab/GQA",
}
COUNT = 6


# `datasets`' cache (and the GQA image files under it) in a temporary folder.
pytestmark = pytest.mark.usefixtures("datasets_cache_in_tmp")


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("snapshots")
    return {name: make(root / name, COUNT) for name, make in SNAPSHOTS.items()}


def test_registry_entries():
    assert {name: f.default_split for name, f in DATASET_FORMATS.items()} == DEFAULT_SPLITS
    assert {name: f.hub_id for name, f in DATASET_FORMATS.items()} == HUB_IDS
    assert {name: f.metric for name, f in DATASET_FORMATS.items()} == {
        "vqav2": VQA_ACCURACY, "okvqa": VQA_ACCURACY, "textvqa": VQA_ACCURACY, "vizwiz": VQA_ACCURACY, "gqa": EXACT_MATCH,
    }


@pytest.mark.parametrize("name", FORMATS)
def test_snapshots_load_in_their_schemas_with_the_default_split(snapshots, name):
    loaded = load_vqa_dataset(str(snapshots[name]), dataset_format=name)
    assert len(loaded) == COUNT
    expected = dict(FEATURES[name])
    if name == "gqa":
        expected["image"] = datasets.Image()  # joined from the images config
    assert dict(loaded.features) == expected
    assert loaded[1]["image"].size == (40, 40)


def test_textvqa_and_vizwiz_test_splits_load_and_their_missing_answers_are_named(snapshots):
    # The test splits have no answers: they load, and are refused as sets that cannot be scored.
    for name in ("textvqa", "vizwiz"):
        with pytest.raises(ValueError, match=r"column `answers` must hold lists of answer strings .* the first row has \[\]"):
            load_vqa_dataset(str(snapshots[name]), split="test", dataset_format=name)
    with pytest.raises(ValueError, match=r"`split` 'train' is not in .*\['test', 'validation'\]|\['validation', 'test'\]"):
        load_vqa_dataset(str(snapshots["textvqa"]), split="train", dataset_format="textvqa")


@pytest.fixture()
def hub(monkeypatch, snapshots):
    """`datasets.load_dataset` with the lmms-lab Hub ids served from the snapshots (same name/split arguments);
    records the calls."""
    real = datasets.load_dataset
    by_id = {HUB_IDS[name]: snapshots[name] for name in FORMATS}
    calls = []

    def load_dataset(path, *args, **kwargs):
        if path in by_id:
            calls.append((path, kwargs.get("name"), kwargs.get("split")))
            return real(str(by_id[path]), *args, **kwargs)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("name", FORMATS)
def test_hub_ids_load_through_datasets(hub, snapshots, name):
    loaded = load_vqa_dataset(HUB_IDS[name], dataset_format=infer_dataset_format(HUB_IDS[name]))
    assert len(loaded) == COUNT
    if name == "gqa":
        assert hub == [("lmms-lab/GQA", "testdev_balanced_instructions", "testdev"), ("lmms-lab/GQA", "testdev_balanced_images", "testdev")]
    else:
        assert hub == [(HUB_IDS[name], None, DEFAULT_SPLITS[name])]
    direct = load_vqa_dataset(str(snapshots[name]), dataset_format=name)
    assert question_records(loaded, DATASET_FORMATS[name]) == question_records(direct, DATASET_FORMATS[name])


@pytest.mark.parametrize("name", ["okvqa", "textvqa", "vizwiz"])
def test_save_to_disk_copies(snapshots, tmp_path, name):
    whole = datasets.load_dataset(str(snapshots[name]))  # the DatasetDict, as a user would save it
    whole.save_to_disk(str(tmp_path / "dict"))
    whole[DEFAULT_SPLITS[name]].save_to_disk(str(tmp_path / "one"))
    for folder in ("dict", "one"):
        loaded = load_vqa_dataset(str(tmp_path / folder), dataset_format=name)
        assert len(loaded) == COUNT and dict(loaded.features) == dict(FEATURES[name])


def test_gqa_save_to_disk_copies(snapshots, tmp_path):
    # One save_to_disk folder per config (the Hub layout, saved), and a joined copy that carries its images.
    for config in gqa_configs("testdev"):
        datasets.load_dataset(str(snapshots["gqa"]), name=config, split="testdev").save_to_disk(str(tmp_path / "configs" / config))
    per_config = load_vqa_dataset(str(tmp_path / "configs"), dataset_format="gqa")
    joined = load_vqa_dataset(str(snapshots["gqa"]), dataset_format="gqa")
    joined.save_to_disk(str(tmp_path / "joined"))
    from_joined = load_vqa_dataset(str(tmp_path / "joined"), dataset_format="gqa")
    for loaded in (per_config, from_joined):
        assert question_records(loaded, DATASET_FORMATS["gqa"]) == question_records(joined, DATASET_FORMATS["gqa"])
        assert [image.tobytes() for image in loaded["image"]] == [image.tobytes() for image in joined["image"]]


def test_gqa_join_by_image_id_reads_only_the_images_of_the_questions_kept(snapshots):
    rows, images = gqa_rows(COUNT), {row["id"]: row["image"] for row in gqa_image_rows()}
    loaded = load_vqa_dataset(str(snapshots["gqa"]), dataset_format="gqa")
    assert loaded["imageId"] == [row["imageId"] for row in rows]
    for row, image in zip(rows, loaded["image"]):
        assert image.convert("RGB").tobytes() == images[row["imageId"]].convert("RGB").tobytes()
    # The column refers to files holding the encoded images (nothing was decoded or copied per question).
    stored = loaded.cast_column("image", datasets.Image(decode=False))["image"]
    assert all(item["bytes"] is None and Path(item["path"]).is_file() for item in stored)
    assert len({item["path"] for item in stored}) == len(GQA_IMAGE_IDS)
    # With --limit 1 only the first question's image is read.
    one = load_vqa_dataset(str(snapshots["gqa"]), dataset_format="gqa", limit=1)
    assert one.cast_column("image", datasets.Image(decode=False))["image"][0]["path"] == stored[0]["path"]


def _gqa_snapshot_with(tmp_path, change) -> str:
    rows = gqa_rows(COUNT)
    change(rows)
    root = tmp_path / "gqa"
    for config, data in (
        ("testdev_balanced_instructions", datasets.Dataset.from_list(rows, features=GQA_INSTRUCTIONS_FEATURES)),
        ("testdev_balanced_images", datasets.Dataset.from_list(gqa_image_rows(), features=GQA_IMAGES_FEATURES)),
    ):
        (root / config).mkdir(parents=True)
        data.to_parquet(str(root / config / "testdev-00000-of-00001.parquet"))
    from vqa_standin import GQA_README

    (root / "README.md").write_text(GQA_README.format(instructions=COUNT, images=len(GQA_IMAGE_IDS), instructions_bytes=0, images_bytes=0))
    return str(root)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rows: rows[2].update(imageId="n000000"), r"row 2 \(id '20968481'\): column `imageId` 'n000000' is not an `id` of the images config 'testdev_balanced_images' \(3 images\)"),
        (lambda rows: rows[3].update(answer=""), r"row 3 \(id '20968482'\): column `answer` must be a non-empty string; got ''"),
        (lambda rows: rows[1].update(question=None), r"row 1 \(id '20968480'\): column `question` must be a non-empty string; got None"),
    ],
)
def test_gqa_bad_rows_are_named(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_vqa_dataset(_gqa_snapshot_with(tmp_path, change), dataset_format="gqa")


@pytest.mark.parametrize("name", ["okvqa", "textvqa", "vizwiz"])
@pytest.mark.parametrize(
    "column, value, message",
    [
        ("question", None, "column `question` must be a non-empty string; got None"),
        ("answers", [], "column `answers` must be a non-empty list of answer strings"),
        ("image", "not an image", "column `image` must hold an image"),
    ],
)
def test_bad_rows_are_named_as_for_vqav2(snapshots, tmp_path, name, column, value, message):
    import pandas as pd

    frame = datasets.load_dataset(str(snapshots[name]), split=DEFAULT_SPLITS[name]).to_pandas()
    if column == "image":
        frame["image"] = [value] * len(frame)
    else:
        frame[column] = [value if i == 3 else v for i, v in enumerate(frame[column])]
    pd.DataFrame(frame).to_parquet(tmp_path / "bad.parquet")
    row = 0 if column == "image" else 3
    question_id = frame["question_id"].tolist()[row]
    with pytest.raises(ValueError, match=re.escape(f"row {row} (question_id {question_id!r}): {message}")):
        load_vqa_dataset(str(tmp_path / "bad.parquet"), dataset_format=name)


def test_missing_columns_are_named(snapshots, tmp_path):
    datasets.load_dataset(str(snapshots["vizwiz"]), split="val").remove_columns(["answers"]).save_to_disk(str(tmp_path / "v"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['answers'\].*lmms-lab/VizWiz-VQA schema"):
        load_vqa_dataset(str(tmp_path / "v"), dataset_format="vizwiz")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['id', 'imageId', 'answer'\].*lmms-lab/GQA questions schema"):
        load_vqa_dataset(str(snapshots["okvqa"]), split="val2014", dataset_format="gqa")
    with pytest.raises(ValueError, match=r"`--dataset-format` must be one of \['vqav2', 'okvqa', 'textvqa', 'vizwiz', 'gqa'"):
        load_vqa_dataset(str(snapshots["okvqa"]), dataset_format="coco")


def test_gqa_questions_without_images_need_the_images_config(snapshots, tmp_path):
    datasets.load_dataset(str(snapshots["gqa"]), name="testdev_balanced_instructions", split="testdev").save_to_disk(str(tmp_path / "q"))
    with pytest.raises(ValueError, match="need the images config 'testdev_balanced_images'"):
        load_vqa_dataset(str(tmp_path / "q"), dataset_format="gqa")


def test_a_snapshot_with_several_configs_needs_its_format(snapshots):
    # Read as VQAv2 (one table), the GQA snapshot is refused with the configs datasets found.
    with pytest.raises(ValueError, match="Config name is missing"):
        load_vqa_dataset(str(snapshots["gqa"]))


# ---- hand-checked scores -------------------------------------------------------------------------------------------


def _scores(name: str, snapshots, predictions) -> dict:
    dataset_format = DATASET_FORMATS[name]
    records = question_records(load_vqa_dataset(str(snapshots[name]), dataset_format=name), dataset_format)
    configuration = Configuration("none", {"pruning_method": "none"}, 32)
    entry, lines = score_configuration(configuration, records, predictions(records), dataset_format.metric)
    return entry | {"lines": lines}


@pytest.mark.parametrize("name", ["okvqa", "textvqa", "vizwiz"])
def test_vqa_accuracy_of_the_stand_ins_by_hand(snapshots, name):
    # Predicting every row's own answer scores HAND_SCORES[n] for its n agreeing humans; "blue" (the other 10 - n)
    # scores HAND_SCORES[10 - n] where that is a count in the table, 1.0 from 4 on.
    entry = _scores(name, snapshots, lambda records: [r["answers"][0] for r in records])
    expected = [HAND_SCORES[AGREEMENT[i % 5]] for i in range(COUNT)]  # 1.0, 1.0, 0.9, 0.6, 0.3, 1.0
    assert [line["accuracy"] for line in entry["lines"]] == pytest.approx([100 * e for e in expected])
    assert entry["accuracy"] == pytest.approx(100 * 4.8 / 6)
    blue = _scores(name, snapshots, lambda records: ["Blue." for _ in records])  # normalised to "blue"
    # n = 10, 4, 3, 2, 1, 10 -> "blue" given by 0, 6, 7, 8, 9, 0 humans -> 0, 1, 1, 1, 1, 0
    assert blue["accuracy"] == pytest.approx(100 * 4 / 6)


def test_breakdowns_by_hand(snapshots):
    own = lambda records: [r["answers"][0] for r in records]  # noqa: E731
    okvqa = _scores("okvqa", snapshots, own)
    # question_type cycles eight, one, other: rows (0, 3) -> 1.0, 0.6; (1, 4) -> 1.0, 0.3; (2, 5) -> 0.9, 1.0
    assert okvqa["accuracy_by_question_type"] == pytest.approx({"eight": 80.0, "one": 65.0, "other": 95.0})
    assert okvqa["accuracy_by_answer_type"] == pytest.approx({"other": 80.0})
    vizwiz = _scores("vizwiz", snapshots, own)
    # category cycles other, yes/no, unanswerable, number: rows (0, 4) -> 1.0, 0.3; 1 -> 1.0; 2 -> 0.9; 3 -> 0.6 ...
    assert vizwiz["accuracy_by_answer_type"] == pytest.approx({"other": 65.0, "yes/no": 100.0, "unanswerable": 90.0, "number": 60.0})
    assert _scores("textvqa", snapshots, own)["accuracy_by_answer_type"] == pytest.approx({"unknown": 80.0})


def test_gqa_exact_match_by_hand(snapshots):
    # Answers: red, yes, left, no, square, circle. Case and punctuation are ignored, nothing else.
    predictions = ["Red.", "yes", "the left", "No!", "squares", "CIRCLE"]
    entry = _scores("gqa", snapshots, lambda records: predictions)
    assert [line["accuracy"] for line in entry["lines"]] == [100.0, 100.0, 0.0, 100.0, 0.0, 100.0]
    assert entry["accuracy"] == pytest.approx(100 * 4 / 6)
    # structural: query (rows 0, 5), verify, choose, logical, compare; semantic: attr (0, 1, 4), rel, obj, cat
    assert entry["accuracy_by_answer_type"] == {"choose": 0.0, "compare": 0.0, "logical": 100.0, "query": 100.0, "verify": 100.0}
    assert entry["accuracy_by_question_type"] == pytest.approx({"attr": 200 / 3, "cat": 100.0, "obj": 100.0, "rel": 0.0})


def test_exact_match_metric():
    assert exact_match("Yes.", ["yes"]) == 1.0
    assert exact_match("t-shirt", ["T shirt"]) == 0.0  # punctuation is deleted, not replaced by a space
    assert exact_match("tshirt", ["T-shirt"]) == 1.0
    assert exact_match("two", ["2"]) == 0.0  # no number words, no articles: only case and punctuation
    assert exact_match("left", ["right", "left"]) == 1.0
    with pytest.raises(ValueError, match="`answers` must be a non-empty list"):
        exact_match("yes", [])


def test_format_inference():
    for name, hub_id in HUB_IDS.items():
        assert infer_dataset_format(hub_id) == name
        assert infer_dataset_format(f"/home/me/.cache/huggingface/hub/datasets--{hub_id.replace('/', '--')}/snapshots/9c0699c/") == name
    assert infer_dataset_format("lmms-lab/gqa") == "gqa"  # Hub ids are case-insensitive
    assert infer_dataset_format("embedded") == "vqav2"
    assert infer_dataset_format("/data/my-okvqa-copy") == "vqav2"  # a local folder's format is given, not guessed
