"""`catp-blip2 bench` on the tiny model through the CLI: outputs and their fields (never times), and bad arguments."""

from __future__ import annotations

import json

import pytest
import torch

from catp_blip2.bench.models import (
    BLIP2_OPT_2_7B_PARAMETERS,
    blip2_opt_2_7b_config,
    count_parameters,
    random_model,
    stock_twin,
)
from catp_blip2.cli import main
from catp_blip2.configuration_catp import CatpConfig
from catp_blip2.modeling_catp import CatpBlip2ForConditionalGeneration
from catp_blip2.toy.tiny import tiny_blip2_config

PER_CONFIGURATION = {
    "end_to_end_s",
    "prefill_s",
    "vision_s",
    "qformer_scoring_s",
    "scoring_s",
    "time_to_first_token_s",
    "decode_per_token_s",
    "peak_memory_bytes",
    "scoring_overhead_fraction",
    "throughput_samples_per_s",
    "end_to_end_speedup_vs_stock",
    "prefill_speedup_vs_stock",
    "flop_ideal_prefill_speedup",
    "prefill_speedup_fraction_of_ideal",
    "roofline_prefill_s",
    "prefill_fraction_of_roofline",
    "prefill_flops",
    "prefill_weight_bytes",
    "stages",
}


def test_bench_tiny_writes_all_outputs(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--model", "tiny", "--keep", "32", "8", "--batch-sizes", "1", "2", "--repeats", "2"]
    argv += ["--warmup", "0", "--prompt-tokens", "6", "--new-tokens", "3", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "bench.md").read_text()
    assert "catp-k8" in markdown and "## Targets" in markdown

    assert report["model"] == "tiny" and report["prompt_tokens"] == 6 and report["new_tokens"] == 3
    rows = {(r["batch_size"], r["config"]): r for r in report["results"]}
    assert set(rows) == {(b, c) for b in (1, 2) for c in ("stock", "catp-k32", "catp-k8")}
    for row in rows.values():
        assert PER_CONFIGURATION <= set(row)
        assert row["end_to_end_s"] > 0 and row["prefill_s"] > 0 and row["peak_memory_bytes"] > 0
        assert 0 <= row["scoring_overhead_fraction"] < 1
        assert row["stages"]["end_to_end_s"]["n"] == 2
    assert rows[(1, "catp-k8")]["lm_prompt_tokens"] == 8 + 6
    assert rows[(1, "catp-k8")]["flop_ideal_prefill_speedup"] == pytest.approx((32 + 6) / (8 + 6))
    # Same weights, k = 32: the generated tokens must be the stock model's.
    assert rows[(1, "catp-k32")]["same_new_tokens_as_stock"] is True
    assert {t["target"].split(" (")[0] for t in report["targets"]} >= {
        "CATP k=32 end to end within 3% of stock",
        "prefill at least 90% of the measured roofline",
    }
    # The roofline is the measured machine's: max(FLOPs / peak, weight bytes / bandwidth), per row.
    machine = report["machine"]
    assert machine["matmul_flops_per_s"] > 0 and machine["memory_bytes_per_s"] > 0
    for row in rows.values():
        bound = max(row["prefill_flops"] / machine["matmul_flops_per_s"],
                    row["prefill_weight_bytes"] / machine["memory_bytes_per_s"])
        assert row["roofline_prefill_s"] == pytest.approx(bound)
        assert row["prefill_fraction_of_roofline"] == pytest.approx(bound / row["prefill_s"])
    assert rows[(2, "catp-k8")]["prefill_flops"] > rows[(1, "catp-k8")]["prefill_flops"]
    assert rows[(1, "stock")]["prefill_flops"] > rows[(1, "catp-k8")]["prefill_flops"]
    assert "% of roofline" in markdown and report["sweep"] is None


def test_bench_sweep_times_both_ways_with_identical_predictions(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--model", "tiny", "--keep", "16", "8", "4", "--batch-sizes", "3", "--repeats", "1", "--warmup", "0"]
    argv += ["--prompt-tokens", "6", "--new-tokens", "2", "--sweep", "--questions", "6", "--images", "2", "--out", str(out)]
    assert main(argv) == 0
    sweep = json.loads((out / "bench.json").read_text())["sweep"]
    assert sweep["configurations"] == 19  # unpruned + the paper's 6 methods x 3 k
    assert (sweep["questions"], sweep["images"], sweep["batch_size"]) == (6, 2, 3)
    assert sweep["vision_passes"] == {"naive": 19 * 6, "shared": 2}
    assert sweep["identical"] is True
    assert sweep["naive_s"] > 0 and sweep["shared_s"] > 0
    assert sweep["speedup"] == pytest.approx(sweep["naive_s"] / sweep["shared_s"])
    assert "sweep: 19 configurations" in (out / "bench.md").read_text()


def _error_line(capsys) -> str:
    """The CLI's one error line on stderr; no traceback around it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("catp-blip2 bench: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--keep", "0"], "--keep"),
        (["--keep", "8", "8"], "--keep"),
        (["--keep", "33"], "--keep"),
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--repeats", "0"], "--repeats"),
        (["--warmup", "-1"], "--warmup"),
        (["--new-tokens", "1"], "--new-tokens"),
        (["--prompt-tokens", "0"], "--prompt-tokens"),
        (["--dtype", "float64"], "--dtype"),
        (["--device", "tpu"], "--device"),
        (["--model", "no-such-model"], "--model"),
        (["--sweep", "--images", "0"], "--images"),
        (["--sweep", "--questions", "2", "--images", "3"], "--images"),
        (["--sweep", "--methods", "none"], "--methods"),
        (["--sweep", "--keep", "32"], "--keep"),
    ],
)
def test_bench_rejects_bad_arguments(tmp_path, capsys, extra, message):
    assert main(["bench", "--model", "tiny", "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_bench_rejects_keep_zero_before_building(tmp_path, capsys):
    assert main(["bench", "--keep", "0", "--out", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert "`--keep`" in line and "0" in line


def test_bench_rejects_prompt_longer_than_text_positions(tmp_path, capsys):
    # tiny OPT: 128 positions < 32 query + 200 prompt + 4 new tokens; generate would fail inside the timing.
    assert main(["bench", "--model", "tiny", "--prompt-tokens", "200", "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "`--prompt-tokens` 200" in line and "128" in line and "at most 92" in line
    assert not (tmp_path / "out").exists()


def test_bench_rejects_file_as_out(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    assert main(["bench", "--model", "tiny", "--out", str(target)]) == 2
    assert "--out" in _error_line(capsys)


def test_opt_2_7b_architecture_has_the_checkpoint_parameter_count():
    config = CatpConfig.from_blip2_config(blip2_opt_2_7b_config())
    with torch.device("meta"):
        model = CatpBlip2ForConditionalGeneration(config)
    assert count_parameters(model) == BLIP2_OPT_2_7B_PARAMETERS
    assert config.image_token_id == 50265 and config.text_config.vocab_size == 50304
    assert config.vision_config.num_hidden_layers == 39 and config.num_cross_attention_layers == 6


def test_random_model_and_stock_twin_share_weights():
    model = random_model(tiny_blip2_config(), dtype=torch.bfloat16)
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    assert model.qformer.layernorm.weight.dtype == torch.float32 and model.query_tokens.dtype == torch.float32
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())
    stock = stock_twin(model)
    assert {p.data_ptr() for p in stock.parameters()} == {p.data_ptr() for p in model.parameters()}


@pytest.mark.parametrize("language_model", ["opt", "t5"])
def test_bench_times_an_instructblip_checkpoint_against_its_stock_twin(tmp_path, language_model):
    from catp_blip2.toy.tiny import tiny_instructblip_model

    folder = tmp_path / "instructblip"
    tiny_instructblip_model(language_model, seed=0).save_pretrained(folder)
    out = tmp_path / "bench"
    argv = ["bench", "--model", str(folder), "--keep", "32", "8", "--batch-sizes", "2", "--repeats", "1",
            "--warmup", "0", "--prompt-tokens", "6", "--new-tokens", "3", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {r["config"]: r for r in report["results"]}
    assert set(rows) == {"stock", "catp-k32", "catp-k8"}
    assert rows["catp-k32"]["same_new_tokens_as_stock"] is True
    assert rows["catp-k8"]["lm_prompt_tokens"] == 8 + 6


def test_named_instructblip_architectures_have_the_published_sizes():
    from transformers.initialization import no_init_weights

    from catp_blip2.bench.models import NAMED_ARCHITECTURES, count_parameters
    from catp_blip2.checkpoints import family_of_model_type

    sizes = {}
    for name in ("instructblip-vicuna-7b", "instructblip-flan-t5-xl"):
        config = NAMED_ARCHITECTURES[name]()
        config_class, model_class = family_of_model_type(config.model_type)
        with no_init_weights(), torch.device("meta"):
            model = model_class(config_class.from_stock_config(config))
        model.tie_weights()
        sizes[name] = count_parameters(model)
    assert 7.85e9 < sizes["instructblip-vicuna-7b"] < 7.95e9  # the model card's 7.9B
    assert 3.95e9 < sizes["instructblip-flan-t5-xl"] < 4.1e9  # the model card's 4.0B


def test_encoder_decoder_prefill_counts_the_encoder_pass_once():
    """T5 reads the prompt in its encoder, which `generate` runs before the first decoder forward: the prefill
    stage is that pass plus the first decoder forward (as the roofline counts it), neither nested in the other."""
    from catp_blip2.bench.inputs import make_inputs
    from catp_blip2.bench.runner import generate_kwargs
    from catp_blip2.bench.timing import RunTimes, StageClock, stage_times
    from catp_blip2.toy.tiny import tiny_instructblip_model

    model = tiny_instructblip_model("t5", seed=0)
    clock = StageClock(model, torch.device("cpu"))
    clock.current = RunTimes()
    start = clock.now()
    model.generate(**make_inputs(model, batch_size=2, prompt_tokens=6, seed=0), **generate_kwargs(model.config, 3))
    end = clock.now()
    times = clock.current
    marks, (first_start, first_end) = times.marks, times.lm_calls[0]
    assert marks["projection_end"] <= marks["lm_encoder_start"] < marks["lm_encoder_end"] <= first_start
    stages = stage_times(times, start, end, new_tokens=3)
    encoder = marks["lm_encoder_end"] - marks["lm_encoder_start"]
    assert stages["prefill_s"] == pytest.approx(encoder + first_end - first_start)
    assert stages["time_to_first_token_s"] == pytest.approx(first_end - start)
