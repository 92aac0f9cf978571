"""The model zoo: localizer, grid detector, YOLOv3 / YOLOv3-tiny and U-Net.

``create_model(name, **overrides)`` builds a registered variant; ``list_models()`` names them.
Every model's ``forward`` returns raw head tensors; ``create_decoder(model)`` gives the module
that decodes them.
"""

from edgedet.models.profile import count_parameters, model_gflops
from edgedet.models.registry import create_decoder, create_model, get_entry, list_models

__all__ = ["create_model", "create_decoder", "list_models", "get_entry", "count_parameters", "model_gflops"]
