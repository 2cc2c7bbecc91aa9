"""Vision architectures against torchvision's reference nets and hand-counted parameters; vision setups."""
import urllib.error

import pytest
import torch
import torchvision.models as tvm

from kdlib import setups
from kdlib.models import build
from kdlib.models.vision import BlurPoolConv2d
from kdlib.setups.vision import epoch_steps

pytestmark = pytest.mark.kernels  # numeric tolerances: CI runs them on a second kernel path too

VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("arch,kwargs", [("resnet18", {"width": 8}), ("resnet50", {"width": 4}),
                                         ("vgg19", {"width": 8}), ("vgg19_bn", {"width": 8}),
                                         ("vit", {"width": 16, "depth": 1, "heads": 2})])
def test_output_shapes(arch, kwargs, image_size):
    model = build(arch, 7, image_size=image_size, **kwargs).eval()
    assert model(torch.randn(2, 3, image_size, image_size)).shape == (2, 7)


@pytest.mark.parametrize("arch,block_convs", [("resnet18", "conv1"), ("resnet50", "conv1")])
def test_full_width_resnets_match_torchvision_up_to_the_stem(arch, block_convs):
    reference = getattr(tvm, arch)(num_classes=10)
    small = build(arch, 10, image_size=32)
    # only conv1 differs: 3x3 instead of 7x7 kernels, 3 -> 64 channels (max-pool has no parameters)
    assert n_params(reference) - n_params(small) == 64 * 3 * (7 * 7 - 3 * 3)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    large = build(arch, 10, image_size=224)  # torchvision's stem: same names and shapes, same function
    large.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 96, 96)
    assert torch.allclose(large.eval()(x), reference.eval()(x), atol=1e-5)


def test_width_shrinks_parameters_about_quadratically():
    full, half = n_params(build("resnet18", 10)), n_params(build("resnet18", 10, width=32))
    assert 0.24 < half / full < 0.26
    assert n_params(build("vgg19", 10, width=16)) < n_params(build("vgg19", 10, width=32)) / 3.5
    assert n_params(build("vit", 10, width=64, heads=4)) < n_params(build("vit", 10, width=128, heads=4)) / 3


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg19_parameter_count_by_hand(image_size, batch_norm):
    count, c_in = 0, 3
    for v in VGG19:
        if v != "M":
            count += 3 * 3 * c_in * v + v + (2 * v if batch_norm else 0)
            c_in = v
    flat = 512 * (image_size // 32) ** 2  # the 1x1 (32 px) or 2x2 (64 px) feature map
    count += (flat * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    model = build("vgg19_bn" if batch_norm else "vgg19", 10, image_size=image_size)
    assert n_params(model) == count


def test_vit_patches_and_grey_input():
    model = build("vit", 10, in_channels=1, image_size=8, width=16, depth=1, heads=2)
    assert model.patch_size == 1 and model.conv_proj.in_channels == 1  # image_size / 8
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert build("vit", 10, image_size=32).patch_size == 4
    with pytest.raises(ValueError, match="divisible"):
        build("vit", 10, image_size=32, patch_size=5)


def test_blurpool_wraps_strided_convs_and_keeps_constant_images():
    plain = build("resnet18", 10, image_size=192, width=16)
    blurred = build("resnet18", 10, image_size=192, width=16, blurpool=True)
    wrapped = [n for n, m in blurred.named_modules() if isinstance(m, BlurPoolConv2d)]
    # strided convs with >= 16 input channels: conv1 and downsample of the first block of layers 2-4
    assert wrapped == [f"layer{i}.0.{c}" for i in (2, 3, 4) for c in ("conv1", "downsample.0")]
    assert n_params(plain) == n_params(blurred)
    block = blurred.layer2[0].conv1
    x = torch.ones(1, 16, 8, 8) * 3.0  # the blur (weights sum to 1) leaves a constant image's interior alone
    assert torch.allclose(block(x)[..., 1:-1, 1:-1], block.conv(x)[..., 1:-1, 1:-1], atol=1e-5)


def test_pretrained_weights_load_and_fail_clearly(monkeypatch):
    reference = tvm.resnet50()
    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", lambda self, **kw: reference.state_dict())
    model = build("resnet50", 1000, image_size=224, weights="IMAGENET1K_V2")
    assert torch.equal(model.fc.weight, reference.fc.weight)

    def offline(self, **kw):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="internet"):
        build("resnet50", 1000, image_size=224, weights="IMAGENET1K_V2")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build("resnet50", 1000, image_size=224, weights="IMAGENET9K")
    with pytest.raises(ValueError, match="num_classes=1000"):
        build("resnet50", 200, image_size=224, weights="IMAGENET1K_V2")


def test_epoch_steps():
    assert epoch_steps(100, 73_257, 256) == 100 * 287
    assert epoch_steps(56, 1_281_167, 1024) == 56 * 1252
    assert epoch_steps(2, 10, 5) == 4


VISION = [n for n in setups.names() if setups.get(n, "smoke").modality == "vision"]


def test_all_vision_setups_are_registered():
    assert set(VISION) == {
        "svhn-resnet18", "svhn-vgg19", "svhn-vit", "tinyimagenet-resnet50", "tinyimagenet-resnet50-randaug",
        "tinyimagenet-vgg19", "tinyimagenet-vgg19-randaug", "tinyimagenet-resnet50-to-resnet18",
        "imagenet-resnet50-to-resnet18", "imagenet-resnet50-to-resnet18-t2", "tinyimagenet-resnet50-label-smoothing",
        "cifar10-resnet18", "digits-resnet18"}


@pytest.mark.parametrize("name", VISION)
def test_setup_profiles_follow_the_protocol(name):
    paper, cpu, smoke = (setups.get(name, p) for p in ("paper", "cpu", "smoke"))
    assert paper.alphas == cpu.alphas == (0.1, 0.5, 0.9) and len(cpu.student_seeds) >= 6
    assert paper.student_seeds == tuple(range(10, 20)) and len(smoke.student_seeds) == 2
    assert paper.conditions == cpu.conditions == smoke.conditions
    for s in (cpu, smoke):  # shrunk models still build
        for model in {s.teacher.arch: s.teacher, s.student_model.arch: s.student_model}.values():
            kwargs = {k: v for k, v in model.kwargs.items() if k != "weights"}
            build(model.arch, 10, **kwargs)


def test_paper_recipes():
    svhn = setups.get("svhn-resnet18", "paper").student_recipe
    assert (svhn.optimizer, svhn.lr, svhn.batch_size, svhn.steps) == ("adam", 1e-3, 256, 100 * 287)
    tin = setups.get("tinyimagenet-vgg19", "paper").teacher_recipe
    assert (tin.optimizer, tin.lr, tin.momentum, tin.schedule, tin.steps) == ("sgd", 0.01, 0.9, "cosine", 100 * 391)
    assert tin.epoch_length == 391  # cosine annealing stepped per epoch: T_max = 100 (epochs)
    assert setups.get("tinyimagenet-resnet50-randaug", "paper").dataset_kwargs == {"randaugment": True}
    assert setups.get("tinyimagenet-resnet50-label-smoothing", "paper").conditions == ("siddo", "kd", "rcd", "ls")
    im = setups.get("imagenet-resnet50-to-resnet18-t2", "paper")
    assert im.teacher_recipe is None and im.teacher_seeds == (0,) and im.temperature == 2.0
    assert im.teacher.kwargs["weights"] == "IMAGENET1K_V2" and im.student.kwargs["blurpool"]
    r = im.student_recipe
    # FFCV's rn18 configuration: its train loader drops the last partial batch (1,281,167 // 1024 = 1,251 a epoch)
    assert (r.lr, r.batch_size, r.momentum, r.weight_decay, r.steps) == (0.5, 1024, 0.9, 5e-5, 56 * 1251)
    assert (r.schedule, r.peak, r.no_decay) == ("cyclic", 2 / 56, "bn") and im.dataset_kwargs["drop_last"]
