"""`catp-blip2 explain` and `catp_blip2.explain.explain`: the picture, and that it shows the model's own selection."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from catp_blip2.explain import command as explain_module
from catp_blip2.checkpoints import load_catp_model, resolve_checkpoint
from catp_blip2.cli import build_parser, main
from catp_blip2.explain import DEFAULT_VQA_PROMPT, explain, vote_shares
from catp_blip2.toy.shapes import draw_scene, random_scene
from conftest import cli_error

QUESTION = "what color is the triangle ?"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> str:
    """A synthetic shapes scene (red triangle, blue and yellow squares) saved as PNG."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    draw_scene(random_scene(rng), rng).save(path)
    return str(path)


def _loaded(name: str):
    from transformers import AutoProcessor

    return load_catp_model(name).eval(), AutoProcessor.from_pretrained(resolve_checkpoint(name))


@pytest.fixture(scope="module")
def embedded():
    return _loaded("embedded")


def _kept_by_the_model(model, processor, image_path: str, question: str) -> list[int]:
    """What the model keeps when asked directly, with no recorder of explain's around it."""
    inputs = processor(images=Image.open(image_path).convert("RGB"), text=DEFAULT_VQA_PROMPT.format(question),
                       return_tensors="pt")
    extra = {name: inputs[name] for name in model.family.extra_inputs}
    with torch.no_grad():
        return model.get_image_features(inputs["pixel_values"], **extra).kept_query_indices[0].tolist()


@pytest.mark.parametrize("k", [4, 12])
def test_cli_writes_the_picture_and_frames_the_queries_the_model_keeps(k, scene, embedded, tmp_path, capsys,
                                                                        monkeypatch):
    seen = []
    real = explain_module.explain
    monkeypatch.setattr(explain_module, "explain", lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    out = tmp_path / "pictures" / "explain.png"  # a missing folder is made
    assert main(["explain", "--image", scene, "--question", QUESTION, "--keep", str(k), "--out", str(out)]) == 0
    (explanation,) = seen
    printed = capsys.readouterr().out
    assert str(out) in printed and repr(explanation.answer) in printed
    assert " ".join(f"q{q}" for q in explanation.kept) in printed

    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width >= 800 and picture.height >= 400
    assert explanation.path == out and explanation.k == k == len(explanation.kept)
    assert explanation.kept == sorted(explanation.kept)
    model, processor = embedded
    model.config.num_kept_query_tokens = k
    try:
        assert explanation.kept == _kept_by_the_model(model, processor, scene, QUESTION)
    finally:
        model.config.num_kept_query_tokens = None


def test_vote_shares_sum_to_one_and_maps_are_the_recorded_cross_attention(scene, embedded):
    model, processor = embedded
    model.config.num_kept_query_tokens = 8
    try:
        explanation = explain(model, processor, scene, QUESTION)
        inputs = processor(images=Image.open(scene).convert("RGB"), text=DEFAULT_VQA_PROMPT.format(QUESTION),
                           return_tensors="pt")
        with torch.no_grad(), model._record_attentions([model.config]) as recorder:
            features = model.get_image_features(inputs["pixel_values"])
    finally:
        model.config.num_kept_query_tokens = None
    assert explanation.path is None and explanation.method == "catp"
    shares = np.array(explanation.shares)
    assert shares.shape == (32,) and (shares >= 0).all() and shares.sum() == pytest.approx(1.0, abs=1e-9)
    scores = features.query_token_scores[0].numpy()
    np.testing.assert_allclose(explanation.scores, scores)
    np.testing.assert_allclose(shares, scores / scores.sum(), rtol=1e-6)  # Borda points: share of all points
    # The top-k shares are exactly the kept queries.
    assert sorted(np.argsort(-shares, kind="stable")[:8].tolist()) == explanation.kept

    assert explanation.maps.shape == (32, 3, 3)  # 48 px images, 16 px patches: 3 x 3, CLS left out
    assert explanation.layers == recorder.cross_positions == [0]
    expected = recorder.cross_attentions[0][0].mean(dim=0)[:, 1:].reshape(32, 3, 3).numpy()
    np.testing.assert_allclose(explanation.maps, expected, rtol=1e-5, atol=1e-7)
    assert ((explanation.maps.sum(axis=(1, 2)) > 0) & (explanation.maps.sum(axis=(1, 2)) <= 1 + 1e-5)).all()


@pytest.mark.parametrize("method", ["l2", "position", "random", "none"])
def test_methods_without_votes_still_get_maps_and_shares(method, scene, embedded):
    model, processor = embedded
    model.config.pruning_method, model.config.num_kept_query_tokens = method, 8
    try:
        explanation = explain(model, processor, scene, QUESTION)
        kept = _kept_by_the_model(model, processor, scene, QUESTION)
    finally:
        model.config.pruning_method, model.config.num_kept_query_tokens = "catp", None
    assert explanation.kept == kept and explanation.maps.shape == (32, 3, 3)
    shares = np.array(explanation.shares)
    assert (shares >= 0).all() and shares.sum() == pytest.approx(1.0, abs=1e-9)
    if method == "none":
        assert explanation.k == 32 and np.allclose(shares, 1 / 32)


def test_vote_shares_of_scores_with_negatives_or_ties():
    np.testing.assert_allclose(vote_shares(np.array([0.0, -1.0, -2.0, -3.0])), [0.5, 1 / 3, 1 / 6, 0.0])
    np.testing.assert_allclose(vote_shares(np.zeros(4)), [0.25] * 4)
    np.testing.assert_allclose(vote_shares(np.array([1.0, 3.0])), [0.25, 0.75])


def test_instructblip_picture_changes_with_the_question(scene, tmp_path):
    model, processor = _loaded("embedded-instructblip")
    model.config.num_kept_query_tokens = 8
    first = explain(model, processor, scene, "what color is the triangle ?", out=tmp_path / "a.png")
    second = explain(model, processor, scene, "where is the blue object ?")
    assert first.kept != second.kept and not np.allclose(first.maps, second.maps)  # the Q-Former reads it
    assert first.kept == _kept_by_the_model(model, processor, scene, "what color is the triangle ?")
    assert second.kept == _kept_by_the_model(model, processor, scene, "where is the blue object ?")
    assert (tmp_path / "a.png").is_file()


def _image_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    return str(path)


@pytest.mark.parametrize(
    "options, named",
    [
        (["--image", "{tmp}/missing.png"], "`--image`"),
        (["--image", "{notimage}"], "`--image`"),
        (["--question", "  "], "`--question`"),
        (["--keep", "0"], "`--keep`"),
        (["--keep", "33"], "`--keep`"),
        (["--method", "topk"], "`--method`"),
        (["--out", "{tmp}/explain.jpg"], "`--out`"),
        (["--out", "{tmp}"], "`--out`"),
        (["--model", "{tmp}/no-such-model"], "`--model`"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(options, named, scene, tmp_path, capsys, monkeypatch):
    from catp_blip2 import checkpoints

    monkeypatch.setattr(checkpoints, "load_catp_model", lambda *a, **k: pytest.fail("the model was loaded"))
    base = {"--image": scene, "--question": QUESTION, "--out": str(tmp_path / "explain.png")}
    given = dict(zip(options[::2], options[1::2]))
    values = {"tmp": tmp_path, "notimage": _image_is_not_an_image(tmp_path) if "{notimage}" in options else ""}
    argv = ["explain"] + [part for name, value in {**base, **given}.items() for part in (name, value.format(**values))]
    assert named in cli_error(capsys, argv)
    assert not (tmp_path / "explain.png").exists()


def test_video_models_are_refused():
    video = SimpleNamespace(config=SimpleNamespace(num_frames=4))
    with pytest.raises(ValueError, match="video model"):
        explain(video, None, Image.new("RGB", (8, 8)), QUESTION)


def test_every_option_says_what_it_is_and_its_default():
    parser = build_parser()
    (sub,) = parser._subparsers._group_actions
    for action in sub.choices["explain"]._actions:
        if action.dest != "help":
            assert action.help and "default: " in action.help, action.dest
