"""The `catp-blip2` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catp_blip2.cli import COMMANDS, build_parser, main
from conftest import cli_error

REPO = Path(__file__).resolve().parent.parent


def test_demo_answers_at_every_k(capsys):
    assert main(["demo", "--keep", "32", "8", "2"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["k"] for row in rows] == [32, 8, 2]
    assert [len(row["kept"]) for row in rows] == [32, 8, 2]
    assert [row["lm_prompt_tokens"] for row in rows] == [rows[0]["lm_prompt_tokens"] - 32 + k for k in (32, 8, 2)]


def test_every_command_has_help():
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0


@pytest.mark.parametrize("command", ["demo", "train-synthetic"])
def test_every_option_says_what_it_is_and_its_default(command):
    parser = build_parser()
    (sub,) = [action for action in parser._subparsers._group_actions]
    for action in sub.choices[command]._actions:
        if action.dest == "help":
            continue
        assert action.help and "(default: " in action.help, (command, action.dest)


def test_demo_checks_keep_before_building_the_model(capsys, monkeypatch):
    from catp_blip2.toy import demo

    monkeypatch.setattr(demo, "embedded_model_dir", lambda *a, **k: pytest.fail("the model was loaded"))
    assert "`--keep` values must be integers in 1..32" in cli_error(capsys, ["demo", "--keep", "8", "33"])


def test_module_entry_point_reports_bad_choice():
    result = subprocess.run([sys.executable, "-m", "catp_blip2", "demo", "--method", "topk"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'topk'" in result.stderr


# One bad option per command, each refused before any model or dataset is loaded. {tmp} is a fresh folder.
BAD_OPTIONS = {
    "demo": (["--keep", "0"], "`--keep`"),
    "export": (["--variant", "/nonexistent.json", "--out", "{tmp}/out"], "'/nonexistent.json'"),
    "train-synthetic": (["--steps", "0", "--out", "{tmp}/out"], "`--steps`"),
    "push": (["--repo-id", "bad id!", "--variant", "configs/tiny-embedded-catp-k8.json"], "`--repo-id`"),
    "bench": (["--keep", "0", "--out", "{tmp}/out"], "`--keep`"),
    "eval": (["--keep", "0", "--out", "{tmp}/out"], "`--keep`"),
    "calibrate": (["--dataset", "embedded", "--out", "{tmp}/out"], "`--dataset`"),
    "explain": (["--image", "/nonexistent.png", "--question", "q"], "`--image`"),
}


def test_bad_options_cover_every_command():
    assert set(BAD_OPTIONS) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(BAD_OPTIONS))
def test_bad_option_is_one_error_line_without_traceback(command, tmp_path):
    """`python -m catp_blip2 COMMAND <bad option>`: exit 2, `catp-blip2 COMMAND: error: ...` naming the option."""
    options, named = BAD_OPTIONS[command]
    argv = [arg.format(tmp=tmp_path) for arg in options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "catp_blip2", command, *argv], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"catp-blip2 {command}: error: ")]
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_demo_uses_the_trained_embedded_model_and_counts_kept_tokens(capsys):
    assert main(["demo", "--keep", "32", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    truth = out.split("(true answer: ")[1].split(")")[0]
    rows = json.loads(out.strip().splitlines()[-1])
    assert rows[0]["answer"] == truth  # the shipped model answers its own task unpruned
    assert main(["demo", "--method", "none", "--keep", "8"]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(row["kept"]) == 32 and row["lm_prompt_tokens"] == rows[0]["lm_prompt_tokens"]  # "none" keeps all
