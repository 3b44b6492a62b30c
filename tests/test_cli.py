"""The `catp-blip2` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from catp_blip2.cli import COMMANDS, build_parser, main


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


def test_module_entry_point_reports_bad_choice():
    result = subprocess.run([sys.executable, "-m", "catp_blip2", "demo", "--method", "topk"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'topk'" in result.stderr
