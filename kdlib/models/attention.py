"""Multi-head self-attention through PyTorch's fused kernel, shared by the GPT, the ViT, the AST and their packs.

:func:`multi_head_self_attention` is the one place that splits a projection into heads, runs
``F.scaled_dot_product_attention`` (flash or memory-efficient on CUDA) and merges the heads again; a layer passes
its own projections. A pack (:mod:`kdlib.models.packed`) folds its K models into the batch, so the same call runs
``[K * B, H, L, D]`` sequences at once: what one model alone runs, K times over, in one kernel.

:class:`SelfAttention` is ``nn.MultiheadAttention`` (same parameters, state-dict keys and initialisation) whose
self-attention goes through it; the ViT and AST use it in place of torch's module, so their packs can replace it.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def multi_head_self_attention(x: torch.Tensor, project_in: Callable[[torch.Tensor], torch.Tensor],
                              project_out: Callable[[torch.Tensor], torch.Tensor], heads: int, causal: bool = False,
                              dropout_p: float = 0.0) -> torch.Tensor:
    """Self-attention of ``x [B, L, E]``: ``project_in`` gives ``[B, L, 3E]`` queries, keys and values, each split
    into ``heads``; ``softmax(q k^T / sqrt(d)) v`` (causal: each position sees its past) is merged and passed to
    ``project_out``."""
    B, L, E = x.shape
    q, k, v = (t.reshape(B, L, heads, E // heads).transpose(1, 2) for t in project_in(x).chunk(3, dim=-1))
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    return project_out(y.transpose(1, 2).reshape(B, L, E))


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (batch first) whose self-attention runs through :func:`multi_head_self_attention`.

    Any other use (cross-attention, masks, attention weights) is torch's own implementation."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if (query is not key or key is not value or need_weights or key_padding_mask is not None
                or attn_mask is not None or not self.batch_first or not self._qkv_same_embed_dim):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        out = multi_head_self_attention(query, lambda x: F.linear(x, self.in_proj_weight, self.in_proj_bias),
                                        self.out_proj, self.num_heads, is_causal,
                                        self.dropout if self.training else 0.0)
        return out, None

    @classmethod
    def replacing(cls, module: nn.MultiheadAttention) -> "SelfAttention":
        """A :class:`SelfAttention` holding ``module``'s weights (built without drawing from the global RNG, so
        a model's initialisation stays what its seed gives)."""
        with torch.random.fork_rng(devices=[]):
            new = cls(module.embed_dim, module.num_heads, dropout=module.dropout,
                      bias=module.in_proj_bias is not None, batch_first=module.batch_first)
        new.load_state_dict(module.state_dict())
        return new.to(module.in_proj_weight.device)
