"""Tiny BLIP-2 models, tokenizers and processors built locally (no Hub): for tests, demos and the embedded model.

They have real BLIP-2 structure (ViT, Q-Former with interleaved cross-attention, OPT or T5 language model,
`Blip2Processor` with `<image>` placeholders), only small.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    Blip2Config,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    InstructBlipConfig,
    InstructBlipProcessor,
    InstructBlipVideoConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    T5Config,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from ..configuration_catp import CatpConfig
from ..configuration_catp_instructblip import CatpInstructBlipConfig
from ..configuration_catp_instructblipvideo import CatpInstructBlipVideoConfig
from ..modeling_catp import CatpBlip2ForConditionalGeneration
from ..modeling_catp_instructblip import CatpInstructBlipForConditionalGeneration
from ..modeling_catp_instructblipvideo import CatpInstructBlipVideoForConditionalGeneration

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE)  # ids 0..4 in this order

DEFAULT_WORDS = (
    "question answer short what is the this a an of in on color shape how many are there picture image "
    "red green blue yellow circle square triangle left right top bottom one two three four yes no : ? ."
).split()


def tiny_tokenizer(words: Iterable[str] = DEFAULT_WORDS) -> PreTrainedTokenizerFast:
    """A lowercasing word-level fast tokenizer: ids 0..4 are <pad> <s> </s> <unk> <image>, then `words` in order."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()  # "Question: ... Short answer:" maps onto lowercase words
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    # Like OPT's tokenizer: BOS before every text, which BLIP-2's processor puts after the image placeholders.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tokenizer


def _tiny_text_config(
    language_model: Literal["opt", "t5"], vocab_size: int, hidden_size: int, heads: int, text_layers: int, positions: int
) -> OPTConfig | T5Config:
    """The language model's config: ids 0, 1, 2 are pad, BOS, EOS as in `tiny_tokenizer()`."""
    special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if language_model == "opt":
        return OPTConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            word_embed_proj_dim=hidden_size,
            ffn_dim=2 * hidden_size,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            max_position_embeddings=positions,
            **special,
        )
    elif language_model == "t5":
        return T5Config(
            vocab_size=vocab_size,
            d_model=hidden_size,
            d_kv=hidden_size // heads,
            d_ff=2 * hidden_size,
            num_layers=text_layers,
            num_decoder_layers=text_layers,
            num_heads=heads,
            decoder_start_token_id=0,
            **special,
        )
    else:
        raise ValueError(f"`language_model` must be 'opt' or 't5'; got {language_model!r}.")


def tiny_blip2_config(
    language_model: Literal["opt", "t5"] = "opt",
    vocab_size: int | None = None,
    num_query_tokens: int = 32,
    image_size: int = 30,
    patch_size: int = 6,
    hidden_size: int = 32,
    qformer_layers: int = 4,
    cross_attention_frequency: int = 2,
    text_layers: int = 2,
    text_positions: int = 128,
) -> Blip2Config:
    """A stock `Blip2Config` for a tiny model matching `tiny_tokenizer()` (image_token_id 4)."""
    vocab_size = vocab_size or len(tiny_tokenizer())
    heads = 4
    vision = Blip2VisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        # Stock default is 1e-10 (right for loading pretrained weights, wrong for a model built from scratch): a
        # ViT that small maps every image to the same features, so nothing downstream can depend on the image.
        initializer_range=0.02,
    )
    qformer = Blip2QFormerConfig(
        hidden_size=hidden_size,
        num_hidden_layers=qformer_layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden_size,
        cross_attention_frequency=cross_attention_frequency,
        encoder_hidden_size=hidden_size,
        vocab_size=vocab_size,
    )
    text = _tiny_text_config(language_model, vocab_size, hidden_size, heads, text_layers, text_positions)
    return Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=SPECIAL_TOKENS.index(IMAGE),
    )


def tiny_instructblip_config(language_model: Literal["opt", "t5"] = "opt", **sizes: Any) -> InstructBlipConfig:
    """A stock `InstructBlipConfig` of the same tiny shape as `tiny_blip2_config` (the Q-Former reads
    `tiny_tokenizer()` ids too)."""
    return as_instructblip_config(tiny_blip2_config(language_model, **sizes))


def as_instructblip_config(blip2: Blip2Config, video: bool = False) -> InstructBlipConfig | InstructBlipVideoConfig:
    """The `InstructBlipConfig` (or `InstructBlipVideoConfig`) of the same shape as a `Blip2Config`: InstructBLIP is
    BLIP-2 whose Q-Former also reads the instruction's token ids (of its own vocabulary `qformer_config.vocab_size`);
    for video the placeholder token becomes the video token."""

    def part(config) -> dict[str, Any]:
        values = config.to_dict()
        values.pop("model_type", None)  # the InstructBLIP sub-configs have their own
        return values

    shared = {
        "vision_config": part(blip2.vision_config),
        "qformer_config": part(blip2.qformer_config),
        "text_config": blip2.text_config.to_dict(),
        "num_query_tokens": blip2.num_query_tokens,
    }
    if video:
        return InstructBlipVideoConfig(**shared, video_token_index=blip2.image_token_index)
    return InstructBlipConfig(**shared, image_token_index=blip2.image_token_index)


def tiny_instructblip_processor(image_size: int = 30, num_query_tokens: int = 32) -> InstructBlipProcessor:
    """An `InstructBlipProcessor`: `num_query_tokens` `<image>` placeholders before each prompt, and the prompt's
    own ids for the Q-Former (`qformer_input_ids`)."""
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return InstructBlipProcessor(image_processor, tiny_tokenizer(), tiny_tokenizer(), num_query_tokens=num_query_tokens)


def tiny_instructblip_model(
    language_model: Literal["opt", "t5"] = "opt", seed: int = 0, **pruning_settings: Any
) -> CatpInstructBlipForConditionalGeneration:
    """A randomly initialised tiny CATP InstructBLIP in eval mode (query tokens drawn as in `tiny_model`)."""
    torch.manual_seed(seed)
    config = CatpInstructBlipConfig.from_stock_config(tiny_instructblip_config(language_model), **pruning_settings)
    model = CatpInstructBlipForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_()
    return model.eval()


def tiny_instructblipvideo_config(language_model: Literal["opt", "t5"] = "opt", **sizes: Any) -> InstructBlipVideoConfig:
    """A stock `InstructBlipVideoConfig` of the tiny shape (placeholders: `<image>`, id 4, as video tokens); OPT gets
    room for the 4 x 32 video tokens and a prompt."""
    return as_instructblip_config(tiny_blip2_config(language_model, **{"text_positions": 256, **sizes}), video=True)


def tiny_instructblipvideo_model(
    language_model: Literal["opt", "t5"] = "opt", seed: int = 0, **pruning_settings: Any
) -> CatpInstructBlipVideoForConditionalGeneration:
    """A randomly initialised tiny CATP InstructBLIP-Video in eval mode (query tokens drawn as in `tiny_model`)."""
    torch.manual_seed(seed)
    stock = tiny_instructblipvideo_config(language_model)
    config = CatpInstructBlipVideoConfig.from_stock_config(stock, **pruning_settings)
    model = CatpInstructBlipVideoForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_()
    return model.eval()


def tiny_video_inputs(
    config: Any, prompts: list[str], frames: int = 4, image_size: int = 30, seed: int = 0
) -> dict[str, torch.Tensor]:
    """What InstructBlipVideoProcessor makes, built directly (its video processor needs torchvision): pixel_values
    (B, frames, 3, S, S); input_ids with frames x num_query_tokens video placeholders before each left-padded prompt;
    qformer_input_ids of the prompts, right-padded; both attention masks."""
    tokenizer = tiny_tokenizer()
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(len(prompts), frames, 3, image_size, image_size, generator=generator)
    placeholders = [config.video_token_id] * frames * config.num_query_tokens
    tokenizer.padding_side = "left"
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    ids = torch.cat([torch.tensor([placeholders] * len(prompts)), text["input_ids"]], dim=1)
    pads = (text["attention_mask"] == 0).sum(dim=1)
    mask = torch.cat([torch.ones(len(prompts), len(placeholders), dtype=torch.long), text["attention_mask"]], dim=1)
    # Left padding goes before the placeholders, as the processor puts it.
    order = torch.stack([torch.cat([torch.arange(len(placeholders), len(placeholders) + p), torch.arange(len(placeholders)),
                                    torch.arange(len(placeholders) + p, ids.shape[1])]) for p in pads.tolist()])
    tokenizer.padding_side = "right"
    qformer = tokenizer(prompts, padding=True, return_tensors="pt")
    return {
        "pixel_values": pixel_values,
        "input_ids": ids.gather(1, order),
        "attention_mask": mask.gather(1, order),
        "qformer_input_ids": qformer["input_ids"],
        "qformer_attention_mask": qformer["attention_mask"],
    }


def tiny_processor(
    tokenizer: PreTrainedTokenizerFast | None = None, image_size: int = 30, num_query_tokens: int = 32
) -> Blip2Processor:
    """A `Blip2Processor` that puts `num_query_tokens` `<image>` placeholders before each prompt."""
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return Blip2Processor(image_processor, tokenizer or tiny_tokenizer(), num_query_tokens=num_query_tokens)


def tiny_model(
    language_model: Literal["opt", "t5"] = "opt", seed: int = 0, **pruning_settings: Any
) -> CatpBlip2ForConditionalGeneration:
    """A randomly initialised tiny CATP model in eval mode.

    Stock BLIP-2 initialises the query tokens to zeros, which makes every query attend alike and every score tie;
    a trained model's query tokens differ, so here they are drawn from a normal distribution.
    """
    torch.manual_seed(seed)
    config = CatpConfig.from_blip2_config(tiny_blip2_config(language_model), **pruning_settings)
    model = CatpBlip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_()
    return model.eval()


__all__ = [
    "DEFAULT_WORDS",
    "SPECIAL_TOKENS",
    "as_instructblip_config",
    "tiny_blip2_config",
    "tiny_instructblip_config",
    "tiny_instructblip_model",
    "tiny_instructblip_processor",
    "tiny_instructblipvideo_config",
    "tiny_instructblipvideo_model",
    "tiny_model",
    "tiny_processor",
    "tiny_tokenizer",
    "tiny_video_inputs",
]
