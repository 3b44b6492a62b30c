"""The tiny BLIP-2 shipped with catp-blip2, trained on the synthetic shapes task (`catp_blip2.toy.shapes`).

`EMBEDDED_MODEL_DIR` holds a `CatpBlip2ForConditionalGeneration` checkpoint (safetensors) and its
`Blip2Processor`; `catp-blip2 train-synthetic` rebuilds it (see the README for the exact command).
"""

from pathlib import Path

EMBEDDED_MODEL_DIR: Path = Path(__file__).resolve().parent / "tiny-vqa"

__all__ = ["EMBEDDED_MODEL_DIR"]
