"""How a pack lays out its work: packed linear layers add their bias where a compiled graph fuses it, and conv nets
keep the K models' channels side by side from the pack's input to its output (kdlib.models.packed)."""
import copy
import re

import pytest
from conftest import assert_pack_matches_members
import torch
import torch.nn.functional as F
import torchvision.models.resnet as tv_resnet
from torch.utils._python_dispatch import TorchDispatchMode

from kdlib.models import build, packed as packed_mod
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.models.packed import SIDE_BY_SIDE, FOLDED, PackedConv, PackedBatchNorm, PackedLinear, pack, packed_linear

CONV_NETS = {  # (builder, one example's shape): every conv family, small
    "resnet18": (lambda: build("resnet18", 10, image_size=16, width=4), (3, 16, 16)),
    "resnet18-blurpool": (lambda: build("resnet18", 10, image_size=16, width=8, blurpool=True), (3, 16, 16)),
    "resnet50": (lambda: build("resnet50", 10, image_size=16, width=4), (3, 16, 16)),
    "vgg19_bn": (lambda: build("vgg19_bn", 10, image_size=32, width=4, dropout=0.0), (3, 32, 32)),
    "vgg19-torchvision-head": (lambda: build("vgg19", 10, image_size=32, width=4, dropout=0.0, head="torchvision"),
                               (3, 32, 32)),
    "vggish": (lambda: build("vggish", 10, width=1 / 32, hidden=64, embedding=16), (1, 32, 63)),
    "torchvision-resnet": (lambda: tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], num_classes=10), (3, 32, 32)),
}
TRANSFORMERS = {
    "vit": lambda: build("vit", 10, image_size=32, width=16, depth=2, heads=2, dropout=0.0),
    "ast": lambda: build("ast", 10, n_mels=32, frames=63, embed_dim=16, depth=2, heads=2, patch=8, stride=8),
    "gpt": lambda: GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)),
}


def seeded(make, seed):
    torch.manual_seed(seed)
    return make()


# ----------------------------------------------------------------------------- linear layers


def test_a_packed_linear_layer_is_k_linear_layers():
    """Folded (``[K * B, ..., in]``) and side by side (``[B, K * in]``), a packed linear layer computes each member's
    ``F.linear``, with and without bias, and under autocast in a solo linear layer's dtype."""
    K, B = 3, 4
    layers = [torch.nn.Linear(5, 2).double() for _ in range(K)]
    w, b = torch.stack([m.weight for m in layers]), torch.stack([m.bias for m in layers])
    x = torch.randn(K, B, 6, 5, dtype=torch.float64)
    for bias in (b, None):
        out = packed_linear(x.flatten(0, 1), w, bias).unflatten(0, (K, B))
        for k in range(K):
            torch.testing.assert_close(out[k], F.linear(x[k], w[k], None if bias is None else bias[k]),
                                       rtol=1e-12, atol=1e-12)
    side_by_side = PackedLinear(layers, packed_mod._Stacker())
    side_by_side.side_by_side = True
    rows = torch.randn(B, K * 5, dtype=torch.float64)  # member k's features in columns 5k..5k+4
    out = side_by_side(rows)
    assert out.shape == (B, K * 2)
    for k in range(K):
        torch.testing.assert_close(out[:, 2 * k:2 * k + 2], layers[k](rows[:, 5 * k:5 * k + 5]), rtol=1e-12, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert packed_linear(x.float().flatten(0, 1), w.float(), b.float()).dtype == \
            F.linear(x[0].float(), w[0].float(), b[0].float()).dtype == torch.bfloat16


def test_a_compiled_packed_linear_adds_its_bias_in_the_activations_kernel():
    """Compiled (inductor, CPU), a packed linear layer and its activation are one batched product (an extern kernel)
    and one generated kernel that adds the bias and applies the activation: no ``baddbmm`` whose bias, expanded
    over the rows, is first copied into the output (about 0.9 GB of traffic per Nano-GPT step)."""
    from torch._inductor.utils import run_and_get_code
    K, B = 3, 8
    w, b = torch.randn(K, 6, 5), torch.randn(K, 6)
    x = torch.randn(K * B, 5)
    torch._dynamo.reset()
    out, (code, *_) = run_and_get_code(torch.compile(lambda x, w, b: F.gelu(packed_linear(x, w, b))), x, w, b)
    torch.testing.assert_close(out, F.gelu(torch.bmm(x.view(K, B, 5), w.transpose(1, 2)) + b[:, None]).view(K * B, 6))
    assert "extern_kernels.bmm(" in code
    assert "addmm" not in code and "baddbmm" not in code
    assert re.search(r"def call\(.*?cpp_fused_add_\w*gelu\w*\(", code, re.S), code[-3000:]


# ----------------------------------------------------------------------------- conv nets side by side


@pytest.mark.parametrize("family", [*CONV_NETS, *TRANSFORMERS])
def test_conv_nets_pack_side_by_side_and_transformers_folded(family):
    """A conv net (every module keeps the side-by-side layout) packs side by side, all its packed convolutions,
    BatchNorms and linear layers told so; a transformer (a patch embedding's output becomes tokens; GPT has no
    convolution) packs folded, as before."""
    make = CONV_NETS[family][0] if family in CONV_NETS else TRANSFORMERS[family]
    packed = pack([seeded(make, s) for s in range(2)])
    layers = [m for m in packed.modules() if isinstance(m, (PackedConv, PackedBatchNorm, PackedLinear))]
    side_by_side = family in CONV_NETS
    assert packed.layout == (SIDE_BY_SIDE if side_by_side else FOLDED)
    assert layers and all(m.side_by_side == side_by_side for m in layers)
    assert (packed.per_channel != []) == (family == "resnet18-blurpool")  # BlurPool's filters, repeated per member


def test_an_unknown_module_keeps_a_conv_net_folded():
    """A model whose forward code a pack does not know (here it concatenates channels, which the side-by-side
    layout would mix between members) packs folded, and still computes each member's outputs."""
    class Concat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 2, 3), torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)
    models = [seeded(Concat, s).double() for s in range(2)]
    packed = pack(models)
    assert packed.layout == FOLDED
    x = torch.randn(2, 3, 3, 5, 5, dtype=torch.float64)
    out = packed(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x[k]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", sorted(CONV_NETS))
def test_a_side_by_side_pack_equals_its_models_one_by_one(family):
    """In float64, a side-by-side pack's outputs, every weight's gradient and every BatchNorm's running statistics
    are each member's own, in training and in evaluation mode."""
    make, shape = CONV_NETS[family]
    models = [seeded(make, s).double() for s in range(3)]
    packed = pack(models)
    assert packed.layout == SIDE_BY_SIDE
    x = torch.randn(3, 5, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_pack_matches_members(packed, models, x)
    for k, model in enumerate(models):
        state = packed.member_state(k)
        for name, tensor in model.state_dict().items():  # running statistics moved with the member's own batch
            torch.testing.assert_close(state[name], tensor, rtol=1e-12, atol=1e-12, msg=f"model {k}: {name}")
    packed.eval()
    out = packed(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model.eval()(x[k]), rtol=1e-12, atol=1e-12)


class Copies(TorchDispatchMode):
    """The sizes of the tensors that the ops run under it copy (clone, copy_, _to_copy)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.clone, torch.ops.aten.copy_, torch.ops.aten._to_copy):
            self.sizes.append(out.numel())
        return out


@pytest.mark.parametrize("family", ["resnet18", "resnet18-blurpool"])
def test_a_packed_resnet_converts_its_layout_once_each_way(family, monkeypatch):
    """A packed ResNet's forward pass puts its input side by side once and its output back once: no feature map is
    copied between layers (the folded layout copied each convolution's and BatchNorm's input and output). The only
    other copy is the classifier's output into the side-by-side layout, logits-sized."""
    make, shape = CONV_NETS[family]
    packed = pack([seeded(make, s) for s in range(3)])
    x = torch.randn(3, 4, *shape)
    calls = {"_side_by_side": 0, "_folded": 0}
    for name in calls:
        real = getattr(packed_mod, name)
        monkeypatch.setattr(packed_mod, name, lambda *a, real=real, name=name: calls.update({name: calls[name] + 1})
                            or real(*a))
    with Copies() as copies:
        out = packed(x)
    assert calls == {"_side_by_side": 1, "_folded": 1}
    assert sorted(copies.sizes) == [out.numel(), out.numel(), x.numel()], copies.sizes


def test_channels_last_stays_channels_last_through_a_packed_conv_net():
    """Channels-last models (CUDA places conv nets so) pack into channels-last weights, so every packed convolution
    and BatchNorm hands on a channels-last feature map, even from a plain input (a pack's [K, B, C, H, W] batch);
    a channels-last input goes side by side channels-last. Outputs stay each member's. Forward only: torch 2.14.1's
    CPU channels-last convolution backward corrupts the heap (kdlib.engine.device)."""
    make, shape = CONV_NETS["resnet18"]
    x = torch.randn(3, 4, *shape)
    members_channels_last = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 4))
    for channels_last_models, inputs in ((True, x), (False, members_channels_last)):
        models = [seeded(make, s) for s in range(3)]
        if channels_last_models:
            models = [m.to(memory_format=torch.channels_last) for m in models]
        packed = pack([copy.deepcopy(m) for m in models])
        maps = []
        for m in packed.modules():
            if isinstance(m, (PackedConv, PackedBatchNorm)):
                m.register_forward_hook(lambda module, args, out: maps.append((module, args[0], out)))
        with torch.no_grad():
            out = packed(inputs)
            for k, model in enumerate(models):
                torch.testing.assert_close(out[k], model(inputs[k]), rtol=1e-4, atol=1e-5)
        first_input = maps[0][1]
        assert packed_mod._channels_last(first_input) == (not channels_last_models)  # the input's own layout
        assert len(maps) == 40 and all(packed_mod._channels_last(out) for _, _, out in maps)
        if channels_last_models:
            convs = [m for m in packed.modules() if isinstance(m, PackedConv)]
            assert all(packed_mod._channels_last(m.weight.flatten(0, 1)) for m in convs if m.weight.shape[-1] > 1)
