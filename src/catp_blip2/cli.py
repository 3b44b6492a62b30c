"""`catp-blip2` command line: one subcommand per module, each with `add_arguments(parser)` and `run(args)`.

One error style for every subcommand: bad input raises a `ValueError` (or `FileNotFoundError`) that names the
option, the value and what is allowed; it is printed as `catp-blip2 <command>: error: <message>` with exit status 2
and no traceback, as argparse does for its own checks. Each command checks its options before loading anything.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("catp_blip2.toy.demo", "answer a question on a tiny local model, unpruned and pruned"),
    "export": ("catp_blip2.hub.export", "write a variant (configs/*.json) as a self-contained Hub-ready model folder"),
    "train-synthetic": ("catp_blip2.toy.training", "train the embedded tiny BLIP-2 on the synthetic shapes task (CPU)"),
    "push": ("catp_blip2.hub.push", "export a variant and upload it to the Hugging Face Hub (--dry-run lists the upload)"),
    "bench": ("catp_blip2.bench.command", "time and measure memory of CATP vs stock BLIP-2 on the same weights (bench.json/md/png)"),
    "eval": ("catp_blip2.evaluation.command", "VQA accuracy of a BLIP-2 checkpoint, unpruned and for every pruning method x k (resumable)"),
    "calibrate": ("catp_blip2.evaluation.calibrate", "search a pruning method's settings on a calibration split; write the winner as a variant"),
    "explain": ("catp_blip2.explain.command", "picture of the query tokens one image and question keep: attention maps, votes, answer"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catp-blip2", description="CATP token pruning for BLIP-2.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = importlib.import_module(args._module).run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"catp-blip2 {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
