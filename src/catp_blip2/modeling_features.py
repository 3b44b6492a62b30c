"""One vision + Q-Former pass, kept for reuse: `QFormerEncoding` and `QFormerEncodingCache`.

Nothing a pruning method computes depends on k, and the vision encoder and the Q-Former do not depend on the
method at all (nor, for BLIP-2, on the question). So one pass can serve many configurations: `encode_qformer`
(`modeling_pruning.CatpQFormerMixin`) runs the pass once, records the attention that every requested set of pruning
settings needs, and scores the query tokens under each; `get_image_features` / `generate(qformer_encoding=...)`
then only select k, project and run the language model. The cache keeps encodings per input row (an image, or
for InstructBLIP an image and its instruction) across batches, configurations and pipeline calls, up to a byte
limit.

This module ships as Hub remote code: it imports only torch and its sibling core modules.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from .methods import method_settings  # through `methods`, so the shipped methods are registered (remote code too)
from .scoring import CORE_SETTINGS, SELECTION_SETTING_NAMES


def scoring_key(config: Any) -> str:
    """What a query-token score depends on: every pruning setting of `config` but k and the selection settings,
    which act after scoring (a checked config, so values are normalised and settings of methods registered later
    are there). `vision_merge_per_layer` is in: it changes the pass itself."""
    skip = {"num_kept_query_tokens", *SELECTION_SETTING_NAMES}
    names = [name for name in (*CORE_SETTINGS, *method_settings()) if name not in skip]
    return json.dumps({name: getattr(config, name) for name in names}, sort_keys=True, default=str)


@dataclass
class QFormerEncoding:
    r"""The query tokens of one vision + Q-Former pass and their scores, before any selection.

    query_output (`torch.FloatTensor` of shape `(batch_size * frames, num_query_tokens, qformer_hidden_size)`):
        The Q-Former's query outputs (float32, as the Q-Former runs), frames = 1 for images.
    scores (`dict[str, torch.FloatTensor]`): `scoring_key(config)` -> scores of shape
        `(batch_size * frames, num_query_tokens)`, one entry per set of pruning settings the pass was asked for.
    frames (`int`): frames per sample (InstructBLIP-Video: num_frames).
    projection_dtype (`torch.dtype`): the vision encoder's output dtype, which the language projection takes.
    image_embeds, vision_outputs, qformer_outputs: the pass's full outputs; `None` once rows were taken or cached.
    image_token_sizes (`torch.FloatTensor` of shape `(batch_size * frames, num_image_tokens)`, *optional*): with
        `vision_merge_per_layer` > 0, how many vision input tokens each image token stands for; a full output too.
    """

    query_output: torch.Tensor
    scores: dict[str, torch.Tensor]
    frames: int = 1
    projection_dtype: torch.dtype = torch.float32
    image_embeds: torch.Tensor | None = None
    vision_outputs: Any = None
    qformer_outputs: Any = None
    image_token_sizes: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.query_output.shape[0] // self.frames

    def scores_for(self, config: Any) -> torch.Tensor:
        """(B * F, Q) scores under `config`'s pruning settings; a ValueError when the pass did not compute them."""
        key = scoring_key(config)
        if key not in self.scores:
            raise ValueError(
                f"`qformer_encoding` holds scores for {len(self.scores)} pruning setting(s), not for the model's current "
                f"settings {key}; encode with `model.encode_qformer(..., score_settings=[...])` naming them."
            )
        return self.scores[key]

    def _rows(self, samples: torch.Tensor) -> torch.Tensor:
        """Row indices of the given samples' frames."""
        frames = torch.arange(self.frames, device=samples.device)
        return (samples[:, None] * self.frames + frames[None]).flatten()

    def take(self, samples: Sequence[int] | torch.Tensor) -> "QFormerEncoding":
        """The encoding of the given samples (repeats allowed), without the pass's full outputs."""
        samples = torch.as_tensor(samples, dtype=torch.long, device=self.query_output.device)
        rows = self._rows(samples)
        return QFormerEncoding(
            self.query_output[rows], {key: value[rows] for key, value in self.scores.items()}, self.frames,
            self.projection_dtype,
        )

    @staticmethod
    def cat(encodings: Sequence["QFormerEncoding"]) -> "QFormerEncoding":
        """The encodings one after the other (they must hold scores for the same settings)."""
        first = encodings[0]
        scores = {key: torch.cat([e.scores[key] for e in encodings]) for key in first.scores}
        return QFormerEncoding(
            torch.cat([e.query_output for e in encodings]), scores, first.frames, first.projection_dtype
        )

    @property
    def nbytes(self) -> int:
        tensors = [self.query_output, *self.scores.values()]
        return sum(t.numel() * t.element_size() for t in tensors)


def _row_key(tensors: Sequence[torch.Tensor], row: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        part = tensor[row].detach().contiguous().cpu()
        digest.update(str((part.dtype, tuple(part.shape))).encode())
        digest.update(part.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class QFormerEncodingCache:
    """Encodings of input rows, reused while the same rows come again (another configuration, another question).

    A row is known by the bytes of its pixel values and, where the family's Q-Former reads more (InstructBLIP's
    instruction), of those inputs too: equal rows give the same pass, so they are encoded once. Entries are kept
    until `max_bytes` is reached, and then no new ones are added (a sweep visits its batches in the same order
    for every configuration, so the first ones stay useful); rows that do not fit are encoded again when needed.

    score_settings: the sets of pruning settings every encoding is scored under (`None`: the model's current ones);
    a set naming `vision_merge_per_layer` only at that r.
    """

    score_settings: Sequence[Mapping[str, Any]] | None = None
    max_bytes: int = 2 * 1024**3
    entries: dict[str, QFormerEncoding] = field(default_factory=dict)
    used_bytes: int = 0
    hits: int = 0  # rows answered from the cache or by another row of the same batch
    misses: int = 0  # rows encoded
    # batch id -> its rows' keys: a batch that comes again (the next configuration) is not hashed again.
    batch_keys: dict[Any, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score_settings is not None:  # one scoring per distinct set (configurations differ also by k)
            unique = {json.dumps(dict(s), sort_keys=True, default=str): dict(s) for s in self.score_settings}
            self.score_settings = list(unique.values())

    def encode(self, model: Any, inputs: Mapping[str, Any], batch_id: Any = None) -> QFormerEncoding:
        """The encoding of every row of `inputs` (pixel_values and the family's extra Q-Former inputs, as a processor
        gives them), from the cache where possible; the rows not there are encoded in one pass of the model.

        batch_id: names a batch whose rows are the same every time it is given (a sweep's batch index), so their
        keys (a hash of the rows' bytes, read on the host) are computed once."""
        pixel_values = inputs["pixel_values"]
        extra = {name: inputs[name] for name in model.family.extra_inputs if inputs.get(name) is not None}
        keys = self.batch_keys.get(batch_id) if batch_id is not None else None
        if keys is None:
            keys = [_row_key([pixel_values, *extra.values()], row) for row in range(pixel_values.shape[0])]
            if batch_id is not None:
                self.batch_keys[batch_id] = keys
        # The pass depends on the vision encoder's merging: one entry per row and r, so a sweep over r keeps them all.
        keys = [f"{key}/r={model.config.vision_merge_per_layer}" for key in keys]
        wanted = self._wanted_keys(model)
        missing = list(dict.fromkeys(k for k in keys if not self._holds(k, wanted)))
        self.misses += len(missing)  # passes run
        self.hits += len(keys) - len(missing)  # rows served without one
        fresh: dict[str, QFormerEncoding] = {}
        if missing:
            rows = [keys.index(k) for k in missing]
            index = torch.tensor(rows, device=pixel_values.device)
            encoded = model.encode_qformer(
                pixel_values[index], score_settings=self._settings_for(model),
                **{name: value[index] for name, value in extra.items()},
            )
            for position, key in enumerate(missing):
                fresh[key] = encoded.take([position])
                self._store(key, fresh[key])
        return QFormerEncoding.cat([fresh.get(k) or self.entries[k] for k in keys])

    def generate(self, model: Any, inputs: Mapping[str, Any], batch_id: Any = None, **generate_kwargs: Any) -> Any:
        """`model.generate` on `inputs` (processor output) with the vision + Q-Former pass taken from the cache."""
        image_inputs = ("pixel_values", *model.family.extra_inputs)
        text = {name: value for name, value in inputs.items() if name not in image_inputs}
        return model.generate(**text, qformer_encoding=self.encode(model, inputs, batch_id), **generate_kwargs)

    def _settings_for(self, model: Any) -> list[Mapping[str, Any]] | None:
        """The score sets that apply to the model's current vision merging: one pass runs the vision encoder at one
        r, so sets naming another `vision_merge_per_layer` are scored when the model runs at theirs."""
        if self.score_settings is None:
            return None
        r = model.config.vision_merge_per_layer
        return [s for s in self.score_settings if s.get("vision_merge_per_layer", r) == r] or None

    def _wanted_keys(self, model: Any) -> list[str]:
        return [scoring_key(config) for config in model.scoring_configs(self._settings_for(model))]

    def _holds(self, key: str, wanted: list[str]) -> bool:
        entry = self.entries.get(key)
        return entry is not None and all(w in entry.scores for w in wanted)

    def _store(self, key: str, encoding: QFormerEncoding) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old.nbytes
        if self.used_bytes + encoding.nbytes <= self.max_bytes:
            self.entries[key] = encoding
            self.used_bytes += encoding.nbytes


__all__ = ["QFormerEncoding", "QFormerEncodingCache", "scoring_key"]
