"""Still images for training, evaluation and inference alike: any common image -> ``(H, W, 3)`` uint8 RGB,
and the one resize policy.

* :func:`read_image` handles PNG/JPEG/WebP/BMP/TIFF through Pillow, EXIF orientation, palette images,
  RGBA/LA (alpha composited over white), greyscale, 16-bit (scaled, not clipped) and float images;
* :func:`fit_frames` / :func:`resize_image`: centre-crop to the target aspect (faces are not squashed), then
  antialiased bilinear resampling -- how frames are prepared for the model everywhere.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

PathLike = Union[str, os.PathLike]
ImageLike = Union[PathLike, np.ndarray, torch.Tensor]


def to_uint8_rgb(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert an ``(H, W)``, ``(H, W, 1|2|3|4)`` array of any numeric dtype to ``(H, W, 3)`` uint8 RGB.

    Integer images are scaled by their dtype range (uint16 -> /257); float images are taken to be in
    [0, 1]. A second/fourth channel is alpha and is composited over white.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        data = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.bool_:
        data = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        top = float(info.max)
        if arr.dtype in (np.int32, np.int64, np.uint32, np.uint64) and arr.max() <= 65535:
            top = 65535.0  # Pillow reads 16-bit greyscale PNGs as int32 ("I" mode)
        data = np.clip(arr.astype(np.float64) / top, 0.0, 1.0).astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        data = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        data = np.clip(data, 0.0, 1.0)
    else:
        raise InputError(f"{name} has unsupported dtype {arr.dtype}")
    channels = data.shape[2]
    if channels in (2, 4):
        alpha = data[:, :, -1:]
        colour = data[:, :, :-1]
        data = colour * alpha + (1.0 - alpha)
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    if arr.dtype == np.uint8 and channels == 3:
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(np.round(data * 255.0).astype(np.uint8))


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (EXIF orientation applied; see :func:`to_uint8_rgb`).

    Raises :class:`InputError` when the file is missing or not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"image not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"expected an image file but {path} is a directory")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode == "P":
                img = img.convert("RGBA")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif img.mode.startswith("I;16"):
                img = img.convert("I")
            arr = np.array(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}: {type(exc).__name__}: {str(exc)[:160]}") from None
    return to_uint8_rgb(arr, name=f"image {path}")


def as_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """A path, an ``(H, W[, C])`` array or a ``(3, H, W)`` / ``(1, 3, H, W)`` float tensor in [0, 1] ->
    ``(H, W, 3)`` uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise InputError(f"{name} tensor must have shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
        return to_uint8_rgb(t.permute(1, 2, 0).numpy(), name)
    if isinstance(image, np.ndarray):
        return to_uint8_rgb(image, name)
    raise InputError(f"{name} must be a path, a numpy array or a torch tensor, got {type(image).__name__}")


def resize_tensor(frames: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The resampling of the resize policy on ``(B, C, h, w)`` tensors: antialiased bilinear to ``size = (H, W)``
    (no crop: the aspect must already match). Training uses it to give the networks their input size."""
    if tuple(frames.shape[2:]) == (int(size[0]), int(size[1])):
        return frames
    return F.interpolate(frames, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False,
                         antialias=True)


def fit_crop(height: int, width: int, size: Sequence[int]) -> Tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)``: the centred crop of a ``height x width`` frame to the aspect of
    ``size = (H, W)`` that :func:`fit_frames` takes (the longer side is cropped, so faces are not squashed)."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = int(height), int(width)
    if h * out_w > w * out_h:
        ch = max(1, round(w * out_h / out_w))
        return (h - ch) // 2, 0, ch, w
    if h * out_w < w * out_h:
        cw = max(1, round(h * out_w / out_h))
        return 0, (w - cw) // 2, h, cw
    return 0, 0, h, w


def fit_frames(frames: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The one resize policy: centre-crop ``(T, h, w, 3)`` uint8 frames to the aspect of ``size = (H, W)``
    (:func:`fit_crop`), then resize them (antialiased bilinear) -> ``(T, H, W, 3)`` uint8. Frames already of
    that size are returned as they are."""
    frames = np.asarray(frames)
    t, h, w = frames.shape[:3]
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return frames
    top, left, ch, cw = fit_crop(h, w, size)
    frames = frames[:, top:top + ch, left:left + cw]
    # channel by channel, a few frames at a time: memory stays near one float copy of one channel (a 4000 x 4000
    # portrait must not cost four float copies of itself); channels are resampled independently anyway
    out = np.empty((t, out_h, out_w, frames.shape[3]), np.uint8)
    step = max(1, (1 << 22) // max(1, frames.shape[1] * frames.shape[2]))
    for start in range(0, t, step):
        for c in range(frames.shape[3]):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + step, :, :, c])).unsqueeze(1).float()
            x = resize_tensor(x, (out_h, out_w))
            out[start:start + step, :, :, c] = x.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    return out


def resize_image(image: np.ndarray, size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` (or ``size = (H', W')``) uint8 by :func:`fit_frames`."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    return fit_frames(np.asarray(image)[None], shape)[0]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_images(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8."""
    return frames.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


#: the old name of :func:`read_image`
load_image = read_image
