"""`evaluate` metric modules shipped with catp-blip2 (load them with `evaluate.load(path)`).

`VQA_ACCURACY_PATH` is the folder of the VQAv2 accuracy metric: `evaluate.load(str(VQA_ACCURACY_PATH))`.
"""

from pathlib import Path

VQA_ACCURACY_PATH: Path = Path(__file__).resolve().parent / "vqa_accuracy"

__all__ = ["VQA_ACCURACY_PATH"]
