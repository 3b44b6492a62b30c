"""Faults found by trying the package as a new user would: each test failed before its fix."""

from __future__ import annotations

import warnings

import pytest
from conftest import batch
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from catp_blip2 import CatpBlip2ForConditionalGeneration, CatpConfig
from catp_blip2.toy.tiny import tiny_blip2_config


def test_stock_checkpoints_load_without_the_other_model_type_warning(tmp_path):
    from transformers import Blip2ForConditionalGeneration

    stock = Blip2ForConditionalGeneration(tiny_blip2_config())
    stock.save_pretrained(tmp_path)  # model_type "blip-2", as every Salesforce/blip2-* checkpoint
    with CaptureLogger(logging.get_logger("transformers.configuration_utils")) as captured:
        config = CatpConfig.from_pretrained(tmp_path)
        model = CatpBlip2ForConditionalGeneration.from_pretrained(tmp_path, num_kept_query_tokens=8)
    assert "to instantiate a model of type" not in captured.out
    assert config.model_type == "catp_blip2" and model.config.kept_query_tokens == 8


def test_right_padded_decoder_only_batches_warn(pair, processor):
    model, _ = pair
    model.config.num_kept_query_tokens = 8
    right = batch(processor, padding_side="right")
    if not model.config.use_decoder_only_language_model:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # encoder-decoder models read right padding fine: no warning
            model.generate(**right, max_new_tokens=2)
        return
    with pytest.warns(UserWarning, match="right-padded batch"):
        model.generate(**right, max_new_tokens=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(**batch(processor, padding_side="left"), max_new_tokens=2)


def test_vqa_pipeline_reports_a_missing_image_file(tmp_path):
    import catp_blip2
    from catp_blip2.toy.tiny import tiny_model, tiny_processor

    vqa = catp_blip2.vqa_pipeline(model=tiny_model("opt"), processor=tiny_processor(), device="cpu")
    missing = str(tmp_path / "no-such-image.png")
    with pytest.raises(FileNotFoundError, match="no-such-image.png' is no existing file"):
        vqa(missing, "what color is the circle ?")
