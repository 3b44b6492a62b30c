"""`CatpBlip2`: a CATP checkpoint (or a stock BLIP-2 / InstructBLIP one, pruned by the given settings) as an
lmms-eval simple model.

`--model_args` (lmms-eval parses `key=value,key=value`; values `true`/`false`, numbers and JSON lists such as
`vote_layers=[0,2]` are typed, `None` means None):

- `pretrained`: checkpoint folder, Hub id or "embedded" (as `catp-blip2 eval --model`); `processor`: another
  processor folder or Hub id (default: the checkpoint's);
- `pruning_method`, `num_kept_query_tokens` and any other pruning setting (`catp_blip2.PRUNING_SETTINGS`, and a
  family's own such as `num_frames`): set on the loaded config and checked by it, on top of what the checkpoint says;
- `dtype` (`auto`, `float32`, `float16`, `bfloat16`), `device` (default: lmms-eval's `--device`, else accelerate's
  device for this process), `device_map` (e.g. `auto`), `batch_size` (lmms-eval's `--batch_size`), `num_threads`;
- what a task's `generation_kwargs` leave out: `max_new_tokens` (32), `min_new_tokens` (0), `num_beams` (1),
  `length_penalty` (1.0), `newline_eos` (false: also stop at a newline token where the tokenizer has one, the
  reference code's OPT setting), and `prompt` ("{}": the task's text as it is; e.g. "Question: {} Short answer:").

`generate_until` batches requests with the same generation settings (`--batch_size N`, left padding for
decoder-only language models: answers equal batch size 1), through the answer loop of `catp-blip2 eval`
(`evaluation.generation.generate_answers`); it honours the task's `until` (each answer is cut at the first stop
string), `max_new_tokens`, `min_new_tokens`, `num_beams`, `length_penalty`, `do_sample` (sampling where it is true,
or where `temperature` > 0 and `do_sample` is not given), `temperature`, `top_p`, `top_k`, `repetition_penalty`.
`loglikelihood` returns (loss, is_greedy): the loss is the continuation's negative log-likelihood given the image
and context, summed over its tokens (lmms-eval's multiple-choice scoring takes the argmin of these). BLIP-2 reads
one image: a document with several is answered about them side by side on one canvas.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from lmms_eval import utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from ..checkpoints import DTYPES, load_catp_model, resolve_checkpoint
from ..configuration_catp import pruning_settings
from ..evaluation.command import check_processor, set_cpu_threads
from ..evaluation.generation import GenerationSettings, generate_answers

IMAGE_TAG = "<image>"  # some lmms-eval tasks put it in the text; BLIP-2's processor places the image itself
# transformers generate() arguments a task's generation_kwargs may set beyond GenerationSettings' and sampling's.
PASSED_THROUGH = ("top_k", "repetition_penalty", "no_repeat_ngram_size", "early_stopping")
MAX_ROUNDS = 100  # generate_until_multi_round stops a document that never signals its end


def _value(value: Any) -> Any:
    """A model_args value: JSON lists and null where the text is one, surrounding quotes removed."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if text in ("None", "null"):
        return None
    if text.startswith("[") and text.endswith("]"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


class CatpBlip2(lmms):
    """CATP BLIP-2 (and InstructBLIP) for lmms-eval; see the module docstring for `--model_args`."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "embedded",
        processor: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        num_threads: int | None = None,
        prompt: str = "{}",
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        newline_eos: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__()
        from accelerate import PartialState
        from transformers import AutoProcessor

        del max_batch_size  # lmms-eval passes it; batch sizes here are fixed (`--batch_size N`)
        settings = {key: _value(value) for key, value in settings.items()}
        dtype, prompt = _value(dtype), _value(prompt)
        if dtype not in DTYPES:
            raise ValueError(f"model_args `dtype` must be one of {list(DTYPES)}; got {dtype!r}.")
        if not isinstance(prompt, str) or prompt.count("{}") != 1:
            raise ValueError(f"model_args `prompt` must contain exactly one '{{}}' where the task's text goes; got {prompt!r}.")
        try:
            self.batch_size_per_gpu = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"`--batch_size` must be an integer >= 1 for catp_blip2; got {batch_size!r}.") from None
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"`--batch_size` must be an integer >= 1; got {batch_size!r}.")
        self.defaults = GenerationSettings(
            num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            length_penalty=length_penalty, newline_eos=bool(newline_eos),
        )
        self.defaults.check()
        self.prompt = prompt

        state = PartialState()
        self._device = torch.device(state.device if state.num_processes > 1 or device is None else device)
        self._rank, self._world_size = state.process_index, state.num_processes
        load_kwargs = {"device_map": _value(device_map)} if device_map else {}
        model = load_catp_model(str(pretrained), "pretrained", dtype=dtype, **load_kwargs)
        family = (*pruning_settings(), *getattr(type(model.config), "family_settings", ()))
        unknown = sorted(set(settings) - set(family))
        if unknown:
            raise ValueError(
                f"model_args {unknown} are not arguments of catp_blip2: give pretrained, processor, dtype, device, "
                f"device_map, num_threads, prompt, max_new_tokens, min_new_tokens, num_beams, length_penalty, "
                f"newline_eos, or a pruning setting of {list(family)}."
            )
        for key, value in settings.items():
            setattr(model.config, key, value)
        model.config.check_pruning_settings()
        self._model = model if device_map else model.to(self._device)
        self._model.eval()
        self._device = self._model.device  # where the inputs go (the first device of a device_map)
        source = processor or resolve_checkpoint(str(pretrained), "pretrained")
        try:
            self._processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise ValueError(f"model_args `processor` {str(source)!r} could not be loaded: {error}") from error
        check_processor(self._processor, self._model.config, str(source))
        self._tokenizer = self._processor.tokenizer
        self.decoder_only = bool(getattr(self._model.config, "use_decoder_only_language_model", True))
        set_cpu_threads(self._model, num_threads)
        self._warned: set[str] = set()

    # ---- what lmms-eval reads ----------------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def processor(self) -> Any:
        return self._processor

    @property
    def config(self) -> Any:
        return self._model.config

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def eot_token_id(self) -> int:
        return self._tokenizer.eos_token_id

    # ---- inputs ------------------------------------------------------------------------------------------------

    def _text(self, context: str) -> str:
        return self.prompt.format(context.replace(IMAGE_TAG, ""))

    @staticmethod
    def _image(visuals: Any, where: str) -> Image.Image:
        """The one RGB image BLIP-2 reads: the document's image, or its images side by side on one canvas."""
        flat: list[Any] = []
        pending = [visuals]
        while pending:
            item = pending.pop(0)
            if isinstance(item, (list, tuple)):
                pending[:0] = list(item)
            elif item is not None:
                flat.append(item)
        images = []
        for item in flat:
            if isinstance(item, str):
                item = Image.open(item)
            if not isinstance(item, Image.Image):
                raise ValueError(f"{where}: catp_blip2 reads images; the task gave {type(item).__name__} ({item!r:.80}).")
            images.append(item.convert("RGB"))
        if not images:
            raise ValueError(f"{where}: the task gave no image; BLIP-2 answers questions about an image.")
        if len(images) == 1:
            return images[0]
        canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
        left = 0
        for image in images:
            canvas.paste(image, (left, 0))
            left += image.width
        return canvas

    def _doc_image(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> Image.Image:
        return self._image(doc_to_visual(self.task_dict[task][split][doc_id]), f"task {task!r}, {split} doc {doc_id}")

    def _batch(self, images: list[Image.Image], texts: list[str], padding_side: str) -> dict[str, torch.Tensor]:
        batch = dict(self._processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side=padding_side))
        image_token = getattr(self._model.config, "image_token_id", None)
        if image_token is not None:
            placeholders = (batch["input_ids"] == image_token).sum(dim=1)
            expected = self._model.config.num_query_tokens
            if not bool((placeholders == expected).all()):
                raise ValueError(
                    f"The processor put {placeholders.tolist()} image placeholder tokens in the prompts; the model needs "
                    f"{expected} (num_query_tokens). Give a processor saved with `num_query_tokens` set (model_args processor=)."
                )
        return batch

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            print(f"[catp_blip2] {message}", file=sys.stderr)

    # ---- generation ----------------------------------------------------------------------------------------

    def _generate_kwargs(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """transformers generate() arguments for a task's generation_kwargs (the model_args fill what they leave
        out), and the stop strings."""
        given = dict(gen_kwargs or {})
        until = given.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        if not all(isinstance(stop, str) for stop in until):
            raise ValueError(f"generation_kwargs `until` must be a string or a list of strings; got {until!r}.")
        settings = GenerationSettings(
            num_beams=int(given.pop("num_beams", self.defaults.num_beams)),
            max_new_tokens=int(given.pop("max_new_tokens", self.defaults.max_new_tokens)),
            min_new_tokens=int(given.pop("min_new_tokens", self.defaults.min_new_tokens)),
            length_penalty=float(given.pop("length_penalty", self.defaults.length_penalty)),
            newline_eos=self.defaults.newline_eos,
        )
        settings.check()
        kwargs = settings.generate_kwargs(self._tokenizer, self._model)
        temperature = given.pop("temperature", None)
        top_p = given.pop("top_p", None)
        do_sample = given.pop("do_sample", None)
        if do_sample is None:
            do_sample = bool(temperature) and float(temperature) > 0
        if do_sample:
            kwargs["do_sample"] = True
            if temperature:
                kwargs["temperature"] = float(temperature)
            if top_p is not None:
                kwargs["top_p"] = float(top_p)
        for key in PASSED_THROUGH:
            if key in given:
                kwargs[key] = given.pop(key)
        if given:
            self._warn_once(f"generation_kwargs {sorted(given)} are not generate() settings of catp_blip2; ignored.")
        return kwargs, [stop for stop in until if stop]

    def _answers(self, contexts: list[str], images: list[Image.Image], gen_kwargs: dict[str, Any]) -> list[str]:
        kwargs, until = self._generate_kwargs(gen_kwargs)
        batch = self._batch(images, [self._text(c) for c in contexts], "left" if self.decoder_only else "right")
        answers = generate_answers(self._model, self._processor, [batch], kwargs, self.decoder_only, progress=False)
        for stop in until:
            answers = [answer.split(stop)[0] for answer in answers]
        return [answer.strip() for answer in answers]

    def _collator(self, requests: list[Instance], grouping: bool) -> Any:
        # Longest first (padding and memory are worst at the start); grouped by generation_kwargs, so every batch
        # shares one decoding.
        def longest_first(args: tuple) -> tuple[int, str]:
            return -len(self._tokenizer(args[0])["input_ids"]), args[0]

        return utils.Collator([request.args for request in requests], longest_first, grouping=grouping)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        collator = self._collator(requests, grouping=True)
        answers: list[str] = []
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="catp_blip2 generate_until")
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, all_gen_kwargs, doc_to_visual, doc_ids, tasks, splits = zip(*chunk)
            images = [self._doc_image(v, d, t, s) for v, d, t, s in zip(doc_to_visual, doc_ids, tasks, splits)]
            batch_answers = self._answers(list(contexts), images, all_gen_kwargs[0])
            for context, gen_kwargs, answer in zip(contexts, all_gen_kwargs, batch_answers):
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
            answers.extend(batch_answers)
            progress.update(len(chunk))
        progress.close()
        return collator.get_original(answers)

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Each document's rounds: round 0 answers the task's context; then the task's doc_to_text(doc,
        previous_output=[answers so far], round_idx, previous_round_info) gives (visuals, context, terminal,
        answers, info) for the next round, until it signals the end. The documents still going are batched."""
        collator = self._collator(requests, grouping=True)
        results: list[list[str]] = []
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, all_gen_kwargs, doc_to_visual, doc_to_text, doc_ids, tasks, splits = zip(*chunk)
            docs = [self.task_dict[t][s][d] for t, s, d in zip(tasks, splits, doc_ids)]
            where = [f"task {t!r}, {s} doc {d}" for t, s, d in zip(tasks, splits, doc_ids)]
            images = [self._image(v(doc), w) for v, doc, w in zip(doc_to_visual, docs, where)]
            texts, rounds, infos = list(contexts), [[] for _ in chunk], [None] * len(chunk)
            active = list(range(len(chunk)))
            for round_idx in range(1, MAX_ROUNDS + 1):
                answers = self._answers([texts[i] for i in active], [images[i] for i in active], all_gen_kwargs[0])
                still = []
                for i, answer in zip(active, answers):
                    rounds[i].append(answer)
                    visuals, text, terminal, recorded, infos[i] = doc_to_text[i](
                        docs[i], previous_output=list(rounds[i]), round_idx=round_idx, previous_round_info=infos[i]
                    )
                    if isinstance(recorded, list) and all(isinstance(r, str) for r in recorded):
                        rounds[i] = list(recorded)
                    if terminal:
                        continue
                    if visuals:
                        images[i] = self._image(visuals, where[i])
                    texts[i] = text
                    still.append(i)
                active = still
                if not active:
                    break
            else:
                raise ValueError(f"{where[active[0]]}: no end signalled after {MAX_ROUNDS} rounds.")
            results.extend(rounds)
        return collator.get_original(results)

    # ---- likelihood ----------------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        collator = self._collator(requests, grouping=False)
        scores: list[tuple[float, bool]] = []
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, doc_to_target, doc_to_visual, doc_ids, tasks, splits = zip(*chunk)
            continuations = [
                target if isinstance(target, str) else target(self.task_dict[t][s][d])
                for target, t, s, d in zip(doc_to_target, tasks, splits, doc_ids)
            ]
            images = [self._doc_image(v, d, t, s) for v, d, t, s in zip(doc_to_visual, doc_ids, tasks, splits)]
            scores.extend(self._losses([self._text(c) for c in contexts], [str(c) for c in continuations], images))
        return collator.get_original(scores)

    @torch.inference_mode()
    def _losses(self, texts: list[str], continuations: list[str], images: list[Image.Image]) -> list[tuple[float, bool]]:
        pixel_dtype = next(self._model.vision_model.parameters()).dtype
        if self.decoder_only:
            # As lm-eval does: the continuation's tokens are those of context + continuation beyond the context's.
            lengths = [
                len(self._tokenizer(text + continuation)["input_ids"]) - len(self._tokenizer(text)["input_ids"])
                for text, continuation in zip(texts, continuations)
            ]
            batch = self._batch(images, [t + c for t, c in zip(texts, continuations)], "left")
            targets_of = [batch["input_ids"][i, batch["input_ids"].shape[1] - n :] for i, n in enumerate(lengths)]
            labels = None
        else:
            batch = self._batch(images, texts, "right")
            encoded = [self._tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
            lengths = [len(ids) for ids in encoded]
            width = max(1, max(lengths))
            labels = torch.full((len(encoded), width), -100, dtype=torch.long)
            for i, ids in enumerate(encoded):
                labels[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            targets_of = [labels[i, :n] for i, n in enumerate(lengths)]
        batch = {name: tensor.to(self._device) for name, tensor in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(pixel_dtype)
        if labels is not None:
            batch["labels"] = labels.to(self._device)
        logits = self._model(**batch).logits.float()
        scores = []
        for i, n in enumerate(lengths):
            if n == 0:
                scores.append((0.0, True))
                continue
            # Decoder-only: the logits at position j predict token j + 1; the continuation ends each row (left
            # padding), and the kept image tokens are compacted at the front, so it is the same tail.
            predicting = logits[i, -n - 1 : -1] if self.decoder_only else logits[i, :n]
            targets = targets_of[i].to(predicting.device)
            log_probs = torch.log_softmax(predicting, dim=-1)
            loss = -log_probs.gather(-1, targets.unsqueeze(-1)).sum()
            scores.append((float(loss), bool((predicting.argmax(dim=-1) == targets).all())))
        return scores


__all__ = ["CatpBlip2"]
