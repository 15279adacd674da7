"""Parameters, GMACs and measured images/s of a model.

GMACs are counted with `torch.utils.flop_counter.FlopCounterMode` (which counts convolutions,
transposed convolutions, matmuls / linear layers) and divided by 2 (one multiply-add = 2 FLOPs),
then by 1e9. Norms, activations, pooling, interpolation and element-wise ops are not counted, as
in the usual MAC tables. A ConvTranspose2d is counted as C_in * C_out * k * k * H_in * W_in MACs
(each input pixel scatters a k x k x C_out patch), checked by hand in tests/test_profile.py.

The official HRNet/SimpleBaseline summary tool counts a ConvTranspose2d on its *output* size
(about 4x too high for stride 2) and divides by 2^30, which is why the papers quote 8.9 "GFLOPs"
for SimpleBaseline-R50 where this counter gives 5.4 GMACs.

`posedistill profile MODEL --input 256x192` (posedistill/commands/profile.py) prints a table. Sizes
on the command line are HEIGHTxWIDTH as the papers write them; in code `input_size=(width, height)`.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, input_size: tuple[int, int], device: str | torch.device = "cpu") -> float:
    """Multiply-accumulates (in 1e9) of one forward pass on a single [1, 3, H, W] image."""
    w, h = input_size
    x = torch.zeros(1, 3, h, w, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def count_official_summary_gflops(model: nn.Module, input_size: tuple[int, int]) -> float:
    """The papers' "GFLOPs" convention, recomputed: the official HRNet/SimpleBaseline summary tool
    adds, for every Conv2d / ConvTranspose2d, prod(weight.shape) x prod(output spatial size)
    (exact for convolutions, 4x the MACs of a stride-2 ConvTranspose2d, which works on the
    smaller input), and divides by 2^30. Linear layers are counted at their MACs here. Reproduces 8.99 / 12.38 / 15.76 for
    SimpleBaseline R50 / R101 / R152 at 256x192 (printed 8.9 / 12.4 / 15.7). For comparison only."""
    total = 0
    handles = []

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        # conv: output spatial positions; linear: rows besides the batch (e.g. K joints for SimCC)
        positions = output.shape[2:] if isinstance(module, nn.modules.conv._ConvNd) else output.shape[1:-1]
        total += module.weight.numel() * math.prod(positions)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook))
    w, h = input_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total / 2 ** 30


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_images_per_s(model: nn.Module, input_size: tuple[int, int], batch: int = 1,
                         device: str | torch.device = "cpu", warmup: int = 2, iters: int = 10) -> float:
    """Images per second of eval-mode forward passes at batch size `batch` (median of `iters` timings)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    device = torch.device(device)
    w, h = input_size
    x = torch.randn(batch, 3, h, w, device=device)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            _sync(device)
            for _ in range(iters):
                t0 = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    times.sort()
    return batch / times[len(times) // 2]


def profile_model(model: nn.Module, input_size: tuple[int, int] = (192, 256), device: str | torch.device = "cpu",
                  warmup: int = 2, iters: int = 10, batches: tuple[int, ...] = (1, 8)) -> dict:
    """{"params": int, "gmacs": float (batch 1), "images_per_s": {batch_size: images/s}}.

    Throughput is measured separately at each batch size in `batches` (default 1 and 8);
    `batches=()` skips timing."""
    model = model.to(device)
    result = {"params": count_params(model), "gmacs": count_gmacs(model, input_size, device), "images_per_s": {}}
    for b in batches:
        result["images_per_s"][int(b)] = measure_images_per_s(model, input_size, b, device, warmup, iters)
    return result
