"""CatpBlip2ForConditionalGeneration through its public API, for OPT and Flan-T5 style language models."""

from __future__ import annotations

import pytest
import torch
from conftest import QUESTIONS, batch, make_images
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForVisualQuestionAnswering,
    Blip2ForConditionalGeneration,
)

from catp_blip2 import CatpBlip2ForConditionalGeneration, CatpConfig
from catp_blip2.scoring import PRUNING_METHODS, select_top_k
from catp_blip2.scoring_catp import catp_scores
from catp_blip2.toy.tiny import tiny_blip2_config

METHODS = list(PRUNING_METHODS)  # every shipped method, so a new one is tested without editing this file
KEEPS = [1, 4, 8, 16, 32]


def extra_inputs(model, size: int) -> dict:
    """T5 needs decoder inputs for a forward pass."""
    if model.config.use_decoder_only_language_model:
        return {}
    return {"decoder_input_ids": torch.zeros(size, 3, dtype=torch.long)}


def configure(model, **settings):
    for key, value in settings.items():
        setattr(model.config, key, value)


# ---- equality with stock -----------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [{"pruning_method": "none", "num_kept_query_tokens": 4},
                                      {"pruning_method": "catp", "num_kept_query_tokens": 32},
                                      {"pruning_method": "catp", "num_kept_query_tokens": None}])
def test_unpruned_equals_stock_logits_and_generations(pair, processor, settings):
    model, stock = pair
    configure(model, **settings)
    inputs = batch(processor, "left")
    extra = extra_inputs(model, 4)
    assert torch.equal(model(**inputs, **extra).logits, stock(**inputs, **extra).logits)
    for kwargs in ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_beams": 3, "num_return_sequences": 2}):
        assert torch.equal(model.generate(**inputs, **kwargs), stock.generate(**inputs, **kwargs))
    caption = batch(processor, text=False)
    assert torch.equal(model.generate(**caption, max_new_tokens=4), stock.generate(**caption, max_new_tokens=4))


# ---- every method and k ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_every_method_at_every_k(pair, processor, method):
    model, _ = pair
    inputs = batch(processor, "right")
    length = inputs["input_ids"].shape[1]
    for k in KEEPS:
        configure(model, pruning_method=method, num_kept_query_tokens=k)
        expected_k = 32 if method == "none" else k
        features = model.get_image_features(inputs["pixel_values"])
        kept = features.kept_query_indices
        assert features.pooler_output.shape == (4, expected_k, model.config.text_config.hidden_size)
        assert kept.shape == (4, expected_k) and features.query_token_scores.shape == (4, 32)
        assert bool((kept.diff(dim=1) > 0).all()) and kept.min() >= 0 and kept.max() < 32
        out = model(**inputs, **extra_inputs(model, 4))
        assert torch.equal(out.kept_query_indices, kept)
        if model.config.use_decoder_only_language_model:
            assert out.logits.shape[1] == length - (32 - expected_k)
        generated = model.generate(**inputs, max_new_tokens=3)
        assert generated.shape[0] == 4


def test_kept_tokens_are_the_projected_top_scoring_queries(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=None)
    pixels = batch(processor)["pixel_values"]
    full = model.get_image_features(pixels)
    configure(model, num_kept_query_tokens=8)
    pruned = model.get_image_features(pixels)
    expected = select_top_k(full.query_token_scores, 8)
    assert torch.equal(pruned.kept_query_indices, expected)
    rows = torch.arange(4).unsqueeze(1)
    torch.testing.assert_close(pruned.pooler_output, full.pooler_output[rows, expected])


def test_kept_indices_differ_across_images(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    kept = model.get_image_features(batch(processor, count=8, seed=3)["pixel_values"]).kept_query_indices
    assert len({tuple(row) for row in kept.tolist()}) > 1


def test_batched_selection_equals_per_image_selection(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8, vote_layers="all",
              image_token_weighting="vit_attention")
    pixels = batch(processor)["pixel_values"]
    together = model.get_image_features(pixels)
    for i in range(4):
        alone = model.get_image_features(pixels[i : i + 1])
        assert torch.equal(alone.kept_query_indices, together.kept_query_indices[i : i + 1])
        torch.testing.assert_close(alone.query_token_scores, together.query_token_scores[i : i + 1])


# ---- the votes are the Q-Former's own cross-attention ------------------------------------------------------

@pytest.mark.parametrize("vote_layers, aggregation", [("first", "rank"), ("last", "soft"), ([1, 0], "rank")])
def test_votes_match_eager_cross_attentions(pair, processor, vote_layers, aggregation):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=4, vote_layers=vote_layers,
              vote_aggregation=aggregation, vote_layer_weights=None)
    pixels = batch(processor)["pixel_values"]
    scores = model.get_image_features(pixels).query_token_scores

    # Reference: eager attention with transformers' own recording of cross-attention probabilities.
    image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state
    model.qformer.set_attn_implementation("eager")
    try:
        reference = model.qformer(
            query_embeds=model.query_tokens.expand(4, -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long),
            output_attentions=True,
        )
    finally:
        model.qformer.set_attn_implementation("sdpa")
    cross = reference.cross_attentions
    positions = model.config.voting_layer_positions()
    expected = catp_scores([cross[p] for p in positions], aggregation=aggregation)
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementation_does_not_change_selection_or_outputs(pair, processor, implementation):
    model, stock = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8, vote_layers="all")
    inputs = batch(processor)
    baseline = model.get_image_features(inputs["pixel_values"])
    model.qformer.set_attn_implementation(implementation)
    stock.qformer.set_attn_implementation(implementation)
    try:
        features = model.get_image_features(inputs["pixel_values"])
        stock_query_output = stock.get_image_features(inputs["pixel_values"]).qformer_outputs.last_hidden_state
    finally:
        model.qformer.set_attn_implementation("sdpa")
        stock.qformer.set_attn_implementation("sdpa")
    assert torch.equal(features.kept_query_indices, baseline.kept_query_indices)
    torch.testing.assert_close(features.query_token_scores, baseline.query_token_scores)
    # Recording votes leaves the Q-Former's outputs exactly as the stock model computes them.
    assert torch.equal(features.qformer_outputs.last_hidden_state, stock_query_output)


def test_only_voting_layers_are_hooked_and_hooks_are_removed(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8, vote_layers="last")
    before = {id(m): len(m._forward_hooks) for m in model.modules()}  # transformers keeps hooks of its own
    with model._record_attentions([model.config]):
        hooked = [m for m in model.modules() if len(m._forward_hooks) > before[id(m)]]
    assert hooked == [model.family.cross_attentions(model)[-1]]
    assert {id(m): len(m._forward_hooks) for m in model.modules()} == before


# ---- placeholders ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_inputs_with_k_placeholders_equal_inputs_with_32(pair, processor, padding_side):
    model, _ = pair
    if not model.config.use_decoder_only_language_model:
        pytest.skip("compared on decoder-only logits")
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor, padding_side)
    compact = processor.tokenizer(QUESTIONS, return_tensors="pt", padding=True)
    image_tokens = torch.full((4, 8), model.config.image_token_id)
    compact_ids = torch.cat([image_tokens, compact["input_ids"]], dim=1)
    compact_mask = torch.cat([torch.ones_like(image_tokens), compact["attention_mask"]], dim=1)
    full = model(**inputs).logits
    short = model(pixel_values=inputs["pixel_values"], input_ids=compact_ids, attention_mask=compact_mask).logits
    torch.testing.assert_close(full, short)


def test_wrong_placeholder_count_is_a_clear_error(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor)
    for ids in (inputs["input_ids"][:, 5:], inputs["input_ids"][:, 31:]):
        with pytest.raises(ValueError, match=r"must carry 32 placeholder tokens \(image_token_id=4.* got \["):
            model(pixel_values=inputs["pixel_values"], input_ids=ids, **extra_inputs(model, 4))
        with pytest.raises(ValueError, match="num_kept_query_tokens=8"):
            model.generate(pixel_values=inputs["pixel_values"], input_ids=ids, max_new_tokens=2)
    with pytest.raises(ValueError, match="rows but `pixel_values` has 2 images"):
        model.generate(pixel_values=inputs["pixel_values"][:2], input_ids=inputs["input_ids"], max_new_tokens=2)


def test_inputs_embeds_path_matches_input_ids_path(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    extra = extra_inputs(model, 4)
    by_ids = model(**inputs, **extra).logits
    by_embeds = model(pixel_values=inputs["pixel_values"], input_ids=None, inputs_embeds=embeds,
                      attention_mask=inputs["attention_mask"], **extra).logits
    torch.testing.assert_close(by_ids, by_embeds)


def test_labels_are_compacted_for_decoder_only(pair, processor):
    model, _ = pair
    if not model.config.use_decoder_only_language_model:
        pytest.skip("decoder-only labels")
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor, "right")
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    out = model(**inputs, labels=labels)
    assert out.loss is not None and torch.isfinite(out.loss)
    # The same loss by hand: the text part ends the compacted sequence, each logit predicts the next label.
    compact_labels = torch.cat([torch.full((4, 8), -100), labels[:, 32:]], dim=1)
    assert out.logits.shape[1] == compact_labels.shape[1]
    manual = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), compact_labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, manual)
    out.loss.backward()
    assert model.language_projection.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_t5_labels_train(pair, processor):
    model, _ = pair
    if model.config.use_decoder_only_language_model:
        pytest.skip("encoder-decoder labels")
    configure(model, pruning_method="catp", num_kept_query_tokens=4)
    inputs = batch(processor)
    out = model(**inputs, labels=torch.tensor([[7, 8, 2]] * 4))
    assert torch.isfinite(out.loss)
    assert out.logits.shape[:2] == (4, 3)


# ---- generate --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("decoding", [
    {"num_beams": 3},
    {"num_beams": 3, "num_return_sequences": 2},
    {"do_sample": True, "top_k": 5, "num_return_sequences": 2},
    {},
])
def test_generate_at_k8_prefix_contract(pair, processor, padding_side, decoding):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor, padding_side)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=5, **decoding)
    per_input = decoding.get("num_return_sequences", 1)
    assert out.shape[0] == 4 * per_input
    if model.config.use_decoder_only_language_model:
        prompt = inputs["input_ids"].shape[1]
        assert torch.equal(out[:, :prompt], inputs["input_ids"].repeat_interleave(per_input, dim=0))
        new = out[:, prompt:]
        assert 1 <= new.shape[1] <= 5
    else:
        assert out.shape[1] <= 6  # decoder start + up to 5 new tokens
    texts = processor.batch_decode(out, skip_special_tokens=True)
    assert len(texts) == 4 * per_input


def test_generate_pruned_equals_manual_compact_prompt(pair, processor):
    """Pruned generation = stock generation on a prompt holding only the kept tokens' features."""
    model, stock = pair
    if not model.config.use_decoder_only_language_model:
        pytest.skip("decoder-only comparison")
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor, "left")
    out = model.generate(**inputs, max_new_tokens=5, num_beams=2)
    features = model.get_image_features(inputs["pixel_values"]).pooler_output
    ids = inputs["input_ids"]
    is_image = ids == model.config.image_token_id
    ordinal = is_image.long().cumsum(1) - 1
    kept = model.get_image_features(inputs["pixel_values"]).kept_query_indices
    keep_flags = torch.zeros(4, 32, dtype=torch.bool).scatter_(1, kept, True)
    keep = ~is_image | keep_flags.gather(1, ordinal.clamp(min=0))
    compact_ids = ids[keep].view(4, -1)
    compact_mask = inputs["attention_mask"][keep].view(4, -1)
    embeds = stock.get_input_embeddings()(compact_ids)
    embeds = embeds.masked_scatter((compact_ids == model.config.image_token_id).unsqueeze(-1), features)
    manual = stock.language_model.generate(input_ids=compact_ids, inputs_embeds=embeds, attention_mask=compact_mask,
                                           max_new_tokens=5, num_beams=2)
    assert torch.equal(out[:, ids.shape[1]:], manual[:, compact_ids.shape[1]:])


def test_captioning_without_text(pair, processor):
    model, stock = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=4)
    inputs = batch(processor, text=False)
    out = model.generate(**inputs, max_new_tokens=4)
    if model.config.use_decoder_only_language_model:
        start = [model.config.image_token_id] * 32 + [model.config.text_config.bos_token_id]
        assert out[:, :33].tolist() == [start] * 4
    assert out.shape[0] == 4


def test_return_dict_in_generate_and_max_length(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8)
    inputs = batch(processor)
    out = model.generate(**inputs, max_new_tokens=3, return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape[0] == 4 and len(out.scores) == out.sequences.shape[1] - (
        inputs["input_ids"].shape[1] if model.config.use_decoder_only_language_model else 1)
    if model.config.use_decoder_only_language_model:
        prompt = inputs["input_ids"].shape[1]
        assert torch.equal(out.sequences[:, :prompt], inputs["input_ids"])
        # max_length counts the caller's prompt, as in stock BLIP-2.
        capped = model.generate(**inputs, max_length=prompt + 2)
        assert capped.shape[1] == prompt + 2


def test_settings_are_read_at_call_time(pair, processor):
    model, _ = pair
    inputs = batch(processor)
    seen = []
    for method, k in [("catp", 4), ("l2", 4), ("catp", 16), ("position", 2)]:
        configure(model, pruning_method=method, num_kept_query_tokens=k)
        seen.append(model.get_image_features(inputs["pixel_values"]).kept_query_indices)
    assert [s.shape[1] for s in seen] == [4, 4, 16, 2]
    assert seen[3].tolist() == [[0, 1]] * 4
    model.config.num_kept_query_tokens = 40
    with pytest.raises(ValueError, match="`num_kept_query_tokens`"):
        model.generate(**inputs, max_new_tokens=2)


# ---- loading and Auto classes ------------------------------------------------------------------------------

def test_stock_checkpoint_loads_and_saves_as_catp(tmp_path, processor):
    torch.manual_seed(1)
    stock = Blip2ForConditionalGeneration(tiny_blip2_config()).eval()
    with torch.no_grad():
        stock.query_tokens.normal_()
    stock.save_pretrained(tmp_path / "stock")
    model = CatpBlip2ForConditionalGeneration.from_pretrained(
        tmp_path / "stock", pruning_method="catp", num_kept_query_tokens=8
    ).eval()
    assert type(model.config) is CatpConfig and model.config.kept_query_tokens == 8
    for name, tensor in stock.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    inputs = batch(processor)
    expected = model.generate(**inputs, max_new_tokens=4, num_beams=2)
    model.save_pretrained(tmp_path / "catp")
    for loader in (CatpBlip2ForConditionalGeneration, AutoModel, AutoModelForImageTextToText,
                   AutoModelForVisualQuestionAnswering):
        loaded = loader.from_pretrained(tmp_path / "catp").eval()
        assert type(loaded) is CatpBlip2ForConditionalGeneration, loader
        assert loaded.config.num_kept_query_tokens == 8
        assert torch.equal(loaded.generate(**inputs, max_new_tokens=4, num_beams=2), expected)


def test_from_pretrained_rejects_bad_pruning_kwargs(tmp_path):
    Blip2ForConditionalGeneration(tiny_blip2_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`num_kept_query_tokens` must be"):
        CatpBlip2ForConditionalGeneration.from_pretrained(tmp_path, num_kept_query_tokens=64)


def test_different_images_get_different_answers_path(pair, processor):
    """Sanity: pixels reach the language model through the kept tokens (the output depends on the image)."""
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=4)
    inputs = batch(processor, count=4)
    logits = model(**inputs, **extra_inputs(model, 4)).logits
    other = dict(inputs)
    other["pixel_values"] = processor(images=make_images(4, seed=9), return_tensors="pt")["pixel_values"]
    assert not torch.allclose(logits, model(**other, **extra_inputs(model, 4)).logits)


def test_half_precision_load_behaves_like_stock(tmp_path, models, processor):
    model, _ = models["opt"]
    model.save_pretrained(tmp_path)
    half = CatpBlip2ForConditionalGeneration.from_pretrained(
        tmp_path, dtype=torch.bfloat16, pruning_method="catp", num_kept_query_tokens=8
    ).eval()
    stock = Blip2ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {p.dtype for p in stock.parameters()}
    assert half.qformer.layernorm.weight.dtype == stock.qformer.layernorm.weight.dtype
    assert half.language_projection.weight.dtype == torch.bfloat16
    inputs = batch(processor)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    features = half.get_image_features(inputs["pixel_values"])
    assert features.pooler_output.dtype == torch.bfloat16 and features.pooler_output.shape[1] == 8
    out = half.generate(**inputs, max_new_tokens=3, num_beams=2)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_training_mode_forward_and_backward(pair, processor):
    model, _ = pair
    configure(model, pruning_method="catp", num_kept_query_tokens=8, image_token_weighting="vit_attention")
    inputs = batch(processor)
    model.train()
    try:
        if model.config.use_decoder_only_language_model:
            loss = model(**inputs, labels=inputs["input_ids"]).loss
        else:
            loss = model(**inputs, labels=torch.tensor([[7, 8, 2]] * 4)).loss
        loss.backward()
        assert model.query_tokens.grad is not None and torch.isfinite(loss)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
