"""The fast per-frame path: the same :class:`~dagan.models.DaGAN` computation, rearranged for inference speed.

:func:`optimize_for_inference` rewrites a model in place (or a copy) so that

* every ``conv -> BatchNorm`` pair is folded into one convolution (eval-mode statistics; the
  pre-activation residual blocks fold their second norm into their first conv);
* the decoder's up-sampling blocks (nearest x2, then 3x3 conv) become sub-pixel convolutions: four 2x2 kernels on the
  low-resolution input instead of a 3x3 kernel on the upsampled one (2.25x fewer FLOPs, same output);
* spectral norms (SPADE decoder) are baked into plain weights and parameter-free instance norms keep the
  channels-last layout (:class:`InstanceStats2d`, statistics in float32);
* attention on CPU uses the chunked formula (see :func:`use_chunked_attention`);
* the heavy convolutional bodies (depth net, keypoint hourglass, dense-motion hourglass, generator
  encoders, attention, bottleneck and decoder) run in ``channels_last`` memory format and, optionally, in
  ``bfloat16``/``float16`` (weights converted once, not autocast per call);
* everything numerically delicate stays in float32: the keypoint detector (its hourglass feeds a sharp
  softmax; channels-last only), keypoint heads (softmax, soft-argmax, Jacobians),
  Jacobian inverses, sparse motions, mask/occlusion heads, ``grid_sample`` warps and the motion
  normalisation.

The model keeps its public API (``prepare_source``, ``animate_batch``, ``animate``): source-only work is
cached in a :class:`~dagan.models.dagan.SourceState` once per portrait, and each frame only runs the driving
depth, the driving keypoints and :meth:`~dagan.models.generator.DepthAwareGenerator.generate`.

:func:`plain_animate` is the official demo loop (one full generator forward per frame, nothing cached), kept
as the reference the fast path is tested and benchmarked against.

Example::

    >>> model = optimize_for_inference(DaGAN.from_pretrained("checkpoints/dagan-tiny"), dtype="bfloat16")
    >>> video = model.animate(source, driving)          # (1,3,H,W), (T,3,H,W) -> (T,3,H,W) float32
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, List, Optional, Union

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .models.dagan import DaGAN, SourceState, normalize_kp
from .utils import resolve_dtype

__all__ = ["optimize_for_inference", "inference_model", "fold_batchnorm", "subpixel_upsampling", "SubPixelUpBlock2d",
           "remove_spectral_norms", "InstanceStats2d", "fast_instance_norms", "LowPrecision", "use_chunked_attention", "plain_animate", "plain_frame", "is_optimized"]


# ---------------------------------------------------------------------------------------- BN folding
def _fold(owner: nn.Module, conv_name: str, norm_name: str) -> bool:
    conv, norm = getattr(owner, conv_name, None), getattr(owner, norm_name, None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(norm, nn.BatchNorm2d) or not norm.track_running_stats:
        return False
    # the conv keeps its identity; only its weight is replaced (one conv's worth of memory in flight at a time)
    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                  norm.eps, norm.weight, norm.bias)
    setattr(owner, norm_name, nn.Identity())
    return True


def fold_batchnorm(module: nn.Module) -> int:
    """Fold eval-mode BatchNorms into the convolutions that feed them, in place; returns how many.

    Handles the blocks whose ``forward`` is ``norm(conv(x))``: our ``SameBlock2d``/``DownBlock2d``/
    ``UpBlock2d`` (``conv``, ``norm``), ``ResBlock2d`` (``conv1`` feeds ``norm2``; ``norm1`` acts on the
    block input and stays), torchvision ResNets (``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3``, ``downsample``).
    The module must be in eval mode afterwards: the folded convs bake in the running statistics.
    """
    from .nn.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d

    count = 0
    # hold on to the blocks only: a list of every module would keep each replaced conv (all the weights) alive
    # until the loop ends, doubling peak memory
    for sub in [m for m in module.modules() if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]:
        if isinstance(sub, (SameBlock2d, DownBlock2d, UpBlock2d)):
            count += _fold(sub, "conv", "norm")
        elif isinstance(sub, ResBlock2d):
            count += _fold(sub, "conv1", "norm2")
        else:
            for conv_name, norm_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                count += _fold(sub, conv_name, norm_name)
            downsample = getattr(sub, "downsample", None)
            if isinstance(downsample, nn.Sequential) and len(downsample) == 2:
                count += _fold(downsample, "0", "1")
    return count


# ------------------------------------------------------------------------------ sub-pixel up-sampling
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def _collapse(w: torch.Tensor, dim: int) -> List[torch.Tensor]:
    """Two 2-tap kernels along ``dim`` that a 3-tap kernel becomes on a nearest-x2-upsampled input: the even
    output phase sees input offsets (-1, 0) with taps (w0, w1 + w2), the odd phase (0, +1) with (w0 + w1, w2)."""
    w0, w1, w2 = w.unbind(dim)
    return [torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)]


class SubPixelUpBlock2d(nn.Module):
    """A BN-folded :class:`~dagan.nn.blocks.UpBlock2d` (nearest x2, 3x3 conv, ReLU) computed without the
    upsampled tensor: each of the four output phases is a 2x2 convolution of the low-resolution input, run
    as one convolution with ``4 * Cout`` outputs and interleaved. Same output, 2.25x fewer FLOPs.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        w = conv.weight.detach()
        kernels = [k for rows in _collapse(w, 2) for k in _collapse(rows, 3)]  # phase-major, as _PHASES
        self.out_features = w.shape[0]
        self.weight = nn.Parameter(torch.cat(kernels, 0), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[0])
        self.bias = nn.Parameter(bias.repeat(4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = torch.relu(nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), self.weight, self.bias))
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty(n, self.out_features, 2 * h, 2 * w, dtype=y.dtype, device=y.device, memory_format=fmt)
        c = self.out_features
        for p, (a, b) in enumerate(_PHASES):
            out[:, :, a::2, b::2] = y[:, p * c:(p + 1) * c, a:a + h, b:b + w]
        return out


def subpixel_upsampling(module: nn.Module) -> int:
    """Replace every BN-folded 3x3 :class:`UpBlock2d` under ``module`` by a :class:`SubPixelUpBlock2d`, in
    place; returns how many. Blocks whose BatchNorm is still there (not folded) are left alone."""
    from .nn.blocks import UpBlock2d

    count = 0
    for owner in [m for m in module.modules() if not isinstance(m, (UpBlock2d, nn.Conv2d))]:
        for name, child in list(owner.named_children()):
            conv = getattr(child, "conv", None)
            if (isinstance(child, UpBlock2d) and isinstance(child.norm, nn.Identity) and conv.kernel_size == (3, 3)
                    and conv.padding == (1, 1) and conv.groups == 1 and conv.stride == (1, 1)):
                setattr(owner, name, SubPixelUpBlock2d(conv))
                count += 1
    return count


# ------------------------------------------------------------------------------------ SPADE decoder
def remove_spectral_norms(module: nn.Module) -> int:
    """Bake every spectral normalisation under ``module`` into its weight (``W / sigma`` with the stored
    power-iteration vectors, as eval mode computes it on every call); returns how many. Saves the per-call
    weight computation and gives the conv a plain weight that follows ``channels_last``/``dtype`` conversions."""
    from torch.nn.utils import remove_spectral_norm
    from torch.nn.utils.spectral_norm import SpectralNorm

    count = 0
    for sub in list(module.modules()):
        if any(isinstance(hook, SpectralNorm) for hook in sub._forward_pre_hooks.values()):
            remove_spectral_norm(sub)
            count += 1
    return count


class InstanceStats2d(nn.Module):
    """Parameter-free instance normalisation (``nn.InstanceNorm2d(affine=False)``) that keeps the input's
    memory format and dtype, with its statistics in float32: ``(B, C, H, W) -> (B, C, H, W)``. The stock module
    copies a channels-last input to a contiguous one and back."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, unbiased=False)
        scale = torch.rsqrt(var + self.eps)
        return (x * scale.to(x.dtype) - (mean * scale).to(x.dtype))


def fast_instance_norms(module: nn.Module) -> int:
    """Replace every parameter-free ``InstanceNorm2d`` under ``module`` by :class:`InstanceStats2d`; returns how
    many."""
    count = 0
    for owner in list(module.modules()):
        for name, child in list(owner.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.affine and not child.track_running_stats:
                setattr(owner, name, InstanceStats2d(child.eps))
                count += 1
    return count


# ------------------------------------------------------------------------------------------ attention
def use_chunked_attention(model: nn.Module, chunk: int = 512) -> int:
    """Switch every attention block to the chunked formula (blocks of ``chunk`` queries); returns how many.

    On CPU this beats the fused SDPA kernel, which needs the C/8 queries and keys zero-padded to the value
    width (8x the score FLOPs): measured at 64^2 positions, C = 256, one thread: 194 -> 125 ms (fp32) and
    187 -> 68 ms (bf16). Scores held at a time: ``chunk x HW`` per image (8 MiB at 64^2 positions, fp32).
    """
    from .models.attention import DepthAwareAttention

    blocks = [m for m in model.modules() if isinstance(m, DepthAwareAttention)]
    for block in blocks:
        block.impl, block.chunk = "chunked", chunk
    return len(blocks)


# ------------------------------------------------------------------------------------ precision islands
def _to_low(value: Any, dtype: torch.dtype, channels_last: bool) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            value = value.to(dtype)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_low(v, dtype, channels_last) for v in value)
    if isinstance(value, dict):
        return {k: _to_low(v, dtype, channels_last) for k, v in value.items()}
    return value


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float().contiguous() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    return value


class LowPrecision(nn.Module):
    """Runs ``inner`` with its weights (and floating inputs) in ``dtype`` and, optionally, ``channels_last``.

    Outputs go back to float32 (contiguous) when ``restore`` is true; with ``restore=False`` they stay in
    ``dtype`` for the next :class:`LowPrecision` island (saves a round trip between consecutive blocks).
    Methods of ``inner`` other than ``forward`` (e.g. ``project_query``) are reachable through this wrapper
    and get the same casting.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                 restore: bool = True):
        super().__init__()
        self.inner = inner.to(dtype)
        if channels_last:
            self.inner = self.inner.to(memory_format=torch.channels_last)
        self.dtype = dtype
        self.channels_last = channels_last
        self.restore = restore

    def _call(self, fn, args, kwargs):
        out = fn(*_to_low(args, self.dtype, self.channels_last), **_to_low(kwargs, self.dtype, self.channels_last))
        return _to_float(out) if self.restore else out

    def forward(self, *args, **kwargs):
        return self._call(self.inner, args, kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            attr = getattr(super().__getattr__("inner"), name)
            if callable(attr) and not isinstance(attr, nn.Module):
                return lambda *args, **kwargs: self._call(attr, args, kwargs)
            return attr


def _wrap(owner: nn.Module, name: str, dtype: torch.dtype, channels_last: bool, restore: bool = True) -> bool:
    inner = getattr(owner, name, None)
    if not isinstance(inner, nn.Module) or isinstance(inner, LowPrecision):
        return False
    if isinstance(inner, nn.ModuleList):  # wrap the elements: the owner iterates over the list itself
        for i in range(len(inner)):
            _wrap(inner, str(i), dtype, channels_last, restore)
        return True
    setattr(owner, name, LowPrecision(inner, dtype, channels_last, restore))
    return True


def _islands(model: DaGAN, precise_keypoints: bool = True) -> Iterable[tuple]:
    """``(owner, attribute, restore, float32)`` of the heavy conv bodies (everything else stays float32);
    ``float32``: the island runs channels-last in float32 whatever the dtype."""
    yield model, "depth_encoder", False, False
    yield model, "depth_decoder", True, False
    # the keypoint hourglass feeds a temperature-0.1 softmax: in bfloat16 the keypoints move enough to cost the
    # shipped model 26 dB (PSNR against float32 44.4 dB, 70.8 dB with this island in float32)
    yield model.kp_detector, "predictor", True, precise_keypoints
    gen = model.generator
    if getattr(gen, "dense_motion_network", None) is not None:
        yield gen.dense_motion_network, "hourglass", True, False
    for name in ("first", "down_blocks", "src_first", "src_down_blocks", "AttnModule"):
        yield gen, name, True, False
    # decoder: bottleneck and up blocks hand low-precision features on, the last layer restores float32
    yield gen, "bottleneck", False, False
    yield gen, "up_blocks", False, False
    yield gen, "final", True, False
    yield gen, "decoder", True, False  # SPADE decoder


def is_optimized(model: nn.Module) -> bool:
    return any(isinstance(m, LowPrecision) for m in model.modules())


def optimize_for_inference(model: DaGAN, dtype: Union[str, torch.dtype, None] = torch.float32,
                           channels_last: bool = True, fuse: bool = True, inplace: bool = True,
                           compile: bool = False, subpixel: bool = True, precise_keypoints: bool = True) -> DaGAN:
    """Rewrite ``model`` for fast inference (see the module docstring); returns it (or a changed copy).

    Args:
        dtype: precision of the conv bodies: ``float32``, ``bfloat16`` (CPUs with AVX-512 BF16/AMX, CUDA)
            or ``float16`` (CUDA). Inputs and outputs of the model stay float32 either way.
        channels_last: NHWC activations for the conv bodies (faster oneDNN / cuDNN kernels).
        fuse: fold BatchNorms into convolutions.
        inplace: change ``model`` itself (no second copy of the weights in memory) or a deep copy.
        subpixel: compute the generator decoder's (BN-folded) nearest-x2 + 3x3 up-sampling blocks as four 2x2
            sub-pixel convolutions (:class:`SubPixelUpBlock2d`; needs ``fuse``). The hourglasses keep theirs:
            at their low resolution the saving is small and the 16/9x larger kernels cost memory.
        precise_keypoints: keep the keypoint detector's hourglass in float32 (channels-last) whatever ``dtype``:
            in bfloat16 it moves the keypoints (44 dB PSNR against float32 for the shipped model, 71 dB without).
        compile: additionally ``torch.compile`` the per-frame generator (needs a working C++ toolchain on
            CPU; off by default).

    The result is inference-only (``eval`` mode, no gradients through folded BatchNorms).
    """
    dtype = resolve_dtype(dtype)
    if is_optimized(model):
        raise ValueError("model is already optimized for inference")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if fuse:
        fold_batchnorm(model)
        # the decoder's up blocks only (the SPADE decoder has none): the hourglass ones run at low resolution
        # on wide, memory-heavy kernels
        if subpixel and isinstance(getattr(model.generator, "up_blocks", None), nn.Module):
            subpixel_upsampling(model.generator.up_blocks)
    remove_spectral_norms(model)
    fast_instance_norms(model)
    if next(model.parameters()).device.type == "cpu":
        use_chunked_attention(model)
    for owner, name, restore, keep_float32 in _islands(model, precise_keypoints):
        _wrap(owner, name, torch.float32 if keep_float32 else dtype, channels_last, restore)
    if compile:
        model.generator.generate = torch.compile(model.generator.generate, dynamic=False)
    model.inference_dtype = dtype
    return model


def inference_model(model: DaGAN, dtype: Union[str, torch.dtype]) -> DaGAN:
    """``model`` on the fast path in ``dtype``, rewritten in place (no second copy of the weights); a model
    already optimised for ``dtype`` is returned as is. A model optimised for another dtype raises
    :class:`~dagan.errors.InputError` (its weights are already converted: load it again)."""
    from .errors import InputError

    dtype = resolve_dtype(dtype)
    if is_optimized(model):
        have = getattr(model, "inference_dtype", None)
        if have != dtype:
            raise InputError(f"this model is already optimized for inference in {str(have).replace('torch.', '')}: "
                             f"load it again to run it in {str(dtype).replace('torch.', '')}")
        return model
    return optimize_for_inference(model, dtype=dtype, inplace=True)


# ------------------------------------------------------------------------------------ the plain path
def plain_frame(model: DaGAN, source: torch.Tensor, source_depth: torch.Tensor, kp_source: dict,
                kp_initial: Optional[dict], frame: torch.Tensor, relative: bool = True,
                adapt_movement_scale: bool = True):
    """One iteration of the official demo loop: :meth:`DaGAN.drive` (driving depth and keypoints),
    :func:`~dagan.models.dagan.normalize_kp` (convex hulls recomputed) and then a **full** generator forward
    (source encoders included) instead of the cached one. ``frame (B, 3, H, W)``; ``kp_initial`` None makes this
    frame the anchor. Returns ``(prediction (B, 3, H, W), kp_initial)``."""
    state = SourceState(source, source_depth, kp_source, {})
    motion = model.drive(state, frame)
    if kp_initial is None:
        kp_initial = {k: v[:1] for k, v in motion["kp_driving"].items()}
    kp_norm = normalize_kp(kp_source, motion["kp_driving"], kp_initial, relative, adapt_movement_scale)[0]
    b = frame.shape[0]
    out = model.generator(source.expand(b, -1, -1, -1), kp_driving=kp_norm,
                          kp_source={k: v.expand(b, *v.shape[1:]) for k, v in kp_source.items()},
                          source_depth=source_depth.expand(b, -1, -1, -1), driving_depth=motion["driving_depth"])
    return out["prediction"], kp_initial


@torch.no_grad()
def plain_animate(model: DaGAN, source: torch.Tensor, driving: Union[torch.Tensor, Iterable[torch.Tensor]],
                  relative: bool = True, adapt_movement_scale: bool = True) -> torch.Tensor:
    """The official demo loop, the reference for the fast path: source depth and keypoints once, then
    :func:`plain_frame` for every driving frame (nothing else cached).

    ``source (1, 3, H, W)``, ``driving (T, 3, H, W)`` (or an iterable of ``(1, 3, H, W)``), both in [0, 1]
    -> ``(T, 3, H, W)``.
    """
    source_depth = model.estimate_depth(source)
    kp_source = model.detect_keypoints(source, source_depth)
    frames: List[torch.Tensor] = []
    kp_initial: Optional[dict] = None
    iterator = driving.split(1) if isinstance(driving, torch.Tensor) else driving
    for frame in iterator:
        prediction, kp_initial = plain_frame(model, source, source_depth, kp_source, kp_initial, frame, relative,
                                             adapt_movement_scale)
        frames.append(prediction)
    return torch.cat(frames)
