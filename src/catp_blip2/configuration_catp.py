"""Configuration of CATP-pruned BLIP-2: a `Blip2Config` plus the pruning settings, validated."""

from __future__ import annotations

import copy
from typing import Any, Sequence

from huggingface_hub.dataclasses import strict
from transformers import Blip2Config

from .pipeline_catp import VQA_TASK, CatpVisualQuestionAnsweringPipeline
from .methods import IMAGE_TOKEN_WEIGHTINGS, PRUNING_METHODS, VOTE_AGGREGATIONS, VOTE_LAYER_NAMES
from .scoring import CORE_SETTINGS, as_int, method_settings


# The Auto classes a saved CATP folder maps to its own code, so it loads with trust_remote_code=True where catp_blip2
# is not installed (save_pretrained writes the core's files beside config.json).
AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForImageTextToText", "AutoModelForVisualQuestionAnswering")


def pruning_settings() -> tuple[str, ...]:
    """Every pruning setting a `CatpConfig` holds: the two core ones, then each registered method's (read live)."""
    return (*CORE_SETTINGS, *method_settings())


def default_pruning_settings() -> dict[str, Any]:
    """Every pruning setting at its default: what a config that names none of them holds."""
    defaults = {"pruning_method": "catp", "num_kept_query_tokens": None, "vision_merge_per_layer": 0}
    return {**defaults, **{name: copy.deepcopy(s.default) for name, s in method_settings().items()}}


class _LiveNames(Sequence[str]):
    """A tuple-like view of `pruning_settings()` that follows the registry (methods may be registered later)."""

    def __getitem__(self, index):
        return pruning_settings()[index]

    def __len__(self) -> int:
        return len(pruning_settings())

    def __repr__(self) -> str:
        return repr(pruning_settings())


PRUNING_SETTINGS: Sequence[str] = _LiveNames()


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"`{name}` must be {allowed}; got {value!r}.")


class PruningConfigMixin:
    """What every CATP config adds to its stock config: the pruning settings, their validation, and what a saved
    folder needs to load through remote code. A concrete config puts it first among its bases and sets
    `model_type`, `base_model_types` (the stock model types whose checkpoints load into it) and
    `remote_model_class` (the "module.Class" its saved folders map the Auto model classes to)."""

    model_type: str
    base_model_types: tuple[str, ...] = ()
    remote_model_class: str
    # Settings only this family has (InstructBLIP-Video: num_frames, frame_selection).
    family_settings: tuple[str, ...] = ()

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # A stock checkpoint's config.json carries its own model_type ("blip-2", ...), which the base class would
        # set on the instance; the CATP config must save (and reload) as its own.
        vars(self).pop("model_type", None)
        self._declare_remote_code()
        self.check_pruning_settings()

    def _declare_remote_code(self) -> None:
        """`auto_map` for every Auto class and the `visual-question-answering` pipeline, in the config itself, so
        that every saved folder (not only exports) loads and runs its pipeline through remote code.

        transformers 5 removed that task and resolves it only through `custom_pipelines`; `register_for_auto_class`
        would map a single Auto class, so the map is written whole."""
        module = type(self).__module__.rsplit(".", 1)[-1]
        auto_map = {"AutoConfig": f"{module}.{type(self).__name__}"}
        auto_map.update({name: self.remote_model_class for name in AUTO_MODEL_CLASSES})
        self.auto_map = {**auto_map, **(getattr(self, "auto_map", None) or {})}
        pipelines = dict(getattr(self, "custom_pipelines", None) or {})
        pipelines.setdefault(
            VQA_TASK,
            {
                "impl": f"pipeline_catp.{CatpVisualQuestionAnsweringPipeline.__name__}",
                "pt": ["AutoModelForVisualQuestionAnswering"],
                "tf": [],
                "type": "multimodal",
            },
        )
        self.custom_pipelines = pipelines

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") in cls.base_model_types:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @property
    def num_cross_attention_layers(self) -> int:
        """How many Q-Former layers have cross-attention (layer i does when i % frequency == 0)."""
        q = self.qformer_config
        return len(range(0, q.num_hidden_layers, q.cross_attention_frequency))

    @property
    def total_query_tokens(self) -> int:
        """How many query tokens the language model would get unpruned (InstructBLIP-Video: frames x queries)."""
        return self.num_query_tokens

    @property
    def kept_query_tokens(self) -> int:
        """k resolved: `num_kept_query_tokens`, or all query tokens when that is `None` or the method is `"none"`."""
        if self.pruning_method == "none" or self.num_kept_query_tokens is None:
            return self.total_query_tokens
        return self.num_kept_query_tokens

    def voting_layer_positions(self) -> list[int]:
        """Positions, among the cross-attention layers, of the layers that vote."""
        n = self.num_cross_attention_layers
        if self.vote_layers == "first":
            return [0]
        if self.vote_layers == "last":
            return [n - 1]
        if self.vote_layers == "all":
            return list(range(n))
        return list(self.vote_layers)

    def voting_layer_weights(self) -> list[float]:
        """One weight per entry of `voting_layer_positions()`."""
        positions = self.voting_layer_positions()
        if self.vote_layer_weights is None:
            return [1.0] * len(positions)
        return [float(w) for w in self.vote_layer_weights]

    def check_pruning_settings(self) -> None:
        """Raise a `ValueError` naming the first invalid pruning setting, its value and what is allowed.

        Called at construction and again by the model at every call, since settings may be changed in between.
        A registered method's setting that this config does not hold yet takes its declared default.
        """
        if self.pruning_method not in PRUNING_METHODS:
            raise _bad("pruning_method", self.pruning_method, f"one of {tuple(PRUNING_METHODS)}")
        q = self.total_query_tokens
        k = self.num_kept_query_tokens
        if k is not None:
            if as_int(k) is None or not 1 <= as_int(k) <= q:
                raise _bad("num_kept_query_tokens", k, f"None or an integer in 1..{q} ({self.total_query_tokens_text})")
            self.num_kept_query_tokens = as_int(k)  # numpy and tensor integers are stored as plain ints
        self._check_vision_merge()
        for name, setting in method_settings().items():
            value = getattr(self, name) if name in vars(self) else copy.deepcopy(setting.default)
            try:
                setattr(self, name, setting.check(value, self))
            except ValueError as error:
                raise _bad(name, value, str(error)) from None

    @property
    def num_patch_tokens(self) -> int:
        """The vision encoder's patch tokens per image, CLS not counted: (image_size // patch_size) ** 2."""
        vision = self.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    def _check_vision_merge(self) -> None:
        """`vision_merge_per_layer` (r): an integer from 0 to half the patch tokens, the most one layer's bipartite
        matching can merge (CLS never merges; later layers merge fewer once fewer tokens are left)."""
        r = getattr(self, "vision_merge_per_layer", 0)
        limit = self.num_patch_tokens // 2
        if as_int(r) is None or not 0 <= as_int(r) <= limit:
            raise _bad(
                "vision_merge_per_layer", r,
                f"an integer in 0..{limit} (image tokens merged in each vision layer: at most half of the "
                f"{self.num_patch_tokens} patch tokens, (image_size // patch_size) ** 2; 0 merges none)",
            )
        self.vision_merge_per_layer = as_int(r)

    # What `total_query_tokens` is, for error messages.
    total_query_tokens_text = "num_query_tokens"

    @classmethod
    def from_stock_config(cls, config: Any, **pruning_settings: Any) -> Any:
        """This CATP config with every field of a stock config (`Blip2Config`, ...) and the given pruning settings."""
        allowed = [*PRUNING_SETTINGS, *cls.family_settings]
        unknown = set(pruning_settings) - set(allowed)
        if unknown:
            raise ValueError(f"Unknown pruning setting(s) {sorted(unknown)}; allowed: {allowed}.")
        values = config.to_dict()
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "custom_pipelines"):
            values.pop(key, None)
        values.update(pruning_settings)
        return cls(**values)


@strict
class CatpConfig(PruningConfigMixin, Blip2Config):
    r"""
    Configuration of [`CatpBlip2ForConditionalGeneration`]: every `Blip2Config` field plus the pruning settings.

    Settings of methods registered later (`scoring.register_pruning_method`) are accepted too, with their declared
    defaults and checks.

    pruning_method (`str`, defaults to `"catp"`):
        How query tokens are scored (any name in `scoring.PRUNING_METHODS`): `"catp"` (cross-attention votes), `"l2"` (norm of the Q-Former output token),
        `"self_attention"` (attention received in the Q-Former self-attention), `"position"` (keep the first k),
        `"random"` (a seeded random k) or `"none"` (keep all; identical to stock BLIP-2).
    num_kept_query_tokens (`int`, *optional*):
        k, the number of query tokens given to the language model, in 1..`num_query_tokens`. `None` keeps all.
    vote_layers (`str` or `list[int]`, defaults to `"first"`):
        Which Q-Former cross-attention layers vote: `"first"`, `"last"`, `"all"`, or positions among the
        cross-attention layers (0 is the first cross-attention layer, not the first Q-Former layer).
    vote_layer_weights (`list[float]`, *optional*):
        One non-negative weight per voting layer (not all zero). `None` weighs every voting layer 1. Only their
        ratios matter: the model scales them so that the largest is 1.
    image_token_weighting (`str`, defaults to `"none"`):
        `"vit_attention"` weights each image token's votes by the attention that token receives in the
        vision encoder's last layer (summed over heads and attending tokens, normalised over tokens).
    vote_aggregation (`str`, defaults to `"rank"`):
        `"rank"`: each voter gives Borda points 0..Q-1 by attention rank (the paper). `"soft"`: each voter splits
        one vote over the queries in proportion to its attention.
    pruning_seed (`int`, defaults to 0):
        Seed of `pruning_method="random"`.
    vision_merge_per_layer (`int`, defaults to 0):
        r: image tokens merged in each vision-encoder layer (ToMe bipartite soft matching on the attention keys,
        CLS never merged, size-weighted means with proportional attention in the later vision layers and in the
        Q-Former's cross-attention; CATP's votes count a merged token by its size). In 0..num_patch_tokens // 2;
        0 is the stock vision encoder, bit for bit.
    """

    model_type = "catp_blip2"
    base_model_types = ("blip-2",)
    remote_model_class = "modeling_catp.CatpBlip2ForConditionalGeneration"

    # Typed `Any` on purpose: `@strict` type errors are not ValueErrors, and every bad setting must raise a
    # ValueError that names the setting, the value and what is allowed (see `check_pruning_settings`). The
    # methods' own settings are no fields: each is declared once, in its method's registry entry
    # (`scoring.register_pruning_method`), and stored as a plain attribute, so a method registered later brings its own.
    pruning_method: Any = "catp"
    num_kept_query_tokens: Any = None
    vision_merge_per_layer: Any = 0

    @classmethod
    def from_blip2_config(cls, config: Blip2Config, **pruning_settings: Any) -> "CatpConfig":
        """A `CatpConfig` with every field of a stock `Blip2Config` and the given pruning settings."""
        return cls.from_stock_config(config, **pruning_settings)


# save_pretrained writes this module (and what it imports relatively) beside config.json.
CatpConfig.register_for_auto_class()

__all__ = [
    "AUTO_MODEL_CLASSES",
    "CatpConfig",
    "IMAGE_TOKEN_WEIGHTINGS",
    "PRUNING_METHODS",
    "PRUNING_SETTINGS",
    "PruningConfigMixin",
    "VOTE_AGGREGATIONS",
    "VOTE_LAYER_NAMES",
    "default_pruning_settings",
    "pruning_settings",
]
