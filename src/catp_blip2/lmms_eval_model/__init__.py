"""CATP as an lmms-eval model: `python -m lmms_eval --model catp_blip2 --model_args pretrained=...`.

Installed with the optional extra `catp-blip2[lmms-eval]`; lmms-eval (0.7.x) finds it through the entry-point group
`lmms_eval.models` (pyproject.toml: `catp_blip2 = "catp_blip2.lmms_eval_model:model_manifest"`), whose payload,
`model_manifest()`, returns the `ModelManifest`: model id `catp_blip2`, a simple (`is_simple = True`) model, the
class `catp_blip2.lmms_eval_model.model.CatpBlip2` (`generate_until` with batching, `loglikelihood`,
`generate_until_multi_round`), imported by lmms-eval only when the model is asked for.

lmms-eval loads its entry points while it initialises `lmms_eval.models`, the package that holds `ModelManifest`; so
this module imports nothing at import time and the manifest is made when lmms-eval calls for it, whichever of the
two is imported first (`MANIFEST` gives it too). The package belongs to the tools' layer: it uses the model core and
`catp_blip2.evaluation` (the same loading, processor check and answer loop as `catp-blip2 eval`); the core never
imports it. See docs/lmms-eval.md for the usage.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "catp_blip2"
MODEL_CLASS_PATH = "catp_blip2.lmms_eval_model.model.CatpBlip2"


def model_manifest() -> Any:
    """The `lmms_eval.models.registry_v2.ModelManifest` of `catp_blip2` (the entry point's payload)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS_PATH)


def __getattr__(name: str) -> Any:
    if name == "MANIFEST":
        return model_manifest()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MANIFEST", "MODEL_CLASS_PATH", "MODEL_ID", "model_manifest"]
