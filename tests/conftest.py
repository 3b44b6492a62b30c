"""Shared fixtures: tiny BLIP-2 models (OPT and T5), their stock twins, a processor and images. No network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration

from catp_blip2 import PRUNING_SETTINGS
from catp_blip2.toy.tiny import tiny_model, tiny_processor

QUESTIONS = [
    "Question: what color is the circle ? Short answer:",
    "Question: how many ? Short answer:",
    "Question: is there a red square on the left of the picture ? Short answer:",
    "Question: what shape ? Short answer:",
]


def make_images(count: int, seed: int = 0, size: int = 30) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def save_eval_assets(root, questions: int):
    """`root`/model (a saved tiny CATP model with its processor) and `root`/disk (the VQAv2 stand-in of `questions`
    questions, as a save_to_disk folder): what the `catp-blip2 eval` tests run on. Returns the stand-in dataset."""
    from vqa_standin import standin_dataset

    tiny_model("opt", seed=0).save_pretrained(str(root / "model"))
    tiny_processor().save_pretrained(str(root / "model"))
    data = standin_dataset(questions)
    data.save_to_disk(str(root / "disk"))
    return data


@pytest.fixture(scope="session", params=["opt", "t5"])
def language_model(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def models() -> dict[str, tuple]:
    """language model -> (CATP model, stock model with the same weights)."""
    built = {}
    for name in ("opt", "t5"):
        model = tiny_model(name, seed=0)
        stock = Blip2ForConditionalGeneration(model.config).eval()
        stock.load_state_dict(model.state_dict())
        built[name] = (model, stock)
    return built


@pytest.fixture()
def pair(models, language_model):
    """(CATP model, stock model) with pruning settings restored after each test."""
    model, stock = models[language_model]
    saved = {k: getattr(model.config, k) for k in PRUNING_SETTINGS}
    yield model, stock
    for key, value in saved.items():
        setattr(model.config, key, value)


@pytest.fixture(scope="session")
def processor():
    return tiny_processor()


def batch(processor, padding_side: str = "left", count: int = 4, seed: int = 0, text=True):
    processor.tokenizer.padding_side = padding_side
    texts = (QUESTIONS * 2)[:count] if text else None
    return processor(images=make_images(count, seed), text=texts, return_tensors="pt", padding=True)


def cli_error(capsys, argv: list[str]) -> str:
    """Run `catp-blip2 *argv` in process and check the CLI's error style: exit status 2 and a
    `catp-blip2 <command>: error: ...` message on stderr without a traceback. Returns that stderr."""
    from catp_blip2.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"catp-blip2 {argv[0]}: error: " in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def datasets_cache_in_tmp(tmp_path_factory):
    """`datasets`' cache (and the GQA image files under it) in a temporary folder, for one test module."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
        yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
