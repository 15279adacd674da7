"""MMPose checkpoint -> official (SimpleBaseline / HRNet code) key layout.

MMPose top-down models keep the trunk under `backbone.` and the head under `keypoint_head.`
(MMPose 0.x, `TopdownHeatmapSimpleHead`) or `head.` (MMPose 1.x, `HeatmapHead`). Inside those
prefixes the names already equal the official ones:

| MMPose key                                   | official key            |
|----------------------------------------------|-------------------------|
| `backbone.conv1.weight`, `backbone.layer4.*` | `conv1.weight`, `layer4.*` (HRNet: `transition*`, `stage*` too) |
| `keypoint_head.deconv_layers.N.*` / `head.deconv_layers.N.*` | `deconv_layers.N.*` (ConvT at 3i, BN at 3i+1) |
| `keypoint_head.final_layer.*` / `head.final_layer.*` | `final_layer.*` |
| `head.mlp_head_x.*`, `head.mlp_head_y.*` (`--arch simcc`, MMPose 1.x `SimCCHead`) | `mlp_head_x.*`, `mlp_head_y.*` (official `leeyegy/SimCC`) |

Any other key (an extra head conv, a neck, a second head) is not silently dropped: the conversion
fails and lists it. An official-layout SimCC file loads into `SimCCHead` (whose wrapped model sits
under `base.`) through `load_weights`, which adds that prefix when it is what makes the keys
match. `posedistill convert IN OUT --arch simplebaseline|hrnet|simcc` (posedistill/commands/convert.py)
writes the converted state dict atomically (temporary file, then os.replace).
"""
from __future__ import annotations

import os
import tempfile
from typing import Mapping

import torch

from posedistill.errors import InputError

ARCHS = ("simplebaseline", "hrnet", "simcc")
HEAD_PREFIXES = ("keypoint_head.", "head.")  # MMPose 0.x, 1.x


def _unwrap(obj: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{where}: expected an MMPose checkpoint (a dict with 'state_dict') or a state dict")
    return dict(obj)


def convert_mmpose_checkpoint(state_dict: Mapping[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename an MMPose top-down state dict (0.x or 1.x) to the official layout of `arch`.

    Accepts a raw state dict or a full MMPose checkpoint dict ({"meta", "state_dict", ...}).
    Raises ValueError listing every key that has no official counterpart, or when the head keys
    do not fit `arch` (deconv layers in an HRNet checkpoint, none in a SimpleBaseline one)."""
    if arch not in ARCHS:
        raise InputError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    state = _unwrap(state_dict, "convert_mmpose_checkpoint")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
        state = {k[len("module."):]: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        new = None
        if key.startswith("backbone."):
            new = key[len("backbone."):]
        else:
            for prefix in HEAD_PREFIXES:
                if key.startswith(prefix):
                    rest = key[len(prefix):]
                    if rest.startswith(("deconv_layers.", "final_layer.")) or (
                            arch == "simcc" and rest.startswith(("mlp_head_x.", "mlp_head_y."))):
                        new = rest
                    break
        if new is None:
            unmapped.append(key)
            continue
        if new in out:
            raise InputError(f"two MMPose keys map to {new!r} (mixed 0.x 'keypoint_head.' and 1.x 'head.' keys?)")
        out[new] = value
    if unmapped:
        raise InputError(f"{len(unmapped)} MMPose key(s) have no official {arch} counterpart: "
                         f"{', '.join(sorted(unmapped))}")
    has_deconv = any(k.startswith("deconv_layers.") for k in out)
    if arch == "hrnet" and has_deconv:
        raise InputError("checkpoint has head deconv_layers.* keys, which the official HRNet has not; "
                         "use --arch simplebaseline")
    if arch == "simplebaseline" and not has_deconv:
        raise InputError("checkpoint has no head deconv_layers.* keys; a SimpleBaseline checkpoint needs them "
                         "(an HRNet checkpoint? use --arch hrnet)")
    if arch == "simcc" and not {"mlp_head_x.weight", "mlp_head_y.weight"} <= set(out):
        raise InputError("checkpoint has no head mlp_head_x / mlp_head_y weights; not a SimCC checkpoint")
    if "final_layer.weight" not in out:
        raise InputError("checkpoint has no head final_layer.weight (expected keypoint_head.final_layer.weight "
                         "or head.final_layer.weight)")
    return out


def save_atomic(obj: object, path: str) -> None:
    """torch.save to a temporary file in the target folder, then os.replace it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
