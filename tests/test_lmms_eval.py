"""CATP inside lmms-eval: the `catp_blip2` model found through the `lmms_eval.models` entry point, its model_args,
batched `generate_until` (equal to batch size 1), `loglikelihood` against the model's own loss,
`generate_until_multi_round`, lmms-eval's VQAv2 scoring beside the official one, and `python -m lmms_eval` end to
end on a tiny model and a local task, scored like `catp-blip2 eval` on the same questions.

Needs the optional extra (`pip install 'catp-blip2[lmms-eval]'`, or `bash scripts/setup.sh --with-lmms-eval`);
skipped only where lmms-eval is not installed (an installed but broken lmms-eval fails), and not even then under
`CATP_REQUIRE_LMMS_EVAL=1` (.ci/run sets it, so CI cannot pass with these tests skipped)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("lmms_eval") is None:
    _WHY = "lmms-eval is not installed: pip install 'catp-blip2[lmms-eval]' (or bash scripts/setup.sh --with-lmms-eval)"
    if os.environ.get("CATP_REQUIRE_LMMS_EVAL") == "1":
        raise RuntimeError(f"CATP_REQUIRE_LMMS_EVAL=1 but {_WHY}")
    pytest.skip(_WHY, allow_module_level=True)

import datasets  # noqa: E402
import torch  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.api.model import lmms  # noqa: E402
from vqa_standin import AGREEMENT, HAND_SCORES, standin_dataset  # noqa: E402

from catp_blip2.cli import main  # noqa: E402
from catp_blip2.evaluation.metrics import exact_match, normalize_answer, vqa_accuracy  # noqa: E402
from catp_blip2.lmms_eval_model import MODEL_ID, model_manifest  # noqa: E402
from catp_blip2.lmms_eval_model.model import CatpBlip2  # noqa: E402
from catp_blip2.toy.tiny import tiny_instructblip_model, tiny_instructblip_processor, tiny_model, tiny_processor  # noqa: E402

QUESTIONS = 8
PROMPT = "Question: {} Short answer:"
TASK = "catp_vqav2_standin"
# The same decoding on both sides: beam search, 1 to 3 new tokens, no length normalisation, no newline stop.
GENERATION = {"max_new_tokens": 3, "min_new_tokens": 1, "num_beams": 2, "length_penalty": 0.0, "do_sample": False}
EVAL_GENERATION = ["--num-beams", "2", "--max-new-tokens", "3", "--min-new-tokens", "1", "--length-penalty", "0",
                   "--no-newline-eos", "--prompt", PROMPT, "--question-format", "raw"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny saved models (processor beside them): BLIP-2 OPT and T5, InstructBLIP OPT."""
    root = tmp_path_factory.mktemp("lmms_models")
    built = {
        "opt": (tiny_model("opt", seed=0), tiny_processor()),
        "t5": (tiny_model("t5", seed=0), tiny_processor()),
        "instructblip": (tiny_instructblip_model("opt", seed=0), tiny_instructblip_processor()),
    }
    for name, (model, processor) in built.items():
        model.save_pretrained(str(root / name))
        processor.save_pretrained(str(root / name))
    return {name: root / name for name in built}


@pytest.fixture(scope="module")
def data():
    return standin_dataset(QUESTIONS)


def _model(folder: Path, data, **model_args) -> CatpBlip2:
    model = CatpBlip2(pretrained=str(folder), **model_args)
    model.task_dict = {"t": {"validation": data}}  # what lmms-eval's evaluator sets
    return model


def _visual(doc):
    return [doc["image"]]


def _requests(kind: str, arguments) -> list[Instance]:
    return [
        Instance(request_type=kind, arguments=arguments(i), idx=0, metadata={"task": "t", "doc_id": i, "repeats": 1})
        for i in range(QUESTIONS)
    ]


def _generate_requests(data, gen_kwargs: dict) -> list[Instance]:
    return _requests("generate_until", lambda i: (PROMPT.format(data[i]["question"]), dict(gen_kwargs), _visual, i, "t", "validation"))


def test_entry_point_registers_the_model():
    from importlib.metadata import entry_points

    from lmms_eval.models import get_model, list_available_models

    (point,) = [p for p in entry_points(group="lmms_eval.models") if p.name == MODEL_ID]
    assert point.value == "catp_blip2.lmms_eval_model:model_manifest"
    manifest = model_manifest()
    assert (manifest.model_id, manifest.simple_class_path) == ("catp_blip2", "catp_blip2.lmms_eval_model.model.CatpBlip2")
    assert MODEL_ID in list_available_models()
    assert get_model(MODEL_ID) is CatpBlip2 and issubclass(CatpBlip2, lmms) and CatpBlip2.is_simple


def test_model_args(folders, data):
    # As lmms-eval builds it: model_args as one string (typed by lmms-eval), batch size and device from its CLI.
    model = CatpBlip2.create_from_arg_string(
        f"pretrained={folders['opt']},pruning_method=catp,num_kept_query_tokens=8,vote_layers=[0,1],"
        "vote_aggregation=soft,dtype=float32,prompt=Q: {} A:",
        {"batch_size": "4", "device": "cpu"},
    )
    config = model.model.config
    assert (config.pruning_method, config.num_kept_query_tokens, config.vote_layers, config.vote_aggregation) == (
        "catp", 8, [0, 1], "soft")
    assert model.batch_size == 4 and model.device == torch.device("cpu") and model.prompt == "Q: {} A:"
    with pytest.raises(ValueError, match="num_kept_query_tokens"):
        CatpBlip2(pretrained=str(folders["opt"]), num_kept_query_tokens=40)
    with pytest.raises(ValueError, match=r"model_args \['temperture'\] are not arguments of catp_blip2"):
        CatpBlip2(pretrained=str(folders["opt"]), temperture=0)
    with pytest.raises(ValueError, match="`--batch_size` must be an integer >= 1 for catp_blip2; got 'auto'"):
        CatpBlip2(pretrained=str(folders["opt"]), batch_size="auto")
    with pytest.raises(ValueError, match="`prompt` must contain exactly one"):
        CatpBlip2(pretrained=str(folders["opt"]), prompt="no placeholder")


@pytest.mark.parametrize("family", ["opt", "t5", "instructblip"])
def test_generate_until_batched_equals_batch_size_1(folders, data, family):
    requests = lambda: _generate_requests(data, GENERATION)  # noqa: E731
    one = _model(folders[family], data, batch_size=1, num_kept_query_tokens=8).generate_until(requests())
    four = _model(folders[family], data, batch_size=4, num_kept_query_tokens=8).generate_until(requests())
    assert one == four and len(one) == QUESTIONS
    assert all(isinstance(answer, str) for answer in one) and any(one)


def test_generate_until_honours_the_task_settings(folders, data):
    model = _model(folders["opt"], data, batch_size=4)
    long = model.generate_until(_generate_requests(data, {"max_new_tokens": 4, "min_new_tokens": 4}))
    short = model.generate_until(_generate_requests(data, {"max_new_tokens": 1, "min_new_tokens": 1}))
    assert all(len(answer.split()) == 4 for answer in long) and all(len(answer.split()) == 1 for answer in short)
    assert [a.split()[0] for a in long] == short  # greedy: the first word is the same
    # `until`: each answer is cut at the first stop string.
    stop = long[0].split()[1]
    cut = model.generate_until(_generate_requests(data, {"max_new_tokens": 4, "min_new_tokens": 4, "until": [stop]}))
    assert cut == [answer.split(stop)[0].strip() for answer in long]
    # do_sample with a temperature samples (seeded: reproducible).
    torch.manual_seed(0)
    sampled = model.generate_until(_generate_requests(data, {"max_new_tokens": 4, "temperature": 5.0, "do_sample": True}))
    torch.manual_seed(0)
    assert sampled == model.generate_until(_generate_requests(data, {"max_new_tokens": 4, "temperature": 5.0, "do_sample": True}))
    assert sampled != long


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_loglikelihood_is_the_models_loss(folders, data, family):
    greedy = {"max_new_tokens": 2, "min_new_tokens": 2, "num_beams": 1}
    model = _model(folders[family], data, batch_size=3, num_kept_query_tokens=8)
    answers = model.generate_until(_generate_requests(data, greedy))
    # The greedy answers where they are two words (the random tiny T5 answers with <pad> tokens, decoded as "").
    said = [len(answer.split()) == 2 for answer in answers]
    continuations = [answer if ok else "red circle" for answer, ok in zip(answers, said)]
    arguments = lambda i: (PROMPT.format(data[i]["question"]), " " + continuations[i], _visual, i, "t", "validation")  # noqa: E731
    scores = model.loglikelihood(_requests("loglikelihood", arguments))
    assert all(is_greedy for (_, is_greedy), ok in zip(scores, said) if ok)  # a greedy answer is the greedy continuation
    assert family == "t5" or all(said)
    single = _model(folders[family], data, batch_size=1, num_kept_query_tokens=8).loglikelihood(_requests("loglikelihood", arguments))
    assert [s for s, _ in single] == pytest.approx([s for s, _ in scores], abs=1e-4)
    # The same number from the model's own mean loss over the continuation's tokens (stock labels, k = 8).
    processor, core = model.processor, model.model
    prompt, image = PROMPT.format(data[0]["question"]), data[0]["image"].convert("RGB")
    with torch.no_grad():
        if family == "opt":
            batch = processor(images=[image], text=[prompt + " " + continuations[0]], return_tensors="pt")
            labels = torch.full_like(batch["input_ids"], -100)
            labels[0, -2:] = batch["input_ids"][0, -2:]
        else:
            batch = processor(images=[image], text=[prompt], return_tensors="pt")
            labels = processor.tokenizer(" " + continuations[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
        loss = core(**batch, labels=labels).loss
    assert labels.ne(-100).sum().item() == 2
    assert scores[0][0] == pytest.approx(float(loss) * 2, rel=1e-4)
    if family == "t5":
        return
    # Multiple choice the lmms-eval way: the argmin of the losses picks the greedy answer among choices of its
    # length that share its first word (the greedy second word is the likeliest after it).
    first, second = answers[0].split()
    choices = [f"{first} {w}" for w in ("red", "circle", "left") if w != second][:2]
    choices.insert(1, answers[0])
    losses = model.loglikelihood([
        Instance("loglikelihood", (prompt, " " + choice, _visual, 0, "t", "validation"), idx=j,
                 metadata={"task": "t", "doc_id": 0, "repeats": 1})
        for j, choice in enumerate(choices)
    ])
    assert min(range(3), key=lambda j: losses[j][0]) == 1


def test_generate_until_multi_round(folders, data):
    model = _model(folders["opt"], data, batch_size=4)
    greedy = {"max_new_tokens": 2, "num_beams": 1}
    rounds_of = {i: 1 + i % 3 for i in range(QUESTIONS)}  # documents end after 1, 2 or 3 rounds

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        index = data["question_id"].index(doc["question_id"])
        if round_idx >= rounds_of[index]:
            return None, None, True, previous_output, None
        # The next round asks again with the previous answer in the prompt.
        return [doc["image"]], PROMPT.format(f"{doc['question']} {previous_output[-1]} ?"), False, previous_output, {"round": round_idx}

    requests = [
        Instance("generate_until_multi_round",
                 (PROMPT.format(data[i]["question"]), dict(greedy), _visual, doc_to_text, i, "t", "validation"), idx=0,
                 metadata={"task": "t", "doc_id": i, "repeats": 1})
        for i in range(QUESTIONS)
    ]
    rounds = model.generate_until_multi_round(requests)
    assert [len(r) for r in rounds] == [rounds_of[i] for i in range(QUESTIONS)]
    # Round by round the same as single generate_until calls.
    first = model.generate_until(_generate_requests(data, greedy))
    assert [r[0] for r in rounds] == first
    second = model.generate_until([
        Instance("generate_until", (PROMPT.format(f"{data[i]['question']} {first[i]} ?"), dict(greedy), _visual, i, "t", "validation"),
                 idx=0, metadata={"task": "t", "doc_id": i, "repeats": 1})
        for i in range(QUESTIONS)
    ])
    assert [r[1] for i, r in enumerate(rounds) if rounds_of[i] > 1] == [second[i] for i in range(QUESTIONS) if rounds_of[i] > 1]


def test_lmms_eval_vqav2_scoring_differs_from_the_official_one():
    """lmms-eval's vqav2 tasks normalise the human answers (punctuation, digits, articles) always; the official
    metric (`catp-blip2 eval`) leaves them as they are when all agree, and only strips punctuation when they
    disagree."""
    from lmms_eval.tasks.vqav2.utils import vqav2_process_results

    def lmms(prediction, answers):
        doc = {"question_id": 1, "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j} for j, a in enumerate(answers)]}
        return vqav2_process_results(doc, [prediction])["exact_match"]

    cases = [
        # (prediction, answers, official, lmms-eval)
        ("t-shirt", ["t-shirt"] * 10, 0.0, 1.0),  # all agree: the answer keeps its hyphen, the prediction loses it
        ("dog", ["a dog"] * 5 + ["cat"] * 5, 0.0, 1.0),  # they disagree: articles stay in the answers
        ("Two", ["2"] * 10, 1.0, 1.0),  # the prediction is normalised by both
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6, 0.6),
    ]
    for prediction, answers, official, theirs in cases:
        assert vqa_accuracy(prediction, answers) == pytest.approx(official)
        assert lmms(prediction, answers) == pytest.approx(theirs)


def test_gqa_exact_match_equals_lmms_evals():
    from lmms_eval.api.metrics import exact_match_hf_evaluate

    pairs = [("Red.", "red"), ("the left", "left"), ("No!", "no"), ("t-shirt", "tshirt"), ("two", "2"), (" yes", "yes")]
    for prediction, answer in pairs:
        theirs = exact_match_hf_evaluate([prediction], [answer], ignore_case=True, ignore_punctuation=True)["exact_match"]
        assert exact_match(prediction, [answer]) == theirs, (prediction, answer)


# ---- python -m lmms_eval end to end ------------------------------------------------------------------------------

TASK_YAML = """\
task: {task}
dataset_path: {data}
dataset_kwargs:
  load_from_disk: true
test_split: validation
output_type: generate_until
doc_to_visual: !function lmms_eval.tasks.vqav2.utils.vqav2_doc_to_visual
doc_to_text: !function lmms_eval.tasks.vqav2.utils.vqav2_doc_to_text
doc_to_target: "answer"
process_results: !function lmms_eval.tasks.vqav2.utils.vqav2_process_results_val
generation_kwargs: {generation}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: "Question: "
    post_prompt: " Short answer:"
metadata:
  - version: 0.0
"""


def _with_answers(data, predictions: list[str]):
    """The stand-in with each question's 10 answers made from its predicted answer (normalised): n of them, n
    cycling through AGREEMENT, and "zebra" (no word of the tiny model) for the rest; scores are then HAND_SCORES[n]
    under both metrics."""

    def answers(row, index):
        n = AGREEMENT[index % len(AGREEMENT)]
        strings = [normalize_answer(predictions[index])] * n + ["zebra"] * (10 - n)
        return {"answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(strings)]}

    return data.map(answers, with_indices=True)


def test_lmms_eval_cli_end_to_end_matches_catp_blip2_eval(folders, data, tmp_path):
    model = folders["opt"]
    fast = ["--methods", "catp", "--keep", "8", "--batch-size", "4", *EVAL_GENERATION]
    # 1. catp-blip2 eval: the answers of CATP at k = 8.
    data.save_to_disk(str(tmp_path / "first"))
    assert main(["eval", "--model", str(model), "--dataset", str(tmp_path / "first"), "--out", str(tmp_path / "eval1"), *fast]) == 0
    results = json.loads((tmp_path / "eval1" / "results.json").read_text())
    (entry,) = [e for e in results["results"] if e["method"] == "catp"]
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "eval1" / entry["predictions_file"]).read_text().splitlines()]
    # 2. The same questions with answers built from those predictions (so the scores are not 0), for both tools.
    scored = _with_answers(data, predictions)
    datasets.DatasetDict({"validation": scored}).save_to_disk(str(tmp_path / "data"))
    scored.save_to_disk(str(tmp_path / "second"))
    assert main(["eval", "--model", str(model), "--dataset", str(tmp_path / "second"), "--out", str(tmp_path / "eval2"), *fast]) == 0
    (ours,) = [e for e in json.loads((tmp_path / "eval2" / "results.json").read_text())["results"] if e["method"] == "catp"]
    expected = 100 * sum(HAND_SCORES[AGREEMENT[i % 5]] for i in range(QUESTIONS)) / QUESTIONS
    assert ours["accuracy"] == pytest.approx(expected)  # 83.75

    # 3. lmms-eval on a local task over the same DatasetDict, reusing lmms_eval.tasks.vqav2.utils.
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(
        TASK_YAML.format(task=TASK, data=tmp_path / "data", generation=json.dumps(GENERATION))
    )
    out = tmp_path / "lmms"
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "catp_blip2",
        "--model_args", f"pretrained={model},pruning_method=catp,num_kept_query_tokens=8,device=cpu",
        "--tasks", TASK, "--include_path", str(tasks), "--batch_size", "4", "--output_path", str(out), "--log_samples",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    # lmms-eval's CLI exits 0 on every error: its results file is the proof that it ran.
    result_files = sorted(out.glob("*/*_results.json"))
    assert done.returncode == 0 and result_files, (done.stdout[-3000:], done.stderr[-3000:])
    theirs = json.loads(result_files[-1].read_text())["results"][TASK]["exact_match,none"]
    (samples_file,) = out.glob(f"*/*_samples_{TASK}.jsonl")
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    answers = [s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"] for s in samples]
    assert answers == predictions  # question for question
    assert 100 * theirs == pytest.approx(ours["accuracy"])
