"""The inputs of `catp-blip2 eval`: questions put into the prompt, and processor batches of this process's share.

Batches are made once and kept when they fit in memory (`CACHE_LIMIT_BYTES`), else remade on every pass.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import torch

from ..pipeline_catp import DEFAULT_VQA_PROMPT

def lavis_question(question: str) -> str:
    """The question as the reference code (LAVIS's BLIP question processor) fed it to BLIP-2: lower case, the
    characters . ! " ( ) * # : ; ~ deleted, whitespace collapsed, at most 50 words. "?" stays."""
    text = re.sub(r'[.!"()*#:;~]', "", question.lower())
    words = text.split()
    return " ".join(words[:50])


QUESTION_FORMATS = {"lavis": lavis_question, "raw": lambda question: question}


def check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or prompt.count("{}") != 1:
        raise ValueError(f"`--prompt` must contain exactly one '{{}}' where the question goes; got {prompt!r}.")
    return prompt


# Processed batches are kept for reuse by every configuration up to this size (the embedded set: ~8 MB); beyond it
# (VQAv2's 10% sample at 224 px is ~13 GB of pixel values) each configuration processes its batches again.
CACHE_LIMIT_BYTES = 2 * 1024**3


class EvalInputs:
    """This process's share of the questions as processor batches: computed once and cached when they fit in
    `CACHE_LIMIT_BYTES`, else recomputed on every pass. Iterating yields the batches in question order."""

    def __init__(
        self,
        dataset: Any,
        indices: list[int],
        processor: Any,
        prompt: str,
        question_format: str,
        batch_size: int,
        num_query_tokens: int,
        image_token_id: int | None,
        padding_side: str = "left",
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.processor = processor
        self.prompt = prompt
        self.formatter = QUESTION_FORMATS[question_format]
        self.batch_size = batch_size
        self.num_query_tokens = num_query_tokens
        self.image_token_id = image_token_id
        self.padding_side = padding_side
        self.starts = list(range(0, len(self.indices), batch_size))
        self.cache: list[dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def make_batch(self, start: int) -> dict[str, torch.Tensor]:
        """Processor output (pixel values, prompt ids, attention mask) of the batch beginning at `start`."""
        chunk = self.indices[start : start + self.batch_size]
        contiguous = chunk == list(range(chunk[0], chunk[-1] + 1))
        rows = self.dataset[chunk[0] : chunk[-1] + 1] if contiguous else self.dataset.select(chunk)[:]
        images = [image.convert("RGB") for image in rows["image"]]  # VQAv2 holds some greyscale images
        texts = [self.prompt.format(self.formatter(q)) for q in rows["question"]]
        # Per call, not on the tokenizer: the caller's processor keeps its own padding side.
        batch = dict(
            self.processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side=self.padding_side)
        )
        if self.image_token_id is not None:
            placeholders = (batch["input_ids"] == self.image_token_id).sum(dim=1)
            if not bool((placeholders == self.num_query_tokens).all()):
                raise ValueError(
                    f"The processor put {placeholders.tolist()} image placeholder tokens in the prompts; the model needs "
                    f"{self.num_query_tokens} (num_query_tokens). Load a processor saved with `num_query_tokens` set "
                    "(`--processor`)."
                )
        return batch

    def prepare(self, progress: bool = False) -> None:
        """Fill the cache when the whole share fits (judged from the first batch's size)."""
        from tqdm.auto import tqdm

        if not self.starts:
            self.cache = []
            return
        first = self.make_batch(self.starts[0])
        size = sum(t.numel() * t.element_size() for t in first.values() if isinstance(t, torch.Tensor))
        if size * len(self.starts) > CACHE_LIMIT_BYTES:
            return
        rest = tqdm(self.starts[1:], desc="preprocess", unit="batch", leave=False, disable=not progress, file=sys.stderr)
        self.cache = [first] + [self.make_batch(start) for start in rest]

    def __iter__(self):
        if self.cache is not None:
            yield from self.cache
        else:
            for start in self.starts:
                yield self.make_batch(start)


__all__ = ["CACHE_LIMIT_BYTES", "DEFAULT_VQA_PROMPT", "EvalInputs", "QUESTION_FORMATS", "check_prompt", "lavis_question"]
