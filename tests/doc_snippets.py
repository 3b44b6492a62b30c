"""Runs the Python and bash blocks of one documentation page in order, as a reader would, on the embedded models.

    python tests/doc_snippets.py PAGE WORKDIR      # exit status 0 when every runnable block ran

Every fenced `python` and `bash` block of README.md and docs/*.md runs, unless the line just before it is a marker
`<!-- needs: hub -->`, `<!-- needs: gpu -->`, `<!-- needs: time -->` or `<!-- needs: install -->` (several may be
combined: `<!-- needs: hub, gpu -->`). The blocks of one page share one Python namespace and one working folder
(WORKDIR, holding a copy of configs/, docs/images/ and a link to this .venv), so a page can build on its earlier
blocks. Before a block runs (docs/snippets.md says the same to readers):

- the Hub ids of the examples become local stand-ins (`SUBSTITUTIONS`): BLIP-2 and InstructBLIP checkpoints the
  embedded models, `my-org/blip2-opt-2.7b-catp-k8` a folder exported from configs/tiny-embedded-catp-k8.json;
- relative imports of a core-module example (`from .scoring import`) become `from catp_blip2.scoring import`;
- Python blocks find `image`, a PIL image of the embedded evaluation set;
- bash blocks run with `set -euo pipefail`; `bash scripts/setup.sh ... &&` is left out (the tests run inside the
  environment it made), `.venv/bin/catp-blip2` is `catp-blip2`, and every `catp-blip2 eval` / `calibrate` (also
  under `accelerate launch`) gets `--limit 20`: the commands run as documented, on 20 questions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = {
    "hub": "needs Hugging Face Hub weights or datasets",
    "gpu": "needs a CUDA GPU",
    "time": "runs longer than a test may (training, real-size benchmarks)",
    "install": "sets up or checks the environment itself (setup, the test suite, the docs build)",
}
RUNNABLE = ("python", "bash")
# Fences that hold no command: output, file trees, config files, citations.
INERT = ("", "text", "yaml", "bibtex", "json")
LIMIT = 20
EXPORTED_VARIANT = "my-org/blip2-opt-2.7b-catp-k8"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*needs:\s*(?P<needs>[\w ,]+?)\s*-->\s*$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    needs: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        lines = [line for line in self.code.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        return lines[0].strip() if lines else ""


def blocks(page: Path) -> list[Block]:
    """Every fenced block of `page`, dedented to its fence, with the markers on the line before it."""
    name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, lang, start = fence["indent"], fence["lang"], i
        i += 1
        while i < len(lines) and lines[i].rstrip() != indent + "```":
            i += 1
        if i == len(lines):
            raise ValueError(f"{name}:{start + 1}: a ``` fence that is never closed")
        marker = _MARKER.match(lines[start - 1]) if start > 0 else None
        needs = tuple(n.strip() for n in marker["needs"].split(",")) if marker else ()
        unknown = [n for n in needs if n not in MARKERS]
        if unknown:
            raise ValueError(f"{name}:{start}: unknown `needs` marker {unknown}; known: {sorted(MARKERS)}")
        code = textwrap.dedent("\n".join(lines[start + 1 : i]))
        found.append(Block(name, start + 1, lang, code + "\n", needs))
        i += 1
    return found


def substitutions(work: Path) -> dict[str, str]:
    from catp_blip2.toy.embedded import EMBEDDED_MODELS

    return {
        "Salesforce/blip2-opt-2.7b": str(EMBEDDED_MODELS["embedded"]),
        "Salesforce/instructblip-flan-t5-xl": str(EMBEDDED_MODELS["embedded-instructblip"]),
        EXPORTED_VARIANT: str(work / "exported" / "blip2-opt-2.7b-catp-k8"),
        "from .scoring import": "from catp_blip2.scoring import",
    }


def _prepare(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "configs").exists():
        shutil.copytree(ROOT / "configs", work / "configs")
    (work / "docs" / "images").mkdir(parents=True, exist_ok=True)
    venv = work / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.prefix), target_is_directory=True)


def _export_variant(work: Path) -> None:
    target = work / "exported" / "blip2-opt-2.7b-catp-k8"
    if not target.exists():
        _bash(f"catp-blip2 export --variant configs/tiny-embedded-catp-k8.json --out {target}", work)


_BASH_PREAMBLE = f"""set -euo pipefail
catp-blip2() {{
    case "${{1:-}}" in
        eval|calibrate) command catp-blip2 "$@" --limit {LIMIT} ;;
        *) command catp-blip2 "$@" ;;
    esac
}}
"""


def _bash(code: str, work: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", "-c", _BASH_PREAMBLE + code], cwd=work, env=env, check=True)


def _bash_code(code: str) -> str:
    code = re.sub(r"bash scripts/setup\.sh[^&\n]*&&\s*", "", code)
    code = code.replace(".venv/bin/catp-blip2", "catp-blip2")
    return re.sub(r"(-m catp_blip2\.cli (eval|calibrate))\b", rf"\1 --limit {LIMIT}", code)


def run_page(page: Path, work: Path) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _prepare(work)
    os.chdir(work)
    import torch

    torch.set_num_threads(1)
    namespace: dict = {"__name__": "__doc_snippet__"}
    page_blocks = blocks(page)
    subs = substitutions(work)
    for block in page_blocks:
        if block.lang not in RUNNABLE:
            continue
        if block.needs:
            print(f"skip {block.where} ({', '.join(block.needs)}): {block.first_line}", flush=True)
            continue
        code = block.code
        for old, new in subs.items():
            code = code.replace(old, new)
        if EXPORTED_VARIANT in block.code:
            _export_variant(work)
        print(f"run  {block.where} {block.lang}: {block.first_line}", flush=True)
        try:
            if block.lang == "python":
                if "image" not in namespace:
                    from catp_blip2.toy.shapes import embedded_eval_dataset

                    namespace["image"] = embedded_eval_dataset()[0]["image"]
                exec(compile(code, block.where, "exec"), namespace)
            else:
                _bash(_bash_code(code), work)
        except Exception:  # the page's reader sees which block broke, and how
            traceback.print_exc()
            print(f"FAILED {block.where} ({block.lang}):\n{block.code}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_page(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
