"""`catp-blip2 eval` on every dataset format: the stand-in snapshots of lmms-lab/OK-VQA, textvqa, VizWiz-VQA and GQA
end to end on a tiny saved model, the format and split inferred from a Hub id, results.json / results.md naming
dataset and metric, and hand-checked scores through the whole pipeline (the answers fixed)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from conftest import cli_error
from vqa_standin import AGREEMENT, HAND_SCORES, SNAPSHOTS

from catp_blip2.cli import main
from catp_blip2.evaluation import runner
from catp_blip2.evaluation.datasets import DATASET_FORMATS
from catp_blip2.toy.tiny import tiny_model, tiny_processor

FAST = ["--methods", "catp", "--keep", "8", "--num-beams", "1", "--max-new-tokens", "2", "--batch-size", "4"]
COUNT = 6
FORMATS = ["okvqa", "textvqa", "vizwiz", "gqa"]
TITLES = {"okvqa": "OK-VQA", "textvqa": "TextVQA", "vizwiz": "VizWiz-VQA", "gqa": "GQA"}
SPLITS = {"okvqa": "val2014", "textvqa": "validation", "vizwiz": "val", "gqa": "testdev"}
HUB_IDS = {"okvqa": "lmms-lab/OK-VQA", "textvqa": "lmms-lab/textvqa", "vizwiz": "lmms-lab/VizWiz-VQA", "gqa": "lmms-lab/GQA"}


# `datasets`' cache (and the GQA image files under it) in a temporary folder.
pytestmark = pytest.mark.usefixtures("datasets_cache_in_tmp")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("format_assets")
    tiny_model("opt", seed=0).save_pretrained(str(root / "model"))
    tiny_processor().save_pretrained(str(root / "model"))
    for name, make in SNAPSHOTS.items():
        make(root / name, COUNT)
    return root


def _eval(assets: Path, out: Path, dataset: str, *extra: str) -> int:
    return main(["eval", "--model", str(assets / "model"), "--dataset", dataset, "--out", str(out), *FAST, *extra])


@pytest.mark.parametrize("name", FORMATS)
def test_eval_on_each_format(assets, tmp_path, capsys, name):
    out = tmp_path / "out"
    assert _eval(assets, out, str(assets / name), "--dataset-format", name) == 0
    table = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    dataset_format = DATASET_FORMATS[name]
    assert results["dataset"]["format"] == name and results["dataset"]["title"] == TITLES[name]
    assert results["dataset"]["split"] == SPLITS[name]  # the format's default split
    assert results["metric"] == dataset_format.metric.name
    assert results["breakdowns"] == {
        "accuracy_by_answer_type": dataset_format.types[0], "accuracy_by_question_type": dataset_format.types[1]
    }
    assert results["settings"]["dataset"]["format"] == name
    assert results["num_questions"] == COUNT
    assert table.startswith(f"{dataset_format.metric.label} (%) of `{assets / 'model'}` on {TITLES[name]} {assets / name} (split {SPLITS[name]})")
    for entry in results["results"]:
        lines = [json.loads(line) for line in (out / entry["predictions_file"]).read_text().splitlines()]
        assert len(lines) == COUNT
        # Every question scored with the format's metric, the entry their mean.
        for line in lines:
            assert line["accuracy"] == pytest.approx(100 * dataset_format.metric.score(line["prediction"], line["answers"]))
        assert entry["accuracy"] == pytest.approx(sum(line["accuracy"] for line in lines) / COUNT)
    if name == "gqa":
        assert results["dataset"]["config"] == "testdev_balanced_instructions"
        assert set(results["results"][0]["accuracy_by_answer_type"]) == {"query", "verify", "choose", "logical", "compare"}


def test_hub_id_gives_the_format_and_its_default_split(assets, tmp_path, monkeypatch):
    real = datasets.load_dataset
    calls = []

    def load_dataset(path, *args, **kwargs):  # the Hub is out of reach: lmms-lab/GQA is served from the snapshot
        if path == "lmms-lab/GQA":
            calls.append((kwargs.get("name"), kwargs.get("split")))
            path = str(assets / "gqa")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert _eval(assets, tmp_path / "out", "lmms-lab/GQA") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dataset"]["format"] == "gqa" and results["dataset"]["split"] == "testdev"
    assert results["metric"] == "exact_match"
    assert calls == [("testdev_balanced_instructions", "testdev"), ("testdev_balanced_images", "testdev")]


def _fixed_answers(monkeypatch, answers_of):
    """Generation replaced by fixed answers (answers_of(question index)): the rest of the pipeline runs as it is."""

    def generate_answers(model, processor, inputs, generate_kwargs, decoder_only, progress, features=None, kept_counts=None):
        if kept_counts is not None:
            kept_counts.extend(model.config.kept_query_tokens for _ in inputs.indices)
        return [answers_of(index) for index in inputs.indices]

    monkeypatch.setattr(runner, "generate_answers", generate_answers)


def test_hand_checked_scores_through_the_pipeline(assets, tmp_path, monkeypatch, capsys):
    # OK-VQA: every question answered with its own answer scores 1.0, 1.0, 0.9, 0.6, 0.3, 1.0 (vqa_standin).
    own = {0: "left", 1: "red", 2: "2", 3: "yes", 4: "circle", 5: "no"}  # the stand-in's answers, row by row
    _fixed_answers(monkeypatch, lambda index: own[index])
    assert _eval(assets, tmp_path / "okvqa", str(assets / "okvqa"), "--dataset-format", "okvqa") == 0
    results = json.loads((tmp_path / "okvqa" / "results.json").read_text())
    expected = [100 * HAND_SCORES[AGREEMENT[i % 5]] for i in range(COUNT)]
    for entry in results["results"]:
        assert entry["accuracy"] == pytest.approx(80.0)
        assert entry["accuracy_by_question_type"] == pytest.approx({"eight": 80.0, "one": 65.0, "other": 95.0})
        lines = [json.loads(line) for line in (tmp_path / "okvqa" / entry["predictions_file"]).read_text().splitlines()]
        assert [line["accuracy"] for line in lines] == pytest.approx(expected)
    assert "| none (unpruned, all 32) | 80.00 |" in capsys.readouterr().out
    # GQA: answers red, yes, left, no, square, circle; exact match with case and punctuation ignored -> 4 of 6.
    predictions = ["Red.", "yes", "the left", "No!", "squares", "CIRCLE"]
    _fixed_answers(monkeypatch, lambda index: predictions[index])
    assert _eval(assets, tmp_path / "gqa", str(assets / "gqa"), "--dataset-format", "gqa") == 0
    results = json.loads((tmp_path / "gqa" / "results.json").read_text())
    assert [e["accuracy"] for e in results["results"]] == pytest.approx([200 / 3, 200 / 3])
    assert results["results"][0]["accuracy_by_question_type"] == pytest.approx({"attr": 200 / 3, "cat": 100.0, "obj": 100.0, "rel": 0.0})
    assert capsys.readouterr().out.startswith("Exact match (%) of ")


def test_explicit_split_and_format_errors(assets, tmp_path, capsys):
    # The VizWiz test split has no answers to score against: named before anything is generated.
    err = cli_error(capsys, ["eval", "--model", str(assets / "model"), "--dataset", str(assets / "vizwiz"),
                             "--dataset-format", "vizwiz", "--split", "test", "--out", str(tmp_path / "out"), *FAST])
    assert "column `answers` must hold lists" in err and not (tmp_path / "out").exists()
    # Read as VQAv2 (no --dataset-format, a local folder), the GQA snapshot's several configs are named.
    err = cli_error(capsys, ["eval", "--model", str(assets / "model"), "--dataset", str(assets / "gqa"),
                             "--out", str(tmp_path / "out"), *FAST])
    assert "Config name is missing" in err and "testdev_balanced_instructions" in err
