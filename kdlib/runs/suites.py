"""Named suites of setups, the notebook each setup is shown in, and the one set of defaults every entry point uses
(``python -m kdlib run`` and ``study``, ``run_all.sh``, the notebooks' parameters). Importable without torch.
"""
from __future__ import annotations

from .. import setups

#: The defaults of every entry point: one single-thread worker process per core of a 2-core machine, one model
#: per step, torch.compile where it pays (CUDA).
DEFAULTS = {"profile": "cpu", "device": "cpu", "launcher": "local", "workers": 2, "pack": 1, "compile": "auto"}

CORE = ("tinyshakespeare-nanogpt", "tinyshakespeare-nanogpt-to-picogpt", "cifar10-resnet18", "fsdd-vggish")
EXPERIMENTS = ("tinyshakespeare-nanogpt-to-picogpt-t2", "tinyshakespeare-nanogpt-to-picogpt-t4",
               "tinyshakespeare-nanogpt-featuremap-block4", "tinyshakespeare-nanogpt-featuremap-block5",
               "tinyshakespeare-adversarial", "tinyshakespeare-width-scaling")
#: Every setup the paper reports, in the order of its Table 95.
PAPER = ("svhn-resnet18", "svhn-vgg19", "svhn-vit", "tinyimagenet-resnet50", "tinyimagenet-vgg19",
         "tinyimagenet-resnet50-randaug", "tinyimagenet-vgg19-randaug", "speechcommands-vggish", "speechcommands-ast",
         "urbansound8k-vggish", "urbansound8k-ast", "tinyshakespeare-nanogpt", "tinyimagenet-resnet50-to-resnet18",
         "imagenet-resnet50-to-resnet18", "tinyshakespeare-nanogpt-to-picogpt", "tinyshakespeare-width-scaling",
         "imagenet-resnet50-to-resnet18-t2", "tinyshakespeare-nanogpt-to-picogpt-t2",
         "tinyshakespeare-nanogpt-to-picogpt-t4", "tinyshakespeare-nanogpt-featuremap-block4",
         "tinyshakespeare-nanogpt-featuremap-block5", "tinyshakespeare-adversarial",
         "tinyimagenet-resnet50-label-smoothing")
SUITES = {"core": CORE, "experiments": EXPERIMENTS, "full": CORE + EXPERIMENTS, "paper": PAPER}


def suite(names) -> list[str]:
    """The setups of a suite: a suite name (:data:`SUITES`), or setups: names, each optionally written as
    ``modality:setup`` (``run_all.sh``'s older form; the modality must be the setup's), and your own setups'
    import paths or TOML files (:mod:`kdlib.setups.yours`)."""
    items = names.split() if isinstance(names, str) else list(names)
    if len(items) == 1 and items[0] in SUITES:
        return list(SUITES[items[0]])
    chosen = []
    for item in items:
        modality, sep, name = item.partition(":")
        if modality not in setups.MODALITIES:  # a plain name, or your own setup's import path or file
            modality, sep, name = "", "", item
        setup = setups.get(name, "paper")  # an unknown name fails here, with a did-you-mean
        if sep and modality != setup.modality:
            raise setups.UnknownSetup(f"{item!r}: {name} is a {setup.modality} setup, shown in notebooks/"
                                      f"{setup.modality}.ipynb (suites are {sorted(SUITES)})")
        chosen.append(name)
    return chosen


def notebook_for(setup) -> str:
    """The study notebook a setup is shown in: the one of its modality."""
    return f"notebooks/{setup.modality}.ipynb"
