"""Hub export end to end: export a variant from a local stand-in of a Salesforce checkpoint, then load the folder
with remote code in a fresh Python where catp_blip2 cannot be imported, and compare with the installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoModel, AutoProcessor, Blip2ForConditionalGeneration, pipeline

import catp_blip2
from conftest import cli_error
from catp_blip2.cli import main
from catp_blip2 import CatpConfig
from catp_blip2.hub.export import CODE_FILES
from catp_blip2.toy.tiny import tiny_blip2_config, tiny_processor

TESTS = Path(__file__).parent
REPO = TESTS.parent
CONFIGS = REPO / "configs"
sys.path.insert(0, str(TESTS))
from hub_check_inputs import QUESTIONS, itt_calls, model_probe, vqa_calls  # noqa: E402


def make_standin(folder: Path, language_model: str = "opt", license_: str | None = None, seed: int = 0) -> Path:
    """A STOCK Blip2ForConditionalGeneration checkpoint + Blip2Processor, in the format of Salesforce/blip2-*.

    Weights are drawn with std 0.3 (not BLIP-2's 0.02 init) so that answers differ between images and questions
    and the comparisons below compare something.
    """
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(tiny_blip2_config(language_model))
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() >= 2:
                weight.normal_(0.0, 0.3)
        model.query_tokens.normal_()
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    if license_:
        (folder / "README.md").write_text(f"---\nlicense: {license_}\n---\n# stand-in\n", encoding="utf-8")
    return folder


def make_images(folder: Path, count: int = 3) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"image{i}.png"
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


RESULTS = {
    "model": "stand-in of Salesforce/blip2-opt-2.7b",
    "dataset": {"id": "lmms-lab/VQAv2", "split": "validation"},
    "num_questions": 100,
    "results": [
        {"method": "none", "num_kept_query_tokens": None, "accuracy": 52.1},
        {"method": "catp", "num_kept_query_tokens": 8, "accuracy": 35.4},
        {"method": "random", "num_kept_query_tokens": 8, "accuracy": 30.0},
    ],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    base = make_standin(root / "stock-opt", "opt", license_="bsd-3-clause")
    results = root / "results.json"
    results.write_text(json.dumps({**RESULTS, "model": str(base)}), encoding="utf-8")  # measured on this base
    out = root / "blip2-opt-2.7b-catp-k8"
    rc = main([
        "export", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k8.json"), "--base", str(base), "--out", str(out),
        "--results", str(results), "--max-shard-size", "300KB", "--repo-id", "my-org/blip2-catp-k8",
    ])
    assert rc == 0
    return {"root": root, "out": out, "images": make_images(root)}


def run_without_catp(folder: Path, images: list[Path], root: Path) -> dict:
    """hub_remote_check.py in a fresh interpreter: no PYTHONPATH (-E), no user site (-s), catp_blip2 blocked."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(root / "modules"), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-E", "-s", str(TESTS / "hub_remote_check.py"), str(folder), *map(str, images)],
        capture_output=True, text=True, env=env, cwd=root, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Do you wish to run the custom code" not in proc.stderr  # every load was told trust_remote_code=True
    return json.loads(proc.stdout)


def test_export_writes_a_hub_ready_folder(exported):
    out = exported["out"]
    files = {p.name for p in out.iterdir()}
    assert set(CODE_FILES) <= files
    assert {"config.json", "generation_config.json", "README.md", "tokenizer.json", "processor_config.json"} <= files
    shards = sorted(f for f in files if f.endswith(".safetensors"))
    assert len(shards) >= 2 and "model.safetensors.index.json" in files  # sharded above --max-shard-size
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "catp_blip2"
    assert config["auto_map"] == CatpConfig().auto_map
    assert set(config["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForImageTextToText", "AutoModelForVisualQuestionAnswering"
    }
    vqa = config["custom_pipelines"]["visual-question-answering"]
    assert vqa["impl"] == "pipeline_catp.CatpVisualQuestionAnsweringPipeline"
    assert vqa["pt"] == ["AutoModelForVisualQuestionAnswering"]
    assert (config["pruning_method"], config["num_kept_query_tokens"], config["vote_layers"]) == ("catp", 8, "first")
    # The shipped code is the package's core, byte for byte; it imports only itself (relatively, flat modules),
    # never the package by name, so transformers' remote-code loader can copy it whole.
    shipped = {name.removesuffix(".py") for name in CODE_FILES}
    for name in CODE_FILES:
        text = (out / name).read_text()
        assert text == (Path(catp_blip2.__file__).parent / name).read_text()
        assert not re.search(r"^\s*(from|import)\s+catp_blip2", text, re.M)
        assert set(re.findall(r"^from \.(\w+) import", text, re.M)) <= shipped


def test_remote_code_without_catp_blip2_matches_installed_package(exported):
    out, images, root = exported["out"], exported["images"], exported["root"]
    remote = run_without_catp(out, images, root)
    assert remote["catp_blip2_importable"] is False
    for key in ("config_class", "model_class", "vqa_pipeline_class"):
        assert remote[key].startswith("transformers_modules."), remote[key]
    assert remote["model_class"].endswith("modeling_catp.CatpBlip2ForConditionalGeneration")
    assert remote["vqa_pipeline_class"].endswith("pipeline_catp.CatpVisualQuestionAnsweringPipeline")
    assert remote["inferred_task"] == "visual-question-answering"
    assert (remote["pruning_method"], remote["num_kept_query_tokens"], remote["processor_num_query_tokens"]) == ("catp", 8, 32)

    # The same calls with catp_blip2 installed, without remote code.
    pil = [Image.open(p).convert("RGB") for p in images]
    model = AutoModel.from_pretrained(out)
    assert type(model) is catp_blip2.CatpBlip2ForConditionalGeneration
    processor = AutoProcessor.from_pretrained(out)
    local_probe = model_probe(model, processor, pil)
    vqa = catp_blip2.vqa_pipeline(model=str(out), device="cpu")
    local_vqa = vqa_calls(vqa, [str(p) for p in images], pil)
    via_pipeline = pipeline(
        "visual-question-answering", model=str(out), pipeline_class=catp_blip2.CatpVisualQuestionAnsweringPipeline,
        device="cpu",
    )
    itt = pipeline("image-text-to-text", model=str(out), device="cpu")
    local_itt = itt_calls(itt, pil)

    probe = remote["model"]
    assert probe["kept_query_indices"] == local_probe["kept_query_indices"]
    assert len(probe["kept_query_indices"][0]) == 8
    assert probe["logits_shape"] == local_probe["logits_shape"] == [2, local_probe["input_length"] - 24, 45]
    assert np.allclose(probe["logits"], local_probe["logits"], atol=1e-5)
    assert probe["generated"] == local_probe["generated"]
    # generate returns the caller's prompt, then the answer.
    assert all(len(row) == local_probe["input_length"] + 6 for row in probe["generated"])

    assert remote["vqa"] == local_vqa
    assert remote["inferred_vqa"] == local_vqa["single"]
    assert via_pipeline(pil[0], QUESTIONS[0]) == local_vqa["single"]
    assert remote["itt"] == json.loads(json.dumps(local_itt))

    # Shapes of the classic VQA pipeline; answers differ between inputs (the comparison is not vacuous).
    assert isinstance(local_vqa["single"], list) and set(local_vqa["single"][0]) == {"answer"}
    assert len(local_vqa["batched"]) == 3 and all(len(r) == 1 for r in local_vqa["batched"])
    assert len(local_vqa["beams"]) == 2
    answers = {r[0]["answer"] for r in local_vqa["batched"]} | {local_vqa["from_path"][0]["answer"]}
    assert len(answers) >= 2 and all(answers)
    # The pipeline's answer is the model's own greedy answer to the same prompt.
    inputs = processor(images=pil[0], text=f"Question: {QUESTIONS[0]} Short answer:", return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=10)[:, inputs["input_ids"].shape[1]:]
    assert local_vqa["single"] == [{"answer": processor.batch_decode(ids, skip_special_tokens=True)[0].strip()}]
    # Batched (left-padded) answers equal one-at-a-time answers.
    assert vqa(pil, QUESTIONS[1], batch_size=3) == vqa(pil, QUESTIONS[1], batch_size=1)
    # image-text-to-text: new text only is the answer the model generates after the prompt.
    new_text = local_itt["new_text"][0]["generated_text"]
    full_text = local_itt["full_text"][0]["generated_text"]
    assert full_text.startswith(f"Question: {QUESTIONS[1]} Short answer:")
    assert new_text.strip()


def test_card_metadata_and_body(exported):
    card = ModelCard.load(exported["out"] / "README.md")
    data = card.data
    assert data.base_model == "Salesforce/blip2-opt-2.7b"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "visual-question-answering"
    assert data.license == "bsd-3-clause"  # read from the base's own card, not the default
    assert {"catp", "token-pruning", "arxiv:2404.08567", "blip-2"} <= set(data.tags)
    (result,) = data.eval_results  # only the row measured with this variant's settings
    assert (result.task_type, result.dataset_type, result.dataset_split) == (
        "visual-question-answering", "lmms-lab/VQAv2", "validation"
    )
    assert (result.metric_type, result.metric_value) == ("accuracy", 35.4)
    assert data.model_name == "blip2-catp-k8"
    body = card.text
    assert "**8 of the 32 query tokens**" in body
    assert "| **catp** | **8 / 32** | **35.40** |" in body and "| random | 8 / 32 | 30.00 |" in body
    assert 'pipeline("visual-question-answering", model="my-org/blip2-catp-k8", trust_remote_code=True)' in body
    assert 'pipeline("image-text-to-text"' in body and "catp_blip2.vqa_pipeline" in body
    assert "arXiv:2404.08567" in body and "@inproceedings{li2023blip2" in body and "@article{liao2024catp" in body


def test_flan_t5_variant_default_license_no_results(tmp_path):
    base = make_standin(tmp_path / "stock-t5", "t5")  # no README: the documented default applies
    out = tmp_path / "t5-k8"
    assert main(["export", "--variant", str(CONFIGS / "blip2-flan-t5-xl-catp-k8.json"), "--base", str(base),
                 "--out", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.base_model == "Salesforce/blip2-flan-t5-xl"
    assert card.data.eval_results is None and "model-index" not in (out / "README.md").read_text()
    assert "<your-username>/blip2-flan-t5-xl-catp-k8" in card.text

    # Encoder-decoder language model: the pipelines answer with the decoder's output.
    images = [Image.open(p).convert("RGB") for p in make_images(tmp_path, 2)]
    vqa = catp_blip2.vqa_pipeline(model=str(out), device="cpu")
    processor = AutoProcessor.from_pretrained(out)
    model = vqa.model
    inputs = processor(images=images[1], text=f"Question: {QUESTIONS[1]} Short answer:", return_tensors="pt")
    expected = processor.batch_decode(model.generate(**inputs, max_new_tokens=10), skip_special_tokens=True)[0]
    assert vqa(images[1], QUESTIONS[1]) == [{"answer": expected.strip()}]
    assert vqa(images, QUESTIONS[0], batch_size=2) == vqa(images, QUESTIONS[0], batch_size=1)
    itt = pipeline("image-text-to-text", model=str(out), device="cpu")
    assert itt(images=images[1], text=f"Question: {QUESTIONS[1]} Short answer:", max_new_tokens=10,
               return_full_text=False)[0]["generated_text"].strip() == expected.strip()


def test_embedded_variant_loads_without_catp_blip2(tmp_path):
    """The "done when" of the issue: the embedded tiny variant, exported, answers through the VQA pipeline."""
    out = tmp_path / "tiny-k8"
    assert main(["export", "--variant", str(CONFIGS / "tiny-embedded-catp-k8.json"), "--out", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.base_model is None  # "embedded" is no Hub id
    images = make_images(tmp_path)
    remote = run_without_catp(out, images, tmp_path)
    assert remote["catp_blip2_importable"] is False
    pil = [Image.open(p).convert("RGB") for p in images]
    assert remote["vqa"] == vqa_calls(catp_blip2.vqa_pipeline(model=str(out), device="cpu"), [str(p) for p in images], pil)


def test_vqa_pipeline_works_with_stock_blip2(exported):
    """The pipeline class needs nothing CATP-specific: a stock BLIP-2 checkpoint answers the same way."""
    stock = exported["root"] / "stock-opt"
    vqa = catp_blip2.vqa_pipeline(model=str(stock), device="cpu")
    assert type(vqa.model) is Blip2ForConditionalGeneration
    image = Image.open(exported["images"][0]).convert("RGB")
    inputs = vqa.processor(images=image, text=f"Question: {QUESTIONS[0]} Short answer:", return_tensors="pt")
    ids = vqa.model.generate(**inputs, max_new_tokens=10)[:, inputs["input_ids"].shape[1]:]
    expected = vqa.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    assert vqa(image, QUESTIONS[0]) == [{"answer": expected}]


def test_any_saved_catp_folder_runs_the_vqa_pipeline(tmp_path):
    """Not only exports: a plain save_pretrained folder carries auto_map, the pipeline entry and the core's code."""
    from catp_blip2.toy.tiny import tiny_model, tiny_processor
    from transformers import pipeline

    folder = tmp_path / "saved"
    tiny_model("opt", seed=0, num_kept_query_tokens=8).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    assert set(CODE_FILES) <= {p.name for p in folder.iterdir()}
    images = make_images(tmp_path)
    pil = [Image.open(p).convert("RGB") for p in images]
    expected = vqa_calls(catp_blip2.vqa_pipeline(model=str(folder), device="cpu"), [str(p) for p in images], pil)
    in_process = pipeline("visual-question-answering", model=str(folder), trust_remote_code=True, device="cpu")
    assert vqa_calls(in_process, [str(p) for p in images], pil) == expected
    remote = run_without_catp(folder, images, tmp_path)
    assert remote["catp_blip2_importable"] is False and remote["num_kept_query_tokens"] == 8
    assert remote["vqa"] == expected


def test_export_refuses_results_of_another_model(exported, tmp_path, capsys):
    other = tmp_path / "results.json"
    other.write_text(json.dumps({**RESULTS, "model": "Salesforce/blip2-opt-6.7b"}), encoding="utf-8")
    argv = ["export", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k8.json"), "--base",
            str(exported["root"] / "stock-opt"), "--results", str(other), "--out", str(tmp_path / "out")]
    err = cli_error(capsys, argv)
    assert "`--results`" in err and "'Salesforce/blip2-opt-6.7b'" in err and "--results-of-other-model" in err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--results-of-other-model"]) == 0  # an explicit override publishes them
