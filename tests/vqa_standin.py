"""A local stand-in of lmms-lab/VQAv2 (validation split), column for column, for offline evaluation tests."""

from __future__ import annotations

import numpy as np
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

# lmms-lab/VQAv2 validation features, as its dataset card / parquet metadata declare them.
VQAV2_FEATURES = Features(
    {
        "question_type": Value("string"),
        "multiple_choice_answer": Value("string"),
        "answers": List({"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}),
        "image_id": Value("int64"),
        "answer_type": Value("string"),
        "question_id": Value("int64"),
        "question": Value("string"),
        "image": Image(),
    }
)

_QUESTIONS = [
    ("what color is the", "What color is the circle?", "other"),
    ("how many", "How many shapes are there?", "number"),
    ("is there a", "Is there a square on the left?", "yes/no"),
    ("what shape is the", "What shape is the red object?", "other"),
]
# Words of the tiny tokenizer, so a tiny model's answers can match some of them.
_ANSWERS = ["left", "red", "2", "yes", "circle", "no", "square", "left"]


def standin_rows(count: int = 8, seed: int = 0, grey_every: int = 5) -> list[dict]:
    """`count` rows; every `grey_every`-th image is greyscale (VQAv2 has some), answers mix agreeing and not."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        question_type, question, answer_type = _QUESTIONS[i % len(_QUESTIONS)]
        answer = _ANSWERS[i % len(_ANSWERS)]
        humans = [answer] * 10 if i % 2 == 0 else [answer] * 4 + ["blue"] * 6
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        image = PILImage.fromarray(pixels)
        if grey_every and i % grey_every == grey_every - 1:
            image = image.convert("L")
        rows.append(
            {
                "question_type": question_type,
                "multiple_choice_answer": answer,
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(humans)],
                "image_id": 100 + i,
                "answer_type": answer_type,
                "question_id": 1000 + i,
                "question": question,
                "image": image,
            }
        )
    return rows


def standin_dataset(count: int = 8, seed: int = 0) -> Dataset:
    return Dataset.from_list(standin_rows(count, seed), features=VQAV2_FEATURES)
