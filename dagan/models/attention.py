"""Depth-aware cross-modal attention (DaGAN): queries from source-depth features, keys and values from
the warped appearance features.

``G = F + gamma * softmax(relu(Wq D)^T relu(Wk F)) relu(Wv F)``, softmax over key positions and **no**
1/sqrt(d) scaling (the official formula). Three interchangeable implementations:

* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1.0``; queries and keys
  are zero-padded to the value width so a fused kernel (flash on CPU, flash / memory-efficient on CUDA)
  applies and the ``HW x HW`` matrix is never materialised;
* ``"chunked"``: the plain formula over blocks of queries (bounded memory on any backend);
* ``"plain"``: the literal official formula, kept as the reference.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_IMPLS = ("sdpa", "chunked", "plain")


def cross_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, impl: str = "sdpa",
                    chunk: int = 4096) -> torch.Tensor:
    """``softmax(query @ key^T) @ value`` without scaling.

    Shapes: ``query (B, N, d)``, ``key (B, M, d)``, ``value (B, M, C)`` -> ``(B, N, C)``.
    """
    if impl == "sdpa":
        # Fused kernels (flash on CPU) need equal query/value widths; with DaGAN's C/8 queries PyTorch would
        # fall back to the math path, which materialises the N x N scores (2.3 GiB at N = 128^2). Zero
        # channels leave every q.k product unchanged and let the fused kernel run in O(N) memory.
        width = value.shape[-1]
        if query.shape[-1] < width:
            query = F.pad(query, (0, width - query.shape[-1]))
            key = F.pad(key, (0, width - key.shape[-1]))
        return F.scaled_dot_product_attention(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1),
                                              scale=1.0).squeeze(1)
    if impl == "plain":
        return torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1).bmm(value)
    if impl == "chunked":
        key_t = key.transpose(1, 2)
        parts = [torch.softmax(torch.bmm(q, key_t), dim=-1).bmm(value) for q in query.split(chunk, dim=1)]
        return torch.cat(parts, dim=1)
    raise ValueError(f"unknown attention implementation {impl!r}; use one of {ATTENTION_IMPLS}")


class DepthAwareAttention(nn.Module):
    """The 3D-aware cross-modal attention block (parameter names as in the official ``AttnModule``).

    ``forward(depth_feat, feat)``: ``depth_feat (B, C, H, W)`` source-depth features (queries), ``feat
    (B, C, H, W)`` warped, occlusion-masked appearance features (keys/values) -> ``(B, C, H, W)``.
    Queries depend only on the source: pass ``query=self.project_query(depth_feat)`` to reuse them.
    """

    def __init__(self, in_dim: int, impl: str = "sdpa", chunk: int = 4096):
        super().__init__()
        if in_dim < 8:
            raise ValueError(f"attention needs >= 8 channels (projects to C/8), got {in_dim}")
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.impl = impl
        self.chunk = chunk

    def project_query(self, depth_feat: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, HW, C/8)`` ReLU'd queries (source-only, cacheable)."""
        return F.relu(self.query_conv(depth_feat)).flatten(2).transpose(1, 2)

    def forward(self, depth_feat: Optional[torch.Tensor], feat: torch.Tensor,
                query: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = feat.shape
        if query is None:
            query = self.project_query(depth_feat)
        if query.shape[0] != b:
            query = query.expand(b, -1, -1)
        key = F.relu(self.key_conv(feat)).flatten(2).transpose(1, 2)
        value = F.relu(self.value_conv(feat)).flatten(2).transpose(1, 2)
        attended = cross_attention(query.to(key.dtype), key, value, self.impl, self.chunk)
        return self.gamma * attended.transpose(1, 2).reshape(b, c, h, w) + feat
