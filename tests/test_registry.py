"""The live method registry: a method registered at run time, with a setting of its own, is accepted everywhere."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import batch, cli_error

from catp_blip2 import PRUNING_SETTINGS, CatpBlip2ForConditionalGeneration, CatpConfig
from catp_blip2.cli import main
from catp_blip2.hub.variants import variant_from_dict
from catp_blip2.scoring import PRUNING_METHODS, Setting, register_pruning_method, select_top_k
from catp_blip2.toy.tiny import tiny_model


def lp_scores(query_output: torch.Tensor, lp_order: float) -> torch.Tensor:
    """The Lp norm of each Q-Former output token: (B, Q, D) -> (B, Q)."""
    return query_output.float().norm(p=lp_order, dim=-1)


def _check_order(value, config):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError("a positive finite number")
    return float(value)


LP_ORDER = Setting("lp_order", 2.0, _check_order, "the p of the Lp norm")


@pytest.fixture()
def lp_method():
    register_pruning_method("lp", lp_scores, ("query_output", "lp_order"), (LP_ORDER,))
    yield "lp"
    del PRUNING_METHODS["lp"]


def test_config_accepts_the_method_and_checks_its_setting(lp_method, tmp_path):
    assert "lp_order" in PRUNING_SETTINGS
    config = CatpConfig(pruning_method="lp", lp_order=1, num_kept_query_tokens=8)
    assert config.lp_order == 1.0 and CatpConfig().lp_order == 2.0  # checked, normalised; default filled in
    with pytest.raises(ValueError, match=r"`lp_order` must be a positive finite number; got -1"):
        CatpConfig(pruning_method="lp", lp_order=-1)
    config.save_pretrained(tmp_path)
    assert CatpConfig.from_pretrained(tmp_path).lp_order == 1.0


def test_model_scores_with_the_setting(lp_method, processor):
    model = tiny_model("opt", seed=0, pruning_method="lp", lp_order=1.0, num_kept_query_tokens=8)
    inputs = batch(processor, count=2)
    features = model.get_image_features(inputs["pixel_values"])
    queries = features.qformer_outputs.last_hidden_state
    torch.testing.assert_close(features.query_token_scores, queries.float().norm(p=1.0, dim=-1))
    assert torch.equal(features.kept_query_indices, select_top_k(queries.float().norm(p=1.0, dim=-1), 8))
    model.config.lp_order = 3.0  # read at call time
    again = model.get_image_features(inputs["pixel_values"]).query_token_scores
    torch.testing.assert_close(again, queries.float().norm(p=3.0, dim=-1))
    out = model.generate(**inputs, max_new_tokens=2)
    assert out.shape[0] == 2 and torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_saved_model_keeps_the_method(lp_method, tmp_path):
    model = tiny_model("opt", seed=0, pruning_method="lp", lp_order=1.5, num_kept_query_tokens=4)
    model.save_pretrained(tmp_path)
    loaded = CatpBlip2ForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.pruning_method == "lp" and loaded.config.lp_order == 1.5


def test_eval_sweeps_the_method_with_its_setting(lp_method, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--methods", "lp:lp_order=1", "lp", "--keep", "8", "--limit", "6", "--num-beams", "1",
            "--max-new-tokens", "2", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    orders = {(e["method"], e["pruning_settings"]["lp_order"]) for e in results if e["method"] != "none"}
    assert orders == {("lp:lp_order=1", 1), ("lp", 2.0)}
    err = cli_error(capsys, ["eval", "--methods", "lp:lp_order=0", "--out", str(tmp_path / "bad")])
    assert "`lp_order` must be a positive finite number" in err


def test_variant_files_take_the_setting(lp_method):
    variant = variant_from_dict({"name": "v", "base_model": "embedded", "pruning_method": "lp", "lp_order": 4})
    assert variant.pruning["lp_order"] == 4.0


def test_registration_is_checked():
    with pytest.raises(ValueError, match="already a pruning method"):
        register_pruning_method("catp", lp_scores, ("query_output",))
    with pytest.raises(ValueError, match=r"`inputs` \['lp_order'\] are neither"):
        register_pruning_method("lp2", lp_scores, ("query_output", "lp_order"))
    with pytest.raises(ValueError, match="'vote_layers' is already declared"):
        register_pruning_method("lp2", lp_scores, ("query_output",), (Setting("vote_layers", 1, _check_order),))
    assert "lp2" not in PRUNING_METHODS
