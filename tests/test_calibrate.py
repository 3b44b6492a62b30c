"""`catp-blip2 calibrate` end to end on the embedded model: the table, the winner's variant file (which `eval
--variants` takes), resuming after a kill, the calibration split disjoint from the evaluation set, and errors."""

from __future__ import annotations

import io
import json

import pytest
from conftest import cli_error

from catp_blip2.cli import main
from catp_blip2.evaluation.calibrate import search_space
from catp_blip2.evaluation.runner import STOP_AFTER_ENV
from catp_blip2.hub.variants import load_variant
from catp_blip2.scoring import PRUNING_METHODS
from catp_blip2.toy.embedded import embedded_model_dir

FAST = ["--limit", "12", "--keep", "8", "2", "--num-beams", "1", "--max-new-tokens", "3", "--batch-size", "6"]
SEARCH = ["--search", "cover_power=1|4", "cover_selection=cover|independent"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrate")
    assert main(["calibrate", "--out", str(out), *FAST, *SEARCH]) == 0
    return out


def test_calibrate_ranks_every_candidate_and_writes_the_winner(calibrated):
    report = json.loads((calibrated / "calibration.json").read_text())
    assert len(report["candidates"]) == 4 and report["keep"] == [8, 2]
    means = [row["mean"] for row in report["candidates"]]
    assert means == sorted(means, reverse=True)
    for row in report["candidates"]:
        assert row["mean"] == pytest.approx(sum(row["accuracy"].values()) / 2)
    assert report["winner"] == report["candidates"][0]["candidate"]
    table = (calibrated / "calibration.md").read_text()
    assert all(row["candidate"] in table for row in report["candidates"])

    variant = load_variant(report["variant"])
    assert variant.pruning["pruning_method"] == "catp_cover" and variant.num_kept_query_tokens == 8
    winner = dict(part.split("=") for part in report["winner"].split(":", 1)[1].split(","))
    assert float(variant.pruning["cover_power"]) == float(winner["cover_power"])
    assert variant.pruning["cover_selection"] == winner["cover_selection"]


def test_eval_takes_the_calibrated_variant(calibrated, tmp_path, capsys):
    report = json.loads((calibrated / "calibration.json").read_text())
    out = tmp_path / "eval"
    capsys.readouterr()
    argv = ["eval", "--variants", report["variant"], "--methods", "random", "--dataset", "embedded-calibration"]
    assert main([*argv, "--out", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    methods = {entry["method"] for entry in results["results"]}
    assert any(m.startswith("catp_cover:") for m in methods)
    # On the same questions and k, the variant's row is the calibration's row for the winner.
    calibration = json.loads((calibrated / "results.json").read_text())
    winner_rows = {e["num_kept_query_tokens"]: e["accuracy"] for e in calibration["results"] if e["method"] == report["winner"]}
    evaluated = {e["num_kept_query_tokens"]: e["accuracy"] for e in results["results"] if e["method"].startswith("catp_cover:")}
    assert evaluated == winner_rows


def test_calibrate_resumes_after_a_kill(calibrated, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    monkeypatch.setenv(STOP_AFTER_ENV, "3")
    with pytest.raises(RuntimeError, match=STOP_AFTER_ENV):
        main(["calibrate", "--out", str(out), *FAST, *SEARCH])
    monkeypatch.delenv(STOP_AFTER_ENV)
    assert main(["calibrate", "--out", str(out), *FAST, *SEARCH]) == 0
    resumed = json.loads((out / "calibration.json").read_text())
    whole = json.loads((calibrated / "calibration.json").read_text())
    assert resumed["candidates"] == whole["candidates"]


def test_the_calibration_split_is_disjoint_from_the_evaluation_set():
    from catp_blip2.evaluation.datasets import load_vqa_dataset

    evaluation = load_vqa_dataset("embedded")
    calibration = load_vqa_dataset("embedded-calibration")
    assert len(calibration) == len(evaluation) == 300
    assert not set(calibration["question_id"]) & set(evaluation["question_id"])

    def image_bytes(dataset):
        found = set()
        for image in dataset["image"]:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            found.add(buffer.getvalue())
        return found

    assert not image_bytes(calibration) & image_bytes(evaluation)


def test_the_default_search_is_the_registered_candidates():
    from catp_blip2.checkpoints import load_catp_config

    config = load_catp_config(str(embedded_model_dir()), "--model")
    space = search_space("catp_cover", None, config)
    settings = {s.name: s for s in PRUNING_METHODS["catp_cover"].settings}
    assert space == {name: list(s.candidates(config)) for name, s in settings.items() if s.candidates is not None}
    assert space["cover_layers"] == ["all", [0], [1]]  # the embedded Q-Former has 2 cross-attention layers


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--dataset", "embedded"], "--dataset"),
        (["--dataset", "lmms-lab/VQAv2", "--split", "validation"], "--dataset"),
        (["--method", "none"], "--method"),
        (["--method", "catp_cover", "--search", "vote_layers=all"], "--search"),
        (["--search", "cover_power"], "--search"),
        (["--search", "cover_power=0|2"], "cover_power"),
        (["--variant-out", "winner.txt"], "--variant-out"),
    ],
)
def test_bad_options_are_refused_before_anything_loads(capsys, tmp_path, argv, names, monkeypatch):
    import catp_blip2.evaluation.command as command

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(command, "load_model_and_processor", must_not_load)
    err = cli_error(capsys, ["calibrate", "--out", str(tmp_path / "x"), *argv])
    assert names in err


# ---- --learn-prior (issue 19) ----------------------------------------------------------------------------------

def test_the_random_runs_kept_sets_are_the_models_own():
    import torch

    from catp_blip2.evaluation.query_prior import random_kept_set
    from catp_blip2.toy.tiny import tiny_model

    model = tiny_model("opt", seed=0)
    model.config.pruning_method, model.config.num_kept_query_tokens = "random", 5
    for seed in (0, 3):
        model.config.pruning_seed = seed
        image = model.get_image_features(pixel_values=torch.rand(2, 3, 30, 30))
        assert image.kept_query_indices.tolist() == [random_kept_set(seed, 5, 32)] * 2


def test_the_prior_finds_the_query_that_matters():
    from catp_blip2.evaluation.query_prior import estimate_prior, random_kept_set

    # Accuracy rises by 20 points whenever query 7 is kept: the prior's largest value is query 7's, scaled to 1.
    runs = [(seed, k, 50.0 + 20.0 * (7 in random_kept_set(seed, k, 32))) for seed in range(16) for k in (16, 8, 4)]
    prior = estimate_prior(runs, 32)
    assert len(prior) == 32 and prior[7] == 1.0 and max(abs(v) for i, v in enumerate(prior) if i != 7) < 1.0
    assert estimate_prior([(seed, 8, 60.0) for seed in range(4)], 32) == [0.0] * 32  # nothing differs: no prior


def test_learn_prior_writes_the_chosen_prior_into_the_variant(tmp_path):
    out = tmp_path / "prior"
    argv = ["calibrate", "--out", str(out), *FAST, "--search", "pruned_queries=drop|merge", "--learn-prior",
            "--prior-seeds", "3", "--prior-scales", "0", "1000"]
    assert main(argv) == 0
    report = json.loads((out / "calibration.json").read_text())
    prior = report["prior"]
    assert len(prior["values"]) == 32 and max(abs(v) for v in prior["values"]) in (0.0, 1.0)
    assert [row["scale"] for row in prior["candidates"]] in ([0.0, 1000.0], [1000.0, 0.0])
    means = [row["mean"] for row in prior["candidates"]]
    assert means == sorted(means, reverse=True) and prior["chosen_scale"] == prior["candidates"][0]["scale"]
    results = json.loads((out / "results.json").read_text())
    assert sum(e["method"].startswith("random:pruning_seed=") for e in results["results"]) == 3 * 2  # seeds x k
    variant = load_variant(report["variant"])
    if prior["chosen_scale"] == 0:
        assert variant.pruning["query_score_prior"] is None
    else:
        assert variant.pruning["query_score_prior"] == pytest.approx([v * 1000 for v in prior["values"]], abs=1e-5)
    assert variant.pruning["pruned_queries"] == report["winner"].split("pruned_queries=")[1].split(",")[0][:5]
    assert "Query prior for the winner" in (out / "calibration.md").read_text()


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--learn-prior", "--prior-seeds", "1"], "--prior-seeds"),
        (["--learn-prior", "--method", "random"], "--learn-prior"),
        (["--learn-prior", "--prior-scales", "-1"], "--prior-scales"),
        (["--search", "keep_score_mass=0.5"], "--search"),
        (["--learn-prior", "--model", "VIDEO"], "--learn-prior"),
    ],
)
def test_bad_prior_options_are_refused_before_anything_loads(capsys, tmp_path, argv, names, monkeypatch):
    import catp_blip2.evaluation.command as command
    from catp_blip2.toy.tiny import tiny_instructblipvideo_model

    if "VIDEO" in argv:  # a saved tiny InstructBLIP-Video: its config is all the check reads
        tiny_instructblipvideo_model().save_pretrained(str(tmp_path / "video"))
        argv = [str(tmp_path / "video") if a == "VIDEO" else a for a in argv]
    monkeypatch.setattr(command, "load_model_and_processor", lambda *a, **k: pytest.fail("the model was loaded"))
    assert names in cli_error(capsys, ["calibrate", "--out", str(tmp_path / "x"), *argv])
