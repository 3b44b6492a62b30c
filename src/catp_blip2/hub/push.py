"""`catp-blip2 push`: export a variant and upload it to the Hugging Face Hub.

    catp-blip2 push --variant configs/blip2-opt-2.7b-catp-k8.json --repo-id my-org/blip2-opt-2.7b-catp-k8
    catp-blip2 push --variant configs/tiny-embedded-catp-k8.json --repo-id my-org/tiny-k8 --dry-run

The token comes from the usual Hugging Face settings (`HF_TOKEN`, or `hf auth login`). `--dry-run` exports to a
temporary folder and lists what would be uploaded and where, without any call to the Hub.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .export import ExportResult, add_common_arguments, describe, export_from_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--repo-id", required=True, help="Hub repo to create or update, ORG/NAME (or NAME)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="export and list the upload; touch no Hub")
    parser.add_argument("--out", help="keep the exported folder here (default: a temporary folder)")


def upload_listing(folder: Path) -> list[tuple[str, int]]:
    """(path relative to the folder, size in bytes) of every file an upload of `folder` sends, sorted."""
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _upload(result: ExportResult, repo_id: str, private: bool) -> str:
    api = HfApi()
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(result.folder),
        repo_id=repo_id,
        repo_type="model",
        commit_message=f"Upload {result.variant.name} (catp-blip2 export)",
    )
    return str(repo_url)


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid Hub repo id (ORG/NAME or NAME), else a ValueError naming `--repo-id`."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`--repo-id` {repo_id!r} is not a valid Hub repo id: {error}") from None
    return repo_id


def run(args: argparse.Namespace) -> int:
    check_repo_id(args.repo_id)
    with tempfile.TemporaryDirectory(prefix="catp-export-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "model"
        result = export_from_arguments(args, out)
        print(describe(result))
        listing = upload_listing(result.folder)
        visibility = "private" if args.private else "public"
        verb = "would upload" if args.dry_run else "uploading"
        print(f"{verb} {len(listing)} files ({_size(sum(s for _, s in listing))}) to {visibility} model repo "
              f"https://huggingface.co/{args.repo_id}")
        for path, size in listing:
            print(f"  {path}  {_size(size)}")
        if args.dry_run:
            print("dry run: nothing was uploaded")
            return 0
        try:
            url = _upload(result, args.repo_id, args.private)
        except (HfHubHTTPError, OSError) as error:
            print(
                f"catp-blip2 push: error: upload to {args.repo_id!r} failed: {error}\n"
                "(log in with `hf auth login` or set HF_TOKEN to a token with write access)",
                file=sys.stderr,
            )
            return 1
        print(f"uploaded to {url}")
    return 0
