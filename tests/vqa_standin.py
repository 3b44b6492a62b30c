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


# ---- the other formats: OK-VQA, TextVQA, VizWiz-VQA, GQA, in the lmms-lab schemas and Hub snapshot layouts -------
#
# Each `*_snapshot(root)` writes the folder `huggingface_hub.snapshot_download(repo_id, repo_type="dataset")` makes of
# the lmms-lab repo: README.md with the repo's YAML header (its `dataset_info` features, and `configs` where the repo
# has them) and the parquet files under the repo's own names. `datasets.load_dataset(folder, name=config)` reads it
# the way it reads the Hub repo (the README's features are cast to, so they must match the files).

from pathlib import Path  # noqa: E402

OKVQA_FEATURES = Features(
    {
        "question_id": Value("string"),
        "image": Image(),
        "question": Value("string"),
        "answers": List(Value("string")),
        "question_type": Value("string"),
        "answer_type": Value("string"),
    }
)
# lmms-lab/OK-VQA README.md (its YAML header), splits sized to the stand-in.
OKVQA_README = """---
dataset_info:
  features:
  - name: question_id
    dtype: string
  - name: image
    dtype: image
  - name: question
    dtype: string
  - name: answers
    sequence: string
  - name: question_type
    dtype: string
  - name: answer_type
    dtype: string
  splits:
  - name: val2014
    num_bytes: {val2014_bytes}
    num_examples: {val2014}
configs:
- config_name: default
  data_files:
  - split: val2014
    path: data/val2014-*
---
"""

TEXTVQA_FEATURES = Features(
    {
        "image_id": Value("string"),
        "question_id": Value("int32"),
        "question": Value("string"),
        "question_tokens": List(Value("string")),
        "image": Image(),
        "image_width": Value("int32"),
        "image_height": Value("int32"),
        "flickr_original_url": Value("string"),
        "flickr_300k_url": Value("string"),
        "answers": List(Value("string")),
        "image_classes": List(Value("string")),
        "set_name": Value("string"),
        "ocr_tokens": List(Value("string")),
    }
)
TEXTVQA_README = """---
dataset_info:
  features:
  - name: image_id
    dtype: string
  - name: question_id
    dtype: int32
  - name: question
    dtype: string
  - name: question_tokens
    sequence: string
  - name: image
    dtype: image
  - name: image_width
    dtype: int32
  - name: image_height
    dtype: int32
  - name: flickr_original_url
    dtype: string
  - name: flickr_300k_url
    dtype: string
  - name: answers
    sequence: string
  - name: image_classes
    sequence: string
  - name: set_name
    dtype: string
  - name: ocr_tokens
    sequence: string
  splits:
  - name: validation
    num_bytes: {validation_bytes}
    num_examples: {validation}
  - name: test
    num_bytes: {test_bytes}
    num_examples: {test}
configs:
- config_name: default
  data_files:
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
---
"""

VIZWIZ_FEATURES = Features(
    {
        "question_id": Value("string"),
        "image": Image(),
        "question": Value("string"),
        "answers": List(Value("string")),
        "category": Value("string"),
    }
)
# lmms-lab/VizWiz-VQA's README has `dataset_info` but no `configs`: `datasets` takes the splits from the file names
# (data/val-00000-of-00005-<hash>.parquet).
VIZWIZ_README = """---
dataset_info:
  features:
  - name: question_id
    dtype: string
  - name: image
    dtype: image
  - name: question
    dtype: string
  - name: answers
    sequence: string
  - name: category
    dtype: string
  splits:
  - name: val
    num_bytes: {val_bytes}
    num_examples: {val}
  - name: test
    num_bytes: {test_bytes}
    num_examples: {test}
---
"""

GQA_INSTRUCTIONS_FEATURES = Features(
    {
        "id": Value("string"),
        "imageId": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "fullAnswer": Value("string"),
        "isBalanced": Value("bool"),
        "groups": {"global": Value("string"), "local": Value("string")},
        "entailed": Value("string"),
        "equivalent": Value("string"),
        "types": {"structural": Value("string"), "semantic": Value("string"), "detailed": Value("string")},
        # The card's `sequence:` of named fields is datasets' dict-of-lists form (a struct of lists).
        "annotations": {"answer": List(Value("string")), "fullAnswer": List(Value("string")), "question": List(Value("string"))},
        "semantic": List({"operation": Value("string"), "argument": Value("string"), "dependencies": List(Value("int64"))}),
        "semanticStr": Value("string"),
    }
)
GQA_IMAGES_FEATURES = Features({"id": Value("string"), "image": Image()})
GQA_README = """---
license: mit
dataset_info:
- config_name: testdev_balanced_images
  features:
  - name: id
    dtype: string
  - name: image
    dtype: image
  splits:
  - name: testdev
    num_bytes: {images_bytes}
    num_examples: {images}
- config_name: testdev_balanced_instructions
  features:
  - name: id
    dtype: string
  - name: imageId
    dtype: string
  - name: question
    dtype: string
  - name: answer
    dtype: string
  - name: fullAnswer
    dtype: string
  - name: isBalanced
    dtype: bool
  - name: groups
    struct:
    - name: global
      dtype: string
    - name: local
      dtype: string
  - name: entailed
    dtype: string
  - name: equivalent
    dtype: string
  - name: types
    struct:
    - name: structural
      dtype: string
    - name: semantic
      dtype: string
    - name: detailed
      dtype: string
  - name: annotations
    sequence:
    - name: answer
      dtype: string
    - name: fullAnswer
      dtype: string
    - name: question
      dtype: string
  - name: semantic
    list:
    - name: operation
      dtype: string
    - name: argument
      dtype: string
    - name: dependencies
      sequence: int64
  - name: semanticStr
    dtype: string
  splits:
  - name: testdev
    num_bytes: {instructions_bytes}
    num_examples: {instructions}
configs:
- config_name: testdev_balanced_images
  data_files:
  - split: testdev
    path: testdev_balanced_images/testdev-*
- config_name: testdev_balanced_instructions
  data_files:
  - split: testdev
    path: testdev_balanced_instructions/testdev-*
---
"""


def _image(rng, grey: bool = False) -> PILImage.Image:
    image = PILImage.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return image.convert("L") if grey else image


# Hand-checked answers: a row's 10 human answers are its `answer` n times and "blue" 10 - n times, n cycling
# through AGREEMENT; predicting `answer` then scores HAND_SCORES[n] (1.0, 1.0, 0.9, 0.6, 0.3).
AGREEMENT = (10, 4, 3, 2, 1)
# VQA accuracy of predicting `answer` when n of the 10 humans gave it: (10 - n) subsets keep all n matches and n
# subsets keep n - 1, each scoring min(1, matches / 3); the mean of the 10.
HAND_SCORES = {10: 1.0, 4: 1.0, 3: (7 * 1.0 + 3 * (2 / 3)) / 10, 2: (8 * (2 / 3) + 2 * (1 / 3)) / 10, 1: (9 * (1 / 3) + 1 * 0.0) / 10}


def _humans(answer: str, i: int) -> list[str]:
    n = AGREEMENT[i % len(AGREEMENT)]
    return [answer] * n + ["blue"] * (10 - n)


def okvqa_rows(count: int = 6, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    question_types = ["eight", "one", "other"]  # OK-VQA's knowledge categories ("one" = vehicles and transportation, ...)
    return [
        {
            "question_id": str(2971475 + i),
            "image": _image(rng, grey=i == 4),
            "question": ["What sport can you use this for?", "What is the color of the circle?", "Is it on the left?"][i % 3],
            "answers": _humans(_ANSWERS[i % len(_ANSWERS)], i),
            "question_type": question_types[i % 3],
            "answer_type": "other",
        }
        for i in range(count)
    ]


def textvqa_rows(count: int = 6, seed: int = 2, split: str = "validation") -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        answer = _ANSWERS[i % len(_ANSWERS)]
        rows.append(
            {
                "image_id": f"{0x3a1b2c + i:016x}",
                "question_id": 34602 + i,
                "question": ["what is written on the sign?", "what color is the word?", "what number is shown?"][i % 3],
                "question_tokens": ["what", "is", "written", "on", "the", "sign"],
                "image": _image(rng),
                "image_width": 40,
                "image_height": 40,
                "flickr_original_url": f"https://farm{i}.staticflickr.com/{i}_o.jpg",
                "flickr_300k_url": f"https://c{i}.staticflickr.com/{i}_z.jpg",
                "answers": _humans(answer, i) if split != "test" else [],
                "image_classes": ["Street light", "Sign"],
                "set_name": "val" if split != "test" else "test",
                "ocr_tokens": [answer, "stop", "2"],
            }
        )
    return rows


def vizwiz_rows(count: int = 6, seed: int = 3, split: str = "val") -> list[dict]:
    rng = np.random.default_rng(seed)
    categories = ["other", "yes/no", "unanswerable", "number"]
    rows = []
    for i in range(count):
        category = categories[i % len(categories)]
        answer = {"yes/no": "yes", "unanswerable": "unanswerable", "number": "2"}.get(category, _ANSWERS[i % len(_ANSWERS)])
        rows.append(
            {
                "question_id": f"VizWiz_{split}_{i:08d}.jpg",
                "image": _image(rng),
                "question": ["What is this?", "Is it red?", "What does this say?", "How many are there?"][i % 4],
                "answers": _humans(answer, i) if split != "test" else [],
                "category": category,
            }
        )
    return rows


GQA_IMAGE_IDS = ["n161313", "n235859", "n336443"]


def gqa_rows(count: int = 6) -> list[dict]:
    """Questions over `GQA_IMAGE_IDS` (not in image order, the first image asked about twice)."""
    kinds = [
        ("query", "attr", "colorObject", "What color is the shirt?", "red", "The shirt is red."),
        ("verify", "attr", "verifyAttr", "Is the circle red?", "yes", "Yes, the circle is red."),
        ("choose", "rel", "chooseRel", "Is the square to the left or right of the circle?", "left", "The square is to the left of the circle."),
        ("logical", "obj", "twoSame", "Are there both squares and circles?", "no", "No, there are only circles."),
        ("compare", "attr", "compare", "Which is bigger, the square or the circle?", "square", "The square is bigger."),
        ("query", "cat", "categoryThat", "What kind of shape is this?", "circle", "This is a circle."),
    ]
    rows = []
    for i in range(count):
        structural, semantic, detailed, question, answer, full = kinds[i % len(kinds)]
        rows.append(
            {
                "id": str(20968479 + i),
                "imageId": GQA_IMAGE_IDS[[1, 0, 2, 1, 0, 2][i % 6]],
                "question": question,
                "answer": answer,
                "fullAnswer": full,
                "isBalanced": True,
                "groups": {"global": None if structural == "verify" else answer, "local": f"{i:02d}q-{semantic}"},
                "entailed": "['20968480']" if i % 2 == 0 else "[]",
                "equivalent": f"['{20968479 + i}']",
                "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
                "annotations": {"answer": ["1234"], "fullAnswer": ["1234"], "question": ["5678"]},
                "semantic": [
                    {"operation": "select", "argument": "shirt (1234)", "dependencies": []},
                    {"operation": "query", "argument": "color", "dependencies": [0]},
                ],
                "semanticStr": "select: shirt (1234)->query: color [0]",
            }
        )
    return rows


def gqa_image_rows(seed: int = 4) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": image_id, "image": _image(rng)} for image_id in GQA_IMAGE_IDS]


def _write_parquet(dataset: Dataset, path: Path, shards: int = 1) -> int:
    """Write `dataset` as `shards` parquet files at `path` (a name with {i} and {n}); return the rows' bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        dataset.shard(shards, i, contiguous=True).to_parquet(str(path).format(i=f"{i:05d}", n=f"{shards:05d}"))
    return dataset.data.nbytes


def okvqa_snapshot(root: Path, count: int = 6) -> Path:
    data = Dataset.from_list(okvqa_rows(count), features=OKVQA_FEATURES)
    size = _write_parquet(data, root / "data" / "val2014-{i}-of-{n}.parquet", shards=2)
    (root / "README.md").write_text(OKVQA_README.format(val2014=count, val2014_bytes=size))
    return root


def _evaluated_and_test_snapshot(
    root: Path, rows, features, readme: str, count: int, split: str, test_seed: int, suffixes: tuple[str, str] = ("", "")
) -> Path:
    """A snapshot whose evaluated `split` (2 shards, `count` rows) and `test` split (2 rows) are parquet under data/."""
    evaluated = Dataset.from_list(rows(count), features=features)
    test = Dataset.from_list(rows(2, seed=test_seed, split="test"), features=features)
    sizes = {
        f"{split}_bytes": _write_parquet(evaluated, root / "data" / f"{split}-{{i}}-of-{{n}}{suffixes[0]}.parquet", shards=2),
        "test_bytes": _write_parquet(test, root / "data" / f"test-{{i}}-of-{{n}}{suffixes[1]}.parquet"),
    }
    (root / "README.md").write_text(readme.format(**{split: count}, test=2, **sizes))
    return root


def textvqa_snapshot(root: Path, count: int = 6) -> Path:
    return _evaluated_and_test_snapshot(root, textvqa_rows, TEXTVQA_FEATURES, TEXTVQA_README, count, "validation", 5)


def vizwiz_snapshot(root: Path, count: int = 6) -> Path:
    # The Hub repo's parquet names carry a content hash, as in lmms-lab/VizWiz-VQA.
    return _evaluated_and_test_snapshot(
        root, vizwiz_rows, VIZWIZ_FEATURES, VIZWIZ_README, count, "val", 6,
        suffixes=("-59be8a2af5f336e2", "-c2a2bfd267556d6d"),
    )


def gqa_snapshot(root: Path, count: int = 6) -> Path:
    instructions = Dataset.from_list(gqa_rows(count), features=GQA_INSTRUCTIONS_FEATURES)
    images = Dataset.from_list(gqa_image_rows(), features=GQA_IMAGES_FEATURES)
    sizes = {
        "instructions_bytes": _write_parquet(instructions, root / "testdev_balanced_instructions" / "testdev-{i}-of-{n}.parquet"),
        "images_bytes": _write_parquet(images, root / "testdev_balanced_images" / "testdev-{i}-of-{n}.parquet"),
    }
    (root / "README.md").write_text(GQA_README.format(instructions=count, images=len(GQA_IMAGE_IDS), **sizes))
    return root


SNAPSHOTS = {"okvqa": okvqa_snapshot, "textvqa": textvqa_snapshot, "vizwiz": vizwiz_snapshot, "gqa": gqa_snapshot}
FEATURES = {"okvqa": OKVQA_FEATURES, "textvqa": TEXTVQA_FEATURES, "vizwiz": VIZWIZ_FEATURES, "gqa": GQA_INSTRUCTIONS_FEATURES}
