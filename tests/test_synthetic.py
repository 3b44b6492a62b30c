"""The synthetic shapes task, the train-synthetic command (incl. resume) and the embedded tiny model."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, Blip2Processor

from catp_blip2 import CatpBlip2ForConditionalGeneration
from catp_blip2.toy import training as train_synthetic
from catp_blip2.cli import main
from conftest import cli_error
from catp_blip2.toy.embedded import EMBEDDED_MODEL_DIR
from catp_blip2.toy.shapes import (
    COLORS,
    SceneObject,
    VOCABULARY,
    draw_scene,
    embedded_eval_dataset,
    make_synthetic_vqa,
    synthetic_examples,
    vqav2_features,
)


def test_dataset_has_the_lmms_lab_vqav2_schema():
    ds = make_synthetic_vqa(4, seed=7)
    assert ds.features == vqav2_features()
    assert len(ds) == 12 and len(set(ds["question_id"])) == 12
    row = ds[0]
    assert len(row["answers"]) == 10 and {a["answer"] for a in row["answers"]} == {row["multiple_choice_answer"]}
    assert [a["answer_id"] for a in row["answers"]] == list(range(1, 11))
    assert row["image"].size == (48, 48) and row["image"].mode == "RGB"
    assert row["answer_type"] in {"yes/no", "number", "other"}


def test_dataset_is_a_function_of_its_seed():
    a, b, c = (synthetic_examples(3, seed) for seed in (5, 5, 6))
    strip = lambda rows: [(r["question"], r["multiple_choice_answer"], np.asarray(r["image"]).tobytes()) for r in rows]
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_every_word_is_in_the_vocabulary():
    tokenizer = train_synthetic.embedded_processor().tokenizer
    rows = synthetic_examples(40, seed=3)
    texts = [f"Question: {r['question']} Short answer:" for r in rows] + [r["multiple_choice_answer"] for r in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in {i for row in ids for i in row}
    assert set(VOCABULARY) <= set(tokenizer.get_vocab())


def test_answers_match_the_drawn_scene():
    rng = np.random.default_rng(0)
    image = np.asarray(draw_scene([SceneObject("red", "square", row=1, column=2)], rng))
    assert tuple(image[24, 40]) == COLORS["red"]  # the centre of the middle-right cell
    assert image[24, 8].max() < 50  # the empty left cell is background

    eval_set = embedded_eval_dataset()
    assert len(eval_set) == 300
    counts = Counter(eval_set["question_type"])
    assert set(counts) == {"what color is the", "what shape is the", "how many", "is there a", "where is the"}
    yes_no = Counter(a for a, t in zip(eval_set["multiple_choice_answer"], eval_set["answer_type"]) if t == "yes/no")
    assert abs(yes_no["yes"] - yes_no["no"]) < 0.3 * sum(yes_no.values())


def _train(out, steps=4, extra=()):
    return main(["train-synthetic", "--out", str(out), "--steps", str(steps), "--images-per-step", "2",
                 "--save-every", "2", "--keep-all-prob", "0.5", *extra])


def test_train_synthetic_writes_a_loadable_model(tmp_path):
    assert _train(tmp_path) == 0
    model = AutoModel.from_pretrained(tmp_path / "model")
    assert isinstance(model, CatpBlip2ForConditionalGeneration)
    processor = Blip2Processor.from_pretrained(tmp_path / "model")
    inputs = processor(images=make_synthetic_vqa(1, 0)[0]["image"], text="Question: how many shapes are there ? Short answer:",
                       return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=2)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert (tmp_path / "train_log.jsonl").read_text().strip()


def test_train_synthetic_resumes_to_identical_weights(tmp_path, monkeypatch):
    assert _train(tmp_path / "straight") == 0

    real_loss, calls = train_synthetic.training_loss, {"n": 0}

    def dies_after_two_steps(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # a kill after the step-2 checkpoint
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_synthetic, "training_loss", dies_after_two_steps)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "killed")
    monkeypatch.setattr(train_synthetic, "training_loss", real_loss)
    assert not (tmp_path / "killed" / "model").exists()
    assert _train(tmp_path / "killed") == 0

    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)


def test_train_synthetic_refuses_a_checkpoint_of_other_settings(tmp_path, capsys):
    assert _train(tmp_path, steps=2) == 0
    argv = ["train-synthetic", "--out", str(tmp_path), "--steps", "2", "--images-per-step", "2", "--save-every", "2",
            "--keep-all-prob", "0.5", "--lr", "0.5"]
    assert "was written with settings" in cli_error(capsys, argv)


def test_train_synthetic_refuses_a_file_as_out(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "`--out` must be a folder" in cli_error(capsys, ["train-synthetic", "--out", str(tmp_path / "file")])


def test_training_prompts_are_the_pipelines_prompt():
    from catp_blip2.pipeline_catp import DEFAULT_VQA_PROMPT

    processor = train_synthetic.embedded_processor()
    batch = train_synthetic.make_batch(processor, seed=0, step=0, images_per_step=1)
    prefix = processor.tokenizer(DEFAULT_VQA_PROMPT.split("{}")[0].strip(), add_special_tokens=False)["input_ids"]
    assert batch["text_ids"][0, 1 : 1 + len(prefix)].tolist() == prefix  # after BOS: "Question:"
    assert not hasattr(train_synthetic, "PROMPT")


@pytest.mark.parametrize(
    "flag, value, match",
    [("--steps", "0", "`--steps`"), ("--images-per-step", "0", "`--images-per-step`"),
     ("--save-every", "-3", "`--save-every`"), ("--keep-all-prob", "1.5", "`--keep-all-prob`"), ("--lr", "-1", "`--lr`"),
     ("--lr", "nan", "`--lr`"), ("--min-keep", "0", "`--min-keep`"), ("--min-keep", "32", "`--min-keep`")],
)
def test_train_synthetic_rejects_bad_settings(tmp_path, flag, value, match, capsys):
    assert match in cli_error(capsys, ["train-synthetic", "--out", str(tmp_path), flag, value])


def test_make_synthetic_vqa_rejects_no_images():
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic_vqa(0, seed=0)


def test_embedded_model_is_shipped_and_loads_through_auto_classes():
    assert (EMBEDDED_MODEL_DIR / "model.safetensors").is_file()
    assert (EMBEDDED_MODEL_DIR / "model.safetensors").stat().st_size < 10 * 2**20  # "a few MB"
    model = AutoModel.from_pretrained(EMBEDDED_MODEL_DIR)
    assert isinstance(model, CatpBlip2ForConditionalGeneration)
    assert model.config.num_query_tokens == 32


def test_embedded_model_answers_and_degrades_when_pruned_hard(tmp_path):
    """Through the CLI on the embedded eval set: far above chance unpruned (chance is about 40%: yes/no 50%,
    three-way 33%, colours 25-50%), and worse when the language model sees only 2 of the 32 query tokens."""
    out = tmp_path / "eval"
    assert main(["eval", "--methods", "catp", "random", "--keep", "2", "--limit", "90", "--out", str(out)]) == 0
    results = {r["method"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert results["none"]["accuracy"] >= 65.0
    assert results["random"]["accuracy"] < results["none"]["accuracy"]
    assert results["catp"]["accuracy"] < results["none"]["accuracy"]


def test_train_synthetic_instructblip_writes_a_question_aware_model(tmp_path):
    from transformers import AutoProcessor, InstructBlipProcessor

    from catp_blip2 import CatpInstructBlipForConditionalGeneration

    assert _train(tmp_path, steps=3, extra=("--family", "instructblip")) == 0
    model = AutoModel.from_pretrained(tmp_path / "model")
    processor = AutoProcessor.from_pretrained(tmp_path / "model")
    assert isinstance(model, CatpInstructBlipForConditionalGeneration) and isinstance(processor, InstructBlipProcessor)
    inputs = processor(images=embedded_eval_dataset()[0]["image"], text="Question: how many shapes are there ? Short answer:",
                       return_tensors="pt")
    assert "qformer_input_ids" in inputs
    model.config.num_kept_query_tokens = 8
    out = model.generate(**inputs, max_new_tokens=2)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    # A resumed run refuses another family's checkpoint.
    assert _train(tmp_path, steps=3) == 2
