"""The model zoo: localizer, grid detector, YOLOv3 / YOLOv3-tiny and U-Net.

``create_model(name, **overrides)`` builds a registered variant; ``list_models()`` names them.
Every model's ``forward`` returns raw head tensors; ``create_decoder(model)`` gives the module
that decodes them. Each variant carries its family's spec (``get_entry(name).spec``, see
:mod:`edgedet.models.spec`), which is all generic code asks about a family; weights come from
:func:`edgedet.models.weights.resolve_weights`.
"""

import edgedet.models.vit  # noqa: F401  (registers the vit family)
from edgedet.models.profile import count_parameters, model_gflops
from edgedet.models.registry import (create_decoder, create_model, get_entry, list_models, register_model,
                                     spec_of, unregister_model)
from edgedet.models.spec import FamilySpec

__all__ = ["create_model", "create_decoder", "list_models", "get_entry", "spec_of", "register_model",
           "unregister_model", "FamilySpec", "count_parameters", "model_gflops"]
