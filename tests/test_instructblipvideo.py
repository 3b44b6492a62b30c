"""CATP for InstructBLIP-Video: frames x queries tokens, kept across frames or per frame, in (frame, query) order."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, InstructBlipVideoForConditionalGeneration

from catp_blip2 import CatpInstructBlipVideoConfig, CatpInstructBlipVideoForConditionalGeneration
from catp_blip2.scoring import select_top_k
from catp_blip2.toy.tiny import tiny_instructblipvideo_config, tiny_instructblipvideo_model, tiny_video_inputs

PROMPTS = ["question: what color is the circle ? short answer:", "question: how many ? short answer:",
           "question: is there a red square on the left ? short answer:", "question: what shape ? short answer:"]


@pytest.fixture(scope="module", params=["opt", "t5"])
def pair(request):
    model = tiny_instructblipvideo_model(request.param, seed=0)
    stock = InstructBlipVideoForConditionalGeneration(tiny_instructblipvideo_config(request.param)).eval()
    stock.load_state_dict(model.state_dict())
    return model, stock


@pytest.fixture()
def video(pair):
    model, stock = pair
    yield model, stock, tiny_video_inputs(model.config, PROMPTS)
    model.config.pruning_method, model.config.num_kept_query_tokens, model.config.frame_selection = "catp", None, "global"


def _features(model, inputs):
    return model.get_video_features(
        inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
        qformer_attention_mask=inputs["qformer_attention_mask"],
    )


def test_unpruned_equals_stock(video):
    model, stock, inputs = video
    extra = {} if model.config.use_decoder_only_language_model else {"decoder_input_ids": torch.zeros(4, 2, dtype=torch.long)}
    for method, k in (("none", 8), ("catp", 128)):
        model.config.pruning_method, model.config.num_kept_query_tokens = method, k
        torch.testing.assert_close(model(**inputs, **extra).logits, stock(**inputs, **extra).logits, rtol=0, atol=0)
        assert torch.equal(model.generate(**inputs, max_new_tokens=3, num_beams=2),
                           stock.generate(**inputs, max_new_tokens=3, num_beams=2))


def test_global_selection_takes_the_best_of_the_whole_video_in_frame_query_order(video):
    model, _, inputs = video
    model.config.num_kept_query_tokens = 12
    features = _features(model, inputs)
    assert features.query_token_scores.shape == (4, 128) and features.pooler_output.shape[:2] == (4, 12)
    assert torch.equal(features.kept_query_indices, select_top_k(features.query_token_scores, 12))
    assert (features.kept_query_indices.diff(dim=1) > 0).all()
    # Each frame's image tokens vote on that frame's queries: a frame's scores are its own image's.
    first = inputs["pixel_values"][:, :1].repeat(1, 4, 1, 1, 1)
    same = _features(model, {**inputs, "pixel_values": first}).query_token_scores.view(4, 4, 32)
    assert torch.equal(same[:, 0], features.query_token_scores.view(4, 4, 32)[:, 0])
    assert torch.equal(same[:, 1], same[:, 0])


def test_per_frame_selection_keeps_an_equal_share_of_every_frame(video):
    model, _, inputs = video
    model.config.num_kept_query_tokens, model.config.frame_selection = 8, "per_frame"
    kept = _features(model, inputs).kept_query_indices
    assert kept.shape == (4, 8)
    assert ((kept // 32) == torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).all()
    assert (kept.diff(dim=1) > 0).all()


@pytest.mark.parametrize("selection", ["global", "per_frame"])
def test_generate_with_the_prefix_contract(video, selection):
    model, _, inputs = video
    model.config.num_kept_query_tokens, model.config.frame_selection = 16, selection
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, num_beams=2)
    if model.config.use_decoder_only_language_model:
        assert out.shape == (4, inputs["input_ids"].shape[1] + 3)
        assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    else:
        assert out.shape[0] == 4


def test_settings_use_the_frame_count():
    stock = tiny_instructblipvideo_config()
    with pytest.raises(ValueError, match=r"`num_kept_query_tokens` must be None or an integer in 1..128 \(num_frames x"):
        CatpInstructBlipVideoConfig.from_stock_config(stock, num_kept_query_tokens=129)
    assert CatpInstructBlipVideoConfig.from_stock_config(stock, num_kept_query_tokens=128).kept_query_tokens == 128
    with pytest.raises(ValueError, match="`num_kept_query_tokens` must be a multiple of num_frames=4"):
        CatpInstructBlipVideoConfig.from_stock_config(stock, num_kept_query_tokens=6, frame_selection="per_frame")
    with pytest.raises(ValueError, match="`frame_selection` must be one of"):
        CatpInstructBlipVideoConfig.from_stock_config(stock, frame_selection="middle")


def test_wrong_frame_count_is_named(video):
    model, _, inputs = video
    with pytest.raises(ValueError, match=r"`pixel_values` must be \(batch, num_frames=4"):
        model.generate(**{**inputs, "pixel_values": inputs["pixel_values"][:, :3]}, max_new_tokens=2)


def test_auto_classes_and_saved_folder(tmp_path):
    stock = InstructBlipVideoForConditionalGeneration(tiny_instructblipvideo_config())
    stock.save_pretrained(tmp_path / "stock")
    model = AutoModel.from_config(CatpInstructBlipVideoConfig.from_pretrained(tmp_path / "stock"))
    assert type(model) is CatpInstructBlipVideoForConditionalGeneration
    loaded = CatpInstructBlipVideoForConditionalGeneration.from_pretrained(tmp_path / "stock", num_kept_query_tokens=32)
    loaded.save_pretrained(tmp_path / "catp")
    saved = json.loads((tmp_path / "catp" / "config.json").read_text())
    assert saved["model_type"] == "catp_instructblipvideo" and saved["num_kept_query_tokens"] == 32
    assert (tmp_path / "catp" / "modeling_catp_instructblipvideo.py").is_file()
    assert type(AutoConfig.from_pretrained(tmp_path / "catp")) is CatpInstructBlipVideoConfig
    again = AutoModel.from_pretrained(tmp_path / "catp")
    assert type(again) is CatpInstructBlipVideoForConditionalGeneration and again.config.kept_query_tokens == 32
