"""ToMe merging inside the vision encoder (`vision_merge_per_layer`, r): the pure-tensor algorithm, the three
families' hooks, proportional attention, size-weighted votes, and r = 0 as stock bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import batch, make_images
from transformers import InstructBlipForConditionalGeneration, InstructBlipVideoForConditionalGeneration

from catp_blip2 import CatpConfig, CatpInstructBlipConfig, CatpInstructBlipVideoConfig, PRUNING_METHODS
from catp_blip2.hub.export import CODE_FILES
from catp_blip2.modeling_features import QFormerEncodingCache, scoring_key
from catp_blip2.modeling_qformer import proportional_cross_attention
from catp_blip2.modeling_vision import _attention
from catp_blip2.toy.tiny import (
    tiny_blip2_config,
    tiny_instructblip_config,
    tiny_instructblip_model,
    tiny_instructblip_processor,
    tiny_instructblipvideo_config,
    tiny_instructblipvideo_model,
    tiny_model,
    tiny_video_inputs,
)
from catp_blip2.vision_merge import (
    bipartite_soft_matching,
    merge_count,
    merge_tokens,
    size_bias,
    tokens_left,
)

# The tiny ViT: 30 px images, 6 px patches -> 25 patches + CLS, 2 layers.
TOKENS = 26
PROMPTS = ["question: what color is the circle ? short answer:", "question: how many ? short answer:",
           "question: is there a red square on the left ? short answer:", "question: what shape ? short answer:"]


def _decoder(model, batch_size):
    if model.config.use_decoder_only_language_model:
        return {}
    return {"decoder_input_ids": torch.zeros(batch_size, 2, dtype=torch.long)}


def _set(model, **settings):
    for key, value in settings.items():
        setattr(model.config, key, value)
    model.config.check_pruning_settings()


@pytest.fixture()
def blip2(pair):
    """(CATP BLIP-2, stock BLIP-2), OPT and T5; r and every pruning setting restored after the test."""
    model, stock = pair
    yield model, stock
    model.vision_model.set_attn_implementation("sdpa")
    model.qformer.set_attn_implementation("sdpa")


# ---- the pure-tensor module ------------------------------------------------------------------------------------


def test_matching_keeps_cls_first_and_sizes_sum_to_the_token_count():
    torch.manual_seed(0)
    x, metric = torch.randn(3, TOKENS, 8), torch.randn(3, TOKENS, 5)
    sizes = torch.ones(3, TOKENS)
    for r in (1, 5, 12):
        merged, new_sizes = merge_tokens(x, sizes, bipartite_soft_matching(metric, r))
        assert merged.shape == (3, TOKENS - r, 8) and new_sizes.shape == (3, TOKENS - r)
        assert torch.equal(new_sizes.sum(-1), torch.full((3,), float(TOKENS)))
        assert torch.equal(merged[:, 0], x[:, 0]) and torch.equal(new_sizes[:, 0], torch.ones(3))  # CLS untouched
        # Size-weighted means: the size-weighted sum of the tokens is preserved.
        torch.testing.assert_close((merged * new_sizes[..., None]).sum(1), x.sum(1))
    assert [merge_count(t, 12) for t in (26, 14, 3, 2, 1)] == [12, 6, 1, 0, 0]
    assert tokens_left(26, 12, 2) == 8 and tokens_left(26, 0, 39) == 26 and tokens_left(257, 6, 39) == 23


def test_identical_tokens_merge_first_and_sizes_carry_over():
    metric = torch.eye(6)[None].repeat(1, 1, 1)
    metric[0, 3] = metric[0, 2]  # token 2 (set A) and 3 (set B) are the same direction
    x = torch.arange(6.0)[None, :, None]
    sizes = torch.tensor([[1.0, 1.0, 2.0, 3.0, 1.0, 1.0]])
    matching = bipartite_soft_matching(metric, 1)
    assert matching.merged.tolist() == [[1]] and matching.into.tolist() == [[1]]  # A position 1 = token 2 -> token 3
    merged, new_sizes = merge_tokens(x, sizes, matching)
    # Kept A tokens (0, 4) then B tokens (1, 3, 5); token 3 is now (2 * 2 + 3 * 3) / 5 with size 5.
    assert new_sizes.tolist() == [[1.0, 1.0, 1.0, 5.0, 1.0]]
    torch.testing.assert_close(merged[0, :, 0], torch.tensor([0.0, 4.0, 1.0, 13 / 5, 5.0]))


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_proportional_attention(implementation):
    """All sizes 1 is the unmerged attention; a token of size s attends and is attended as s copies of it."""
    torch.manual_seed(0)
    layer = tiny_model("opt").vision_model.encoder.layers[0].self_attn
    hidden = torch.randn(2, 7, 32)
    plain, _, _ = _attention(layer, hidden, None, implementation)
    ones, _, _ = _attention(layer, hidden, size_bias(torch.ones(2, 7), hidden.dtype), implementation)
    assert torch.equal(size_bias(torch.ones(2, 7), torch.float32), torch.zeros(2, 1, 1, 7))
    torch.testing.assert_close(ones, plain, rtol=0, atol=1e-6 if implementation == "sdpa" else 0)
    copies = torch.cat([hidden, hidden[:, -1:].repeat(1, 2, 1)], dim=1)  # the last token three times
    unmerged, _, _ = _attention(layer, copies, None, implementation)
    sizes = torch.tensor([[1.0] * 6 + [3.0]] * 2)
    merged, _, _ = _attention(layer, hidden, size_bias(sizes, hidden.dtype), implementation)
    torch.testing.assert_close(merged, unmerged[:, :7], rtol=1e-5, atol=1e-5)


def test_proportional_cross_attention_with_sizes_one_changes_nothing(models):
    model, _ = models["opt"]
    image = torch.randn(2, 9, model.config.vision_config.hidden_size)
    tokens = model.query_tokens.expand(2, -1, -1)
    cross = [layer.crossattention.attention for layer in model.qformer.encoder.layer if layer.has_cross_attention]

    def run():
        return model.qformer(query_embeds=tokens, encoder_hidden_states=image,
                             encoder_attention_mask=torch.ones(2, 9, dtype=torch.long)).last_hidden_state

    for implementation in ("eager", "sdpa"):
        model.qformer.set_attn_implementation(implementation)
        plain = run()
        with proportional_cross_attention(cross, torch.ones(2, 9)):
            torch.testing.assert_close(run(), plain, rtol=0, atol=1e-6)
        with proportional_cross_attention(cross, torch.full((2, 9), 3.0)):  # equal sizes: softmax-invariant
            torch.testing.assert_close(run(), plain, rtol=1e-5, atol=1e-5)
        with proportional_cross_attention(cross, torch.tensor([[5.0] + [1.0] * 8] * 2)):
            assert not torch.allclose(run(), plain)
    model.qformer.set_attn_implementation("sdpa")


# ---- the setting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 13, 2.5, "2", True, None])
def test_setting_is_validated_against_the_patch_count(bad):
    for config_class, stock in ((CatpConfig, tiny_blip2_config()), (CatpInstructBlipConfig, tiny_instructblip_config()),
                                (CatpInstructBlipVideoConfig, tiny_instructblipvideo_config())):
        with pytest.raises(ValueError) as error:
            config_class.from_stock_config(stock, vision_merge_per_layer=bad)
        message = str(error.value)
        assert "`vision_merge_per_layer`" in message and repr(bad) in message and "0..12" in message, message
        assert "25 patch tokens" in message
    config = CatpConfig.from_stock_config(tiny_blip2_config(), vision_merge_per_layer=12)
    assert config.vision_merge_per_layer == 12 and CatpConfig().vision_merge_per_layer == 0
    config.vision_merge_per_layer = torch.tensor(3)
    config.check_pruning_settings()
    assert config.vision_merge_per_layer == 3 and type(config.vision_merge_per_layer) is int
    assert {"vision_merge.py", "modeling_vision.py"} <= set(CODE_FILES)


# ---- r = 0 is stock, bit for bit ------------------------------------------------------------------------------


def test_r0_is_stock_blip2(blip2, processor):
    model, stock = blip2
    inputs = batch(processor)
    _set(model, vision_merge_per_layer=0, pruning_method="none")
    torch.testing.assert_close(model(**inputs, **_decoder(model, 4)).logits,
                               stock(**inputs, **_decoder(model, 4)).logits, rtol=0, atol=0)
    for kwargs in ({"max_new_tokens": 4}, {"max_new_tokens": 3, "num_beams": 3, "num_return_sequences": 2}):
        assert torch.equal(model.generate(**inputs, **kwargs), stock.generate(**inputs, **kwargs))
    features = model.get_image_features(inputs["pixel_values"])
    assert features.image_token_sizes is None and features.last_hidden_state.shape[1] == TOKENS


def _flat(value):
    """Every tensor of a (nested) model output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return []


def test_r0_keeps_the_stock_forward_contract(blip2, processor):
    """What transformers' own model tests check of a BLIP-2 forward (they do not ship with the transformers
    package and cannot be fetched offline): at r = 0 the loss, every hidden state and attention of all three parts,
    the tuple output and the gradients equal stock's."""
    model, stock = blip2
    inputs = batch(processor)
    _set(model, vision_merge_per_layer=0, pruning_method="none")
    if model.config.use_decoder_only_language_model:
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    else:
        labels = torch.tensor([[7, 8, 2]] * 4)
    kwargs = {"labels": labels, "output_attentions": True, "output_hidden_states": True}
    for part in (model, stock):
        for name in ("vision_model", "qformer", "language_model"):
            getattr(part, name).set_attn_implementation("eager")  # sdpa returns no attention probabilities
    try:
        ours, theirs = model(**inputs, **kwargs), stock(**inputs, **kwargs)
        compared = 0
        for key in theirs.keys():  # CATP's output adds fields of its own (kept indices, scores): stock's are compared
            ours_flat, theirs_flat = _flat(getattr(ours, key)), _flat(theirs[key])
            assert len(ours_flat) == len(theirs_flat), key
            for a, b in zip(ours_flat, theirs_flat):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            compared += len(theirs_flat)
        assert compared > 10
        as_tuple = model(**inputs, labels=labels, return_dict=False)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], ours.loss, rtol=0, atol=0)
        ours.loss.backward()
        theirs.loss.backward()
        grads = {n: p.grad for n, p in stock.named_parameters() if p.grad is not None}
        assert grads and {n for n, p in model.named_parameters() if p.grad is not None} == set(grads)
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                torch.testing.assert_close(parameter.grad, grads[name], rtol=0, atol=0)
    finally:
        for part in (model, stock):
            part.zero_grad(set_to_none=True)
            for name in ("vision_model", "qformer", "language_model"):
                getattr(part, name).set_attn_implementation("sdpa")


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_r0_is_stock_instructblip_and_video(language_model):
    model = tiny_instructblip_model(language_model, seed=0, vision_merge_per_layer=0)
    stock = InstructBlipForConditionalGeneration(tiny_instructblip_config(language_model)).eval()
    stock.load_state_dict(model.state_dict())
    processor = tiny_instructblip_processor()
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=make_images(4), text=PROMPTS, return_tensors="pt", padding=True)
    model.config.pruning_method = "none"
    torch.testing.assert_close(model(**inputs, **_decoder(model, 4)).logits,
                               stock(**inputs, **_decoder(model, 4)).logits, rtol=0, atol=0)
    assert torch.equal(model.generate(**inputs, max_new_tokens=3, num_beams=2),
                       stock.generate(**inputs, max_new_tokens=3, num_beams=2))

    video = tiny_instructblipvideo_model(language_model, seed=0, vision_merge_per_layer=0, pruning_method="none")
    stock_video = InstructBlipVideoForConditionalGeneration(tiny_instructblipvideo_config(language_model)).eval()
    stock_video.load_state_dict(video.state_dict())
    inputs = tiny_video_inputs(video.config, PROMPTS)
    torch.testing.assert_close(video(**inputs, **_decoder(video, 4)).logits,
                               stock_video(**inputs, **_decoder(video, 4)).logits, rtol=0, atol=0)
    assert torch.equal(video.generate(**inputs, max_new_tokens=3), stock_video.generate(**inputs, max_new_tokens=3))


# ---- r > 0 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 5, 12])
def test_merged_tokens_reach_the_qformer_with_their_sizes(blip2, processor, r):
    model, _ = blip2
    inputs = batch(processor)
    _set(model, vision_merge_per_layer=r, num_kept_query_tokens=8)
    features = model.get_image_features(inputs["pixel_values"])
    left = tokens_left(TOKENS, r, model.config.vision_config.num_hidden_layers)
    assert features.last_hidden_state.shape[:2] == (4, left) and features.image_token_sizes.shape == (4, left)
    assert torch.equal(features.image_token_sizes.sum(-1), torch.full((4,), float(TOKENS)))
    assert torch.equal(features.image_token_sizes[:, 0], torch.ones(4))  # CLS never merged


def test_a_batch_equals_per_row_runs_and_eager_equals_sdpa(blip2, processor):
    model, _ = blip2
    inputs = batch(processor)
    _set(model, vision_merge_per_layer=5, num_kept_query_tokens=8)
    whole = model.get_image_features(inputs["pixel_values"])
    for row in range(4):
        one = model.get_image_features(inputs["pixel_values"][row : row + 1])
        assert torch.equal(one.kept_query_indices[0], whole.kept_query_indices[row])
        assert torch.equal(one.image_token_sizes[0], whole.image_token_sizes[row])
        torch.testing.assert_close(one.query_token_scores[0], whole.query_token_scores[row], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(one.pooler_output[0], whole.pooler_output[row], rtol=1e-5, atol=1e-5)
    model.vision_model.set_attn_implementation("eager")
    model.qformer.set_attn_implementation("eager")
    eager = model.get_image_features(inputs["pixel_values"])
    assert torch.equal(eager.kept_query_indices, whole.kept_query_indices)
    assert torch.equal(eager.image_token_sizes, whole.image_token_sizes)
    torch.testing.assert_close(eager.last_hidden_state, whole.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager.pooler_output, whole.pooler_output, rtol=1e-5, atol=1e-5)
    out = model.generate(**inputs, max_new_tokens=3)
    model.vision_model.set_attn_implementation("sdpa")
    model.qformer.set_attn_implementation("sdpa")
    assert torch.equal(model.generate(**inputs, max_new_tokens=3), out)


def test_votes_count_a_merged_token_by_its_size(blip2, processor):
    """The Q-Former's cross-attention adds log(size) over merged tokens, and CATP's votes weigh each token's size."""
    from catp_blip2.scoring_catp import catp_scores

    model, _ = blip2
    inputs = batch(processor)
    _set(model, vision_merge_per_layer=8, pruning_method="catp", num_kept_query_tokens=8)
    seen = {}
    cross = model.family.cross_attentions(model)[0]
    handle = cross.register_forward_hook(lambda m, a, kw, out: seen.update(kw), with_kwargs=True)
    try:
        features = model.get_image_features(inputs["pixel_values"])
    finally:
        handle.remove()
    sizes = features.image_token_sizes
    assert (sizes > 1).any()
    mask = seen["encoder_attention_mask"]
    torch.testing.assert_close(mask[:, 0, 0], sizes.log())  # proportional attention in the Q-Former
    q = model.config.num_query_tokens
    probs = model.family.qformer_probs(cross, seen["hidden_states"][:, :q], seen["encoder_hidden_states"], mask)
    torch.testing.assert_close(features.query_token_scores, catp_scores([probs], [1.0], image_token_weights=sizes))
    assert not torch.allclose(features.query_token_scores, catp_scores([probs], [1.0]))
    # Every one of the TOKENS input tokens, per head, still hands out 0 + 1 + ... + 31 points: the scale is kept.
    heads = model.config.qformer_config.num_attention_heads
    expected = torch.full((4,), TOKENS * heads * (q - 1) * q / 2)
    torch.testing.assert_close(features.query_token_scores.sum(-1), expected)


@pytest.mark.parametrize("pruned_queries", ["drop", "merge"])
@pytest.mark.parametrize("r", [0, 3, 12])
def test_every_method_works_with_any_r(blip2, processor, r, pruned_queries):
    model, _ = blip2
    inputs = batch(processor)
    prompt = inputs["input_ids"].shape[1]
    for method in PRUNING_METHODS:
        for settings in ({"num_kept_query_tokens": 8}, {"num_kept_query_tokens": None, "keep_score_mass": 0.5}):
            extra = {"image_token_weighting": "vit_attention"} if method in ("catp", "catp_cover") and r == 3 else {}
            _set(model, pruning_method=method, vision_merge_per_layer=r, pruned_queries=pruned_queries,
                 **{"keep_score_mass": None, **settings}, **extra)
            out = model(**inputs, **_decoder(model, 4))
            assert torch.isfinite(out.logits).all() and torch.isfinite(out.query_token_scores).all(), (method, settings)
            generated = model.generate(**inputs, max_new_tokens=2)
            if model.config.use_decoder_only_language_model:
                assert torch.equal(generated[:, :prompt], inputs["input_ids"])
            model.config.image_token_weighting = "none"


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_vit_attention_weighting_with_merged_tokens(blip2, processor, implementation):
    model, _ = blip2
    inputs = batch(processor)
    model.vision_model.set_attn_implementation(implementation)
    _set(model, vision_merge_per_layer=4, image_token_weighting="vit_attention", num_kept_query_tokens=8)
    weighted = model.get_image_features(inputs["pixel_values"])
    model.config.image_token_weighting = "none"
    plain = model.get_image_features(inputs["pixel_values"])
    assert not torch.equal(weighted.query_token_scores, plain.query_token_scores)
    assert torch.isfinite(weighted.query_token_scores).all()


def test_instructblip_and_video_merge(processor):
    model = tiny_instructblip_model("t5", seed=0, vision_merge_per_layer=6, num_kept_query_tokens=8)
    ib_processor = tiny_instructblip_processor()
    ib_processor.tokenizer.padding_side = "left"
    inputs = ib_processor(images=make_images(4), text=PROMPTS, return_tensors="pt", padding=True)
    features = model.get_image_features(inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
                                        qformer_attention_mask=inputs["qformer_attention_mask"])
    assert features.last_hidden_state.shape[1] == tokens_left(TOKENS, 6, 2)
    assert torch.equal(features.image_token_sizes.sum(-1), torch.full((4,), float(TOKENS)))
    assert model.generate(**inputs, max_new_tokens=3).shape[0] == 4
    for row in range(4):  # a batch (with padded instructions) equals per-row runs
        one = model.get_image_features(
            inputs["pixel_values"][row : row + 1], qformer_input_ids=inputs["qformer_input_ids"][row : row + 1],
            qformer_attention_mask=inputs["qformer_attention_mask"][row : row + 1])
        assert torch.equal(one.kept_query_indices[0], features.kept_query_indices[row])

    video = tiny_instructblipvideo_model("opt", seed=0, vision_merge_per_layer=6, num_kept_query_tokens=12)
    inputs = tiny_video_inputs(video.config, PROMPTS)
    features = video.get_video_features(inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"],
                                        qformer_attention_mask=inputs["qformer_attention_mask"])
    assert features.image_token_sizes.shape == (16, tokens_left(TOKENS, 6, 2))  # every frame merged on its own
    assert features.kept_query_indices.shape == (4, 12)
    video.config.frame_selection = "per_frame"
    assert video.generate(**inputs, max_new_tokens=3).shape[0] == 4


# ---- shared features, save/load, remote code --------------------------------------------------------------------


def test_shared_features_key_on_r(blip2, processor):
    model, _ = blip2
    inputs = batch(processor)
    _set(model, num_kept_query_tokens=8, vision_merge_per_layer=0)
    key0 = scoring_key(model.config)
    cache = QFormerEncodingCache(score_settings=[{"pruning_method": "catp"}, {"pruning_method": "l2"}])
    answers = {}
    for r in (0, 4, 0, 4):
        model.config.vision_merge_per_layer = r
        direct = model.generate(**inputs, max_new_tokens=3)
        assert torch.equal(cache.generate(model, inputs, batch_id=0, max_new_tokens=3), direct)
        answers.setdefault(r, direct)
    assert cache.misses == 8 and cache.hits == 8  # each row encoded once per r, then served from the cache
    # A sweep's cache holds sets at several r: each pass is scored under the sets of its own r.
    mixed = QFormerEncodingCache(score_settings=[{"pruning_method": "catp", "vision_merge_per_layer": r} for r in (0, 4)])
    for r in (4, 0):
        model.config.vision_merge_per_layer = r
        assert torch.equal(mixed.generate(model, inputs, batch_id=0, max_new_tokens=3), answers[r])
    model.config.vision_merge_per_layer = 4
    assert scoring_key(model.config) != key0
    with pytest.raises(ValueError, match="vision_merge_per_layer"):
        model.encode_qformer(inputs["pixel_values"], score_settings=[{"vision_merge_per_layer": 2}])


def test_save_load_and_remote_code_carry_r(tmp_path):
    from PIL import Image
    from hub_check_inputs import model_probe
    from test_hub import make_images as image_files
    from test_hub import run_without_catp

    from catp_blip2 import CatpBlip2ForConditionalGeneration
    from catp_blip2.toy.tiny import tiny_processor

    folder = tmp_path / "saved"
    model = tiny_model("opt", seed=0, num_kept_query_tokens=8, vision_merge_per_layer=5)
    model.save_pretrained(folder)
    processor = tiny_processor()
    processor.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["vision_merge_per_layer"] == 5
    assert {"vision_merge.py", "modeling_vision.py"} <= {p.name for p in folder.iterdir()}
    loaded = CatpBlip2ForConditionalGeneration.from_pretrained(folder)
    assert loaded.config.vision_merge_per_layer == 5
    paths = image_files(tmp_path)
    images = [Image.open(p).convert("RGB") for p in paths]
    expected = model_probe(model, processor, images)
    assert model_probe(loaded, processor, images) == expected
    remote = run_without_catp(folder, paths, tmp_path)
    assert remote["catp_blip2_importable"] is False and remote["vision_merge_per_layer"] == 5
    # Another process may run other thread counts, and the merge's float sums then round differently in the last
    # bit: the choices (kept queries, generated ids) must be the same, the logits equal to float32 rounding.
    logits = remote["model"].pop("logits")
    assert torch.allclose(torch.tensor(logits), torch.tensor(expected.pop("logits")), rtol=1e-5, atol=1e-6)
    assert remote["model"] == expected
