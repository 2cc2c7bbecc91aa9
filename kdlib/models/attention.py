"""Scaled dot-product attention that a pack of models can share: one fused kernel for all of them.

A pack (:mod:`kdlib.together`) runs K models' forward passes as one ``torch.func.vmap`` over their stacked
weights. Attention has no weights, so the pack dimension need not go through vmap's batching of
``scaled_dot_product_attention`` (on CUDA its memory-efficient kernel then fails in backward: "LSE is not
correctly aligned"). Inside :func:`folding`, :func:`attention` folds the pack into the batch instead: K models'
``[B, H, L, D]`` inputs become one ``[K * B, H, L, D]`` call of the fused kernel (flash or memory-efficient on
CUDA), exactly what one model alone would run, and autograd records that plain call. Outside a pack it is
``F.scaled_dot_product_attention`` itself.

:class:`SelfAttention` is ``nn.MultiheadAttention`` (same parameters, state-dict keys and initialisation) whose
self-attention goes through :func:`attention`; the ViT and AST use it in place of torch's module.

Under ``torch.compile`` the folded call is kept out of the graph (``torch.compiler.disable``): traced, its
``vmap`` rule is bypassed and vmap batches SDPA again. A compiled pack of a transformer therefore runs its
vmapped forward eagerly (measured on CPU: the same bits as eager), while one model alone and packs of
convolutional nets compile in full.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

_folding = 0  # > 0 inside folding(): a plain module global, which torch.compile guards on (torch 2.11's dynamo
# cannot trace a contextvars.ContextVar, and broke every compiled attention call into graphs around it)
_folded = None  # _PackFolded.apply kept out of torch.compile's graphs, made by the first folding()


@contextlib.contextmanager
def folding():
    """Within this block every :func:`attention` call runs under ``vmap`` over a pack, and folds it."""
    global _folded, _folding
    if _folded is None:  # made here, not at import: torch.compiler's machinery takes 1.7 s to import
        _folded = torch.compiler.disable(_PackFolded.apply)  # traced, it would batch SDPA itself (the crash)
    _folding += 1
    try:
        yield
    finally:
        _folding -= 1


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``[B, H, L, D]`` inputs (causal: each position sees its past)."""
    if _folding:
        return _folded(q, k, v, causal, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)


class _PackFolded(torch.autograd.Function):
    """Under ``vmap`` its ``vmap`` rule runs: the pack folded into the batch of one plain SDPA call, which
    autograd differentiates as usual. Its own forward/backward serve a call outside ``vmap`` (the backward
    recomputes the attention), so it is correct wherever it is used."""

    @staticmethod
    def forward(q, k, v, causal, dropout_p):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, ctx.causal, ctx.dropout_p = inputs
        ctx.save_for_backward(q, k, v)

    @staticmethod
    def backward(ctx, grad):
        if ctx.dropout_p:
            raise RuntimeError("attention with dropout under folding() runs only inside vmap over a pack")
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in ctx.saved_tensors]
            out = F.scaled_dot_product_attention(*inputs, is_causal=ctx.causal)
        return (*torch.autograd.grad(out, inputs, grad), None, None)

    @staticmethod
    def vmap(info, in_dims, q, k, v, causal, dropout_p):
        K = info.batch_size

        def fold(t, dim):
            t = t.movedim(dim, 0) if dim is not None else t.expand(K, *t.shape)
            return t.reshape(K * t.shape[1], *t.shape[2:])
        out = F.scaled_dot_product_attention(fold(q, in_dims[0]), fold(k, in_dims[1]), fold(v, in_dims[2]),
                                             dropout_p=dropout_p, is_causal=causal)
        return out.reshape(K, -1, *out.shape[1:]), 0


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (batch first) whose self-attention runs through :func:`attention`.

    Any other use (cross-attention, masks, attention weights) is torch's own implementation."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if (query is not key or key is not value or need_weights or key_padding_mask is not None
                or attn_mask is not None or not self.batch_first or not self._qkv_same_embed_dim):
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        B, L, E = query.shape
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        y = attention(q, k, v, causal=is_causal, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, E)), None

    @classmethod
    def replacing(cls, module: nn.MultiheadAttention) -> "SelfAttention":
        """A :class:`SelfAttention` holding ``module``'s weights (built without drawing from the global RNG, so
        a model's initialisation stays what its seed gives)."""
        with torch.random.fork_rng(devices=[]):
            new = cls(module.embed_dim, module.num_heads, dropout=module.dropout,
                      bias=module.in_proj_bias is not None, batch_first=module.batch_first)
        new.load_state_dict(module.state_dict())
        return new.to(module.in_proj_weight.device)
