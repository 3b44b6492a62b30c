"""`catp-blip2 eval` end to end on a tiny saved model and a local lmms-lab/VQAv2 stand-in: outputs, resume after a
kill, refusal to mix runs, the same results under `accelerate launch` with 2 CPU processes, and argument errors."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from vqa_standin import standin_dataset

from catp_blip2.evaluation import inputs as eval_inputs
from catp_blip2.cli import main
from conftest import cli_error, save_eval_assets
from catp_blip2.configuration_catp import CatpConfig
from catp_blip2.evaluation.report import markdown_table
from catp_blip2.toy.tiny import tiny_blip2_config, tiny_processor
from catp_blip2.evaluation.inputs import lavis_question
from catp_blip2.evaluation.runner import STOP_AFTER_ENV
from catp_blip2.evaluation.sweep import build_sweep, parse_method_item

# Small and fast, but every part of the protocol (beam search, several methods and k, batching, resume).
FAST = ["--methods", "catp", "l2", "--keep", "8", "2", "--num-beams", "2", "--max-new-tokens", "2", "--batch-size", "4"]
NUM_CONFIGURATIONS = 5  # unpruned + 2 methods x 2 k
QUESTIONS = 8


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved tiny CATP model + processor, and the stand-in as a save_to_disk folder and as parquet."""
    root = tmp_path_factory.mktemp("eval_assets")
    save_eval_assets(root, QUESTIONS).to_parquet(str(root / "data.parquet"))
    return root


def _eval(assets: Path, out: Path, *extra: str, dataset: str = "disk") -> int:
    return main(["eval", "--model", str(assets / "model"), "--dataset", str(assets / dataset), "--out", str(out), *FAST, *extra])


def _without_timing(results: dict) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in results["results"]]


def _predictions(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((out / "predictions").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def baseline(assets, tmp_path_factory):
    """One uninterrupted single-process run, the reference for the other runs."""
    out = tmp_path_factory.mktemp("eval_baseline") / "out"
    assert _eval(assets, out) == 0
    return out


def test_outputs(baseline, assets, capsys):
    results = json.loads((baseline / "results.json").read_text())
    assert results["model"] == str(assets / "model")
    assert results["dataset"]["id"] == str(assets / "disk") and results["dataset"]["split"] == "validation"
    assert results["num_questions"] == QUESTIONS
    entries = results["results"]
    assert [(e["method"], e["num_kept_query_tokens"]) for e in entries] == [
        ("none", 32), ("catp", 8), ("catp", 2), ("l2", 8), ("l2", 2)
    ]
    for entry in entries:
        assert {"method", "pruning_settings", "num_kept_query_tokens", "accuracy", "accuracy_by_answer_type",
                "accuracy_by_question_type", "relative_to_unpruned", "seconds"} <= set(entry)
        assert 0 <= entry["accuracy"] <= 100
        assert set(entry["accuracy_by_answer_type"]) == {"number", "other", "yes/no"}
        assert len(entry["accuracy_by_question_type"]) == 4
        lines = [json.loads(line) for line in (baseline / entry["predictions_file"]).read_text().splitlines()]
        assert [line["question_id"] for line in lines] == list(range(1000, 1000 + QUESTIONS))
        assert {"question_id", "question", "prediction", "answers", "accuracy"} <= set(lines[0])
        assert entry["accuracy"] == pytest.approx(sum(line["accuracy"] for line in lines) / QUESTIONS)
    assert entries[0]["pruning_settings"]["pruning_method"] == "none"
    assert entries[1]["pruning_settings"]["vote_layers"] == "first"
    unpruned = entries[0]["accuracy"]
    for entry in entries:
        assert entry["relative_to_unpruned"] == (pytest.approx(entry["accuracy"] / unpruned) if unpruned else None)
    assert (baseline / "accuracy_vs_k.png").read_bytes()[:4] == b"\x89PNG"
    table = (baseline / "results.md").read_text()
    assert "| method | k=8 | k=2 |" in table and "| catp |" in table and "| none (unpruned, all 32) |" in table
    # The model card reads these results (catp-blip2 export --results).
    from catp_blip2.hub.model_card import load_results

    assert load_results(baseline / "results.json")["results"][1]["method"] == "catp"


def test_parquet_copy_gives_the_same_results(baseline, assets, tmp_path, capsys):
    assert _eval(assets, tmp_path / "out", dataset="data.parquet") == 0
    assert "| catp |" in capsys.readouterr().out  # the table is printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert _without_timing(results) == _without_timing(json.loads((baseline / "results.json").read_text()))
    assert _predictions(tmp_path / "out") == _predictions(baseline)


def test_uncached_batches_give_the_same_results(baseline, assets, tmp_path, monkeypatch):
    # Too large to keep: every configuration processes its batches again (real VQAv2 at 224 px).
    monkeypatch.setattr(eval_inputs, "CACHE_LIMIT_BYTES", 0)
    assert _eval(assets, tmp_path / "out", "--methods", "catp", "--keep", "8") == 0
    assert _predictions(tmp_path / "out") == {k: v for k, v in _predictions(baseline).items() if k.startswith(("none", "catp__k8"))}


def test_killed_run_resumes_to_identical_results(baseline, assets, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setenv(STOP_AFTER_ENV, "2")
    with pytest.raises(RuntimeError, match="test hook"):
        _eval(assets, out)
    partial = json.loads((out / "results.json").read_text())
    assert len(partial["results"]) == 2 and len(_predictions(out)) == 2  # nothing finished is lost
    monkeypatch.delenv(STOP_AFTER_ENV)
    capsys.readouterr()
    assert _eval(assets, out) == 0
    assert "3 configuration(s) evaluated, 2 already in" in capsys.readouterr().err
    assert _without_timing(json.loads((out / "results.json").read_text())) == _without_timing(
        json.loads((baseline / "results.json").read_text())
    )
    assert _predictions(out) == _predictions(baseline)
    # A rerun with everything done evaluates nothing, and an extended sweep only runs what is new.
    assert _eval(assets, out) == 0
    assert "0 configuration(s) evaluated, 5 already in" in capsys.readouterr().err
    assert main(["eval", "--model", str(assets / "model"), "--dataset", str(assets / "disk"), "--out", str(out),
                 *FAST[:2], "l2", "position", *FAST[3:]]) == 0
    assert "2 configuration(s) evaluated" in capsys.readouterr().err
    methods = [e["method"] for e in json.loads((out / "results.json").read_text())["results"]]
    assert methods == ["none", "catp", "catp", "l2", "l2", "position", "position"]


def _eval_argv(assets, out, *extra) -> list[str]:
    return ["eval", "--model", str(assets / "model"), "--dataset", str(assets / "disk"), "--out", str(out), *FAST, *extra]


def test_rerun_with_other_settings_is_refused(baseline, assets, capsys):
    err = cli_error(capsys, _eval_argv(assets, baseline, "--max-new-tokens", "3"))
    assert re.search(r"other settings \(generation: .*use another --out", err)
    assert re.search(r"other settings \(.*prompt", cli_error(capsys, _eval_argv(assets, baseline, "--prompt", "Q: {} A:")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_two_cpu_processes_match_one(baseline, assets, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "catp_blip2.cli", "eval", "--model", str(assets / "model"), "--dataset", str(assets / "disk"),
        "--out", str(out), *FAST,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop(STOP_AFTER_ENV, None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| catp |") == 1  # only the main process prints the table
    assert _without_timing(json.loads((out / "results.json").read_text())) == _without_timing(
        json.loads((baseline / "results.json").read_text())
    )
    assert _predictions(out) == _predictions(baseline)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "catp:vote_layers=middle"], r"`--methods` item 'catp:vote_layers=middle': `vote_layers` must be"),
        (["--methods", "topk"], r"`--methods` item 'topk': method 'topk' is not one of"),
        (["--methods", "none"], "always evaluated"),
        (["--methods", "catp:num_kept_query_tokens=4"], "not a pruning setting that can be swept"),
        (["--methods", "catp:vote_layers"], "setting=value"),
        (["--methods", "catp", "catp:vote_layers=first"], "are the same configuration"),
        (["--keep", "33"], r"`--keep` values must be integers in 1\.\.32"),
        (["--keep", "4", "4"], "distinct"),
        (["--prompt", "no placeholder"], "exactly one '{}'"),
        (["--min-new-tokens", "5", "--max-new-tokens", "2"], "`--min-new-tokens`"),
        (["--batch-size", "0"], "`--batch-size`"),
        (["--model", "/nonexistent/model/dir"], "`--model`"),
        (["--device", "gpu0"], "`--device` must be a torch device"),
        (["--length-penalty", "nan"], "`--length-penalty` must be a finite number; got nan"),
        (["--length-penalty", "inf"], "`--length-penalty` must be a finite number; got inf"),
        (["--length-penalty=-inf"], "`--length-penalty` must be a finite number"),
        (["--length-penalty", "1e400"], "`--length-penalty` must be a finite number"),
        (["--dataset-format", "coco"], r"`--dataset-format` must be one of \['vqav2', 'okvqa', 'textvqa', 'vizwiz', 'gqa'"),
        (["--dataset", "embedded", "--dataset-format", "gqa"], "the embedded set is in the vqav2 format"),
        (["--split", " "], "`--split` must be a split name"),
    ],
)
def test_argument_errors(assets, tmp_path, extra, message, capsys, monkeypatch):
    # Checked before anything heavy: neither the dataset nor the model may be loaded for a bad option.
    import catp_blip2.evaluation.command as command
    import catp_blip2.evaluation.datasets as datasets

    def refuse(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    monkeypatch.setattr(datasets, "load_vqa_dataset", refuse)
    monkeypatch.setattr(command, "load_model_and_processor", refuse)
    assert re.search(message, cli_error(capsys, _eval_argv(assets, tmp_path / "out", *extra)))


def test_method_items_parse_to_full_settings():
    config = CatpConfig.from_blip2_config(tiny_blip2_config())
    settings = parse_method_item("catp:vote_layers=all,vote_aggregation=soft", config)
    # Every registered setting, at its default unless the item sets it (k comes from --keep).
    from catp_blip2.configuration_catp import default_pruning_settings

    defaults = {k: v for k, v in default_pruning_settings().items() if k != "num_kept_query_tokens"}
    assert settings == {**defaults, "pruning_method": "catp", "vote_layers": "all", "vote_aggregation": "soft"}
    assert {"vote_layer_weights": None, "image_token_weighting": "none", "pruning_seed": 0}.items() <= settings.items()
    assert parse_method_item("catp:vote_layers=[0,1],vote_layer_weights=[1,0.5]", config)["vote_layers"] == [0, 1]
    assert parse_method_item("random:pruning_seed=3", config)["pruning_seed"] == 3
    sweep = build_sweep(["catp", "l2"], [16, 4], config)
    assert [(c.method, c.num_kept_query_tokens) for c in sweep] == [("none", 32), ("catp", 16), ("catp", 4), ("l2", 16), ("l2", 4)]
    assert len({c.file_stem for c in sweep}) == len(sweep)


def test_lavis_question_format():
    assert lavis_question("What is the man's (left) hand holding?") == "what is the man's left hand holding?"
    assert lavis_question("Is it 3.5 m:  tall!") == "is it 35 m tall"


def test_markdown_table_layout():
    results = {
        "model": "m", "dataset": {"id": "d", "split": "validation"}, "num_questions": 3,
        "results": [
            {"method": "none", "num_kept_query_tokens": 32, "accuracy": 50.0},
            {"method": "catp", "num_kept_query_tokens": 16, "accuracy": 40.0},
            {"method": "catp", "num_kept_query_tokens": 4, "accuracy": 20.0},
            {"method": "l2", "num_kept_query_tokens": 16, "accuracy": 30.0},
        ],
    }
    table = markdown_table(results)
    assert "| method | k=16 | k=4 |" in table
    assert "| none (unpruned, all 32) | 50.00 | 50.00 |" in table
    assert "| catp | 40.00 | 20.00 |" in table
    assert "| l2 | 30.00 | - |" in table


def test_run_sweep_leaves_the_callers_tokenizer_alone(assets, baseline, tmp_path):
    """The sweep pads on the side the model needs without changing the processor it was given."""
    from transformers import AutoProcessor

    from catp_blip2 import CatpBlip2ForConditionalGeneration
    from catp_blip2.evaluation.datasets import load_vqa_dataset
    from catp_blip2.evaluation.generation import GenerationSettings
    from catp_blip2.evaluation.runner import run_sweep

    processor = AutoProcessor.from_pretrained(assets / "model")
    processor.tokenizer.padding_side = "right"
    model = CatpBlip2ForConditionalGeneration.from_pretrained(assets / "model").eval()
    dataset = load_vqa_dataset(str(assets / "disk"))
    configurations = build_sweep(["catp"], [8], model.config)
    generation = GenerationSettings(num_beams=2, max_new_tokens=2)
    outcome = run_sweep(model, processor, dataset, configurations, tmp_path / "out", {"model": "m"}, {"s": 1},
                        batch_size=4, generation=generation)
    assert processor.tokenizer.padding_side == "right"
    # Left-padded all the same: the answers equal the CLI run's, question for question.
    (entry,) = [e for e in outcome.results["results"] if e["method"] == "catp"]
    ours = (tmp_path / "out" / entry["predictions_file"]).read_text()
    assert ours == (baseline / entry["predictions_file"]).read_text()


def test_processor_that_does_not_fit_the_model_is_refused_before_generating(assets, tmp_path, capsys):
    from catp_blip2.toy.tiny import DEFAULT_WORDS, tiny_tokenizer

    bigger = tiny_processor(tiny_tokenizer([*DEFAULT_WORDS, "zebra", "giraffe"]))
    bigger.save_pretrained(tmp_path / "processor")
    err = cli_error(capsys, _eval_argv(assets, tmp_path / "out", "--processor", str(tmp_path / "processor")))
    assert "`--processor`" in err and "47 tokens" in err and "embeds 45" in err
    assert not (tmp_path / "out" / "predictions").exists()


def test_bad_dataset_rows_stop_eval_before_generating_and_leave_no_folder(assets, tmp_path, capsys):
    data = standin_dataset(QUESTIONS).to_pandas()
    data.loc[2, "question"] = None
    data.to_parquet(tmp_path / "bad.parquet")
    argv = ["eval", "--model", str(assets / "model"), "--dataset", str(tmp_path / "bad.parquet"), "--out",
            str(tmp_path / "out"), *FAST]
    assert "row 2 (question_id" in cli_error(capsys, argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "list", "missing-key"])
def test_damaged_results_json_is_rebuilt_from_the_predictions(baseline, assets, tmp_path, capsys, damage):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(baseline, out)
    path = out / "results.json"
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "list":
        path.write_text("[]")
    else:
        data = json.loads(text)
        del data["results"][2]["accuracy"]
        path.write_text(json.dumps(data))
    capsys.readouterr()
    assert _eval(assets, out) == 0
    err = capsys.readouterr().err
    assert f"rebuilt {NUM_CONFIGURATIONS} finished configuration(s)" in err and "0 configuration(s) evaluated" in err
    rebuilt = json.loads(path.read_text())["results"]
    expected = json.loads((baseline / "results.json").read_text())["results"]
    assert [(e["method"], e["num_kept_query_tokens"]) for e in rebuilt] == [
        (e["method"], e["num_kept_query_tokens"]) for e in expected]
    for ours, theirs in zip(rebuilt, expected):
        assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
        assert ours["accuracy_by_answer_type"] == pytest.approx(theirs["accuracy_by_answer_type"])
    assert _predictions(out) == _predictions(baseline)


# ---- issue 19: merge and per-sample k through the eval ---------------------------------------------------------

ADAPTIVE = "catp:keep_score_mass=0.5,min_kept_query_tokens=3,max_kept_query_tokens=6"


def test_per_sample_k_runs_once_reports_its_mean_and_draws_the_pareto_plot(assets, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval(assets, out, "--methods", ADAPTIVE, "catp_cover:pruned_queries=merge") == 0
    table = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    entries = results["results"]
    assert [(e["method"], e["num_kept_query_tokens"]) for e in entries] == [
        ("none", 32), (ADAPTIVE, None), ("catp_cover:pruned_queries=merge", 8), ("catp_cover:pruned_queries=merge", 2)
    ]
    assert [e["mean_kept_query_tokens"] for e in entries if e["num_kept_query_tokens"] is not None] == [32, 8, 2]
    adaptive = entries[1]
    lines = [json.loads(line) for line in (out / adaptive["predictions_file"]).read_text().splitlines()]
    counts = [line["kept_query_tokens"] for line in lines]
    assert len(counts) == QUESTIONS and all(3 <= c <= 6 for c in counts)
    assert adaptive["mean_kept_query_tokens"] == pytest.approx(sum(counts) / len(counts))
    assert adaptive["pruning_settings"]["keep_score_mass"] == 0.5
    assert entries[2]["pruning_settings"]["pruned_queries"] == "merge"
    assert "Per-sample k" in table and f"| {ADAPTIVE} | {adaptive['mean_kept_query_tokens']:.2f} |" in table
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "adaptive" in adaptive["predictions_file"]

    # The counts are the model's own: the same without the shared features; and a rerun has nothing to do.
    again = tmp_path / "recomputed"
    assert _eval(assets, again, "--methods", ADAPTIVE, "catp_cover:pruned_queries=merge", "--recompute-features") == 0
    assert _predictions(again) == _predictions(out)
    capsys.readouterr()
    assert _eval(assets, out, "--methods", ADAPTIVE, "catp_cover:pruned_queries=merge") == 0
    assert "0 configuration(s) evaluated, 4 already in" in capsys.readouterr().err


def test_pareto_front_keeps_only_the_points_nothing_beats():
    from catp_blip2.evaluation.report import pareto_points

    rows = [("none", 32, None, 90.0), ("a", 8, None, 70.0), ("a", 4, None, 72.0), ("b", None, 5.5, 80.0), ("a", 2, None, 50.0)]
    results = {"results": [{"method": m, "num_kept_query_tokens": k, "mean_kept_query_tokens": mean or k, "accuracy": a}
                           for m, k, mean, a in rows]}
    assert pareto_points(results) == [(2.0, 50.0), (4.0, 72.0), (5.5, 80.0), (32.0, 90.0)]


def test_variant_item_carries_its_selection_settings(tmp_path):
    from catp_blip2.evaluation.sweep import variant_method_item

    path = tmp_path / "v.json"
    path.write_text(json.dumps({"name": "v", "base_model": "embedded", "pruning_method": "catp_cover",
                                "pruned_queries": "merge", "keep_score_mass": 0.8}))
    item = variant_method_item(path)
    assert item.startswith("catp_cover:pruned_queries=merge,keep_score_mass=0.8")
    settings = parse_method_item(item, CatpConfig(**tiny_blip2_config("opt").to_dict()))
    assert settings["pruned_queries"] == "merge" and settings["keep_score_mass"] == 0.8
