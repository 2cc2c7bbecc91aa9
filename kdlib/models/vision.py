"""Vision models of the study (paper Table 1): ResNet18/50, VGG19 / VGG19-BN and a ViT, from torchvision's parts.

Every architecture is ``fn(num_classes, in_channels=3, image_size=32, width=..., **kw)``; ``width`` is the
channel count of the first stage (ResNet, VGG: 64 in the standard nets) or the embedding size (ViT), so the
``cpu``/``smoke`` profiles shrink a model without changing its depth or layout. Choices, since the paper names
the architectures but not their small-image variants:

- ResNet: torchvision's ``BasicBlock``/``Bottleneck`` in a ResNet whose module names equal torchvision's
  (``conv1, bn1, layer1..4, fc``), so torchvision state dicts load. Images of at most 64 pixels get the stem
  that is standard for CIFAR/SVHN-size inputs (conv1 3x3 stride 1, no max-pool: a 32x32 image reaches
  layer4 at 4x4); larger images get torchvision's 7x7 stride-2 conv and max-pool. ``blurpool=True`` puts
  FFCV's BlurPool (a fixed 3x3 binomial blur before every strided conv with >= 16 input channels) in front
  of the strided convolutions, as the ImageNet student of Appendix C.2. ``weights="IMAGENET1K_V2"`` (or any
  torchvision weights name) loads torchvision's pretrained ImageNet weights (the ImageNet teacher): they are
  downloaded once into the torch hub cache, which needs internet.
- VGG19 (-BN): torchvision's ``make_layers`` with configuration "E" (channels scaled by width/64). Its feature
  map is image_size/32 pixels wide (1x1 for 32x32, 2x2 for 64x64), so torchvision's 7x7 pool and
  25088->4096 classifier (sized for 224x224) become a pool to that map and a classifier of the same
  three-layer shape (ReLU, dropout 0.5) with hidden width 8*width (512 at full width, the feature size):
  ``head="compact"``, the builder's default (earlier models keep it). ``head="torchvision"`` (the vgg19-head
  reading's default, kdlib.setups.readings) keeps torchvision's own head instead: a 7x7 adaptive
  pool (a 1x1 or 2x2 map is replicated to 7x7) and a (8*width)*49 -> 64*width -> 64*width -> num_classes
  classifier, at full width exactly torchvision's 25088-4096-4096 (143,667,240 parameters for vgg19 at 1000
  classes; same module names and shapes, so torchvision state dicts load when in_channels=3).
- ViT: torchvision's ``VisionTransformer``. The paper gives no ViT size for SVHN; we use a common
  CIFAR-size configuration (kentaroy47/vision-transformers-cifar10): patch 4 on 32x32 (64 tokens; patch
  image_size/8 in general), 6 layers, 8 heads, hidden 512, MLP 512, dropout 0.1.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1
from torchvision.models.vgg import cfgs as vgg_cfgs, make_layers

from .attention import SelfAttention

SMALL_IMAGE = 64  # images up to this size get the small-image ResNet stem
RESNET_WEIGHTS = {"resnet18": tvm.ResNet18_Weights, "resnet50": tvm.ResNet50_Weights}


class ResNet(nn.Module):
    """ResNet with stage widths ``width * (1, 2, 4, 8)``; ``small_stem``: 3x3 stride-1 conv1 and no max-pool."""

    def __init__(self, block, layers, num_classes: int, in_channels: int = 3, width: int = 64,
                 small_stem: bool = True):
        super().__init__()
        self.inplanes = width
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # global average pool: the mean AdaptiveAvgPool2d(1) computes, without the channels-last restride
        # (as_strided_) it then applies
        return self.fc(x.mean((2, 3)))


class BlurPoolConv2d(nn.Module):
    """A strided conv preceded by a fixed depthwise 3x3 binomial blur (anti-aliasing; FFCV's BlurPool)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("blur", (k[:, None] * k[None, :] / 16).expand(conv.in_channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.conv2d(x, self.blur, padding=1, groups=len(self.blur)))  # not conv's: packed


def add_blurpool(module: nn.Module) -> nn.Module:
    """Wrap every strided conv with >= 16 input channels in :class:`BlurPoolConv2d` (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(module, name, BlurPoolConv2d(child))
        else:
            add_blurpool(child)
    return module


STEMS = ("cifar", "imagenet")


def _resnet(arch: str, block, layers, num_classes: int, in_channels: int, image_size: int, width: int,
            blurpool: bool, weights: str | None, stem: str | None) -> ResNet:
    """``stem``: "cifar" (3x3 stride 1, no max-pool) or "imagenet" (torchvision's); None: by image size (the
    ``small-image-resnet-stem`` reading chooses for images of at most 64 pixels)."""
    if stem not in (None, *STEMS):
        raise ValueError(f"unknown ResNet stem {stem!r}: allowed are {list(STEMS)}")
    small = image_size <= SMALL_IMAGE if stem is None else stem == "cifar"
    model = ResNet(block, layers, num_classes, in_channels, width, small_stem=small)
    if weights is not None:
        _load_pretrained(model, arch, weights, num_classes, in_channels, image_size, width)
    return add_blurpool(model) if blurpool else model


def _load_pretrained(model: ResNet, arch: str, weights: str, num_classes: int, in_channels: int,
                     image_size: int, width: int) -> None:
    enum = RESNET_WEIGHTS[arch]
    if weights not in enum.__members__:
        raise ValueError(f"unknown weights {weights!r} for {arch}: allowed are {list(enum.__members__)}")
    w = enum[weights]
    n = len(w.meta["categories"])
    if (num_classes, in_channels, width) != (n, 3, 64) or not isinstance(model.maxpool, nn.MaxPool2d):
        raise ValueError(f"{arch} weights {weights} need num_classes={n}, in_channels=3, width=64 and "
                         f"torchvision's stem (image_size > {SMALL_IMAGE} or stem='imagenet'); got "
                         f"num_classes={num_classes}, in_channels={in_channels}, width={width}, "
                         f"image_size={image_size}")
    try:
        state = w.get_state_dict(progress=False)
    except (OSError, RuntimeError) as e:
        raise RuntimeError(f"could not load torchvision's {arch} weights {weights} from {w.url} ({e}). They are "
                           f"downloaded once into the torch hub cache ({torch.hub.get_dir()}/checkpoints), which "
                           f"needs internet; or copy the file there by hand.") from e
    model.load_state_dict(state)


def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64, blurpool: bool = False,
             weights: str | None = None, stem: str | None = None) -> ResNet:
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), num_classes, in_channels, image_size, width, blurpool,
                   weights, stem)


def resnet50(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64, blurpool: bool = False,
             weights: str | None = None, stem: str | None = None) -> ResNet:
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), num_classes, in_channels, image_size, width, blurpool,
                   weights, stem)


class VGG(nn.Module):
    """torchvision's VGG layout (``features``, ``avgpool``, ``classifier``) sized for ``image_size`` inputs."""

    def __init__(self, features: nn.Sequential, channels: int, map_size: int, hidden: int, num_classes: int,
                 dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(map_size)
        self.classifier = nn.Sequential(
            nn.Linear(channels * map_size * map_size, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_HEADS = ("compact", "torchvision")


def _vgg19(num_classes: int, in_channels: int, image_size: int, width: int, batch_norm: bool,
           dropout: float = 0.5, head: str = "compact") -> VGG:
    """``head``: "compact" (pool to the image_size/32 map, hidden 8*width) or "torchvision" (7x7 pool, hidden
    64*width: torchvision's 25088-4096-4096 head at width 64)."""
    if head not in VGG_HEADS:
        raise ValueError(f"unknown VGG19 head {head!r}: allowed are {list(VGG_HEADS)}")
    if image_size < 32:
        raise ValueError(f"VGG19 halves the image 5 times: image_size must be >= 32, got {image_size}")
    cfg = [v if v == "M" else v * width // 64 for v in vgg_cfgs["E"]]
    features = make_layers(cfg, batch_norm=batch_norm)
    features[0] = nn.Conv2d(in_channels, cfg[0], kernel_size=3, padding=1)
    if head == "torchvision":
        model = VGG(features, cfg[-2], 7, 64 * width, num_classes, dropout)
        model.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # torchvision's module as it prints it
        return model
    return VGG(features, cfg[-2], image_size // 32, 8 * width, num_classes, dropout)


def vgg19(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64,
          dropout: float = 0.5, head: str = "compact") -> VGG:
    return _vgg19(num_classes, in_channels, image_size, width, batch_norm=False, dropout=dropout, head=head)


def vgg19_bn(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 64,
             dropout: float = 0.5, head: str = "compact") -> VGG:
    return _vgg19(num_classes, in_channels, image_size, width, batch_norm=True, dropout=dropout, head=head)


def vit(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 512, depth: int = 6,
        heads: int = 8, mlp_dim: int | None = None, patch_size: int | None = None,
        dropout: float = 0.1) -> tvm.VisionTransformer:
    """torchvision ViT: ``width`` = hidden size, ``patch_size`` default image_size/8 (8x8 = 64 tokens)."""
    patch = patch_size or max(1, image_size // 8)
    if image_size % patch or width % heads:
        raise ValueError(f"image_size={image_size} must be divisible by patch_size={patch} and width={width} "
                         f"by heads={heads}")
    model = tvm.VisionTransformer(image_size, patch, depth, heads, width, mlp_dim or width, dropout=dropout,
                                  num_classes=num_classes)
    for block in model.encoder.layers:  # self-attention a pack can replace by its packed layer
        block.self_attention = SelfAttention.replacing(block.self_attention)
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch)
        nn.init.trunc_normal_(model.conv_proj.weight, std=(1 / (in_channels * patch * patch)) ** 0.5)
        nn.init.zeros_(model.conv_proj.bias)
    return model
