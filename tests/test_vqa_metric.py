"""The VQAv2 metric: official normalisation corner cases, hand-checked accuracies, the `evaluate` module."""

from __future__ import annotations

import pytest

from catp_blip2.evaluation.metrics import (
    CONTRACTIONS,
    accuracy_breakdown,
    mean_percent,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    vqa_accuracy,
    vqa_accuracy_scores,
)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),  # number words to digits, case
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("isnt", "isn't"),  # contraction without apostrophe gets it
        ("isn't", "isn't"),  # apostrophe kept (not a punctuation mark here)
        ("couldnt've", "couldn't've"),
        ("couldntve", "couldntve"),  # the official table drops one apostrophe only
        ("somebody'd", "somebodyd"),  # quirk of the official table, kept
        ("a dog", "dog"),  # articles removed
        ("The Dog", "dog"),
        ("an apple and the pear", "apple and pear"),
        ("1,000", "1000"),  # comma between digits: punctuation deleted
        ("3.5", "3.5"),  # period before a digit stays
        ("dog.", "dog"),  # other periods go
        ("yes!", "yes"),  # trailing punctuation
        ("yes, it is", "yes it is"),  # mark next to a space: deleted
        ("black/white", "black white"),  # mark between words: becomes a space
        ("a,b", "b"),  # -> "a b" -> article "a" removed
        ("\tRed\n", "red"),  # newlines and tabs, strip
        ("  many   spaces ", "many spaces"),
        ("t-shirt", "t shirt"),
        ("(left)", "left"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_punctuation_rule_is_judged_on_the_original_text():
    # "1,5" has a comma between digits, so EVERY mark is deleted, "/" included, not spaced out.
    assert process_punctuation("1,5 a/b") == "15 ab"
    # A mark touching no space becomes a space (stripping is process_digit_article's job, as is case).
    assert process_punctuation("Yes?") == "Yes "
    assert process_digit_article("Yes") == "yes"


def test_contraction_table_shape():
    assert CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["yall'll"] == "y'all'll" and CONTRACTIONS["y'allll"] == "y'all'll"
    assert all(key == key.lower() for key in CONTRACTIONS)  # the text is lower-cased before the lookup
    assert "lets" not in CONTRACTIONS and "shes" not in CONTRACTIONS  # not in the official table


@pytest.mark.parametrize(
    ("matches", "expected"),
    # Leave-one-out over 10 answers: m matches -> (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10.
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_accuracy_leave_one_out(matches, expected):
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_accuracy_normalises_the_prediction():
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("a dog", [{"answer": "dog", "answer_confidence": "yes", "answer_id": i} for i in range(10)]) == 1.0
    assert vqa_accuracy("isnt", ["isn't"] * 10) == 1.0


def test_human_answers_get_punctuation_processing_only_when_they_disagree():
    # Official behaviour: identical human answers are compared as given ("t-shirt" vs the prediction's "t shirt")...
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    # ...differing ones have their punctuation processed ("t-shirt" -> "t shirt")...
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 5 + ["shirt"] * 5) == 1.0
    # ...and only that: "yes!" -> "yes " keeps its space, so it never matches.
    assert vqa_accuracy("yes", ["yes!"] * 5 + ["no"] * 5) == 0.0


def test_scores_mean_and_breakdown():
    scores = vqa_accuracy_scores(["2", "cat", "no"], [["2"] * 10, ["cat"] * 2 + ["dog"] * 8, ["yes"] * 10])
    assert scores == pytest.approx([1.0, 0.6, 0.0])
    assert mean_percent(scores) == pytest.approx(160 / 3)
    assert accuracy_breakdown(scores, ["number", "other", "yes/no"]) == pytest.approx(
        {"number": 100.0, "other": 60.0, "yes/no": 0.0}
    )
    assert accuracy_breakdown([1.0, 0.0], ["b", "b"]) == {"b": 50.0}


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="`answers`"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="`answers`"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="`prediction`"):
        vqa_accuracy(None, ["yes"])
    with pytest.raises(ValueError, match="same length"):
        vqa_accuracy_scores(["a"], [])
    with pytest.raises(ValueError, match="`groups`"):
        accuracy_breakdown([1.0], [])


def test_evaluate_module_equals_plain_functions():
    import evaluate

    from catp_blip2.evaluation.metrics import VQA_ACCURACY_PATH

    predictions = ["Two", "a dog", "yes!", "isnt", "3.5", "1,000", "left"]
    references = [
        ["2"] * 10,
        ["dog"] * 3 + ["cat"] * 7,
        ["yes"] * 10,
        ["isn't"] * 2 + ["is not"] * 8,
        ["3.5"] * 10,
        ["1000"] * 10,
        ["right"] * 10,
    ]
    answer_types = ["number", "other", "yes/no", "other", "number", "number", "other"]
    metric = evaluate.load(str(VQA_ACCURACY_PATH))
    result = metric.compute(predictions=predictions, references=references, answer_types=answer_types)
    scores = vqa_accuracy_scores(predictions, references)
    assert result["accuracy"] == pytest.approx(mean_percent(scores))
    assert result["accuracy_by_answer_type"] == pytest.approx(accuracy_breakdown(scores, answer_types))
    assert set(result) == {"accuracy", "accuracy_by_answer_type"}
    # Loaded by the script's own path too (what `evaluate` copies).
    again = evaluate.load(str(VQA_ACCURACY_PATH / "vqa_accuracy.py"))
    assert again.compute(predictions=predictions, references=references)["accuracy"] == pytest.approx(mean_percent(scores))
