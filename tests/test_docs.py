"""The documentation runs: every Python and bash block of README.md and docs/*.md, on the embedded models
(`doc_snippets.py` says how), or it is marked as needing the Hub, a GPU, more time or the environment itself, and
listed here. Also: the README stays a front page, and the site builds strictly where the docs extra is installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from doc_snippets import INERT, RUNNABLE, blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNER = Path(__file__).resolve().parent / "doc_snippets.py"

# Every block the tests do not run, by page, marker and first command. A new marker is a decision: add it here.
MARKED = {
    ("README.md", "install", "bash scripts/setup.sh --with-lmms-eval && .venv/bin/python -m pytest -q"),
    ("README.md", "install", "bash scripts/setup.sh --with-docs && .venv/bin/mkdocs build --strict"),
    ("README.md", "time", "catp-blip2 bench --model blip2-opt-2.7b --keep 8 --batch-sizes 1 8 --vision-merge"),
    ("docs/calibration.md", "hub, gpu", "catp-blip2 calibrate --model Salesforce/blip2-opt-2.7b"),
    ("docs/embedded-model.md", "time", "OMP_NUM_THREADS=1 catp-blip2 train-synthetic --out runs/train-synthetic"),
    ("docs/embedded-model.md", "time", "OMP_NUM_THREADS=1 catp-blip2 train-synthetic --family instructblip"),
    ("docs/evaluation.md", "hub, gpu", "catp-blip2 eval --model Salesforce/blip2-opt-2.7b --dataset lmms-lab/VQAv2"),
    ("docs/evaluation.md", "hub, gpu", 'M="--model Salesforce/blip2-opt-2.7b --dtype float16 --device cuda'),
    ("docs/hub.md", "hub", "catp-blip2 export --variant configs/blip2-opt-2.7b-catp-k8.json"),
    ("docs/index.md", "install", "bash scripts/setup.sh"),
    ("docs/lmms-eval.md", "install", "bash scripts/setup.sh --with-lmms-eval"),
    ("docs/lmms-eval.md", "hub, gpu", "python -m lmms_eval --model catp_blip2 \\"),
    ("docs/lmms-eval.md", "hub, gpu", "python -m lmms_eval --model catp_blip2 --include_path tasks"),
    ("docs/performance.md", "time", "catp-blip2 bench --model blip2-opt-2.7b --keep 32 16 8 4 --batch-sizes 1 8"),
    ("docs/performance.md", "gpu", "catp-blip2 bench --model blip2-opt-2.7b --keep 32 16 8 4 --batch-sizes 1 8 32"),
    ("docs/performance.md", "time", "catp-blip2 bench --model instructblip-flan-t5-xl"),
    ("docs/performance.md", "gpu", "catp-blip2 bench --model instructblip-vicuna-7b"),
    ("docs/snippets.md", "install", ".venv/bin/python tests/doc_snippets.py docs/merge.md"),
    ("docs/vision-merge.md", "hub", "from catp_blip2 import CatpBlip2ForConditionalGeneration"),
    ("docs/vision-merge.md", "time", "catp-blip2 bench --model blip2-opt-2.7b --keep 8 --batch-sizes 1 8 --vision-merge"),
    ("docs/vision-merge.md", "time", "catp-blip2 bench --model instructblip-flan-t5-xl --keep 8 --batch-sizes 1 8"),
}


def _run(page: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUNNER), str(page), str(work)], capture_output=True, text=True, timeout=900
    )


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_runnable_block_of_the_page_runs(page, tmp_path):
    result = _run(page, tmp_path / "work")
    ran = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert result.returncode == 0, f"{page.name}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    runnable = [b for b in blocks(page) if b.lang in RUNNABLE and not b.needs]
    assert len(ran) == len(runnable)


def test_every_block_not_run_is_marked_and_listed():
    marked = set()
    for page in PAGES:
        for block in blocks(page):
            assert block.lang in RUNNABLE or block.lang in INERT, f"{block.where}: unknown fence language {block.lang!r}"
            if block.needs:
                assert block.lang in RUNNABLE, f"{block.where}: a marker on a block that never runs"
                marked.add((block.page, ", ".join(block.needs), block.first_line))
    listed = {(page, needs, first) for page, needs, first in MARKED}
    unlisted = [m for m in marked if not any(m[:2] == l[:2] and m[2].startswith(l[2]) for l in listed)]
    stale = [l for l in listed if not any(m[:2] == l[:2] and m[2].startswith(l[2]) for m in marked)]
    assert not unlisted, f"marked blocks missing from MARKED: {unlisted}"
    assert not stale, f"MARKED entries with no such block: {stale}"


def test_a_broken_call_or_command_fails_and_names_its_line(tmp_path):
    page = tmp_path / "broken.md"
    page.write_text(
        "# A page\n\n```python\nx = 1 + 1\n```\n\n```python\nfrom catp_blip2 import CatpConfig\n"
        "CatpConfig(num_kept_query_tokens=99)\n```\n",
        encoding="utf-8",
    )
    result = _run(page, tmp_path / "work")
    assert result.returncode == 1
    assert "FAILED broken.md:7 (python)" in result.stderr and "num_kept_query_tokens" in result.stderr

    page.write_text("```bash\ncatp-blip2 eval --keep 33\n```\n", encoding="utf-8")
    result = _run(page, tmp_path / "work2")
    assert result.returncode == 1 and "FAILED broken.md:1 (bash)" in result.stderr
    assert "catp-blip2 eval: error:" in result.stderr


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the manual into docs/"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra is not installed")
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
