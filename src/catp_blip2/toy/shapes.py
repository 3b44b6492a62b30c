"""A seeded synthetic VQA task: small images of coloured shapes, questions in the exact `lmms-lab/VQAv2` schema.

Each 48x48 image holds 1 to 3 shapes (circle, square, triangle), each in its own cell of a 3x3 grid and each in
a different colour, on a noisy dark background. Five question families ask about colour, shape, count, presence
(yes/no) and horizontal position (left / middle / right), so answering needs what is where in the image: the
information the 32 query tokens carry to the language model.

Everything is a pure function of its seed; `embedded_eval_dataset()` is the evaluation set the embedded tiny model
is judged on (drawn from a different random stream than the training steps of `catp_blip2.toy.training`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 48
GRID = 3
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
}
SHAPES = ("circle", "square", "triangle")
COLUMNS = ("left", "middle", "right")
MAX_OBJECTS = 3
QUESTION_TYPES = ("what color is the", "what shape is the", "how many", "is there a", "where is the")
ANSWER_TYPES = {
    "what color is the": "other",
    "what shape is the": "other",
    "how many": "number",
    "is there a": "yes/no",
    "where is the": "other",
}
# Every word a question or an answer uses, for the embedded model's word-level tokenizer.
VOCABULARY = tuple(
    "question short answer : ? what color shape is the object how many shapes are there a where yes no".split()
    + list(COLORS)
    + list(SHAPES)
    + list(COLUMNS)
    + [str(n) for n in range(1, MAX_OBJECTS + 1)]
)
EVAL_SEED = 1_000_003  # a plain integer seed; training steps draw from default_rng([seed, step]), another stream
EVAL_NUM_IMAGES = 100
# The calibration split (`catp-blip2 calibrate`): the same distribution from another seed, disjoint from the
# evaluation set, so settings tuned on it are measured on questions they never saw.
CALIBRATION_SEED = 2_000_029
QUESTIONS_PER_IMAGE = 3


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    row: int
    column: int


def draw_scene(objects: list[SceneObject], rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """Render `objects` on a noisy dark background; each sits in its grid cell with a small random offset."""
    background = rng.integers(0, 50, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    cell = size / GRID
    for obj in objects:
        radius = rng.uniform(0.28, 0.4) * cell
        jitter = (cell / 2 - radius) * 0.8
        cx = (obj.column + 0.5) * cell + rng.uniform(-jitter, jitter)
        cy = (obj.row + 0.5) * cell + rng.uniform(-jitter, jitter)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        color = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=color)
        elif obj.shape == "square":
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=color)
    return image


def random_scene(rng: np.random.Generator) -> list[SceneObject]:
    """1..MAX_OBJECTS objects in distinct grid cells with distinct colours (so "the red object" is unique)."""
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    colors = rng.choice(len(COLORS), size=count, replace=False)
    names = list(COLORS)
    return [
        SceneObject(names[c], SHAPES[int(rng.integers(len(SHAPES)))], int(cell) // GRID, int(cell) % GRID)
        for cell, c in zip(cells, colors)
    ]


def _question_of_type(kind: str, objects: list[SceneObject], rng: np.random.Generator) -> tuple[str, str] | None:
    """(question, answer) of one family, or None when this scene cannot ask it unambiguously."""
    if kind == "what color is the":
        unique = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
        if not unique:
            return None
        obj = unique[int(rng.integers(len(unique)))]
        return f"what color is the {obj.shape} ?", obj.color
    if kind == "what shape is the":
        obj = objects[int(rng.integers(len(objects)))]
        return f"what shape is the {obj.color} object ?", obj.shape
    if kind == "how many":
        return "how many shapes are there ?", str(len(objects))
    if kind == "is there a":
        if rng.random() < 0.5:  # balanced yes/no
            obj = objects[int(rng.integers(len(objects)))]
            return f"is there a {obj.color} {obj.shape} ?", "yes"
        present = {(o.color, o.shape) for o in objects}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = absent[int(rng.integers(len(absent)))]
        return f"is there a {color} {shape} ?", "no"
    if kind == "where is the":
        obj = objects[int(rng.integers(len(objects)))]
        return f"where is the {obj.color} object ?", COLUMNS[obj.column]
    raise ValueError(f"question kind must be one of {QUESTION_TYPES}; got {kind!r}.")


def questions_for_scene(
    objects: list[SceneObject], rng: np.random.Generator, count: int = QUESTIONS_PER_IMAGE
) -> list[tuple[str, str, str]]:
    """`count` questions of distinct families: (question_type, question, answer)."""
    asked: list[tuple[str, str, str]] = []
    for kind in rng.permutation(QUESTION_TYPES):
        qa = _question_of_type(str(kind), objects, rng)
        if qa is not None:
            asked.append((str(kind), *qa))
        if len(asked) == count:
            break
    return asked


def synthetic_examples(num_images: int, seed: int) -> list[dict]:
    """Rows in the `lmms-lab/VQAv2` validation schema, `QUESTIONS_PER_IMAGE` per image; images as PIL."""
    rng = np.random.default_rng(seed)
    rows = []
    for image_index in range(num_images):
        objects = random_scene(rng)
        image = draw_scene(objects, rng)
        image_id = seed * 1000 + image_index
        for q_index, (kind, question, answer) in enumerate(questions_for_scene(objects, rng)):
            rows.append(
                {
                    "question_type": kind,
                    "multiple_choice_answer": answer,
                    # Ten identical human answers: the task is unambiguous, so each scores 0 or 100.
                    "answers": [
                        {"answer": answer, "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)
                    ],
                    "image_id": image_id,
                    "answer_type": ANSWER_TYPES[kind],
                    "question_id": image_id * 10 + q_index,
                    "question": question,
                    "image": image,
                }
            )
    return rows


def vqav2_features():
    """The `datasets.Features` of `lmms-lab/VQAv2` (validation split), column for column."""
    from datasets import Features, Image as ImageFeature, List, Value

    return Features(
        {
            "question_type": Value("string"),
            "multiple_choice_answer": Value("string"),
            "answers": List(
                {"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}
            ),
            "image_id": Value("int64"),
            "answer_type": Value("string"),
            "question_id": Value("int64"),
            "question": Value("string"),
            "image": ImageFeature(),
        }
    )


def make_synthetic_vqa(num_images: int, seed: int):
    """A `datasets.Dataset` of the synthetic task in the `lmms-lab/VQAv2` schema (3 questions per image)."""
    from datasets import Dataset

    if num_images < 1:
        raise ValueError(f"`num_images` must be a positive integer; got {num_images!r}.")
    rows = synthetic_examples(num_images, seed)
    columns = {name: [row[name] for row in rows] for name in vqav2_features()}
    return Dataset.from_dict(columns, features=vqav2_features())


def embedded_eval_dataset():
    """The evaluation set of the embedded model: 100 images, 300 questions, seed `EVAL_SEED`."""
    return make_synthetic_vqa(EVAL_NUM_IMAGES, EVAL_SEED)


def embedded_calibration_dataset():
    """The calibration split of the embedded task: 100 other images, 300 questions, seed `CALIBRATION_SEED`."""
    return make_synthetic_vqa(EVAL_NUM_IMAGES, CALIBRATION_SEED)


__all__ = [
    "ANSWER_TYPES",
    "CALIBRATION_SEED",
    "COLORS",
    "EVAL_SEED",
    "QUESTION_TYPES",
    "SHAPES",
    "VOCABULARY",
    "SceneObject",
    "draw_scene",
    "embedded_calibration_dataset",
    "embedded_eval_dataset",
    "make_synthetic_vqa",
    "questions_for_scene",
    "random_scene",
    "synthetic_examples",
    "vqav2_features",
]
