"""VGG19's ``head``: "compact" (the default, unchanged) and "torchvision" (torchvision's 7x7 pool and 25088-4096-4096
classifier, layer for layer)."""
import pytest
import torch
import torchvision.models as tvm

from kdlib.models import build

# the compact head's parameter counts, recorded from the model before ``head`` existed
COMPACT = {("vgg19", 32, 10): 20_554_826, ("vgg19", 64, 200): 21_438_728,
           ("vgg19_bn", 32, 10): 20_565_834, ("vgg19_bn", 64, 200): 21_449_736}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,image_size,num_classes", list(COMPACT))
def test_compact_head_is_the_default_and_unchanged(arch, image_size, num_classes):
    default = build(arch, num_classes, image_size=image_size)
    compact = build(arch, num_classes, image_size=image_size, head="compact")
    assert n_params(default) == n_params(compact) == COMPACT[arch, image_size, num_classes]
    assert [tuple(p.shape) for p in default.parameters()] == [tuple(p.shape) for p in compact.parameters()]


def test_torchvision_head_has_torchvisions_parameter_count_at_1000_classes():
    assert n_params(build("vgg19", 1000, head="torchvision")) == 143_667_240 == n_params(tvm.vgg19())
    assert n_params(build("vgg19_bn", 1000, head="torchvision")) == 143_678_248 == n_params(tvm.vgg19_bn())


@pytest.mark.parametrize("arch", ["vgg19", "vgg19_bn"])
def test_torchvision_head_equals_torchvision_at_200_classes(arch):
    reference = getattr(tvm, arch)(num_classes=200)
    model = build(arch, 200, image_size=64, head="torchvision")
    assert n_params(model) == n_params(reference)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert [k for k in ours if k.startswith("classifier")] == [f"classifier.{i}.{p}" for i in (0, 3, 6)
                                                               for p in ("weight", "bias")]
    assert ours["classifier.0.weight"].shape == (4096, 512 * 7 * 7)
    assert ours["classifier.6.weight"].shape == (200, 4096)
    assert model.avgpool.output_size == reference.avgpool.output_size == (7, 7)
    assert str(model.classifier) == str(reference.classifier)  # ReLU(inplace), Dropout(0.5) in the same places
    # the features are the compact model's: only the head differs
    compact = build(arch, 200, image_size=64)
    assert {k: v.shape for k, v in model.features.state_dict().items()} == \
        {k: v.shape for k, v in compact.features.state_dict().items()}
    model.load_state_dict(theirs)  # same function as torchvision's net
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-5)


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("head", ["compact", "torchvision"])
@pytest.mark.parametrize("arch", ["vgg19", "vgg19_bn"])
def test_forward_shapes(arch, head, image_size):
    model = build(arch, 7, image_size=image_size, width=8, head=head).eval()
    assert model(torch.randn(3, 3, image_size, image_size)).shape == (3, 7)


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("head", ["compact", "torchvision"])
def test_forward_shapes_at_full_width(head, image_size):
    model = build("vgg19", 200, image_size=image_size, head=head).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, image_size, image_size)).shape == (2, 200)


def test_narrow_torchvision_head_scales_with_width():
    model = build("vgg19", 10, width=8, head="torchvision")
    assert model.classifier[0].weight.shape == (512, 64 * 7 * 7)
    assert model.classifier[3].weight.shape == (512, 512)


@pytest.mark.parametrize("arch", ["vgg19", "vgg19_bn"])
def test_unknown_head_is_one_clear_error(arch):
    with pytest.raises(ValueError) as err:
        build(arch, 10, head="timm")
    message = str(err.value)
    assert "\n" not in message
    assert "'timm'" in message and "'compact'" in message and "'torchvision'" in message
