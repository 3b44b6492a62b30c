"""CATP for InstructBLIP: everything the BLIP-2 class promises, and question-aware votes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import QUESTIONS, make_images
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForVisualQuestionAnswering,
    InstructBlipForConditionalGeneration,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

import catp_blip2
from catp_blip2 import CatpInstructBlipConfig, CatpInstructBlipForConditionalGeneration, PRUNING_SETTINGS
from catp_blip2.hub.export import CODE_FILES
from catp_blip2.toy.tiny import (
    tiny_instructblip_config,
    tiny_instructblip_model,
    tiny_instructblip_processor,
    tiny_model,
    tiny_processor,
)

METHODS = ("catp", "l2", "self_attention", "position", "random")


@pytest.fixture(scope="module")
def instructblip() -> dict[str, tuple]:
    """language model -> (CATP InstructBLIP, stock InstructBLIP with the same weights)."""
    built = {}
    for name in ("opt", "t5"):
        model = tiny_instructblip_model(name, seed=0)
        stock = InstructBlipForConditionalGeneration(tiny_instructblip_config(name)).eval()
        stock.load_state_dict(model.state_dict())
        built[name] = (model, stock)
    return built


@pytest.fixture(params=["opt", "t5"])
def pair(instructblip, request):
    model, stock = instructblip[request.param]
    saved = {k: getattr(model.config, k) for k in PRUNING_SETTINGS}
    yield model, stock
    for key, value in saved.items():
        setattr(model.config, key, value)


@pytest.fixture(scope="module")
def processor():
    return tiny_instructblip_processor()


def inputs_for(processor, questions=QUESTIONS, count=4, seed=0, side="left"):
    processor.tokenizer.padding_side = side
    texts = (list(questions) * 4)[:count]
    return processor(images=make_images(count, seed), text=texts, return_tensors="pt", padding=True)


def forward(model, inputs, **kwargs):
    """`model(**inputs)`, with a decoder start for encoder-decoder language models."""
    if not model.config.use_decoder_only_language_model:
        kwargs.setdefault("decoder_input_ids", torch.zeros(inputs["input_ids"].shape[0], 2, dtype=torch.long))
    return model(**inputs, **kwargs)


def test_unpruned_equals_stock(pair, processor):
    model, stock = pair
    inputs = inputs_for(processor)
    for method, k in (("none", 8), ("catp", 32)):
        model.config.pruning_method, model.config.num_kept_query_tokens = method, k
        torch.testing.assert_close(forward(model, inputs).logits, forward(stock, inputs).logits, rtol=0, atol=0)
        for kwargs in ({"max_new_tokens": 4}, {"max_new_tokens": 3, "num_beams": 3, "num_return_sequences": 2}):
            assert torch.equal(model.generate(**inputs, **kwargs), stock.generate(**inputs, **kwargs))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_at_several_k_through_generate(pair, processor, method):
    model, _ = pair
    inputs = inputs_for(processor)
    prompt = inputs["input_ids"].shape[1]
    for k in (16, 8, 2):
        model.config.pruning_method, model.config.num_kept_query_tokens = method, k
        outputs = forward(model, inputs)
        assert outputs.kept_query_indices.shape == (4, k) and outputs.query_token_scores.shape == (4, 32)
        out = model.generate(**inputs, max_new_tokens=3, num_beams=2)
        if model.config.use_decoder_only_language_model:
            assert torch.equal(out[:, :prompt], inputs["input_ids"])  # the caller's prefix, whatever k is
            assert outputs.logits.shape[1] == prompt - (32 - k)


def test_generate_at_k8_from_plain_processor_output_with_padding_and_beams(pair, processor):
    """The issue's "done when": batch of 4 with padding, beam search, k = 8, OPT and T5."""
    model, _ = pair
    model.config.pruning_method, model.config.num_kept_query_tokens = "catp", 8
    inputs = inputs_for(processor)
    assert (inputs["attention_mask"] == 0).any() and "qformer_input_ids" in inputs
    out = model.generate(**inputs, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    if model.config.use_decoder_only_language_model:
        assert out.shape == (4, inputs["input_ids"].shape[1] + 4)
        assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    compact = dict(inputs)
    kept = model.get_image_features(
        inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
        qformer_attention_mask=inputs["qformer_attention_mask"],
    ).kept_query_indices
    assert kept.shape == (4, 8)
    # Inputs that already carry exactly k placeholders give the same answers.
    mask = inputs["input_ids"] == model.config.image_token_id
    drop = mask.cumsum(1) > 8
    keep = ~(mask & drop)
    compact["input_ids"] = inputs["input_ids"][keep].view(4, -1)
    compact["attention_mask"] = inputs["attention_mask"][keep].view(4, -1)
    out_compact = model.generate(**compact, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    new = out.shape[1] - inputs["input_ids"].shape[1] if model.config.use_decoder_only_language_model else 0
    assert torch.equal(out[:, out.shape[1] - new :], out_compact[:, out_compact.shape[1] - new :])


def test_labels_are_compacted(instructblip, processor):
    model, _ = instructblip["opt"]
    model.config.pruning_method, model.config.num_kept_query_tokens = "catp", 8
    inputs = inputs_for(processor)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss) and out.logits.shape[1] == inputs["input_ids"].shape[1] - 24
    model.config.num_kept_query_tokens = None


def test_votes_are_question_aware_for_instructblip_not_for_blip2(processor):
    model = tiny_instructblip_model("opt", seed=0, pruning_method="catp", num_kept_query_tokens=8)
    # At init (std 0.02) the instruction's tokens barely move the queries; in a trained Q-Former they do. Larger
    # random Q-Former weights stand in for that.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.qformer.parameters():
            if weight.dim() == 2:
                weight.copy_(0.3 * torch.randn(weight.shape, generator=generator))
    questions = ["what color is the circle ?", "how many squares are there on the left of the picture ?",
                 "is there a red triangle ?", "what shape is the blue one ?"]
    image = make_images(1, seed=3) * len(questions)
    kept = []
    for question in questions:
        inputs = processor(images=image[:1], text=question, return_tensors="pt")
        kept.append(model(**inputs).kept_query_indices[0].tolist())
    assert len({tuple(k) for k in kept}) > 1  # one image, other questions, other kept tokens
    blip2, blip2_processor = tiny_model("opt", seed=0, num_kept_query_tokens=8), tiny_processor()
    kept = {tuple(blip2(**blip2_processor(images=image[:1], text=q, return_tensors="pt")).kept_query_indices[0].tolist())
            for q in questions}
    assert len(kept) == 1  # BLIP-2's Q-Former never sees the question


def test_auto_classes_and_stock_checkpoints(tmp_path):
    stock = InstructBlipForConditionalGeneration(tiny_instructblip_config("opt"))
    stock.save_pretrained(tmp_path / "stock")  # model_type "instructblip", as Salesforce/instructblip-*
    with CaptureLogger(logging.get_logger("transformers.configuration_utils")) as captured:
        model = CatpInstructBlipForConditionalGeneration.from_pretrained(tmp_path / "stock", num_kept_query_tokens=8)
    assert "to instantiate a model of type" not in captured.out
    assert model.config.model_type == "catp_instructblip" and model.config.kept_query_tokens == 8
    model.save_pretrained(tmp_path / "catp")
    saved = json.loads((tmp_path / "catp" / "config.json").read_text())
    assert saved["model_type"] == "catp_instructblip"
    assert saved["auto_map"]["AutoModel"] == "modeling_catp_instructblip.CatpInstructBlipForConditionalGeneration"
    assert saved["auto_map"]["AutoConfig"] == "configuration_catp_instructblip.CatpInstructBlipConfig"
    files = {p.name for p in (tmp_path / "catp").iterdir()}
    assert {"modeling_catp_instructblip.py", "configuration_catp_instructblip.py", *CODE_FILES} <= files
    assert type(AutoConfig.from_pretrained(tmp_path / "catp")) is CatpInstructBlipConfig
    for auto in (AutoModel, AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering):
        assert type(auto.from_pretrained(tmp_path / "catp")) is CatpInstructBlipForConditionalGeneration


def test_settings_are_validated_like_blip2():
    with pytest.raises(ValueError, match="`num_kept_query_tokens` must be None or an integer in 1..32"):
        CatpInstructBlipConfig.from_stock_config(tiny_instructblip_config(), num_kept_query_tokens=33)
    with pytest.raises(ValueError, match="`vote_layers`"):
        CatpInstructBlipConfig.from_stock_config(tiny_instructblip_config(), vote_layers=[5])


def test_vqa_pipeline_feeds_the_question_to_the_qformer(instructblip, processor):
    model, _ = instructblip["opt"]
    model.config.pruning_method, model.config.num_kept_query_tokens = "catp", 8
    vqa = catp_blip2.vqa_pipeline(model=model, processor=processor, device="cpu")
    images = make_images(2, seed=1)
    one = [vqa(image, "what color is the circle ?") for image in images]
    assert vqa(images, "what color is the circle ?", batch_size=2) == one
    inputs = processor(images=images[:1], text="Question: what color is the circle ? Short answer:", return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=10)[:, inputs["input_ids"].shape[1]:]
    assert one[0] == [{"answer": processor.batch_decode(ids, skip_special_tokens=True)[0].strip()}]
    model.config.num_kept_query_tokens = None


def test_eval_picks_the_family_from_the_checkpoint(tmp_path, capsys):
    from vqa_standin import standin_dataset

    from catp_blip2.cli import main

    folder = tmp_path / "instructblip"
    tiny_instructblip_model("opt", seed=0).save_pretrained(folder)
    tiny_instructblip_processor().save_pretrained(folder)
    standin_dataset(6).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "out"
    argv = ["eval", "--model", str(folder), "--dataset", str(tmp_path / "data"), "--out", str(out), "--methods",
            "catp", "--keep", "8", "--num-beams", "1", "--max-new-tokens", "2"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [e["method"] for e in results["results"]] == ["none", "catp"]
    # The unpruned answers are the model's own on the processor's inputs, the Q-Former given the question.
    from catp_blip2.evaluation.inputs import lavis_question
    from catp_blip2.pipeline_catp import DEFAULT_VQA_PROMPT

    lines = [json.loads(line) for line in (out / results["results"][0]["predictions_file"]).read_text().splitlines()]
    model = CatpInstructBlipForConditionalGeneration.from_pretrained(folder).eval()
    model.config.pruning_method = "none"
    row = standin_dataset(6)[0]
    inputs = tiny_instructblip_processor()(
        images=row["image"].convert("RGB"), text=DEFAULT_VQA_PROMPT.format(lavis_question(row["question"])),
        return_tensors="pt")
    ids = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=2, min_new_tokens=1, pad_token_id=0)
    answer = tiny_instructblip_processor().batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert lines[0]["question_id"] == row["question_id"] and lines[0]["prediction"] == answer[0].strip()


def test_saved_instructblip_runs_through_remote_code_without_catp_blip2(tmp_path):
    from PIL import Image
    from test_hub import make_images as image_files
    from test_hub import run_without_catp
    from hub_check_inputs import model_probe, vqa_calls

    folder = tmp_path / "saved"
    model = tiny_instructblip_model("opt", seed=0, num_kept_query_tokens=8)
    model.save_pretrained(folder)
    processor = tiny_instructblip_processor()
    processor.save_pretrained(folder)
    paths = image_files(tmp_path)
    images = [Image.open(p).convert("RGB") for p in paths]
    remote = run_without_catp(folder, paths, tmp_path)
    assert remote["catp_blip2_importable"] is False
    assert remote["model_class"].endswith("modeling_catp_instructblip.CatpInstructBlipForConditionalGeneration")
    assert remote["model"] == model_probe(model, processor, images)
    vqa = catp_blip2.vqa_pipeline(model=str(folder), device="cpu")
    assert remote["vqa"] == vqa_calls(vqa, [str(p) for p in paths], images)


@pytest.mark.parametrize("variant", ["instructblip-flan-t5-xl-catp-k8.json", "instructblip-vicuna-7b-catp-k8.json"])
def test_shipped_variants_export_self_contained_folders(tmp_path, variant, capsys):
    """A stand-in of the stock layout (tiny weights) as --base: the export loads through remote code alone."""
    from pathlib import Path

    from PIL import Image
    from test_hub import make_images as image_files
    from test_hub import run_without_catp
    from hub_check_inputs import vqa_calls
    from huggingface_hub import ModelCard

    from catp_blip2.cli import main

    language_model = "t5" if "t5" in variant else "opt"
    base = tmp_path / "stock"
    InstructBlipForConditionalGeneration(tiny_instructblip_config(language_model)).save_pretrained(base)
    tiny_instructblip_processor().save_pretrained(base)
    out = tmp_path / "out"
    configs = Path(__file__).parent.parent / "configs"
    assert main(["export", "--variant", str(configs / variant), "--base", str(base), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "catp_instructblip" and config["num_kept_query_tokens"] == 8
    card = ModelCard.load(out / "README.md")
    assert "instructblip" in card.data.tags and "InstructBLIP" in card.text
    paths = image_files(tmp_path)
    remote = run_without_catp(out, paths, tmp_path)
    assert remote["model_class"].endswith("CatpInstructBlipForConditionalGeneration")
    images = [Image.open(p).convert("RGB") for p in paths]
    assert remote["vqa"] == vqa_calls(catp_blip2.vqa_pipeline(model=str(out), device="cpu"), [str(p) for p in paths], images)


def test_embedded_instructblip_is_question_aware_and_evaluates(tmp_path):
    """The shipped tiny InstructBLIP (trained on the shapes task): another question, other kept tokens; eval runs it."""
    from transformers import AutoProcessor

    from catp_blip2.cli import main
    from catp_blip2.toy.embedded import EMBEDDED_MODELS
    from catp_blip2.toy.shapes import embedded_eval_dataset

    folder = EMBEDDED_MODELS["embedded-instructblip"]
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model) is CatpInstructBlipForConditionalGeneration
    model.config.num_kept_query_tokens = 8
    image = embedded_eval_dataset()[0]["image"]
    kept = set()
    for question in ("what color is the circle ?", "how many shapes are there ?", "where is the red object ?"):
        inputs = processor(images=image, text=f"Question: {question} Short answer:", return_tensors="pt")
        kept.add(tuple(model(**inputs).kept_query_indices[0].tolist()))
    assert len(kept) == 3
    out = tmp_path / "out"
    assert main(["eval", "--model", "embedded-instructblip", "--limit", "9", "--methods", "catp", "--keep", "8",
                 "--num-beams", "1", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["model"] == "embedded-instructblip"
