"""CatpConfig: defaults, derived values, round trips and every bad setting."""

from __future__ import annotations

import json

import pytest
from conftest import make_images
from transformers import AutoConfig, Blip2Config

from catp_blip2 import CatpConfig
from catp_blip2.toy.tiny import tiny_blip2_config


def make(**settings) -> CatpConfig:
    return CatpConfig.from_blip2_config(tiny_blip2_config(), **settings)


def test_defaults_and_derived_values():
    config = make()
    assert config.model_type == "catp_blip2"
    assert config.pruning_method == "catp" and config.num_kept_query_tokens is None
    assert config.kept_query_tokens == 32
    assert config.num_cross_attention_layers == 2  # 4 Q-Former layers, cross-attention every 2
    assert config.voting_layer_positions() == [0]
    assert make(vote_layers="last").voting_layer_positions() == [1]
    assert make(vote_layers="all").voting_layer_positions() == [0, 1]
    assert make(vote_layers=[1, 0], vote_layer_weights=[2, 0.5]).voting_layer_weights() == [2.0, 0.5]
    assert make(pruning_method="none", num_kept_query_tokens=4).kept_query_tokens == 32


def test_real_blip2_layout_has_six_cross_attention_layers():
    config = CatpConfig()  # the Salesforce/blip2-opt-2.7b layout
    assert config.num_query_tokens == 32 and config.num_cross_attention_layers == 6
    assert make(vote_layers=[0, 1]).vote_layers == [0, 1]


def test_round_trip_and_from_stock(tmp_path):
    config = make(pruning_method="l2", num_kept_query_tokens=8, vote_layers=[1], vote_layer_weights=[3.0],
                  image_token_weighting="vit_attention", vote_aggregation="soft", pruning_seed=5)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "catp_blip2" and saved["num_kept_query_tokens"] == 8
    for loaded in (CatpConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is CatpConfig
        assert loaded.to_diff_dict() | {"_name_or_path": ""} == config.to_diff_dict() | {"_name_or_path": ""}

    stock = tiny_blip2_config()
    assert isinstance(config, Blip2Config)
    assert config.text_config.to_dict() == stock.text_config.to_dict()
    assert config.num_query_tokens == stock.num_query_tokens and config.image_token_id == stock.image_token_id


def test_stock_checkpoint_config_loads_with_pruning_kwargs(tmp_path):
    tiny_blip2_config().save_pretrained(tmp_path)  # model_type "blip-2", as Salesforce/blip2-opt-2.7b
    config = CatpConfig.from_pretrained(tmp_path, pruning_method="catp", num_kept_query_tokens=4)
    assert config.model_type == "catp_blip2" and config.kept_query_tokens == 4


BAD_SETTINGS = [
    ("pruning_method", "topk", "one of"),
    ("pruning_method", None, "one of"),
    ("num_kept_query_tokens", 0, "1..32"),
    ("num_kept_query_tokens", 33, "1..32"),
    ("num_kept_query_tokens", 8.0, "1..32"),
    ("num_kept_query_tokens", "8", "1..32"),
    ("num_kept_query_tokens", True, "1..32"),
    ("vote_layers", "middle", "first"),
    ("vote_layers", [], "non-empty list"),
    ("vote_layers", [2], "0..1"),
    ("vote_layers", [-1], "0..1"),
    ("vote_layers", [0, 0], "distinct"),
    ("vote_layers", 1, "first"),
    ("vote_layer_weights", [1.0, 2.0], "1 non-negative"),
    ("vote_layer_weights", [-1.0], "non-negative"),
    ("vote_layer_weights", [0.0], "not all zero"),
    ("vote_layer_weights", [float("nan")], "finite"),
    ("vote_layer_weights", 1.0, "non-negative"),
    ("image_token_weighting", "vit", "one of"),
    ("vote_aggregation", "sum", "one of"),
    ("pruning_seed", "seven", "an integer"),
]


@pytest.mark.parametrize("name, value, allowed", BAD_SETTINGS)
def test_bad_settings_raise_clear_value_errors(name, value, allowed):
    with pytest.raises(ValueError) as error:
        make(**{name: value})
    message = str(error.value)
    assert f"`{name}`" in message and repr(value) in message and allowed in message


@pytest.mark.parametrize("name, value, allowed", BAD_SETTINGS[:4])
def test_bad_settings_set_later_are_caught_by_the_check(name, value, allowed):
    config = make()
    setattr(config, name, value)
    with pytest.raises(ValueError, match=f"`{name}`"):
        config.check_pruning_settings()


def test_unknown_pruning_setting_in_from_blip2_config():
    with pytest.raises(ValueError, match="Unknown pruning setting"):
        make(keep=8)


def test_integral_numbers_of_any_kind_are_accepted_and_stored_as_int():
    import numpy as np
    import torch

    for k in (np.int64(8), torch.tensor(8), np.int32(8)):
        config = make(num_kept_query_tokens=k, vote_layers=[np.int64(1)], pruning_seed=np.uint64(3))
        assert type(config.num_kept_query_tokens) is int and config.num_kept_query_tokens == 8
        assert config.vote_layers == [1] and type(config.vote_layers[0]) is int
        assert type(config.pruning_seed) is int
        json.dumps(config.to_dict())  # serialisable
    for bad in (torch.tensor(8.0), torch.tensor([8]), np.float64(8.0)):
        with pytest.raises(ValueError, match="`num_kept_query_tokens`"):
            make(num_kept_query_tokens=bad)


@pytest.mark.parametrize("seed", [2**64, 2**70, -1])
def test_pruning_seed_outside_what_torch_takes_is_refused(seed):
    with pytest.raises(ValueError, match=r"`pruning_seed` must be an integer in 0\.\.2\*\*64-1"):
        make(pruning_seed=seed)


def test_largest_seed_works(processor):
    from catp_blip2.toy.tiny import tiny_model

    model = tiny_model("opt", pruning_method="random", pruning_seed=2**64 - 1, num_kept_query_tokens=4)
    pixels = processor(images=make_images(1), return_tensors="pt")["pixel_values"]
    assert model.get_image_features(pixels).kept_query_indices.shape == (1, 4)


def test_layer_weights_beyond_float32_are_refused_and_large_ones_cannot_overflow(processor):
    import torch

    from catp_blip2.toy.tiny import tiny_model

    with pytest.raises(ValueError, match=r"`vote_layer_weights` must be .*at most 3\.4e\+38"):
        make(vote_layers=[0, 1], vote_layer_weights=[1e39, 1.0])
    pixels = processor(images=make_images(2), return_tensors="pt")["pixel_values"]
    model = tiny_model("opt", vote_layers=[0, 1], vote_layer_weights=[3e38, 3e38], num_kept_query_tokens=4)
    large = model.get_image_features(pixels)
    model.config.vote_layer_weights = [1.0, 1.0]  # the same ratios
    plain = model.get_image_features(pixels)
    assert torch.isfinite(large.query_token_scores).all()
    assert torch.equal(large.kept_query_indices, plain.kept_query_indices)
    assert not torch.equal(plain.kept_query_indices, torch.arange(4).expand(2, 4))  # not the "first k" fallback
