"""The tiny models shipped with catp-blip2, trained on the synthetic shapes task (`catp_blip2.toy.shapes`).

`EMBEDDED_MODELS` maps each name the commands take to its folder: `"embedded"` is a `CatpBlip2ForConditionalGeneration`
checkpoint with its `Blip2Processor` (`EMBEDDED_MODEL_DIR`), `"embedded-instructblip"` a
`CatpInstructBlipForConditionalGeneration` with its `InstructBlipProcessor`. `catp-blip2 train-synthetic` rebuilds
them (see the README for the exact commands).
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
EMBEDDED_MODELS: dict[str, Path] = {"embedded": _HERE / "tiny-vqa", "embedded-instructblip": _HERE / "tiny-instructblip"}
EMBEDDED_MODEL_DIR: Path = EMBEDDED_MODELS["embedded"]

__all__ = ["EMBEDDED_MODELS", "EMBEDDED_MODEL_DIR"]
