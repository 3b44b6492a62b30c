"""Run in a fresh Python where `catp_blip2` cannot be imported: load an exported folder with remote code only.

Usage: python hub_remote_check.py EXPORT_DIR IMAGE_PATH [IMAGE_PATH ...] > result.json

Prints one JSON object with what AutoConfig / AutoModel / AutoProcessor and both pipelines produced, for
tests/test_hub.py to compare with the installed package in its own process.
"""

from __future__ import annotations

import importlib.abc
import json
import sys


class _BlockCatp(importlib.abc.MetaPathFinder):
    """Makes `import catp_blip2` fail, even if it is installed (e.g. editable) somewhere on sys.path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "catp_blip2" or fullname.startswith("catp_blip2."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked for this check)", name=fullname)
        return None


sys.meta_path.insert(0, _BlockCatp())


def main(folder: str, image_paths: list[str]) -> dict:
    try:
        import catp_blip2  # noqa: F401

        importable = True
    except ImportError:
        importable = False

    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline

    from hub_check_inputs import QUESTIONS, model_probe, vqa_calls, itt_calls

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    images = [Image.open(p).convert("RGB") for p in image_paths]

    vqa = pipeline("visual-question-answering", model=folder, trust_remote_code=True, device="cpu")
    inferred = pipeline(model=folder, trust_remote_code=True, device="cpu")  # task from config.custom_pipelines
    itt = pipeline("image-text-to-text", model=folder, trust_remote_code=True, device="cpu")
    return {
        "catp_blip2_importable": importable,
        "config_class": f"{type(config).__module__}.{type(config).__name__}",
        "model_class": f"{type(model).__module__}.{type(model).__name__}",
        "vqa_pipeline_class": f"{type(vqa).__module__}.{type(vqa).__name__}",
        "inferred_task": inferred.task,
        "num_kept_query_tokens": config.num_kept_query_tokens,
        "pruning_method": config.pruning_method,
        "vision_merge_per_layer": getattr(config, "vision_merge_per_layer", None),
        "processor_num_query_tokens": processor.num_query_tokens,
        "torch_version": torch.__version__,
        "model": model_probe(model, processor, images),
        "vqa": vqa_calls(vqa, image_paths, images),
        "inferred_vqa": inferred(images[0], QUESTIONS[0]),
        "itt": itt_calls(itt, images),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
