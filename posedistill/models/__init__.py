"""Pose networks. `create_model(name, **kwargs)` builds any registered variant; see `list_models()`.

Importing a family module registers its variants in `MODELS`."""
from posedistill.models.registry import MODELS, create_model, create_model_at, list_models, register_model

# Family modules (each registers its factories on import). Keep this list flat and explicit.
# from posedistill.models import pose_resnet, hrnet, elpn, fr_sbn, simcc  # noqa: E402,F401
from posedistill.models import fr_sbn, pose_resnet, simcc  # noqa: E402,F401
from posedistill.models import elpn, hrnet  # noqa: E402,F401
from posedistill.models import gcn_refiner  # noqa: E402,F401
from posedistill.models import bottomup  # noqa: E402,F401

__all__ = ["MODELS", "create_model", "create_model_at", "list_models", "register_model"]
