"""K models of one architecture as one model: a pack, whose layers carry a leading pack dimension.

:func:`pack` copies K same-architecture models into one :class:`Packed` model. Every layer with weights is
replaced by its packed counterpart below, whose weights are the K models' weights stacked (``[K, ...]``, each in its
model's memory format: channels-last convolutions stay channels-last) under the same names, so
``Packed.body.state_dict()`` has the plain model's keys and member ``k``'s weights are ``[k]`` of each
(:meth:`Packed.member_state`). The family's own ``forward`` code, with its reshapes and pooling, runs unchanged, on
activations in one of two layouts, which :func:`pack` chooses per pack (:attr:`Packed.layout`):

- ``"side-by-side"``, for conv nets (:data:`SIDE_BY_SIDE_MODELS`: ResNet, torchvision's too, VGG, VGGish; any other
  model runs folded until its classes are named there): ``[B, K * C, ...]``, the K models' channels side by side in
  dim 1. Their convolutions, BatchNorms, activations, pooling and residual adds act per channel or elementwise, so
  one layout holds through the whole net: flattened for the classifier, a ``[B, K * F]`` tensor holds each member's
  features in its own block of columns, which the linear layers read and write (``[B, K * out]``).
  :meth:`Packed.forward` converts once at the input (channels-last stays channels-last) and once at the output,
  not around every convolution and BatchNorm (a copy of each feature map in and out, forward and backward).
- ``"folded"``, for every other model (transformers, whose patch embedding's output becomes tokens): ``[K * B, ...]``
  (model-major), the pack folded into the batch; a convolution or BatchNorm puts its input side by side and its
  output back.

The packed layers:

- linear layers: one batched matrix product (``bmm``) over ``[K, rows, in]``, then the bias added, which a compiled
  graph fuses into the next elementwise kernel (``baddbmm`` would first copy the bias into its output);
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
    """K linear layers (``weight [K, out, in]``, ``bias [K, out]``) over ``x [K * B, ..., in]`` (or ``[K, ..., in]``).

    The bias is added after the batched product, not passed to ``baddbmm``, which would copy it into the output
    first: the add fuses into the next elementwise kernel of a compiled graph. It is cast to the product's dtype,
    as autocast's linear casts it."""
    rows = x.reshape(len(weight), -1, x.shape[-1])
    out = torch.bmm(rows, weight.transpose(1, 2))
    if bias is not None:
        out = out + bias.unsqueeze(1).to(out.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a channels-last 4-d tensor (and not also a plain contiguous one, as one channel is)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _side_by_side(x: torch.Tensor, K: int) -> torch.Tensor:
    """``[K * B, C, ...]`` -> ``[B, K * C, ...]``: the K models' channels side by side (one copy; a channels-last
    tensor stays channels-last)."""
    grouped = x.unflatten(0, (K, -1)).transpose(0, 1)  # [B, K, C, ...]
    if not _channels_last(x):
        return grouped.flatten(1, 2)
    return grouped.permute(0, 3, 4, 1, 2).flatten(3).permute(0, 3, 1, 2)  # via [B, H, W, K * C]


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
            memory_format = torch.channels_last if _channels_last(first) else torch.contiguous_format
            # dense in the models' memory format, so flatten(0, 1) is a view in it
            stacked = torch.stack([t.detach().contiguous(memory_format=memory_format) for t in tensors])
            is_parameter = isinstance(first, nn.Parameter)
            self.done[id(first)] = nn.Parameter(stacked, first.requires_grad) if is_parameter else stacked
        return self.done[id(first)]


class PackedLinear(nn.Module):
    """K linear layers as one batched matrix product: over ``[K * B, ..., in]`` folded, ``[B, K * in]`` side by
    side."""

    side_by_side = False  #: set by pack(): inputs ``[B, K * in]`` (member k's features in block k), outputs alike

    def __init__(self, layers: list[nn.Linear], stack: _Stacker):
        super().__init__()
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.side_by_side:
            return packed_linear(x, self.weight, self.bias)
        rows = x.unflatten(1, (len(self.weight), -1)).transpose(0, 1)  # [K, B, in], a view
        return packed_linear(rows, self.weight, self.bias).transpose(0, 1).flatten(1)


class _SideBySide(nn.Module):
    """A packed layer that computes on the K models' channels side by side (:meth:`compute`, ``[B, K * C, ...]``);
    in a folded pack it puts its input side by side and its output back (a copy each way)."""

    side_by_side = False  #: set by pack(): its input is side by side already

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.side_by_side:
            return self.compute(x)
        return _folded(self.compute(_side_by_side(x, self.K)), self.K)


class PackedConv(_SideBySide):
    """K convolutions as one grouped convolution over the K models' channels side by side."""

    def __init__(self, layers: list[nn.modules.conv._ConvNd], stack: _Stacker):
        super().__init__()
        first = layers[0]
        if first.padding_mode != "zeros" or first.transposed:
            raise ValueError(f"cannot pack a {type(first).__name__} with padding_mode={first.padding_mode!r}"
                             f"{' (transposed)' if first.transposed else ''}: packable are zero-padded convolutions")
        self.conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(first.kernel_size)]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.groups, self.K = first.groups, len(layers)
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight.flatten(0, 1), None if self.bias is None else self.bias.flatten(),
                         self.stride, self.padding, self.dilation, self.K * self.groups)


class PackedBatchNorm(_SideBySide):
    """K BatchNorms as one over the K models' channels side by side: each channel's statistics are its model's
    batch's, and each model's running statistics update in place (momentum as its own; cumulative averaging,
    ``momentum=None``, is not packable)."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm], stack: _Stacker):
        super().__init__()
        first = layers[0]
        if first.momentum is None or not first.track_running_stats:
            raise ValueError("cannot pack a BatchNorm with momentum=None or track_running_stats=False: packable are "
                             "BatchNorms with running statistics at a fixed momentum")
        self.momentum, self.eps, self.K = first.momentum, first.eps, len(layers)
        self.weight = stack([m.weight for m in layers])
        self.bias = stack([m.bias for m in layers])
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, stack([getattr(m, name) for m in layers]))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = lambda t: None if t is None else t.flatten()  # views: the running statistics update in place
        return F.batch_norm(x, flat(self.running_mean), flat(self.running_var), flat(self.weight), flat(self.bias),
                            self.training, self.momentum, self.eps)


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


#: Layers that keep the side-by-side layout (exact types): packed convolutions, BatchNorms and linear layers, and
#: layers that act elementwise or per channel of dim 1.
SIDE_BY_SIDE_LAYERS = (PackedConv, PackedBatchNorm, PackedLinear, nn.Sequential, nn.Identity, nn.ReLU, nn.MaxPool2d,
                       nn.AdaptiveAvgPool2d, nn.Dropout)
#: Model classes whose ``forward`` keeps the side-by-side layout (dim 0 the batch, dim 1 channels: layers, elementwise
#: ops, reductions and flattening over the other dims; no concatenation, split or reshape of channels), named by
#: module and class so that checking a model imports nothing, with their per-channel buffers (dim 0 one entry per
#: channel, as a depthwise filter), which a side-by-side pack repeats for its K models.
SIDE_BY_SIDE_MODELS = {"kdlib.models.vision.ResNet": (), "torchvision.models.resnet.ResNet": (),
                       "torchvision.models.resnet.BasicBlock": (), "torchvision.models.resnet.Bottleneck": (),
                       "kdlib.models.vision.BlurPoolConv2d": ("blur",), "kdlib.models.vision.VGG": (),
                       "kdlib.models.audio.VGGish": ()}
SIDE_BY_SIDE, FOLDED = "side-by-side", "folded"


class Packed(nn.Module):
    """K models as one: ``forward(x [K, B, ...]) -> [K, B, ...]``, member k's output from member k's input.

    ``layout``: how the body's activations hold the pack, :data:`SIDE_BY_SIDE` (``[B, K * C, ...]``) or
    :data:`FOLDED` (``[K * B, ...]``); ``per_channel``: a side-by-side body's per-channel buffers."""

    def __init__(self, body: nn.Module, K: int, broadcast: list[str], shared: set[str], layout: str,
                 per_channel: list[str]):
        super().__init__()
        self.body, self.K, self.layout = body, K, layout
        self.broadcast, self.shared = broadcast, shared  # parameter names; names of buffers all members share
        self.per_channel = per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, B = x.shape[:2]
        if K != self.K:
            raise ValueError(f"a pack of {self.K} models got inputs for {K}")
        body = self.body
        if self.layout == SIDE_BY_SIDE:  # one conversion in, one out; per-channel buffers for the K models' channels
            x = _side_by_side(x.flatten(0, 1), K)
            tensors = {name: torch.cat([body.get_buffer(name)] * K) for name in self.per_channel}
        else:  # member k's batch-broadcast parameters, [1, ...] each, over its B rows
            x = x.flatten(0, 1)
            tensors = {name: body.get_parameter(name) for name in self.broadcast}
            tensors = {name: t.expand(K, B, *t.shape[2:]).flatten(0, 1) for name, t in tensors.items()}
        out = functional_call(body, tensors, (x,)) if tensors else body(x)
        return (_folded(out, K) if self.layout == SIDE_BY_SIDE else out).unflatten(0, (K, B))

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
    layout = SIDE_BY_SIDE if _keeps_side_by_side(body) else FOLDED
    per_channel = [f"{name}.{buffer}".lstrip(".") for name, module in body.named_modules()
                   for buffer in SIDE_BY_SIDE_MODELS.get(_class_name(module), ())] if layout == SIDE_BY_SIDE else []
    for module in body.modules():
        if isinstance(module, (_SideBySide, PackedLinear)):
            module.side_by_side = layout == SIDE_BY_SIDE
    return Packed(body, K, broadcast, shared, layout, per_channel).train()


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _keeps_side_by_side(body: nn.Module) -> bool:
    """Whether a packed ``body`` is a conv net that runs side by side: it has a convolution, and every module in
    it keeps that layout (:data:`SIDE_BY_SIDE_LAYERS`, :data:`SIDE_BY_SIDE_MODELS`)."""
    modules = list(body.modules())
    return (any(isinstance(m, PackedConv) for m in modules)
            and all(type(m) in SIDE_BY_SIDE_LAYERS or _class_name(m) in SIDE_BY_SIDE_MODELS for m in modules))


def _inside_packed(body: nn.Module, name: str) -> bool:
    """Whether module ``name`` lies inside a layer that was already packed (its parts are the packed layer's)."""
    parts = name.split(".")
    packed = tuple(p for _, p in PACKED)
    return any(isinstance(body.get_submodule(".".join(parts[:i])), packed) for i in range(1, len(parts)))
