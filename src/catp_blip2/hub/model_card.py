"""The model card (README.md) of an exported variant: huggingface_hub `ModelCard` rendered from the Jinja template
`model_card.md` beside this module (package data, so an installed wheel carries it).

Metadata: base_model (when the variant's base is a Hub id), `library_name: transformers`, pipeline_tag, tags, the
base model's license, and a model-index of the measured accuracy when a `catp-blip2 eval` results file is given.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, hf_hub_download

from ..configuration_catp import PRUNING_SETTINGS, CatpConfig
from ..scoring import method_settings
from ..pipeline_catp import DEFAULT_VQA_PROMPT
from .variants import Variant, is_hub_model_id

TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card.md"
PIPELINE_TAG = "visual-question-answering"
TAGS = [
    "catp",
    "token-pruning",
    "blip-2",
    "visual-question-answering",
    "image-text-to-text",
    "arxiv:2404.08567",
    "arxiv:2301.12597",
]
# The model family a CATP config's model_type names: (name, paper, extra tags).
FAMILY_TEXT = {
    "catp_blip2": ("BLIP-2", "https://arxiv.org/abs/2301.12597", []),
    "catp_instructblip": ("InstructBLIP", "https://arxiv.org/abs/2305.06500", ["instructblip", "arxiv:2305.06500"]),
    "catp_instructblipvideo": (
        "InstructBLIP-Video", "https://arxiv.org/abs/2305.06500", ["instructblip", "video", "arxiv:2305.06500"]
    ),
}
# Used when neither the variant file nor the base model's card states a license. Every Salesforce/blip2-*
# checkpoint is released under MIT (their model cards say `license: mit`).
DEFAULT_LICENSES = {"Salesforce/blip2-": "mit"}
FALLBACK_LICENSE = "other"

# VQAv2 accuracy of BLIP-2 OPT-2.7b in the CATP paper (10% val sample; first cross-attention layer votes).
PAPER_OPT_27B = {"unpruned": 52.14, 16: 44.17, 8: 35.44, 4: 30.17}


def _card_license(card_path: Path) -> str | None:
    try:
        return ModelCard.load(card_path, ignore_metadata_errors=True).data.license
    except Exception:  # an unreadable card is no license statement
        return None


def resolve_license(variant: Variant, base_location: str) -> tuple[str, str]:
    """The license of the exported model, and where it came from.

    Order: the variant file's `license`; the base checkpoint's model card (README.md of a local base folder, or of
    a Hub base as far as the local cache or the Hub can give it); `DEFAULT_LICENSES` by base id prefix;
    `"other"` (with a warning on stderr).
    """
    if variant.license:
        return variant.license, f"variant file {variant.source or variant.name}"
    local_card = Path(base_location) / "README.md"
    if local_card.is_file():
        found = _card_license(local_card)
        if found:
            return found, f"model card of {base_location}"
    elif is_hub_model_id(base_location):
        try:
            found = _card_license(Path(hf_hub_download(base_location, "README.md")))
        except Exception:  # offline or unreachable: fall through to the documented default
            found = None
        if found:
            return found, f"model card of {base_location}"
    for prefix, license_ in DEFAULT_LICENSES.items():
        if variant.base_model.startswith(prefix):
            return license_, f"default for {prefix}* checkpoints"
    print(
        f"warning: no license found for base {variant.base_model!r}; the card says {FALLBACK_LICENSE!r}. "
        "Add \"license\" to the variant file.",
        file=sys.stderr,
    )
    return FALLBACK_LICENSE, "fallback"


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `catp-blip2 eval` results file and check its schema.

    Schema: {"model": str, "dataset": str | {"name"/"path"/"id", "split", "config"}, "num_questions": int,
    "results": [{"method": str, "num_kept_query_tokens": int | null, "accuracy": number, ...}, ...]}.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Results file {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"Results file {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or not data["results"]:
        raise ValueError(
            f"Results file {str(path)!r} must be a JSON object with a non-empty `results` list (as written by "
            "`catp-blip2 eval`)."
        )
    for i, row in enumerate(data["results"]):
        if not isinstance(row, dict) or not {"method", "num_kept_query_tokens", "accuracy"} <= set(row):
            raise ValueError(
                f"Results file {str(path)!r}: results[{i}] must have `method`, `num_kept_query_tokens` and "
                f"`accuracy`; got {row!r}."
            )
        if not isinstance(row["accuracy"], (int, float)) or isinstance(row["accuracy"], bool):
            raise ValueError(f"Results file {str(path)!r}: results[{i}].accuracy must be a number; got {row['accuracy']!r}.")
    return data


def _dataset_fields(dataset: Any) -> tuple[str, str | None, str | None]:
    """(id, config, split) of the results' `dataset` entry."""
    if isinstance(dataset, dict):
        name = dataset.get("id") or dataset.get("path") or dataset.get("name") or "unknown"
        return str(name), dataset.get("config"), dataset.get("split")
    return (str(dataset) if dataset else "unknown"), None, None


def _row_matches(row: dict[str, Any], config: CatpConfig) -> bool:
    """Whether a results row was measured with this config's pruning (settings the row names must agree)."""
    if row["method"] != config.pruning_method:
        return False
    if config.pruning_method != "none":
        if (row["num_kept_query_tokens"] is None) != (config.num_kept_query_tokens is None):
            return False
        if row["num_kept_query_tokens"] is not None and row["num_kept_query_tokens"] != config.kept_query_tokens:
            return False
    for key in method_settings():  # the methods' own settings; method and k are compared above
        if key in row and row[key] != getattr(config, key):
            return False
    return True


def _accuracy_text(value: float, percent: bool) -> str:
    return f"{value:.2f}" if percent else f"{value:.4f}"


# What a results file's "metric" is called on the card, and how it is computed.
METRIC_TEXT = {
    "vqa_accuracy": ("VQA accuracy", "each of the 10 human answers left out in turn, min(1, matches / 3), averaged"),
    "exact_match": ("Exact match", "the answer equals the reference answer, case and punctuation ignored"),
}


@dataclass
class ResultsSection:
    """What a results file adds to the card: the accuracy table's rows, the model-index entries of the rows measured
    with this export's settings, and the table's caption (dataset, model, number of questions)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    eval_results: list[EvalResult] = field(default_factory=list)
    dataset_text: str | None = None
    model_text: str | None = None
    num_questions: int | None = None
    metric_name: str = "VQA accuracy"
    metric_description: str = METRIC_TEXT["vqa_accuracy"][1]

    @property
    def this_result(self) -> bool:
        """Whether some row was measured with this export's settings."""
        return any(row["this"] for row in self.rows)


def _eval_result(
    row: dict[str, Any], dataset: tuple[str, str | None, str | None], percent: bool, metric_name: str
) -> EvalResult:
    """The model-index entry of one results row."""
    dataset_id, dataset_config, dataset_split = dataset
    return EvalResult(
        task_type=PIPELINE_TAG,
        task_name="Visual Question Answering",
        dataset_type=dataset_id,
        dataset_name=dataset_id,
        dataset_config=dataset_config,
        dataset_split=dataset_split,
        metric_type="accuracy",
        metric_name=metric_name + (" (%)" if percent else ""),
        metric_value=round(float(row["accuracy"]), 4),
    )


def results_section(results: dict[str, Any] | None, config: CatpConfig) -> ResultsSection:
    """The card's accuracy table and model-index from a `catp-blip2 eval` results file (empty without one)."""
    section = ResultsSection()
    if results is None:
        return section
    dataset = _dataset_fields(results.get("dataset"))
    dataset_id, _, dataset_split = dataset
    section.dataset_text = f"`{dataset_id}`" + (f" ({dataset_split} split)" if dataset_split else "")
    section.model_text = results.get("model")
    section.num_questions = results.get("num_questions")
    section.metric_name, section.metric_description = METRIC_TEXT.get(
        results.get("metric", "vqa_accuracy"), (str(results.get("metric")), "as `catp-blip2 eval` defines it")
    )
    total = config.num_query_tokens
    # Accuracy in percent (VQA convention) or as a fraction: whatever the file holds, shown as it is.
    percent = any(row["accuracy"] > 1 for row in results["results"])
    for row in results["results"]:
        this = _row_matches(row, config)
        row_kept = total if row["method"] == "none" else row["num_kept_query_tokens"]
        if row_kept is None:  # per-sample k (keep_score_mass): the mean it kept
            mean = row.get("mean_kept_query_tokens")
            row_kept = f"{mean:.1f} (mean)" if mean is not None else "per sample"
        section.rows.append(
            {"method": row["method"], "kept": f"{row_kept} / {total}", "accuracy": _accuracy_text(row["accuracy"], percent), "this": this}
        )
        if this:
            section.eval_results.append(_eval_result(row, dataset, percent, section.metric_name))
    return section


def paper_reference(variant: Variant, config: CatpConfig) -> str | None:
    """The CATP paper's accuracy for this setting, when the paper measured it (BLIP-2 OPT-2.7b, its defaults)."""
    kept = config.kept_query_tokens
    if not (
        variant.base_model == "Salesforce/blip2-opt-2.7b"
        and config.pruning_method == "catp"
        and config.vote_layers == "first"
        and config.image_token_weighting == "none"
        and config.vote_aggregation == "rank"
        and kept in PAPER_OPT_27B
    ):
        return None
    return (
        f"For reference, the CATP paper reports VQAv2 accuracy of {PAPER_OPT_27B[kept]} for this setting "
        f"({PAPER_OPT_27B['unpruned']} unpruned; 10% validation sample, beam search with 5 beams); those are the "
        "paper's numbers, not measurements of this export."
    )


def aggregation_text(config: CatpConfig) -> str:
    """How the votes are counted, in words (the card's method section)."""
    text = (
        f"Borda points: the query it attends least gets 0, the most {config.num_query_tokens - 1}"
        if config.vote_aggregation == "rank"
        else "soft votes: each voter splits one vote over the queries in proportion to its attention"
    )
    if config.image_token_weighting == "vit_attention":
        text += "; each image token's votes are weighted by the attention it receives in the ViT's last layer"
    return text


def settings_table(config: CatpConfig) -> list[tuple[str, str]]:
    """(setting, JSON value) of every pruning setting, in the registry's order (read live)."""
    return [(key, json.dumps(getattr(config, key))) for key in PRUNING_SETTINGS]


def build_model_card(
    variant: Variant,
    config: CatpConfig,
    repo_id: str,
    license_: str,
    results: dict[str, Any] | None = None,
    variant_file: str | None = None,
) -> ModelCard:
    """Render the card of `variant` exported with `config`, to be published as `repo_id`."""
    base_model_id = variant.base_model if is_hub_model_id(variant.base_model) else None
    kept, total = config.kept_query_tokens, config.num_query_tokens
    repo_name = repo_id.split("/")[-1]
    section = results_section(results, config)
    family_name, family_paper, family_tags = FAMILY_TEXT.get(config.model_type, FAMILY_TEXT["catp_blip2"])
    card_data = ModelCardData(
        base_model=base_model_id,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license_,
        tags=[*TAGS, *family_tags],
        model_name=repo_name if section.eval_results else None,
        eval_results=section.eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        repo_name=repo_name,
        repo_id=repo_id,
        description=variant.description
        or f"{family_name} with {kept} of {total} query tokens kept by {config.pruning_method}.",
        family_name=family_name,
        family_paper=family_paper,
        base_model_id=base_model_id,
        variant_file=variant_file or (str(variant.source) if variant.source else variant.name),
        num_query_tokens=total,
        kept=kept,
        kept_fraction=f"{kept / total:.0%}" if kept != total else "all of them",
        removed=total - kept,
        pruning_method=config.pruning_method,
        aggregation_text=aggregation_text(config),
        settings=settings_table(config),
        vqa_prompt=DEFAULT_VQA_PROMPT,
        example_prompt=DEFAULT_VQA_PROMPT.format("how many cats are there?"),
        results=section.rows,
        this_result=section.this_result,
        results_dataset=section.dataset_text,
        results_model=section.model_text,
        results_num_questions=section.num_questions,
        metric_name=section.metric_name,
        metric_description=section.metric_description,
        paper_reference=paper_reference(variant, config),
    )


__all__ = ["DEFAULT_LICENSES", "TAGS", "TEMPLATE_PATH", "build_model_card", "load_results", "resolve_license"]
