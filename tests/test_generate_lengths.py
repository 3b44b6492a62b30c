"""`max_length` / `min_length` count the caller's prompt, however they are given, as in stock BLIP-2."""

from __future__ import annotations

import copy

import pytest
from conftest import batch
from transformers import GenerationConfig


def _lengths(model, inputs, way: str, length: int, embeds_only: bool = False):
    """Generate with max_length = min_length = `length`, passed the given way; the output's shape."""
    kwargs = {"num_beams": 1, "do_sample": False}
    if embeds_only:
        inputs = {"pixel_values": inputs["pixel_values"], "attention_mask": inputs["attention_mask"],
                  "inputs_embeds": model.get_input_embeddings()(inputs["input_ids"])}
    saved = copy.deepcopy(model.language_model.generation_config)
    try:
        if way == "keywords":
            kwargs.update(max_length=length, min_length=length)
        elif way == "generation_config":
            kwargs["generation_config"] = GenerationConfig(max_length=length, min_length=length, num_beams=1)
        else:  # the language model's own generation config
            model.language_model.generation_config.max_length = length
            model.language_model.generation_config.min_length = length
        return model.generate(**inputs, **kwargs).shape
    finally:
        model.language_model.generation_config = saved


@pytest.mark.parametrize("embeds_only", [False, True], ids=["input_ids", "inputs_embeds"])
@pytest.mark.parametrize("way", ["keywords", "generation_config", "language_model_config"])
def test_lengths_count_the_callers_prompt(pair, processor, way, embeds_only):
    model, stock = pair
    model.config.pruning_method, model.config.num_kept_query_tokens = "catp", 8
    inputs = batch(processor, count=2)
    length = inputs["input_ids"].shape[1] + 6 if model.config.use_decoder_only_language_model else 6
    expected = _lengths(stock, inputs, way, length, embeds_only)
    assert _lengths(model, inputs, way, length, embeds_only) == expected
    if model.config.use_decoder_only_language_model and not embeds_only:
        assert expected[1] == length  # 6 new tokens after the caller's prompt


def test_max_length_below_the_prompt_names_the_users_numbers(pair, processor):
    model, _ = pair
    if not model.config.use_decoder_only_language_model:
        pytest.skip("max_length counts decoder tokens for encoder-decoder models")
    model.config.num_kept_query_tokens = 8
    inputs = batch(processor, count=2)
    prompt = inputs["input_ids"].shape[1]
    with pytest.raises(ValueError, match=rf"`max_length` \({prompt - 4}\) counts the prompt, which has {prompt} tokens"):
        model.generate(**inputs, max_length=prompt - 4)


def test_max_new_tokens_wins_over_max_length_as_in_transformers(pair, processor):
    model, stock = pair
    model.config.num_kept_query_tokens = 8
    inputs = batch(processor, count=2)
    kwargs = {"max_new_tokens": 3, "min_new_tokens": 3, "max_length": 2}
    assert model.generate(**inputs, **kwargs).shape == stock.generate(**inputs, **kwargs).shape
