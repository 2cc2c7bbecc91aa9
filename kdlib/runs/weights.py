"""A teacher's weights from your checkpoint file, read without executing code from it.

``torch.load(..., weights_only=True)`` unpickles tensors and plain containers only; a file that needs other pickled
objects (a whole pickled model, a custom class) is refused with a line saying why, unless you trust it
(``--trust-checkpoints``, which sets ``KDLIB_TRUST_CHECKPOINTS=1`` for every process of the command). Accepted
layouts: a state dict, or a dict holding one under ``state_dict``, ``model_state_dict`` or ``model``; the
``module.`` prefix of a DistributedDataParallel save is dropped.
"""
from __future__ import annotations

import os
import pickle

import torch

from ..setups.yours import SetupFileError

TRUST = "KDLIB_TRUST_CHECKPOINTS"


class CheckpointError(SetupFileError):
    """A checkpoint that cannot become the model's weights: one line naming the file and why."""


def read_state(path: str) -> dict[str, torch.Tensor]:
    """The state dict stored in the checkpoint file ``path``."""
    trusted = os.environ.get(TRUST) == "1"
    try:
        stored = torch.load(path, map_location="cpu", weights_only=not trusted)
    except FileNotFoundError:
        raise CheckpointError(f"teacher checkpoint {path} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError) as e:
        if "weights_only" not in str(e).lower() and "unsupported global" not in str(e).lower():
            raise CheckpointError(f"teacher checkpoint {path} cannot be read: {str(e).splitlines()[0]}") from None
        raise CheckpointError(f"teacher checkpoint {path} holds pickled objects beyond tensors, which could run code "
                              f"when loaded: save its state_dict() instead, or pass --trust-checkpoints if you trust "
                              f"the file") from None
    if isinstance(stored, torch.nn.Module):  # a trusted whole-model pickle
        stored = stored.state_dict()
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(stored, dict) and isinstance(stored.get(key), dict):
            stored = stored[key]
            break
    if not isinstance(stored, dict) or not all(torch.is_tensor(v) for v in stored.values()):
        raise CheckpointError(f"teacher checkpoint {path} holds no state dict (a mapping of names to tensors)")
    if stored and all(k.startswith("module.") for k in stored):
        stored = {k[len("module."):]: v for k, v in stored.items()}
    return stored


def load_weights(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """``model`` with the checkpoint's weights, every key and shape matching, else one line saying which do not."""
    state = read_state(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (the model's {tuple(own[k].shape)})" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        said = [f"{len(missing)} missing, e.g. {missing[:3]}" if missing else "",
                f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}" if unexpected else "",
                f"shapes differ: {shapes[:3]}" if shapes else ""]
        raise CheckpointError(f"teacher checkpoint {path} does not fit the teacher's architecture: "
                              f"{'; '.join(s for s in said if s)}")
    model.load_state_dict(state)
    return model
