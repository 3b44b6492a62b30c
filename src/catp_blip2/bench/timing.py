"""Measurement machinery of `catp-blip2 bench`: per-stage times and peak memory of one `generate` call.

Every timed `generate` call is split into stages by forward hooks on the modules the CATP and stock models share
(`StageClock`; timestamps taken after a CUDA synchronise), and `stage_times` turns its timestamps into seconds:

- `vision_s`: the vision encoder;
- `qformer_scoring_s`: Q-Former start to language projection end (Q-Former, attention recording, scoring,
  selection, projection);
- `scoring_s`: what CATP adds inside that: the voting layers' probability recomputation (from the end of each
  cross-attention module to the start of its output block, where the recording hook runs) plus Q-Former end to
  projection start (scores, top-k, gather). For stock it measures the same gaps, i.e. ~0;
- `prefill_s`: the language model's first forward (the whole prompt; the first new token comes out of it). An
  encoder-decoder language model (T5) reads the prompt in its encoder, which `generate` runs once before the first
  decoder forward: its prefill is that encoder pass plus the first decoder forward, as the roofline counts it;
- `time_to_first_token_s`: `generate` start to the end of that first forward;
- `decode_per_token_s`: median of the language model's later forwards (one new token each);
- `end_to_end_s`: the whole `generate` call;
- `other_s`: `end_to_end_s` minus vision, Q-Former + scoring, prefill and every decode forward (generation loop,
  embedding merge, logits processing).

`PeakMemory` gives the peak memory of one call and `summarise` the spread of a stage over repeats.
"""

from __future__ import annotations

import ctypes
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..modeling_catp import CatpBlip2ForConditionalGeneration

# Keys of `stage_times`, in the order bench.json lists them.
STAGES = (
    "end_to_end_s",
    "vision_s",
    "qformer_scoring_s",
    "scoring_s",
    "prefill_s",
    "time_to_first_token_s",
    "decode_per_token_s",
    "other_s",
)


class PeakMemory:
    """Peak memory of one `generate` call.

    CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (tensors only, not the allocator's
    cache). CPU: the process's resident-set high-water mark (VmHWM in /proc/self/status), reset before each call by
    writing 5 to /proc/self/clear_refs, after handing freed heap back to the OS (glibc `malloc_trim`). That is all
    resident memory of the process: weights, activations, KV cache, allocator slack and the Python runtime. The
    part above the resident size at the start of the call (`above_baseline`) is what the call itself added.
    Where clear_refs cannot be written, the lifetime high-water mark is reported and said so in `method`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._libc: ctypes.CDLL | None = None
        if device.type == "cpu":
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None
            self.resettable = self._try_reset()
        else:
            self.resettable = True
        self.method = self._describe()
        self.baseline = 0

    def _describe(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (tensors), peak counters reset before each run"
        if self.resettable:
            return "process resident-set high-water mark (VmHWM), reset before each run via /proc/self/clear_refs"
        return "process resident-set high-water mark (lifetime; /proc/self/clear_refs not writable)"

    @staticmethod
    def _status(field_name: str) -> int:
        """Bytes of a `/proc/self/status` field (VmRSS, VmHWM); the lifetime maximum RSS where /proc is missing."""
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    def _try_reset(self) -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        """Reset the peak counter and record the baseline, just before the call."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # freed heap of earlier calls would otherwise count as this call's residency
        if self.resettable:
            self._try_reset()
        self.baseline = self._status("VmRSS")

    def stop(self) -> tuple[int, int]:
        """(peak bytes, peak bytes above the start of the call)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._status("VmHWM")
        return peak, max(0, peak - self.baseline)


@dataclass
class RunTimes:
    """Timestamps (`time.perf_counter` seconds) of one `generate` call, filled by `StageClock` hooks."""

    marks: dict[str, float] = field(default_factory=dict)  # "<module>_start" / "<module>_end"
    lm_calls: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each language-model forward
    recording_gaps: list[float] = field(default_factory=list)  # cross-attention end -> its output block start


class StageClock:
    """Forward hooks on the modules the CATP and stock models share, giving per-stage times of each call.

    The hooks record into `current` (the `RunTimes` of the call in flight) and do nothing while it is None, so
    warm-up and untimed work cost one attribute check per hook. Hooks run in registration order; these are
    registered before any `generate`, so on a cross-attention module this clock's hook runs before CATP's
    recording hook (registered inside each call), and the time until the module's output block starts is the
    recording's cost.
    """

    def __init__(self, model: CatpBlip2ForConditionalGeneration, device: torch.device) -> None:
        self.device = device
        self.current: RunTimes | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._open_xattn: float | None = None
        for name, module in (
            ("vision", model.vision_model),
            ("qformer", model.qformer),
            ("projection", model.language_projection),
        ):
            self._handles.append(module.register_forward_pre_hook(self._mark(f"{name}_start")))
            self._handles.append(module.register_forward_hook(self._mark(f"{name}_end")))
        # With vision merging (r > 0) the vision model's own forward is not called, its parts are: the stage runs
        # from the patch embedding to the last post-layernorm (the stock forward's marks land there too, a few
        # microseconds inside its own).
        self._handles.append(model.vision_model.embeddings.register_forward_pre_hook(self._mark("vision_start")))
        self._handles.append(model.vision_model.post_layernorm.register_forward_hook(self._mark("vision_end")))
        if getattr(model.language_model.config, "is_encoder_decoder", False):
            encoder = model.language_model.get_encoder()
            self._handles.append(encoder.register_forward_pre_hook(self._mark("lm_encoder_start")))
            self._handles.append(encoder.register_forward_hook(self._mark("lm_encoder_end")))
        self._handles.append(model.language_model.register_forward_pre_hook(self._lm_start))
        self._handles.append(model.language_model.register_forward_hook(self._lm_end))
        for layer in model.qformer.encoder.layer:
            if layer.has_cross_attention:
                self._handles.append(layer.crossattention.attention.register_forward_hook(self._xattn_end))
                self._handles.append(layer.crossattention.output.register_forward_pre_hook(self._xattn_output))

    def now(self) -> float:
        """`time.perf_counter()` once the device has finished the work queued so far."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _mark(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if self.current is not None:
                self.current.marks[name] = self.now()

        return hook

    def _lm_start(self, *_: Any) -> None:
        if self.current is not None:
            self.current.lm_calls.append((self.now(), float("nan")))

    def _lm_end(self, *_: Any) -> None:
        if self.current is not None:
            start, _ = self.current.lm_calls[-1]
            self.current.lm_calls[-1] = (start, self.now())

    def _xattn_end(self, *_: Any) -> None:
        if self.current is not None:
            self._open_xattn = self.now()

    def _xattn_output(self, *_: Any) -> None:
        if self.current is not None and self._open_xattn is not None:
            self.current.recording_gaps.append(self.now() - self._open_xattn)
            self._open_xattn = None

    def remove(self) -> None:
        """Detach every hook (the models stay usable without the clock)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def stage_times(times: RunTimes, start: float, end: float, new_tokens: int) -> dict[str, float]:
    """Seconds per stage (`STAGES`, see the module docstring) of one call that ran from `start` to `end`."""
    m = times.marks
    if len(times.lm_calls) != new_tokens:
        raise RuntimeError(
            f"expected {new_tokens} language-model forwards (1 prefill + {new_tokens - 1} decode), saw "
            f"{len(times.lm_calls)}: the generation loop changed; the stage split would be wrong"
        )
    prefill_start, prefill_end = times.lm_calls[0]
    prefill = prefill_end - prefill_start
    if "lm_encoder_start" in m:
        prefill += m["lm_encoder_end"] - m["lm_encoder_start"]
    decode = [b - a for a, b in times.lm_calls[1:]]
    stages = {
        "end_to_end_s": end - start,
        "vision_s": m["vision_end"] - m["vision_start"],
        "qformer_scoring_s": m["projection_end"] - m["qformer_start"],
        "scoring_s": sum(times.recording_gaps) + (m["projection_start"] - m["qformer_end"]),
        "prefill_s": prefill,
        "time_to_first_token_s": prefill_end - start,
        "decode_per_token_s": float(np.median(decode)),
    }
    accounted = stages["vision_s"] + stages["qformer_scoring_s"] + stages["prefill_s"] + sum(decode)
    stages["other_s"] = stages["end_to_end_s"] - accounted
    return stages


def summarise(values: list[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation), min and max of `values`, and their count `n`."""
    array = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


__all__ = ["STAGES", "PeakMemory", "RunTimes", "StageClock", "stage_times", "summarise"]
