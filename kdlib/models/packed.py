"""K models of one architecture as one model: a pack, whose layers carry a leading pack dimension.

:func:`pack` copies K same-architecture models into one :class:`Packed` model. Every layer with weights is
replaced by its packed counterpart below, whose weights are the K models' weights stacked (``[K, ...]``) under the same
names, so ``Packed.body.state_dict()`` has the plain model's keys and member ``k``'s weights are ``[k]`` of each
(:meth:`Packed.member_state`). Activations carry the pack folded into the batch, ``[K * B, ...]`` (model-major),
so the family's own ``forward`` code, with its reshapes and pooling, runs unchanged:

- linear layers: one batched matrix product (``baddbmm``) over ``[K, B * ..., in]``;
- convolutions: one grouped convolution, the K models' channels side by side (``groups = K * groups``);
- BatchNorm: one call over the K models' channels side by side, so each model's statistics are its own batch's;
- LayerNorm: the normalisation over the folded batch, then each model's scale and shift;
- embeddings: one lookup in the K tables laid end to end;
- self-attention: projections as linear layers, attention itself one SDPA call over ``[K * B, H, L, D]``;
- parameters a model uses directly as a batch-broadcast tensor (a ViT's class token and positions, shape
  ``[1, ...]`` with 2 or more dimensions): member k's copy repeated over its B rows.

A packed forward pass is plain tensor code that ``torch.compile`` traces into one graph, and under autocast each op
is the op a solo run runs (a batched matrix product where a solo run has a matrix product), so a pack computes in a
solo run's dtypes. Without dropout a pack
equals its K models run one by one, to float rounding (``tests/test_together.py``), in training and in evaluation
mode (where a transformer layer's inference fast path, which reads plain weights, steps aside).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from .attention import SelfAttention, multi_head_self_attention


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """K linear layers (``weight [K, out, in]``, ``bias [K, out]``) over ``x [K * B, ..., in]``."""
    rows = x.reshape(len(weight), -1, x.shape[-1])
    if bias is None:
        out = torch.bmm(rows, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2))
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _side_by_side(x: torch.Tensor, K: int) -> torch.Tensor:
    """``[K * B, C, ...]`` -> ``[B, K * C, ...]``: the K models' channels side by side."""
    return x.unflatten(0, (K, -1)).transpose(0, 1).flatten(1, 2)


def _folded(x: torch.Tensor, K: int) -> torch.Tensor:
    """``[B, K * C, ...]`` -> ``[K * B, C, ...]``: back to the pack folded into the batch."""
    return x.unflatten(1, (K, -1)).transpose(0, 1).flatten(0, 1)


class _Stacker:
    """Stacks the K models' tensors of one name into one; a tensor two layers share (tied weights) is stacked
    once, so the packed layers share it too."""

    def __init__(self):
        self.done: dict[int, torch.Tensor] = {}

    def __call__(self, tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        first = tensors[0]
        if first is None:
            return None
        if id(first) not in self.done:
            stacked = torch.stack([t.detach() for t in tensors]).contiguous()  # flatten(0, 1) is then a view
            is_parameter = isinstance(first, nn.Parameter)
            self.done[id(first)] = nn.Parameter(stacked, first.requires_grad) if is_parameter else stacked
        return self.done[id(first)]


class PackedLinear(nn.Module):
    def __init__(self, layers: list[nn.Linear], stack: _Stacker):
        super().__init__()
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.weight, self.bias)


class PackedConv(nn.Module):
    """K convolutions as one grouped convolution over the K models' channels side by side."""

    def __init__(self, layers: list[nn.modules.conv._ConvNd], stack: _Stacker):
        super().__init__()
        first = layers[0]
        if first.padding_mode != "zeros" or first.transposed:
            raise ValueError(f"cannot pack a {type(first).__name__} with padding_mode={first.padding_mode!r}"
                             f"{' (transposed)' if first.transposed else ''}: packable are zero-padded convolutions")
        self.conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(first.kernel_size)]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.groups = first.groups
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = len(self.weight)
        out = self.conv(_side_by_side(x, K), self.weight.flatten(0, 1),
                        None if self.bias is None else self.bias.flatten(), self.stride, self.padding, self.dilation,
                        K * self.groups)
        return _folded(out, K)


class PackedBatchNorm(nn.Module):
    """K BatchNorms as one over the K models' channels side by side: each channel's statistics are its model's
    batch's, and each model's running statistics update in place (momentum as its own; cumulative averaging,
    ``momentum=None``, is not packable)."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm], stack: _Stacker):
        super().__init__()
        first = layers[0]
        if first.momentum is None or not first.track_running_stats:
            raise ValueError("cannot pack a BatchNorm with momentum=None or track_running_stats=False: packable are "
                             "BatchNorms with running statistics at a fixed momentum")
        self.momentum, self.eps = first.momentum, first.eps
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, stack([getattr(m, name) for m in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = len(self.running_mean)
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = lambda t: None if t is None else t.flatten()  # views: the running statistics update in place
        out = F.batch_norm(_side_by_side(x, K), flat(self.running_mean), flat(self.running_var), flat(self.weight),
                           flat(self.bias), self.training, self.momentum, self.eps)
        return _folded(out, K)


class PackedLayerNorm(nn.Module):
    def __init__(self, layers: list[nn.LayerNorm], stack: _Stacker):
        super().__init__()
        self.normalized_shape, self.eps = layers[0].normalized_shape, layers[0].eps
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        if self.weight is None:
            return out
        scale = lambda t: t.unflatten(0, (len(t), 1))  # [K, 1, *normalized_shape], against [K, rows, ...]
        rows = out.reshape(len(self.weight), -1, *self.normalized_shape)
        rows = rows * scale(self.weight) + (0 if self.bias is None else scale(self.bias))
        return rows.reshape(out.shape)


class PackedEmbedding(nn.Module):
    """K embedding tables laid end to end: member k's token t is row ``k * V + t``."""

    def __init__(self, layers: list[nn.Embedding], stack: _Stacker):
        super().__init__()
        first = layers[0]
        if first.padding_idx is not None or first.max_norm is not None or first.sparse or first.scale_grad_by_freq:
            raise ValueError("cannot pack an Embedding with padding_idx, max_norm, scale_grad_by_freq or sparse "
                             "gradients")
        self.weight = stack([m.weight for m in layers])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        K, V, D = self.weight.shape
        offsets = torch.arange(0, K * V, V, device=idx.device).unsqueeze(1)
        rows = F.embedding(idx.reshape(K, -1) + offsets, self.weight.flatten(0, 1))
        return rows.reshape(*idx.shape, D)


class PackedSelfAttention(nn.Module):
    """K :class:`~kdlib.models.attention.SelfAttention` layers: their projections packed, attention one SDPA
    call over the K models' sequences. Only self-attention without masks or attention weights packs."""

    batch_first = True  # read by nn.TransformerEncoder before it runs its layers
    _qkv_same_embed_dim = False  # turns nn.TransformerEncoderLayer's inference fast path (plain weights) away

    def __init__(self, layers: list[SelfAttention], stack: _Stacker):
        super().__init__()
        first = layers[0]
        if not (first.batch_first and first._qkv_same_embed_dim and first.bias_k is None):
            raise ValueError("cannot pack attention that is not batch-first self-attention with one in-projection")
        self.num_heads, self.dropout = first.num_heads, first.dropout
        self.in_proj_weight = stack([m.in_proj_weight for m in layers])
        self.in_proj_bias = stack([m.in_proj_bias for m in layers])
        self.out_proj = PackedLinear([m.out_proj for m in layers], stack)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not (query is key and key is value) or need_weights or attn_mask is not None or key_padding_mask is not None:
            raise ValueError("a pack runs self-attention without masks or attention weights only")
        out = multi_head_self_attention(query, lambda x: packed_linear(x, self.in_proj_weight, self.in_proj_bias),
                                        self.out_proj, self.num_heads, is_causal,
                                        self.dropout if self.training else 0.0)
        return out, None


#: Layer types a pack knows, in the order they are matched (subclasses before their bases), with their packed layer.
PACKED = ((SelfAttention, PackedSelfAttention), (nn.Linear, PackedLinear), (nn.modules.conv._ConvNd, PackedConv),
          (nn.modules.batchnorm._BatchNorm, PackedBatchNorm), (nn.LayerNorm, PackedLayerNorm),
          (nn.Embedding, PackedEmbedding))


class Packed(nn.Module):
    """K models as one: ``forward(x [K, B, ...]) -> [K, B, ...]``, member k's output from member k's input."""

    def __init__(self, body: nn.Module, K: int, broadcast: list[str], shared: set[str]):
        super().__init__()
        self.body, self.K = body, K
        self.broadcast, self.shared = broadcast, shared  # parameter names; names of buffers all members share

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, B = x.shape[:2]
        if K != self.K:
            raise ValueError(f"a pack of {self.K} models got inputs for {K}")
        body = self.body
        if self.broadcast:  # member k's batch-broadcast parameters, [1, ...] each, over its B rows
            tensors = {name: body.get_parameter(name) for name in self.broadcast}
            repeated = {name: t.expand(K, B, *t.shape[2:]).flatten(0, 1) for name, t in tensors.items()}
            out = functional_call(body, repeated, (x.flatten(0, 1),))
        else:
            out = body(x.flatten(0, 1))
        return out.unflatten(0, (K, B))

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s state dict, which loads into the plain model."""
        return {name: t if name in self.shared else t[k] for name, t in self.body.state_dict().items()}

    def copy_into(self, models: list[nn.Module]) -> None:
        """Write each member's weights and buffers (non-persistent ones too) back into its plain model, in place
        (tied weights stay tied)."""
        body = self.body
        stacked = dict([*body.named_parameters(remove_duplicate=False), *body.named_buffers(remove_duplicate=False)])
        with torch.no_grad():
            for k, model in enumerate(models):
                for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                    tensor.copy_(stacked[name] if name in self.shared else stacked[name][k])


def pack(models: list[nn.Module]) -> Packed:
    """One :class:`Packed` model of ``models`` (same architecture), on their device, in training mode.

    Raises ValueError naming the first layer or parameter a pack cannot hold (a layer type with weights that is
    not in :data:`PACKED`, a direct parameter that is not a batch-broadcast ``[1, ...]`` tensor, buffers outside
    packed layers that differ between the models)."""
    K, stack = len(models), _Stacker()
    body = copy.deepcopy(models[0])
    for name, module in list(body.named_modules()):
        if not name or _inside_packed(body, name):
            continue
        packed = next((p for kind, p in PACKED if isinstance(module, kind)), None)
        if packed is not None:
            body.set_submodule(name, packed([m.get_submodule(name) for m in models], stack))
    broadcast, shared = [], set()
    for module_name, module in body.named_modules():
        if isinstance(module, tuple(t for _, t in PACKED)):
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, p in list(module.named_parameters(recurse=False)):
            full = prefix + name
            if p.dim() < 2 or p.shape[0] != 1 or (module_name and not list(module.children())):
                raise ValueError(f"cannot pack {full} of {type(module).__name__} (shape {tuple(p.shape)}): packable "
                                 f"are layers of types {[k.__name__ for k, _ in PACKED]} and batch-broadcast "
                                 f"parameters of shape [1, ...] (2 or more dimensions)")
            setattr(module, name, stack([m.get_parameter(full) for m in models]))
            broadcast.append(full)
        for name, b in module.named_buffers(recurse=False):
            full = prefix + name
            if any(not torch.equal(m.get_buffer(full), b) for m in models):
                raise ValueError(f"cannot pack buffer {full}: it differs between the models, and only the packed "
                                 f"layers' buffers are per model")
            shared.add(full)
    return Packed(body, K, broadcast, shared).train()


def _inside_packed(body: nn.Module, name: str) -> bool:
    """Whether module ``name`` lies inside a layer that was already packed (its parts are the packed layer's)."""
    parts = name.split(".")
    packed = tuple(p for _, p in PACKED)
    return any(isinstance(body.get_submodule(".".join(parts[:i])), packed) for i in range(1, len(parts)))
