"""catp-blip2: Cross-Attention Token Pruning (CATP) for the Q-Former family, as drop-in transformers models.

Importing the package registers every family of `FAMILIES` (BLIP-2, InstructBLIP, InstructBLIP-Video): its CATP config
with `AutoConfig`, its model with `AutoModel`, `AutoModelForImageTextToText` and `AutoModelForVisualQuestionAnswering`.
`vqa_pipeline(model=...)` gives the visual-question-answering pipeline (which transformers 5 dropped) without remote
code.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForVisualQuestionAnswering,
)

from .configuration_catp import PRUNING_METHODS, PRUNING_SETTINGS, CatpConfig
from .configuration_catp_instructblip import CatpInstructBlipConfig
from .configuration_catp_instructblipvideo import CatpInstructBlipVideoConfig
from .modeling_catp import (
    CatpBlip2ForConditionalGeneration,
    CatpForConditionalGenerationModelOutput,
    CatpImageFeaturesOutput,
)
from .modeling_catp_instructblip import CatpInstructBlipForConditionalGeneration
from .modeling_catp_instructblipvideo import CatpInstructBlipVideoForConditionalGeneration
from .pipeline_catp import CatpVisualQuestionAnsweringPipeline, vqa_pipeline

__version__ = "0.1.0"

AUTO_MODEL_CLASSES = (AutoModel, AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering)

# One (config, model) pair per Q-Former family.
FAMILIES = (
    (CatpConfig, CatpBlip2ForConditionalGeneration),
    (CatpInstructBlipConfig, CatpInstructBlipForConditionalGeneration),
    (CatpInstructBlipVideoConfig, CatpInstructBlipVideoForConditionalGeneration),
)
for _config_class, _model_class in FAMILIES:
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    for _auto_class in AUTO_MODEL_CLASSES:
        _auto_class.register(_config_class, _model_class, exist_ok=True)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "CatpBlip2ForConditionalGeneration",
    "CatpConfig",
    "CatpForConditionalGenerationModelOutput",
    "CatpInstructBlipConfig",
    "CatpInstructBlipForConditionalGeneration",
    "CatpInstructBlipVideoConfig",
    "CatpInstructBlipVideoForConditionalGeneration",
    "FAMILIES",
    "CatpImageFeaturesOutput",
    "CatpVisualQuestionAnsweringPipeline",
    "PRUNING_METHODS",
    "PRUNING_SETTINGS",
    "__version__",
    "vqa_pipeline",
]
