"""Model families, one readable file each; ``build(arch, num_classes, **kwargs)`` is the single entry point.

:data:`ARCHITECTURES` names each architecture's builder ``fn(num_classes, **kwargs) -> nn.Module`` lazily, so a
process that trains only GPTs never imports torchvision (3 s). Your own: ``register("mynet", "mypkg.nets:build")``
(or the function itself)."""
from __future__ import annotations

from ..registry import Registry

ARCHITECTURES = Registry("architecture")
for _arch, _path in {"gpt": "gpt:gpt", "resnet18": "vision:resnet18", "resnet50": "vision:resnet50",
                     "vgg19": "vision:vgg19", "vgg19_bn": "vision:vgg19_bn", "vit": "vision:vit",
                     "vggish": "audio:vggish", "ast": "audio:ast"}.items():
    ARCHITECTURES.register(_arch, f"{__name__}.{_path}")
register = ARCHITECTURES.register


def build(arch: str, num_classes: int, **kwargs):
    """A freshly initialised ``arch`` (a :class:`torch.nn.Module`) with ``num_classes`` outputs."""
    return ARCHITECTURES[arch](num_classes, **kwargs)
