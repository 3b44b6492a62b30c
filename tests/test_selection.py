"""What happens after a method scored: merging the pruned queries, a per-sample k from a score-mass budget, and
query priors, through `from_pretrained`, `generate`, `forward`, the pipeline and remote code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import QUESTIONS, batch, make_images

import catp_blip2
from catp_blip2 import CatpBlip2ForConditionalGeneration, CatpConfig
from catp_blip2.scoring import PRUNING_METHODS, register_pruning_method
from catp_blip2.selection import PAD, counts_for_score_mass, merge_pruned_tokens, select_by_counts
from catp_blip2.toy.tiny import tiny_model, tiny_processor


def configure(model, **settings):
    for key, value in settings.items():
        setattr(model.config, key, value)
    model.config.check_pruning_settings()


def decoder(model, rows: int) -> dict:
    if model.config.use_decoder_only_language_model:
        return {}
    return {"decoder_input_ids": torch.zeros(rows, 3, dtype=torch.long)}


# ---- the tensor functions ----------------------------------------------------------------------------------

def test_merge_folds_each_pruned_token_into_its_most_similar_kept_token():
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8], [0.1, 0.9]]])
    merged, sizes = merge_pruned_tokens(tokens, torch.tensor([[0, 1]]))
    assert sizes.tolist() == [[2.0, 3.0]]
    assert torch.allclose(merged[0, 0], (tokens[0, 0] + tokens[0, 2]) / 2)
    assert torch.allclose(merged[0, 1], (tokens[0, 1] + tokens[0, 3] + tokens[0, 4]) / 3)


def test_merge_with_padded_rows_leaves_empty_slots_empty():
    tokens = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    merged, sizes = merge_pruned_tokens(tokens, torch.tensor([[1, 4, 5], [2, PAD, PAD]]))
    assert sizes.sum(dim=1).tolist() == [6.0, 6.0]
    assert sizes[1].tolist() == [6.0, 0.0, 0.0] and not merged[1, 1:].any()
    assert torch.allclose(merged[1, 0], tokens[1].mean(dim=0))


def test_score_mass_counts_and_padded_selection():
    scores = torch.tensor([[10.0, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    counts = counts_for_score_mass(scores, 0.6, min_k=1, max_k=4)
    # Row 0: one token holds all the mass above the minimum; row 1: 3 + 2 of 6; row 2: nothing above it -> min_k.
    assert counts.tolist() == [1, 2, 1]
    assert counts_for_score_mass(scores, 0.6, min_k=2, max_k=3).tolist() == [2, 2, 2]
    assert counts_for_score_mass(scores, 1.0, min_k=1, max_k=4).tolist() == [1, 3, 1]
    kept = select_by_counts(torch.tensor([[0.0, 5.0, 1.0, 4.0], [9.0, 0.0, 0.0, 8.0]]), torch.tensor([3, 1]))
    assert kept.tolist() == [[1, 2, 3], [0, PAD, PAD]]


# ---- merge through the model -------------------------------------------------------------------------------

def test_merge_without_pruning_is_bit_identical_to_stock(pair, processor):
    model, stock = pair
    inputs = batch(processor, "left")
    for settings in ({"pruning_method": "none", "num_kept_query_tokens": 4}, {"pruning_method": "catp", "num_kept_query_tokens": 32}):
        configure(model, pruned_queries="merge", **settings)
        assert torch.equal(model(**inputs, **decoder(model, 4)).logits, stock(**inputs, **decoder(model, 4)).logits)
        assert torch.equal(model.generate(**inputs, max_new_tokens=5), stock.generate(**inputs, max_new_tokens=5))


@pytest.mark.parametrize("method", ["catp", "catp_cover", "position"])
def test_merge_keeps_k_tokens_whose_sizes_sum_to_the_query_count(pair, processor, method):
    model, _ = pair
    inputs = batch(processor, "left")
    configure(model, pruning_method=method, num_kept_query_tokens=6, pruned_queries="drop")
    dropped = model.get_image_features(inputs["pixel_values"])
    configure(model, pruned_queries="merge")
    merged = model.get_image_features(inputs["pixel_values"])
    assert merged.pooler_output.shape == dropped.pooler_output.shape == (4, 6, model.config.text_config.hidden_size)
    assert torch.equal(merged.kept_query_indices, dropped.kept_query_indices)  # merge changes what, not which
    assert merged.kept_query_sizes.sum(dim=1).tolist() == [32.0] * 4 and dropped.kept_query_sizes is None
    assert not torch.allclose(merged.pooler_output, dropped.pooler_output)
    out = model.generate(**inputs, max_new_tokens=4)
    logits = model(**inputs, **decoder(model, 4)).logits
    if model.config.use_decoder_only_language_model:  # the caller's prompt, then the answer
        assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
        assert logits.shape[1] == inputs["input_ids"].shape[1] - (32 - 6)


def test_a_method_registered_at_run_time_merges_too(processor):
    register_pruning_method("last_first", lambda num_queries, batch_size, device: torch.arange(
        num_queries, device=device, dtype=torch.float).expand(batch_size, num_queries), ("num_queries", "batch_size", "device"))
    try:
        model = tiny_model("opt", seed=0, pruning_method="last_first", num_kept_query_tokens=4, pruned_queries="merge")
        features = model.get_image_features(batch(processor)["pixel_values"])
        assert features.kept_query_indices[0].tolist() == [28, 29, 30, 31]
        assert features.kept_query_sizes.sum(dim=1).tolist() == [32.0] * 4
    finally:
        del PRUNING_METHODS["last_first"]


# ---- adaptive k ------------------------------------------------------------------------------------------

def test_score_mass_settings_are_checked():
    with pytest.raises(ValueError, match=r"`keep_score_mass` must be .*num_kept_query_tokens"):
        CatpConfig(keep_score_mass=0.5, num_kept_query_tokens=8)
    for bad in (0, 1.5, "half", float("nan")):
        with pytest.raises(ValueError, match=r"`keep_score_mass` must be a finite number in \(0.0, 1.0\]"):
            CatpConfig(keep_score_mass=bad)
    with pytest.raises(ValueError, match=r"`max_kept_query_tokens` must be None or an integer in min_kept_query_tokens=8"):
        CatpConfig(keep_score_mass=0.5, min_kept_query_tokens=8, max_kept_query_tokens=4)
    with pytest.raises(ValueError, match=r"`min_kept_query_tokens` must be an integer in 1..32"):
        CatpConfig(min_kept_query_tokens=0)
    with pytest.raises(ValueError, match=r"`pruned_queries` must be one of \('drop', 'merge'\)"):
        CatpConfig(pruned_queries="average")


def test_score_mass_respects_its_bounds(pair, processor):
    model, _ = pair
    pixels = batch(processor)["pixel_values"]
    configure(model, pruning_method="l2", num_kept_query_tokens=None, keep_score_mass=0.9)
    free = model.get_image_features(pixels).kept_query_counts
    configure(model, min_kept_query_tokens=int(free.max()) - 1, max_kept_query_tokens=int(free.max()))
    features = model.get_image_features(pixels)
    low, high = int(free.max()) - 1, int(free.max())
    assert all(low <= c <= high for c in features.kept_query_counts.tolist())
    for row, count in zip(features.kept_query_indices.tolist(), features.kept_query_counts.tolist()):
        assert row[:count] == sorted(row[:count]) and all(i == PAD for i in row[count:])
    assert features.pooler_output.shape[1] == int(features.kept_query_counts.max())


@pytest.mark.parametrize("pruned", ["drop", "merge"])
def test_a_mixed_batch_answers_as_each_row_alone(pair, processor, pruned):
    """Rows keep different numbers of tokens: left-padded for the language model, each answers as run alone."""
    model, _ = pair
    configure(model, pruning_method="l2", num_kept_query_tokens=None, keep_score_mass=0.8, pruned_queries=pruned)
    inputs = batch(processor, "left")
    counts = model.get_image_features(inputs["pixel_values"]).kept_query_counts.tolist()
    assert len(set(counts)) > 1, counts  # the test compares something
    length = inputs["input_ids"].shape[1]
    images = make_images(4)
    processor.tokenizer.padding_side = "left"
    decoder_only = model.config.use_decoder_only_language_model
    pad = processor.tokenizer.pad_token_id

    def answer(ids: torch.Tensor, prompt_length: int) -> list[int]:
        new = ids[prompt_length:].tolist() if decoder_only else ids.tolist()
        while new and new[-1] == pad:  # a row that stopped early is padded to the batch's longest answer
            new.pop()
        return new

    for kwargs in ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 3}):
        together = model.generate(**inputs, **kwargs)
        for row in range(4):
            alone_inputs = processor(images=images[row : row + 1], text=[QUESTIONS[row]], return_tensors="pt")
            alone = model.generate(**alone_inputs, **kwargs)
            assert answer(together[row], length) == answer(alone[0], alone_inputs["input_ids"].shape[1]), (row, kwargs)
    if model.config.use_decoder_only_language_model:  # forward: each row's last logits as alone
        logits = model(**inputs).logits
        for row in range(4):
            alone_inputs = processor(images=images[row : row + 1], text=[QUESTIONS[row]], return_tensors="pt")
            assert torch.allclose(logits[row, -1], model(**alone_inputs).logits[0, -1], atol=1e-4)


def test_video_refuses_a_score_mass_per_frame():
    from catp_blip2 import CatpInstructBlipVideoConfig

    with pytest.raises(ValueError, match=r"`keep_score_mass` must be None with frame_selection='per_frame'"):
        CatpInstructBlipVideoConfig(keep_score_mass=0.5, frame_selection="per_frame")


# ---- priors ------------------------------------------------------------------------------------------------

def test_prior_is_checked_and_moves_the_selection(processor):
    with pytest.raises(ValueError, match=r"`query_score_prior` must be None or a list of num_query_tokens=32 finite"):
        CatpConfig(query_score_prior=[1.0] * 31)
    model = tiny_model("opt", seed=0, pruning_method="position", num_kept_query_tokens=3)
    pixels = batch(processor)["pixel_values"]
    assert model.get_image_features(pixels).kept_query_indices[0].tolist() == [0, 1, 2]
    prior = [0.0] * 32
    prior[30] = prior[20] = prior[10] = 1000.0
    configure(model, query_score_prior=prior)
    assert model.get_image_features(pixels).kept_query_indices[0].tolist() == [10, 20, 30]


def test_selection_settings_survive_save_load_and_remote_code(tmp_path):
    from test_hub import make_images as image_files
    from test_hub import run_without_catp

    from hub_check_inputs import model_probe, vqa_calls
    from PIL import Image

    prior = np.linspace(1.0, -1.0, 32).round(3).tolist()
    model = tiny_model("opt", seed=0, pruning_method="l2", keep_score_mass=0.7, max_kept_query_tokens=12,
                       pruned_queries="merge", query_score_prior=prior)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    loaded = CatpBlip2ForConditionalGeneration.from_pretrained(folder)
    assert (loaded.config.query_score_prior, loaded.config.keep_score_mass, loaded.config.pruned_queries) == (prior, 0.7, "merge")
    images = image_files(tmp_path)
    local = model_probe(loaded, tiny_processor(), [Image.open(p).convert("RGB") for p in images])
    remote = run_without_catp(folder, images, tmp_path)
    assert remote["catp_blip2_importable"] is False
    assert remote["model"]["kept_query_indices"] == local["kept_query_indices"]
    assert remote["model"]["generated"] == local["generated"]
    pil = [Image.open(p).convert("RGB") for p in images]
    assert remote["vqa"] == vqa_calls(catp_blip2.vqa_pipeline(model=str(folder), device="cpu"), [str(p) for p in images], pil)
