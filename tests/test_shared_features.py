"""One vision + Q-Former pass for many configurations: `encode_qformer`, `generate(qformer_encoding=...)`, the
cache, the evaluation sweep and the VQA pipeline give exactly what recomputing gives, for every method and k, on
OPT and T5 (BLIP-2) and InstructBLIP, while running the vision encoder once per image (BLIP-2) or per question."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import QUESTIONS, batch, make_images
from vqa_standin import VQAV2_FEATURES, standin_rows

from catp_blip2.configuration_catp import PRUNING_METHODS, default_pruning_settings
from catp_blip2.evaluation.runner import run_sweep
from catp_blip2.evaluation.sweep import build_sweep
from catp_blip2.modeling_features import QFormerEncodingCache
from catp_blip2.pipeline_catp import vqa_pipeline
from catp_blip2.toy.tiny import tiny_instructblip_model, tiny_instructblip_processor, tiny_model, tiny_processor

METHODS = [m for m in PRUNING_METHODS if m != "none"]
SETTINGS = [{"pruning_method": m} for m in PRUNING_METHODS] + [
    {"pruning_method": "catp", "vote_layers": "all", "vote_aggregation": "soft"},
    {"pruning_method": "catp", "image_token_weighting": "vit_attention"},
]
GENERATE = {"max_new_tokens": 3, "num_beams": 2, "do_sample": False}


class VisionCalls:
    """Counts the images the vision encoder sees."""

    def __init__(self, model):
        self.images = 0
        self.handle = model.vision_model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        pixel_values = kwargs.get("pixel_values", args[0] if args else None)
        self.images += pixel_values.shape[0]

    def remove(self):
        self.handle.remove()


def _apply(model, settings, k):
    """Exactly `settings` (the rest at their defaults), as `encode_qformer` completed them from a default config."""
    for name, value in {**default_pruning_settings(), **settings}.items():
        setattr(model.config, name, value)
    model.config.num_kept_query_tokens = k


@pytest.mark.parametrize("k", [16, 8, 2])
def test_generate_from_one_encoding_equals_recomputing_for_every_method(pair, processor, k):
    model, _ = pair
    inputs = batch(processor)
    encoding = model.encode_qformer(inputs["pixel_values"], score_settings=SETTINGS)
    text = {name: value for name, value in inputs.items() if name != "pixel_values"}
    for settings in SETTINGS:
        _apply(model, settings, k)
        expected = model.generate(**inputs, **GENERATE)
        shared = model.generate(**text, qformer_encoding=encoding, **GENERATE)
        assert torch.equal(shared, expected), settings
        full = model.get_image_features(inputs["pixel_values"])
        reused = model.get_image_features(qformer_encoding=encoding)
        assert torch.equal(reused.kept_query_indices, full.kept_query_indices), settings
        assert torch.equal(reused.pooler_output, full.pooler_output), settings


def test_an_encoding_without_the_current_settings_is_refused(pair, processor):
    model, _ = pair
    inputs = batch(processor)
    encoding = model.encode_qformer(inputs["pixel_values"], score_settings=[{"pruning_method": "l2"}])
    _apply(model, {"pruning_method": "position"}, 8)
    with pytest.raises(ValueError, match="qformer_encoding"):
        model.get_image_features(qformer_encoding=encoding)
    with pytest.raises(ValueError, match="exactly one of `pixel_values` and `qformer_encoding`"):
        model.get_image_features(inputs["pixel_values"], qformer_encoding=encoding)


def test_the_cache_encodes_each_distinct_image_once(pair, processor):
    model, _ = pair
    _apply(model, {"pruning_method": "catp"}, 8)
    images = make_images(2)
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=[images[0], images[1], images[0], images[0]], text=QUESTIONS, return_tensors="pt", padding=True)
    cache = QFormerEncodingCache()
    calls = VisionCalls(model)
    try:
        first = cache.encode(model, inputs)
        again = cache.encode(model, inputs)
    finally:
        calls.remove()
    assert calls.images == 2  # two distinct images, and nothing the second time
    assert (cache.misses, cache.hits) == (2, 6)
    assert torch.equal(first.query_output, again.query_output)
    alone = model.encode_qformer(inputs["pixel_values"])
    assert torch.equal(first.query_output, alone.query_output)


def test_a_full_cache_stores_nothing_more_and_stays_correct(pair, processor):
    model, _ = pair
    _apply(model, {"pruning_method": "catp"}, 8)
    inputs = batch(processor)
    cache = QFormerEncodingCache(max_bytes=1)
    encoding = cache.encode(model, inputs)
    assert cache.entries == {} and cache.used_bytes == 0
    text = {name: value for name, value in inputs.items() if name != "pixel_values"}
    assert torch.equal(model.generate(**text, qformer_encoding=encoding, **GENERATE), model.generate(**inputs, **GENERATE))


def test_instructblip_encodes_per_question():
    """InstructBLIP's Q-Former reads the question: one image under two questions is two passes, and answers match."""
    model = tiny_instructblip_model("opt", seed=0)
    processor = tiny_instructblip_processor()
    image = make_images(1)[0]
    inputs = processor(images=[image, image, image], text=QUESTIONS[:2] + QUESTIONS[:1], return_tensors="pt",
                       padding=True, padding_side="left")
    _apply(model, {"pruning_method": "catp"}, 8)
    cache = QFormerEncodingCache(score_settings=SETTINGS)
    calls = VisionCalls(model)
    try:
        encoding = cache.encode(model, inputs)
    finally:
        calls.remove()
    assert calls.images == 2  # rows 0 and 2 are the same image and question
    text = {n: v for n, v in inputs.items() if n not in ("pixel_values", "qformer_input_ids", "qformer_attention_mask")}
    for settings in SETTINGS:
        _apply(model, settings, 8)
        assert torch.equal(
            model.generate(**text, qformer_encoding=encoding, **GENERATE), model.generate(**inputs, **GENERATE)
        ), settings


def _repeated_image_dataset(questions: int = 12, per_image: int = 3):
    from datasets import Dataset

    rows = standin_rows(questions)
    for i, row in enumerate(rows):
        row["image"] = rows[(i // per_image) * per_image]["image"]
    return Dataset.from_list(rows, features=VQAV2_FEATURES)


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_the_sweep_shares_features_and_predicts_as_recomputing(tmp_path, language_model):
    """Every method at k = 16, 8, 2: identical predictions, and the vision encoder sees each image once."""
    from accelerate import PartialState

    from catp_blip2.evaluation.generation import GenerationSettings

    model = tiny_model(language_model, seed=0)
    processor = tiny_processor()
    dataset = _repeated_image_dataset()
    configurations = build_sweep(METHODS, [16, 8, 2], model.config)
    header = {"model": "tiny", "dataset": "standin", "num_questions": len(dataset)}
    generation = GenerationSettings(num_beams=2, max_new_tokens=2)
    predictions, images_seen = {}, {}
    for share in (True, False):
        calls = VisionCalls(model)
        try:
            run_sweep(model, processor, dataset, configurations, tmp_path / str(share), header, {"run": 1},
                      batch_size=5, generation=generation, state=PartialState(), share_features=share)
        finally:
            calls.remove()
        images_seen[share] = calls.images
        predictions[share] = {
            p.name: [json.loads(line)["prediction"] for line in p.read_text().splitlines()]
            for p in sorted((tmp_path / str(share) / "predictions").glob("*.jsonl"))
        }
    assert len(predictions[True]) == len(configurations)
    assert predictions[True] == predictions[False]
    assert len({tuple(answers) for answers in predictions[True].values()}) > 1  # the methods' answers differ
    assert images_seen[True] == 4  # 12 questions about 4 images
    assert images_seen[False] == len(configurations) * len(dataset)


def test_the_pipeline_encodes_an_image_once_for_several_questions():
    model = tiny_model("opt", seed=0, num_kept_query_tokens=8)
    vqa = vqa_pipeline(model=model, processor=tiny_processor(), max_new_tokens=3)
    image = make_images(1)[0]
    questions = ["what color is the circle ?", "how many ?", "what shape ?"]
    one_by_one = [vqa(image, question) for question in questions]
    calls = VisionCalls(model)
    try:
        together = vqa(image, questions)
    finally:
        calls.remove()
    assert together == one_by_one
    assert calls.images == 1
