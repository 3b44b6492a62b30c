"""Models for the benchmark: named architectures with random weights, the tiny models, or any checkpoint.

`load_bench_model(name_or_path, dtype, device)` returns a `CatpBlip2ForConditionalGeneration` in eval mode:
- `"blip2-opt-2.7b"`: the exact architecture of `Salesforce/blip2-opt-2.7b` (about 3.74e9 parameters) with random
  weights, built without downloading anything;
- `"tiny"`: `catp_blip2.toy.tiny.tiny_model()` (OPT language model);
- `"embedded"`: the trained tiny model shipped in `catp_blip2.toy.embedded`;
- anything else: a local checkpoint folder or a Hub id, loaded with `from_pretrained`.

`stock_twin(model)` makes a stock `Blip2ForConditionalGeneration` whose modules ARE the CATP model's modules, so
stock and CATP are timed on the very same weights without a second copy in memory.

Timing does not depend on weight values, but generation must stay finite, and attention scores must not all tie
(stock BLIP-2 starts its query tokens at zero), so random weights are N(0, 0.02) with LayerNorms at (1, 0).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from transformers import (
    Blip2Config,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    InstructBlipConfig,
    LlamaConfig,
    OPTConfig,
    T5Config,
)
from transformers.initialization import no_init_weights

from ..checkpoints import EMBEDDED, family_of_model_type, load_catp_model, torch_dtype
from ..configuration_catp import PRUNING_SETTINGS
from ..modeling_catp import CatpBlip2ForConditionalGeneration


# Salesforce/blip2-opt-2.7b as converted for transformers 5: 3,744,761,856 parameters (lm_head tied to the
# input embeddings). The text vocabulary is 50304 rows; the processor's <image> token is id 50265.
BLIP2_OPT_2_7B_PARAMETERS = 3_744_761_856


def blip2_opt_2_7b_config() -> Blip2Config:
    """The `Blip2Config` of `Salesforce/blip2-opt-2.7b` (architecture fields; no weights, no download)."""
    vision = Blip2VisionConfig(  # EVA ViT-g/14 at 224 px: 16 x 16 patches + CLS = 257 image tokens
        hidden_size=1408,
        intermediate_size=6144,
        num_hidden_layers=39,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    qformer = Blip2QFormerConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        cross_attention_frequency=2,
        encoder_hidden_size=1408,
        max_position_embeddings=512,
        layer_norm_eps=1e-12,
    )
    text = OPTConfig(  # facebook/opt-2.7b
        vocab_size=50304,
        hidden_size=2560,
        num_hidden_layers=32,
        num_attention_heads=32,
        ffn_dim=10240,
        max_position_embeddings=2048,
        word_embed_proj_dim=2560,
        do_layer_norm_before=True,
        activation_function="relu",
        bos_token_id=2,
        eos_token_id=50118,
        pad_token_id=1,
        tie_word_embeddings=True,
    )
    return Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=32,
        image_token_index=50265,
    )


def _eva_vit_g_and_qformer() -> tuple[Blip2VisionConfig, Blip2QFormerConfig]:
    """The vision encoder and Q-Former every public BLIP-2 / InstructBLIP checkpoint shares (EVA ViT-g/14, 224 px)."""
    config = blip2_opt_2_7b_config()
    return config.vision_config, config.qformer_config


def _parts(config) -> dict:
    values = config.to_dict()
    values.pop("model_type", None)  # the InstructBLIP sub-configs have their own
    return values


def instructblip_vicuna_7b_config() -> InstructBlipConfig:
    """The architecture of `Salesforce/instructblip-vicuna-7b`: BLIP-2's ViT-g and Q-Former (whose tokenizer is BERT's
    plus one token), Vicuna-7B (LLaMA-7B shape) with the `<image>` token added to its vocabulary."""
    vision, qformer = _eva_vit_g_and_qformer()
    qformer.vocab_size = 30523
    text = LlamaConfig(
        vocab_size=32001, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return InstructBlipConfig(
        vision_config=_parts(vision), qformer_config=_parts(qformer), text_config=text.to_dict(),
        num_query_tokens=32, image_token_index=32000,
    )


def instructblip_flan_t5_xl_config() -> InstructBlipConfig:
    """The architecture of `Salesforce/instructblip-flan-t5-xl`: BLIP-2's ViT-g and Q-Former, Flan-T5-XL."""
    vision, qformer = _eva_vit_g_and_qformer()
    qformer.vocab_size = 30523
    text = T5Config(
        vocab_size=32129, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1, bos_token_id=1,
    )
    return InstructBlipConfig(
        vision_config=_parts(vision), qformer_config=_parts(qformer), text_config=text.to_dict(),
        num_query_tokens=32, image_token_index=32100,
    )


NAMED_ARCHITECTURES: dict[str, Callable[[], Any]] = {
    "blip2-opt-2.7b": blip2_opt_2_7b_config,
    "instructblip-vicuna-7b": instructblip_vicuna_7b_config,
    "instructblip-flan-t5-xl": instructblip_flan_t5_xl_config,
}
NAMED_MODELS = (*NAMED_ARCHITECTURES, "tiny", EMBEDDED)


def parse_dtype(name: str) -> torch.dtype:
    """`"float32"`, `"bfloat16"` or `"float16"` -> the torch dtype; anything else is a ValueError."""
    return torch_dtype(name, "--dtype")


@torch.no_grad()
def fill_random_weights(model: nn.Module, seed: int = 0, std: float = 0.02, pool_size: int = 1 << 22) -> None:
    """Give every parameter finite random values quickly: LayerNorm (1, 0), biases 0, the rest N(0, std).

    Drawing 3.7e9 normal numbers on 2 CPU cores takes about a minute; tiling one seeded pool of `pool_size`
    normal values (each tensor starting at a different offset) is a memory copy and gives the same timing
    behaviour, since speed does not depend on what the values are.
    """
    generator = torch.Generator().manual_seed(seed)
    pools: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def pool_for(tensor: torch.Tensor) -> torch.Tensor:
        key = (tensor.dtype, tensor.device)
        if key not in pools:
            pools[key] = (torch.randn(2 * pool_size, generator=generator) * std).to(tensor.device, tensor.dtype)
        return pools[key]

    layer_norm_params = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                module.weight.fill_(1.0)
                layer_norm_params.add(id(module.weight))
            if module.bias is not None:
                module.bias.zero_()
                layer_norm_params.add(id(module.bias))
    for name, param in model.named_parameters():
        if id(param) in layer_norm_params:
            continue
        if name.endswith(".bias"):
            param.zero_()
            continue
        flat, pool = param.view(-1), pool_for(param)
        start = int(torch.randint(pool_size, (1,), generator=generator))
        for offset in range(0, flat.numel(), pool_size):
            count = min(pool_size, flat.numel() - offset)
            flat[offset : offset + count].copy_(pool[start : start + count])


def random_model(
    config: Blip2Config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0
) -> CatpBlip2ForConditionalGeneration:
    """A CATP model of `config`'s architecture with random weights, built directly in `dtype` on `device`.

    Construction skips transformers' and torch's weight initialisation (`no_init_weights`) and allocates in
    `dtype` from the start, so the 2.7b architecture needs one bf16 copy (7.5 GB) and a few seconds, not an fp32
    copy and minutes. As `from_pretrained(dtype=...)` does, the family's `_keep_in_fp32_modules` stay fp32 (BLIP-2:
    the Q-Former and query tokens; InstructBLIP: the query tokens).
    """
    config_class, model_class = family_of_model_type(config.model_type)
    catp_config = config if isinstance(config, config_class) else config_class.from_stock_config(config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype.is_floating_point else torch.float32)
    try:
        with no_init_weights(), torch.device(device):
            model = model_class(catp_config)
    finally:
        torch.set_default_dtype(previous)
    _keep_in_fp32(model)
    model.tie_weights()
    fill_random_weights(model, seed=seed)
    # Stock BLIP-2 starts the query tokens at zero (all scores would tie); a trained model's differ.
    model.query_tokens.data.normal_(generator=torch.Generator(device=model.query_tokens.device).manual_seed(seed))
    return model.eval()


def _keep_in_fp32(model: nn.Module) -> None:
    """What `from_pretrained(dtype=...)` keeps in fp32 of the model's own parts (`_keep_in_fp32_modules`): BLIP-2 its
    Q-Former and query tokens, InstructBLIP its query tokens alone. Patterns of the language model's modules (T5's
    "wo") are left in `dtype`."""
    for name in model._keep_in_fp32_modules or ():
        part = getattr(model, name, None)
        if part is None:
            continue
        if isinstance(part, nn.Parameter):
            part.data = part.data.float()
        else:
            part.float()


def _cast(model: CatpBlip2ForConditionalGeneration, dtype: torch.dtype) -> CatpBlip2ForConditionalGeneration:
    """Everything in `dtype` except the Q-Former and query tokens, which BLIP-2 keeps in fp32."""
    model.to(dtype)
    _keep_in_fp32(model)
    return model


def load_bench_model(
    name_or_path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0
) -> CatpBlip2ForConditionalGeneration:
    """The benchmark's CATP model: a named architecture (`NAMED_MODELS`), a local checkpoint folder or a Hub id."""
    if name_or_path in NAMED_ARCHITECTURES:
        return random_model(NAMED_ARCHITECTURES[name_or_path](), dtype=dtype, device=device, seed=seed)
    if name_or_path == "tiny":
        from ..toy.tiny import tiny_model

        return _cast(tiny_model("opt", seed=seed), dtype).to(device).eval()
    return load_catp_model(name_or_path, "--model", dtype=dtype).to(device).eval()


def stock_twin(model: CatpBlip2ForConditionalGeneration) -> nn.Module:
    """The stock model of `model`'s family (`Blip2ForConditionalGeneration`, ...) sharing every module and parameter
    of `model` (no copy). It is built on the meta device (no memory) and then given `model`'s own submodules.
    """
    stock_class = next(c for c in type(model).__mro__[1:] if c.__module__.startswith("transformers.models."))
    stock_config_class = stock_class.config_class
    values = model.config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "auto_map", "custom_pipelines"):
        values.pop(key, None)
    for key in list(values):
        if key in PRUNING_SETTINGS or key in model.config.family_settings:
            values.pop(key)
    with no_init_weights(), torch.device("meta"):
        stock = stock_class(stock_config_class(**values))
    for name, _ in list(stock.named_children()):
        setattr(stock, name, getattr(model, name))
    stock.query_tokens = model.query_tokens
    leftovers = [name for name, tensor in [*stock.named_parameters(), *stock.named_buffers()] if tensor.is_meta]
    if leftovers:
        raise RuntimeError(f"stock_twin: tensors not shared with the CATP model: {leftovers[:5]}")
    return stock.eval()


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


__all__ = [
    "BLIP2_OPT_2_7B_PARAMETERS",
    "NAMED_ARCHITECTURES",
    "NAMED_MODELS",
    "blip2_opt_2_7b_config",
    "count_parameters",
    "fill_random_weights",
    "load_bench_model",
    "parse_dtype",
    "random_model",
    "stock_twin",
]
