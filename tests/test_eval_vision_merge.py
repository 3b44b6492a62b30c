"""`catp-blip2 eval --vision-merge R...`: the sweep at every r, one accuracy-vs-r table and plot, r = 0 as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli_error, save_eval_assets

from catp_blip2.cli import main

FAST = ["--methods", "catp", "l2", "--keep", "8", "--num-beams", "2", "--max-new-tokens", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision_merge_eval")
    save_eval_assets(root, 8)
    return root


def _eval(assets: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(assets / "model"), "--dataset", str(assets / "disk"), "--out", str(out),
                 *FAST, *extra])


def test_eval_sweeps_r_into_one_table_and_plot(assets, tmp_path, capsys):
    assert _eval(assets, tmp_path / "plain") == 0
    assert _eval(assets, tmp_path / "merged", "--vision-merge", "0", "4", "12") == 0
    results = json.loads((tmp_path / "merged" / "results.json").read_text())
    labels = [e["method"] for e in results["results"]]
    assert labels == ["none", "catp", "l2", "none @ r=4", "catp @ r=4", "l2 @ r=4", "none @ r=12", "catp @ r=12",
                      "l2 @ r=12"]
    assert [e["pruning_settings"]["vision_merge_per_layer"] for e in results["results"]] == [0] * 3 + [4] * 3 + [12] * 3
    table = (tmp_path / "merged" / "results.md").read_text()
    assert "| method | k | r=0 | r=4 | r=12 |" in table and "| none (unpruned) | 32 |" in table
    assert (tmp_path / "merged" / "accuracy_vs_r.png").stat().st_size > 0
    assert not (tmp_path / "plain" / "accuracy_vs_r.png").exists()
    # r = 0 is the stock vision encoder: the same answers as a run that never heard of merging.
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    for before, after in zip(plain["results"], results["results"][:3]):
        assert before["accuracy"] == after["accuracy"]
        assert (tmp_path / "plain" / before["predictions_file"]).read_text() == \
            (tmp_path / "merged" / after["predictions_file"]).read_text()
    # A rerun with one more r resumes: only the new r is evaluated.
    capsys.readouterr()
    assert _eval(assets, tmp_path / "merged", "--vision-merge", "0", "4", "12", "2") == 0
    assert "3 configuration(s) evaluated, 9 already in" in capsys.readouterr().err


@pytest.mark.parametrize("values, expected", [
    (["13"], "0..12"), (["-1"], "0..12"), (["2", "2"], "distinct"),
])
def test_bad_vision_merge_values_are_refused_before_any_work(assets, tmp_path, capsys, values, expected):
    err = cli_error(capsys, ["eval", "--model", str(assets / "model"), "--out", str(tmp_path / "out"),
                             "--vision-merge", *values])
    assert expected in err and "--vision-merge" in err
    assert not (tmp_path / "out").exists()


def test_a_non_integer_r_is_an_argparse_error(assets, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", str(assets / "model"), "--out", str(tmp_path / "out"), "--vision-merge", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "catp-blip2 eval: error: argument --vision-merge" in err and "Traceback" not in err


def test_r_is_not_a_methods_setting(assets, tmp_path, capsys):
    err = cli_error(capsys, ["eval", "--model", str(assets / "model"), "--out", str(tmp_path / "out"),
                             "--methods", "catp:vision_merge_per_layer=2"])
    assert "--vision-merge" in err


def test_merge_labels_give_back_their_item():
    from catp_blip2.evaluation.sweep import merge_label_item, vision_merge_label

    for item in ("catp", "random:pruning_seed=0", "odd @ r=name"):
        for r in (0, 3):
            assert merge_label_item(vision_merge_label(item, r)) == item
