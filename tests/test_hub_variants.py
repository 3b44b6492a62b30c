"""Variant files (configs/*.json): what ships, what is rejected and how; `push --dry-run` and `push` wiring."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from catp_blip2.cli import main
from catp_blip2.hub.export import CODE_FILES
from catp_blip2.hub.variants import EMBEDDED_BASE, load_variant, variant_from_dict
from conftest import cli_error

TESTS = Path(__file__).parent
CONFIGS = TESTS.parent / "configs"
sys.path.insert(0, str(TESTS))
from test_hub import make_standin  # noqa: E402


def test_shipped_variants_load():
    variants = {path.name: load_variant(path) for path in sorted(CONFIGS.glob("*.json"))}
    opt = {v.num_kept_query_tokens for v in variants.values() if v.base_model == "Salesforce/blip2-opt-2.7b"}
    assert {16, 8, 4} <= opt
    assert any(v.base_model == "Salesforce/blip2-flan-t5-xl" for v in variants.values())
    assert any(v.base_model == EMBEDDED_BASE for v in variants.values())
    # The calibrated variant `catp-blip2 calibrate` wrote: catp_cover at its calibrated settings.
    cover = variants["tiny-embedded-catp-cover-k8.json"]
    assert cover.pruning["pruning_method"] == "catp_cover" and cover.num_kept_query_tokens == 8
    for name, variant in variants.items():
        assert variant.pruning["pruning_method"] in ("catp", "catp_cover"), name
        assert variant.repo_name and "/" not in variant.repo_name, name
        assert set(variant.pruning) >= {"vote_layers", "vote_layer_weights", "image_token_weighting", "vote_aggregation"}


def _write(tmp_path: Path, data, name: str = "v.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


GOOD = {"name": "x", "base_model": "Salesforce/blip2-opt-2.7b", "pruning_method": "catp", "num_kept_query_tokens": 8}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_kept_query_token": 8}, "unknown key(s) ['num_kept_query_token']"),
        ({"base_model": 3}, "`base_model` must be a non-empty string; got 3"),
        ({"num_kept_query_tokens": 40}, "`num_kept_query_tokens` must be None or an integer in 1..32"),
        ({"num_kept_query_tokens": 2.5}, "`num_kept_query_tokens` must be None or an integer"),
        ({"pruning_method": "tome"}, "`pruning_method` must be one of"),
        ({"vote_layers": [0, 9]}, "`vote_layers` must be a non-empty list of distinct positions"),
        ({"vote_layers": "all", "vote_layer_weights": [1, 2]}, "`vote_layer_weights` must be None or 6"),
        ({"image_token_weighting": "vit"}, "`image_token_weighting` must be one of"),
        ({"vote_aggregation": "sum"}, "`vote_aggregation` must be one of"),
        ({"repo_name": "my org/x"}, "`repo_name` 'my org/x' is not a valid Hub repo name"),
        ({"repo_name": "org/x"}, "`repo_name` is the name without the owner"),
    ],
)
def test_bad_variant_values(tmp_path, change, message):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(ValueError) as error:
        load_variant(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_bad_variant_files(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['base_model'\]"):
        variant_from_dict({"name": "x"})
    with pytest.raises(ValueError, match=r"not valid JSON \(line 1"):
        load_variant(_write(tmp_path, '{"name": "x",, }'))
    with pytest.raises(ValueError, match="top level must be a JSON object"):
        load_variant(_write(tmp_path, "[1, 2]"))
    with pytest.raises(FileNotFoundError, match=r"does not exist\. Variant files in .*\['v\.json'\]"):
        load_variant(tmp_path / "nope.json")
    # Through the CLI: exit status 2 and the reason on stderr, nothing written.
    bad = _write(tmp_path, {**GOOD, "num_kept_query_tokens": 0}, "bad.json")
    assert main(["export", "--variant", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "`num_kept_query_tokens` must be None or an integer in 1..32 (num_query_tokens); got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_variant_that_does_not_fit_the_base(tmp_path, capsys):
    base = make_standin(tmp_path / "stock", "opt")  # the tiny base has 2 cross-attention layers, not 6
    variant = _write(tmp_path, {**GOOD, "vote_layers": [5]})
    assert main(["export", "--variant", str(variant), "--base", str(base), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not fit its base checkpoint" in err and "`vote_layers`" in err and "(0..1)" in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_non_empty_out(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    err = cli_error(capsys, ["export", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k4.json"), "--out", str(tmp_path / "out")])
    assert "`--out`" in err and "is not empty" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("existing", [False, True], ids=["absent", "empty"])
def test_export_checks_max_shard_size_before_writing(tmp_path, capsys, existing):
    """A bad size is refused up front: nothing is loaded or written (the base is a stand-in that would load)."""
    base = make_standin(tmp_path / "stock", "opt")
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    argv = ["export", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k4.json"), "--base", str(base),
            "--out", str(out), "--max-shard-size", "lots"]
    assert "`--max-shard-size` must be a positive size" in cli_error(capsys, argv)
    assert (list(out.iterdir()) == []) if existing else not out.exists()


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--base", "my-org/no-such-model"], "`--base` 'my-org/no-such-model' could not be loaded"),
        (["--base", "{tmp}/missing"], "`--base` '{tmp}/missing': no such folder"),
        (["--base", "{tmp}/not-a-checkpoint"], "`--base` '{tmp}/not-a-checkpoint' could not be loaded"),
        (["--results", "{tmp}/results.json"], "Results file '{tmp}/results.json' does not exist"),
        (["--dtype", "float8"], "invalid choice: 'float8'"),
    ],
    ids=["unknown-hub-id", "missing-folder", "folder-without-checkpoint", "missing-results", "dtype"],
)
def test_export_names_the_bad_option(tmp_path, capsys, argv_tail, message):
    (tmp_path / "not-a-checkpoint").mkdir()
    (tmp_path / "not-a-checkpoint" / "config.json").write_text("{}")
    out = tmp_path / "out"
    argv = ["export", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k4.json"), "--out", str(out),
            *[arg.format(tmp=tmp_path) for arg in argv_tail]]
    if argv_tail[0] == "--dtype":  # an argparse choice: argparse's own exit 2
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2 and message in capsys.readouterr().err
    else:
        assert message.format(tmp=tmp_path) in cli_error(capsys, argv)
    assert not out.exists()


def test_export_names_the_variant_files_base_model(tmp_path, capsys):
    variant = _write(tmp_path, {**GOOD, "base_model": "my-org/no-such-model"})
    err = cli_error(capsys, ["export", "--variant", str(variant), "--out", str(tmp_path / "out")])
    assert f"Variant file {str(variant)!r}: `base_model` 'my-org/no-such-model' could not be loaded" in err
    missing = _write(tmp_path, {**GOOD, "base_model": str(tmp_path / "gone")}, "missing.json")
    err = cli_error(capsys, ["export", "--variant", str(missing), "--out", str(tmp_path / "out")])
    assert f"Variant file {str(missing)!r}: `base_model` {str(tmp_path / 'gone')!r}: no such folder" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_hub(monkeypatch):
    """Every Hub write call is recorded instead of made (and the test fails if a dry run makes one)."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, **kwargs):
        calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kwargs))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return calls


def test_push_dry_run_lists_the_upload(tmp_path, capsys, no_hub):
    base = make_standin(tmp_path / "stock", "opt", license_="mit")
    argv = ["push", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k16.json"), "--base", str(base),
            "--repo-id", "my-org/blip2-catp-k16", "--private", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert no_hub == []
    assert "would upload" in out and "to private model repo https://huggingface.co/my-org/blip2-catp-k16" in out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    expected = {"README.md", "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
                "tokenizer.json", "tokenizer_config.json", *CODE_FILES}
    assert listed == expected
    assert "dry run: nothing was uploaded" in out


def test_push_creates_repo_and_uploads_the_export(tmp_path, capsys, no_hub):
    base = make_standin(tmp_path / "stock", "opt")
    keep = tmp_path / "kept-export"
    argv = ["push", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k4.json"), "--base", str(base),
            "--repo-id", "my-org/k4", "--out", str(keep)]
    assert main(argv) == 0
    (create, upload) = no_hub
    assert create[:2] == ("create_repo", "my-org/k4") and create[2]["private"] is False
    assert create[2]["exist_ok"] is True
    assert upload[1] == "my-org/k4" and upload[3]["repo_type"] == "model"
    assert set(upload[2]) == {p.name for p in keep.iterdir()} and "README.md" in upload[2]
    assert 'model="my-org/k4"' in (keep / "README.md").read_text()
    assert "uploaded to https://huggingface.co/my-org/k4" in capsys.readouterr().out


def test_push_rejects_bad_repo_id(capsys):
    argv = ["push", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k4.json"), "--repo-id", "bad id!", "--dry-run"]
    assert "`--repo-id` 'bad id!' is not a valid Hub repo id" in cli_error(capsys, argv)


def test_push_reports_a_base_that_does_not_load(tmp_path, capsys, no_hub):
    argv = ["push", "--variant", str(CONFIGS / "blip2-opt-2.7b-catp-k4.json"), "--base", "my-org/no-such-model",
            "--repo-id", "my-org/k4", "--out", str(tmp_path / "out")]
    assert "`--base` 'my-org/no-such-model' could not be loaded" in cli_error(capsys, argv)
    assert no_hub == [] and not (tmp_path / "out").exists()


def test_card_names_the_results_metric():
    from catp_blip2.hub.model_card import build_model_card
    from catp_blip2.hub.variants import variant_from_dict

    variant = variant_from_dict({"name": "v", "base_model": "Salesforce/blip2-opt-2.7b", "num_kept_query_tokens": 8})
    from transformers import Blip2Config

    config = variant.catp_config(Blip2Config())
    results = {"model": "Salesforce/blip2-opt-2.7b", "dataset": {"id": "lmms-lab/GQA", "split": "testdev"},
               "metric": "exact_match", "num_questions": 10,
               "results": [{"method": "catp", "num_kept_query_tokens": 8, "accuracy": 40.0}]}
    card = build_model_card(variant, config, repo_id="o/v", license_="mit", results=results)
    assert "| method | kept query tokens | Exact match |" in card.text and "case and punctuation ignored" in card.text
    assert card.data.eval_results[0].metric_name == "Exact match (%)"
    vqa = build_model_card(variant, config, repo_id="o/v", license_="mit", results={**results, "metric": "vqa_accuracy"})
    assert "| method | kept query tokens | VQA accuracy |" in vqa.text
