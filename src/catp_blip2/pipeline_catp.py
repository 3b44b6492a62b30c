"""`visual-question-answering` for (CATP-pruned) BLIP-2: the classic VQA pipeline, back in transformers 5.

transformers 5 removed the `"visual-question-answering"` task. A model whose `config.custom_pipelines` declares it
(every `catp-blip2 export` does) gets it back through remote code:

    pipe = pipeline("visual-question-answering", model="org/blip2-catp", trust_remote_code=True)
    pipe(image, "how many cats are there?")  # [{"answer": "two"}]

With `catp_blip2` installed, `catp_blip2.vqa_pipeline(model=...)` builds the same pipeline without remote code.

This module ships inside exported Hub folders, so it imports only torch and transformers.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor, GenerationConfig, Pipeline
from transformers.image_utils import load_image

from .modeling_features import QFormerEncodingCache

VQA_TASK = "visual-question-answering"
# The prompt of BLIP-2's zero-shot VQA evaluation (and of the CATP paper); "{}" is replaced by the question.
DEFAULT_VQA_PROMPT = "Question: {} Short answer:"
# Vision + Q-Former passes kept during one call (BLIP-2 at 224 px: ~0.1 MB an image).
PIPELINE_CACHE_BYTES = 256 * 1024**2


def _is_image(value: Any) -> bool:
    """A single image as the pipeline accepts it: PIL image, path or URL, or an (H, W, C) / (C, H, W) array."""
    if isinstance(value, str) or hasattr(value, "getpixel"):
        return True
    return hasattr(value, "shape") and len(value.shape) == 3


def _open_image(image: str, timeout: float | None) -> Any:
    """A path, URL or base64 string as a PIL image; a string that is none of them is reported as a missing file
    (transformers would report it as bad base64)."""
    try:
        return load_image(image, timeout=timeout)
    except Exception as error:
        if image.startswith(("http://", "https://")) or os.path.isfile(image):
            raise
        raise FileNotFoundError(
            f"`image` {image!r} is no existing file, no http(s) URL and no base64 image data."
        ) from error


class CatpVisualQuestionAnsweringPipeline(Pipeline):
    """Answers open-ended questions about images with a generative BLIP-2 model (CATP-pruned or stock).

    Each question is put into `prompt` (default `"Question: {} Short answer:"`), the processor adds the image
    placeholders, and the model generates the answer. Results look like the classic transformers VQA pipeline:
    one image and one question give `[{"answer": str}]` (several dicts with `num_return_sequences`); a list of
    inputs gives one such list per input.

    Inputs:
        - `pipe(image, question)`: `image` a PIL image, a local path or URL, or an array;
        - `pipe({"image": image, "question": question})` or a list / dataset / generator of such dicts;
        - `pipe([image, ...], question)` (every image, one question), `pipe(image, [question, ...])`, and
          `pipe([image, ...], [question, ...])`, which (like the classic pipeline) asks every question of every
          image; pass a list of dicts to pair them instead.

    Within one call, inputs that repeat an image (`pipe(image, [question, ...])`) run the vision encoder and the
    Q-Former once for it on a CATP model whose Q-Former does not read the question (BLIP-2); the answers are those
    of one call per question. InstructBLIP's Q-Former reads the question, so there every question gets its own pass.

    Parameters (at construction or per call): `prompt`, `timeout` (image download), `batch_size`, and generation
    parameters either directly (`max_new_tokens=10`, `num_beams=5`, ...) or as `generate_kwargs={...}`. Without
    them the model's generation config applies, plus `max_new_tokens=10` unless a length is set.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    _pipeline_calls_generate = True
    # Short answers: the BLIP-2 / CATP VQA protocol generates at most 10 new tokens.
    _default_generation_config = GenerationConfig(max_new_tokens=10)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "CatpVisualQuestionAnsweringPipeline needs the model's processor (Blip2Processor); pass `processor=`."
            )
        if self._decoder_only and self.tokenizer is not None and self.tokenizer.padding_side != "left":
            # Batches are padded by the pipeline's collate function, which reads the tokenizer's padding side;
            # a decoder-only language model must continue from the last real token, so pad on the left. A copy,
            # so the caller's tokenizer keeps its setting.
            self.tokenizer = copy.copy(self.tokenizer)
            self.tokenizer.padding_side = "left"

    @property
    def _decoder_only(self) -> bool:
        return bool(getattr(self.model.config, "use_decoder_only_language_model", True))

    def _sanitize_parameters(
        self,
        prompt: str | None = None,
        timeout: float | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params: dict[str, Any] = {}
        forward_params: dict[str, Any] = {}
        if prompt is not None:
            if not isinstance(prompt, str) or prompt.count("{}") != 1:
                raise ValueError(
                    f"`prompt` must be a string with exactly one '{{}}' where the question goes (default "
                    f"{DEFAULT_VQA_PROMPT!r}); got {prompt!r}."
                )
            preprocess_params["prompt"] = prompt
        if timeout is not None:
            preprocess_params["timeout"] = timeout

        generation_keys = {key for key in vars(GenerationConfig()) if not key.startswith("_")}
        generation_keys.add("generation_config")
        unknown = sorted(set(kwargs) - generation_keys)
        if unknown:
            raise TypeError(
                f"Unknown parameter(s) {unknown} for the visual-question-answering pipeline; it takes `prompt`, "
                "`timeout`, `batch_size`, `generate_kwargs` and generation parameters (e.g. `max_new_tokens`)."
            )
        merged = {**(generate_kwargs or {}), **kwargs}
        if merged:
            forward_params["generate_kwargs"] = merged
        return preprocess_params, forward_params, {}

    def __call__(self, image: Any, question: str | list[str] | None = None, **kwargs: Any) -> Any:
        """Answer `question` about `image`; see the class docstring for every accepted input form."""
        image_batch = isinstance(image, (list, tuple)) and len(image) > 0 and all(_is_image(i) for i in image)
        question_batch = isinstance(question, (list, tuple)) and all(isinstance(q, str) for q in question)
        if question is None:
            inputs = image  # a dict, a list of dicts, a dataset or a generator
        elif _is_image(image) and isinstance(question, str):
            inputs = {"image": image, "question": question}
        elif image_batch and isinstance(question, str):
            inputs = [{"image": i, "question": question} for i in image]
        elif _is_image(image) and question_batch:
            inputs = [{"image": image, "question": q} for q in question]
        elif image_batch and question_batch:
            inputs = [{"image": i, "question": q} for q in question for i in image]
        else:
            raise ValueError(
                "Give `image` (a PIL image, path, URL or array, or a list of them) and `question` (a string or a list "
                f"of strings), or {{'image': ..., 'question': ...}} dicts; got image={type(image).__name__}, "
                f"question={type(question).__name__}."
            )
        # One cache per call: answers never depend on what an earlier call saw.
        self._encodings = QFormerEncodingCache(max_bytes=PIPELINE_CACHE_BYTES)
        return super().__call__(inputs, **kwargs)

    def preprocess(
        self, inputs: dict[str, Any], prompt: str = DEFAULT_VQA_PROMPT, timeout: float | None = None
    ) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, dict) or "image" not in inputs or "question" not in inputs:
            raise ValueError(f"Each input must be a dict with 'image' and 'question'; got {inputs!r}.")
        image = inputs["image"]
        if isinstance(image, str):
            image = _open_image(image, timeout)
        # The processor, not the tokenizer alone: it puts the num_query_tokens image placeholders before the text.
        model_inputs = self.processor(images=image, text=prompt.format(inputs["question"]), return_tensors="pt")
        return model_inputs.to(dtype=self.dtype)

    def _forward(self, model_inputs: dict[str, torch.Tensor], generate_kwargs: dict[str, Any] | None = None):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs or {}, return_dict_in_generate=False)
        input_ids = model_inputs["input_ids"]
        encodings = getattr(self, "_encodings", None)
        if encodings is not None and hasattr(self.model, "encode_qformer"):  # a CATP model, not stock BLIP-2
            sequences = encodings.generate(self.model, model_inputs, **generate_kwargs)
        else:
            sequences = self.model.generate(**model_inputs, **generate_kwargs)
        if self._decoder_only:
            # Sequences begin with the (padded) prompt as given, whatever was pruned: keep the new tokens.
            sequences = sequences[:, input_ids.shape[1] :]
        # (B * n, T) -> (B, n, T) so the pipeline can split the batch into inputs, n answers each.
        return {"answer_ids": sequences.reshape(input_ids.shape[0], -1, sequences.shape[-1])}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> list[dict[str, str]]:
        answer_ids = model_outputs["answer_ids"][0]  # (n, T)
        answers = self.processor.batch_decode(answer_ids, skip_special_tokens=True)
        return [{"answer": answer.strip()} for answer in answers]


def vqa_pipeline(
    model: str | os.PathLike | torch.nn.Module,
    processor: Any | None = None,
    device: int | str | torch.device | None = None,
    dtype: str | torch.dtype = "auto",
    **kwargs: Any,
) -> CatpVisualQuestionAnsweringPipeline:
    """The visual-question-answering pipeline without remote code (needs `catp_blip2` imported for CATP folders).

    Args:
        model: a loaded model, or a folder / Hub id that `AutoModelForVisualQuestionAnswering` loads (an exported
            CATP folder, or a stock BLIP-2 checkpoint).
        processor: the model's `Blip2Processor`; loaded from `model` when that is a path or id.
        device: as for `transformers.pipeline`.
        dtype: as for `transformers.pipeline`; applies when the model is loaded here.
        **kwargs: pipeline parameters (`prompt`, `batch_size`, generation parameters, ...).
    """
    if isinstance(model, (str, os.PathLike)):
        processor = processor if processor is not None else AutoProcessor.from_pretrained(model)
        model = AutoModelForVisualQuestionAnswering.from_pretrained(model, dtype=dtype)
    if processor is None:
        raise ValueError("`processor` is required when `model` is an already loaded model.")
    return CatpVisualQuestionAnsweringPipeline(
        model=model, processor=processor, task=VQA_TASK, device=device, **kwargs
    )


__all__ = ["CatpVisualQuestionAnsweringPipeline", "DEFAULT_VQA_PROMPT", "VQA_TASK", "vqa_pipeline"]
