"""Extra evaluations a setup can ask for, run on every trained model (teachers and students).

A probe is ``fn(model, task, device, batch_size) -> dict[str, float]``; its numbers land in the run's
result under ``probes`` and become columns of the collected table.
"""
from __future__ import annotations

import torch

from . import device as dev
from ..registry import Registry

PROBES = Registry("probe")
register = PROBES.register  # @register(name) over fn(model, task, device, batch_size), or register(name, "module:fn")


def run_probes(names, model, task, device: str, batch_size: int) -> dict[str, float]:
    for name in names:
        PROBES.check(name)  # every name before any probe runs
    out = {}
    for name in names:
        out.update(PROBES[name](model, task, device, batch_size))
    return out


def th_prompts(tokens: torch.Tensor, tokenizer, block_size: int) -> torch.Tensor:
    """Every context of the (clean) test stream that ends in "th": up to ``block_size`` characters each.

    Prompt set (Section 4.5): all positions of the lowercase pair "th" in the test split, left-padded by
    repeating the first character where fewer than ``block_size`` characters precede them (only at the very
    start of the split).
    """
    t, h = tokenizer.index["t"], tokenizer.index["h"]
    ends = ((tokens[:-1] == t) & (tokens[1:] == h)).nonzero().flatten() + 1  # index of the "h"
    padded = torch.cat([tokens[:1].repeat(block_size), tokens])  # "h" at e sits at e + block_size here
    return padded[(ends + 1)[:, None] + torch.arange(block_size)]


@register("th_completion")
@torch.no_grad()
def th_completion(model, task, device: str, batch_size: int) -> dict[str, float]:
    """Greedy next character after every "th" prompt of the clean test split: counts of "tha" and "the"."""
    tok = task.extra["tokenizer"]
    prompts = th_prompts(task.test.tokens, tok, task.test.block_size)
    dev.place(model, device).eval()
    with dev.float32_forward(device):
        nxt = torch.cat([model(dev.batch(prompts[i:i + batch_size], device))[:, -1].argmax(-1).cpu()
                         for i in range(0, len(prompts), batch_size)])
    return {"tha_count": int((nxt == tok.index["a"]).sum()), "the_count": int((nxt == tok.index["e"]).sum()),
            "th_prompts": len(prompts)}
