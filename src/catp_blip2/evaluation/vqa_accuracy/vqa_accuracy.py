"""VQAv2 accuracy as an `evaluate` metric: `evaluate.load("<this folder>")`.

`evaluate` copies this script into its module cache, so it imports the installed `catp_blip2` package (where the
metric is computed, once: `catp_blip2.evaluation.metrics`) instead of relative modules.
"""

import datasets
import evaluate

from catp_blip2.evaluation.metrics import accuracy_breakdown, mean_percent, vqa_accuracy_scores

_CITATION = """\
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR},
  year={2017}
}
"""

_DESCRIPTION = """\
The official VQAv2 accuracy. The predicted answer is normalised the official way (lower case, number words to
digits, articles removed, contractions given their apostrophes, punctuation removed or spaced out, with the
comma-between-digits and period-before-digit rules). Each of the human answers is left out in turn; the prediction
scores min(1, matching remaining answers / 3); these are averaged per question, and over questions. Reported in
percent (0-100), as VQA results are.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one predicted answer per question.
    references (`list[list[str]]`): the human answers of each question (10 in VQAv2).
    answer_types (`list[str]`, *optional*): each question's answer type ("yes/no", "number", "other"); adds
        `accuracy_by_answer_type`.
    question_types (`list[str]`, *optional*): each question's question type ("what color is the", ...); adds
        `accuracy_by_question_type`.
Returns:
    accuracy (`float`): mean VQA accuracy in percent, 0-100.
    accuracy_by_answer_type (`dict[str, float]`): only when `answer_types` is given.
    accuracy_by_question_type (`dict[str, float]`): only when `question_types` is given.
Examples:
    >>> vqa_accuracy = evaluate.load(str(catp_blip2.evaluation.metrics.VQA_ACCURACY_PATH))
    >>> vqa_accuracy.compute(predictions=["Two"], references=[["2"] * 10])
    {'accuracy': 100.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    """Official VQAv2 accuracy (percent)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://visualqa.org/evaluation.html", "https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions, references, answer_types=None, question_types=None):
        scores = vqa_accuracy_scores(predictions, references)
        result = {"accuracy": mean_percent(scores)}
        if answer_types is not None:
            result["accuracy_by_answer_type"] = accuracy_breakdown(scores, answer_types)
        if question_types is not None:
            result["accuracy_by_question_type"] = accuracy_breakdown(scores, question_types)
        return result
