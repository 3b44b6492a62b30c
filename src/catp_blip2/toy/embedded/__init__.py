"""The tiny models shipped with catp-blip2, trained on the synthetic shapes task (`catp_blip2.toy.shapes`).

`EMBEDDED_MODELS` maps each name the commands take to its folder: `"embedded"` is a `CatpBlip2ForConditionalGeneration`
checkpoint with its `Blip2Processor` (`EMBEDDED_MODEL_DIR`), `"embedded-instructblip"` a
`CatpInstructBlipForConditionalGeneration` with its `InstructBlipProcessor`. `catp-blip2 train-synthetic` rebuilds
them (see docs/embedded-model.md for the exact commands).
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
EMBEDDED_MODELS: dict[str, Path] = {"embedded": _HERE / "tiny-vqa", "embedded-instructblip": _HERE / "tiny-instructblip"}
EMBEDDED_MODEL_DIR: Path = EMBEDDED_MODELS["embedded"]



def embedded_model_dir(option: str = "--model", name: str = "embedded") -> Path:
    """The folder of the embedded model `name`; a ValueError naming `option` when this installation lacks it."""
    folder = EMBEDDED_MODELS[name]
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"`{option}` {name!r}: {str(folder)!r} holds no model; rebuild it with `catp-blip2 train-synthetic` "
            "or give a checkpoint folder or Hub id."
        )
    return folder


__all__ = ["EMBEDDED_MODELS", "EMBEDDED_MODEL_DIR", "embedded_model_dir"]
