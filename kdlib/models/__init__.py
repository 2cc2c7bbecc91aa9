"""Model families, one readable file each; ``build(arch, num_classes, **kwargs)`` is the single entry point.

:data:`ARCHITECTURES` names each architecture's builder ``fn(num_classes, **kwargs) -> nn.Module`` lazily, so a
process that trains only GPTs never imports torchvision (3 s). Your own, in any process without a registration
call: an import path as the architecture's name (``"mypkg.nets:make_student"``: any factory of an ``nn.Module``,
given ``num_classes`` where it takes it), ``"torchvision:<name>"`` (``torchvision.models.get_model``) or
``"timm:<name>"`` (where timm is installed); or an installed plugin's ``kdlib.models`` entry point; or
``register("mynet", "mypkg.nets:build")`` in the process that builds it."""
from __future__ import annotations

import functools
import inspect

from ..registry import Registry, resolve


def _torchvision(name: str, num_classes: int, **kwargs):
    import torchvision
    return torchvision.models.get_model(name, num_classes=num_classes, **kwargs)


def _timm(name: str, num_classes: int, **kwargs):
    try:
        import timm
    except ImportError:
        raise ValueError(f"architecture 'timm:{name}' needs timm, which is not installed: pip install timm") from None
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def _factory(make, num_classes: int, **kwargs):
    """A user's model factory: called with ``num_classes`` when its signature takes it."""
    try:
        takes = "num_classes" in inspect.signature(make).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        takes = False
    return make(num_classes=num_classes, **kwargs) if takes else make(**kwargs)


def _from_path(name: str):
    """The builder an import-path architecture name stands for (None for a plain name)."""
    if ":" not in name:
        return None
    prefix, _, rest = name.partition(":")
    if prefix == "torchvision":
        return functools.partial(_torchvision, rest)
    if prefix == "timm":
        return functools.partial(_timm, rest)
    return functools.partial(_factory, resolve(name))  # imported now: a wrong path fails where it is named


ARCHITECTURES = Registry("architecture", from_path=_from_path, group="kdlib.models")
for _arch, _path in {"gpt": "gpt:gpt", "resnet18": "vision:resnet18", "resnet50": "vision:resnet50",
                     "vgg19": "vision:vgg19", "vgg19_bn": "vision:vgg19_bn", "vit": "vision:vit",
                     "vggish": "audio:vggish", "ast": "audio:ast"}.items():
    ARCHITECTURES.register(_arch, f"{__name__}.{_path}")
register = ARCHITECTURES.register


def build(arch: str, num_classes: int, **kwargs):
    """A freshly initialised ``arch`` (a :class:`torch.nn.Module`) with ``num_classes`` outputs."""
    return ARCHITECTURES[arch](num_classes, **kwargs)
