"""catp-blip2: Cross-Attention Token Pruning (CATP) for BLIP-2, as a drop-in transformers model.

Importing the package registers `CatpConfig` (model_type "catp_blip2") with `AutoConfig` and
`CatpBlip2ForConditionalGeneration` with `AutoModel`, `AutoModelForImageTextToText` and
`AutoModelForVisualQuestionAnswering`. `vqa_pipeline(model=...)` gives the visual-question-answering pipeline
(which transformers 5 dropped) without remote code.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForVisualQuestionAnswering,
)

from .configuration_catp import PRUNING_METHODS, PRUNING_SETTINGS, CatpConfig
from .modeling_catp import (
    CatpBlip2ForConditionalGeneration,
    CatpForConditionalGenerationModelOutput,
    CatpImageFeaturesOutput,
)
from .pipeline_catp import CatpVisualQuestionAnsweringPipeline, vqa_pipeline

__version__ = "0.1.0"

AUTO_MODEL_CLASSES = (AutoModel, AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering)

AutoConfig.register(CatpConfig.model_type, CatpConfig, exist_ok=True)
for _auto_class in AUTO_MODEL_CLASSES:
    _auto_class.register(CatpConfig, CatpBlip2ForConditionalGeneration, exist_ok=True)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "CatpBlip2ForConditionalGeneration",
    "CatpConfig",
    "CatpForConditionalGenerationModelOutput",
    "CatpImageFeaturesOutput",
    "CatpVisualQuestionAnsweringPipeline",
    "PRUNING_METHODS",
    "PRUNING_SETTINGS",
    "__version__",
    "vqa_pipeline",
]
