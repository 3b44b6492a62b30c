"""The VQAv2 accuracy metric: the official answer normalisation and the leave-one-annotator-out accuracy.

This follows the official VQA evaluation script (`vqaEval.py` of the VQA challenge tools) in the form the CATP
reference code ran it (LAVIS's `vqa_eval.py`), so numbers are comparable with the paper's:

- the prediction is cleaned (newlines and tabs to spaces, stripped) and then fully normalised:
  `process_punctuation` followed by `process_digit_article`;
- the human answers are cleaned the same way; when they are not all identical they also go through
  `process_punctuation` (and only that: VQAv2's answers are already lower-case, with digits for numbers);
- accuracy of one question = the average, over each of the 10 human answers left out in turn, of
  min(1, matching remaining answers / 3). With 10 answers, 3 or more matches give 1, 2 give 0.6, 1 gives 0.3.

GQA is scored by exact match with case and punctuation ignored (`exact_match`), as lmms-eval's `gqa` task does
(`evaluate`'s exact_match with `ignore_case=True, ignore_punctuation=True`): both strings lower-cased, every
character of `string.punctuation` deleted, then compared; no other normalisation (articles and number words count).

Everything here is plain Python (no torch, no `evaluate`), so importing it is free; the `evaluate` module in
`VQA_ACCURACY_PATH` (`vqa_accuracy/` beside this module) wraps these functions.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

# The `evaluate` metric module wrapping these functions: `evaluate.load(str(VQA_ACCURACY_PATH))`.
VQA_ACCURACY_PATH: Path = Path(__file__).resolve().parent / "vqa_accuracy"

# ---- normalisation tables ----------------------------------------------------------------------------------------

# Number words the official script turns into digits ("none" counts as zero).
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Replaced by a space, or deleted (see `process_punctuation`). The apostrophe and the period are not here: the
# apostrophe belongs to contractions, the period has its own rule.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

# The official table maps contractions written without an apostrophe to the written form. Its keys are exactly the
# forms below with ONE apostrophe left out ("couldnt've" and "couldn'tve", never "couldntve"), so the table is
# generated from the written forms. Entries of the official table that can never fire are left out: its
# capitalised keys ("Im", "Ive", "Id've", "I'dve": the text is lower-cased first) and its identity entries
# ("let's", "she's").
_CONTRACTED_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd he'd've
he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've needn't not've
o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's
someone'd someone'd've someone'll someone's something'd something'd've something'll that's there'd there'd've
there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's
what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contractions() -> dict[str, str]:
    table: dict[str, str] = {}
    for written in _CONTRACTED_FORMS:
        for i, char in enumerate(written):
            if char == "'":
                table[written[:i] + written[i + 1 :]] = written
    # A quirk of the official table, kept for identical numbers: it maps the written "somebody'd" to "somebodyd"
    # (backwards), and has no key "somebodyd".
    table["somebody'd"] = "somebodyd"
    return table


CONTRACTIONS: dict[str, str] = _contractions()

# "1,000" -> "1000": when the text holds a comma between digits, punctuation is deleted instead of spaced out.
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# A period not followed by a digit is deleted ("3.5" keeps its period, "dog." loses it). The official pattern,
# "(?!<=\d)(\.)(?!\d)", has a lookahead where a lookbehind was meant, which always holds, so it is this one.
_PERIOD = re.compile(r"\.(?!\d)")
# The official call passes re.UNICODE (32) where `count` goes, so at most 32 periods are deleted. Kept.
_MAX_PERIODS_DELETED = 32


# ---- normalisation -----------------------------------------------------------------------------------------------


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip (the first step for predictions and human answers alike)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official punctuation rule.

    Each mark of `PUNCTUATION` is deleted when it touches a space somewhere in the text ("yes, it is") or when
    the text has a comma between two digits ("1,000"); otherwise it becomes a space ("black/white" ->
    "black white"). Then periods not followed by a digit are deleted. Case is left alone.
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string; got {text!r}.")
    out = text
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in PUNCTUATION:
        # Judged on the original text, as the official script does, not on the text changed so far.
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS_DELETED)


def process_digit_article(text: str) -> str:
    """Lower-case, number words to digits, articles removed, contractions given their apostrophes; words re-joined
    with single spaces."""
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string; got {text!r}.")
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The full official normalisation of a predicted answer: whitespace, punctuation, then digits/articles.

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    """
    return process_digit_article(process_punctuation(clean_whitespace(text)))


# ---- accuracy ----------------------------------------------------------------------------------------------------


def _answer_strings(answers: Sequence[str] | Sequence[dict], name: str = "answers") -> list[str]:
    """Human answers as strings: plain strings, or lmms-lab/VQAv2 dicts with an "answer" key."""
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence) or len(answers) == 0:
        raise ValueError(f"`{name}` must be a non-empty list of answer strings (or dicts with 'answer'); got {answers!r}.")
    strings = []
    for answer in answers:
        if isinstance(answer, dict):
            answer = answer.get("answer")
        if not isinstance(answer, str):
            raise ValueError(f"`{name}` must hold strings or dicts with a string 'answer'; got {answer!r} in {answers!r}.")
        strings.append(answer)
    return strings


def vqa_accuracy(prediction: str, answers: Sequence[str] | Sequence[dict]) -> float:
    """Official VQA accuracy of one predicted answer against the human answers, in 0..1.

    `answers` are the (usually 10) human answers as strings, or as lmms-lab/VQAv2 dicts with an "answer" key.
    Each answer is left out in turn; the prediction scores min(1, matches among the others / 3); the scores are
    averaged.
    """
    if not isinstance(prediction, str):
        raise ValueError(f"`prediction` must be a string; got {prediction!r}.")
    human = [clean_whitespace(a) for a in _answer_strings(answers)]
    predicted = normalize_answer(prediction)
    if len(set(human)) > 1:
        human = [process_punctuation(a) for a in human]
    matches = sum(answer == predicted for answer in human)
    # Leaving out answer i removes one match exactly when answer i itself matches.
    total = sum(min(1.0, (matches - (answer == predicted)) / 3) for answer in human)
    return total / len(human)


_PUNCTUATION_DELETED = str.maketrans("", "", string.punctuation)


def exact_match_text(text: str) -> str:
    """`text` lower-cased with every character of `string.punctuation` deleted (nothing else changes)."""
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string; got {text!r}.")
    return text.lower().translate(_PUNCTUATION_DELETED)


def exact_match(prediction: str, answers: Sequence[str] | Sequence[dict]) -> float:
    """1.0 when the prediction equals one of the reference answers with case and punctuation ignored, else 0.0.

    >>> exact_match("Yes.", ["yes"]), exact_match("the left", ["left"])
    (1.0, 0.0)
    """
    predicted = exact_match_text(prediction)
    return 1.0 if any(predicted == exact_match_text(a) for a in _answer_strings(answers)) else 0.0


@dataclass(frozen=True)
class Metric:
    """How one prediction is scored against a question's reference answers, in 0..1 (reported in percent);
    `label` names it in tables and plots."""

    name: str
    score: Callable[[str, Sequence[str]], float]
    label: str = "accuracy"


VQA_ACCURACY = Metric("vqa_accuracy", vqa_accuracy, "VQA accuracy")
EXACT_MATCH = Metric("exact_match", exact_match, "Exact match")


def vqa_accuracy_scores(predictions: Sequence[str], references: Sequence[Sequence[str] | Sequence[dict]]) -> list[float]:
    """`vqa_accuracy` of each (prediction, human answers) pair, in 0..1."""
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must have the same length; got {len(predictions)} and {len(references)}."
        )
    return [vqa_accuracy(p, r) for p, r in zip(predictions, references)]


def mean_percent(scores: Iterable[float]) -> float:
    """Mean of per-question accuracies (0..1) in percent, the VQA convention; 0.0 for no scores."""
    scores = list(scores)
    return 100.0 * sum(scores) / len(scores) if scores else 0.0


def accuracy_breakdown(scores: Sequence[float], groups: Sequence[str]) -> dict[str, float]:
    """Accuracy in percent per group (answer type or question type), groups sorted by name.

    `scores[i]` (0..1) belongs to group `groups[i]`.
    """
    if len(scores) != len(groups):
        raise ValueError(f"`scores` and `groups` must have the same length; got {len(scores)} and {len(groups)}.")
    by_group: dict[str, list[float]] = defaultdict(list)
    for score, group in zip(scores, groups):
        by_group[str(group)].append(score)
    return {group: mean_percent(by_group[group]) for group in sorted(by_group)}


__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "EXACT_MATCH",
    "Metric",
    "NUMBER_WORDS",
    "PUNCTUATION",
    "VQA_ACCURACY",
    "VQA_ACCURACY_PATH",
    "accuracy_breakdown",
    "clean_whitespace",
    "exact_match",
    "exact_match_text",
    "mean_percent",
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
    "vqa_accuracy",
    "vqa_accuracy_scores",
]
