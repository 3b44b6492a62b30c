"""`catp-blip2 bench --vision-merge R...`: every k at every r, vision time and tokens left, the vision roofline beside
the prefill's, microbenchmarks interleaved with the timed runs, and rows above a roofline flagged."""

from __future__ import annotations

import json

import pytest
from conftest import cli_error

from catp_blip2.bench.vision import add_vision_rooflines, vision_roofline
from catp_blip2.cli import main
from catp_blip2.vision_merge import tokens_left


def test_bench_times_every_k_at_every_r(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--model", "tiny", "--keep", "32", "8", "--vision-merge", "0", "6", "--batch-sizes", "2",
            "--repeats", "2", "--warmup", "1", "--prompt-tokens", "6", "--new-tokens", "3", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {r["config"]: r for r in report["results"]}
    assert list(rows) == ["stock", "catp-k32", "catp-k8", "catp-k32-r6", "catp-k8-r6"]
    assert report["vision_merge"] == [0, 6] and "--vision-merge 0 6" in report["command"]
    layers = report["architecture"]["vision"]["layers"] if "vision" in report["architecture"] else 2
    for name, row in rows.items():
        r = 6 if name.endswith("-r6") else 0
        assert row["vision_merge_per_layer"] == r and row["vision_s"] > 0
        assert row["vision_tokens_left"] == tokens_left(26, r, layers)
        assert row["roofline_vision_s"] > 0 and row["vision_fraction_of_roofline"] > 0
        assert row["vision_measurement_error"] == (row["vision_fraction_of_roofline"] > 1)
        assert row["prefill_measurement_error"] == (row["prefill_fraction_of_roofline"] > 1)
    assert rows["catp-k32"]["same_new_tokens_as_stock"] is True  # r = 0: stock's tokens
    assert rows["catp-k8-r6"]["vision_flops"] < rows["catp-k8"]["vision_flops"]
    # One microbenchmark before, one after every round of timed calls; the roofline uses the best.
    machine = report["machine"]
    assert len(machine["runs"]) == 1 + 2
    assert machine["matmul_flops_per_s"] == max(run["matmul_flops_per_s"] for run in machine["runs"])
    assert machine["memory_bytes_per_s"] == max(run["memory_bytes_per_s"] for run in machine["runs"])
    markdown = (out / "bench.md").read_text()
    assert "| config | r | vision tokens left |" in markdown and "catp-k8-r6" in markdown
    assert not [t for t in report["targets"] if "k=32 end to end" in t["target"] and t["value"] != rows["catp-k32"]
                ["end_to_end_ratio_vs_stock"]]  # the stock-equality target reads the r = 0 row only
    # Each per-row target names its configuration, so one k at several r gives rows that can be told apart.
    named = [t["target"] for t in report["targets"] if t["target"].startswith("scoring overhead")]
    assert sorted(named) == sorted(f"scoring overhead under 1% of end-to-end generate ({c})" for c in rows if c != "stock")


def test_rows_above_a_roofline_are_flagged_as_measurement_errors():
    shape = {"tokens": 26, "patches": 25, "layers": 2, "hidden": 32, "attention_linear_weights": 4096,
             "mlp_linear_weights": 4096, "patch_embedding_weights": 3456, "weight_bytes": 10**6}
    machine = {"matmul_flops_per_s": 1e9, "memory_bytes_per_s": 1e9}
    bound = vision_roofline(shape, machine, 1, 0)["roofline_vision_s"]
    rows = [{"method": "stock", "batch_size": 1, "vision_s": bound * 2, "prefill_fraction_of_roofline": 0.5},
            {"method": "catp", "batch_size": 1, "vision_s": bound / 2, "prefill_fraction_of_roofline": 1.65}]
    configs = [type("C", (), {"r": 0})(), type("C", (), {"r": 0})()]
    flagged = add_vision_rooflines(rows, configs, shape, machine)
    assert [row["vision_measurement_error"] for row in flagged] == [False, True]
    assert [row["prefill_measurement_error"] for row in flagged] == [False, True]
    from catp_blip2.bench.report import _fraction

    assert "MEASUREMENT ERROR" in _fraction(flagged[1], "prefill") and "MEASUREMENT" not in _fraction(flagged[0], "vision")
    assert vision_roofline(shape, machine, 1, 12)["vision_flops"] < vision_roofline(shape, machine, 1, 0)["vision_flops"]


@pytest.mark.parametrize("values, message", [(["-1"], ">= 0"), (["2", "2"], "distinct"), (["13"], "0..12")])
def test_bad_vision_merge_values(tmp_path, capsys, values, message):
    err = cli_error(capsys, ["bench", "--model", "tiny", "--out", str(tmp_path / "out"), "--vision-merge", *values])
    assert "`--vision-merge`" in err and message in err
    assert not (tmp_path / "out").exists()
