"""Language setups: Nano-GPT / Pico-GPT on TinyShakespeare (paper Sections 4.1.3, 4.2.2, Appendix C.3, F.1).

Paper recipe: GPT-2-style model, n_embd 384 (Pico: 192), 6 heads, 6 blocks, dropout 0.2, block size 256,
vocab 65, Adam lr 3e-4, batch 64, 5000 iterations, first 90% train / last 10% test, character tokenizer. The
model and optimiser are a reading (``gpt-architecture``, :mod:`kdlib.setups.readings`): by default the lecture
script's model with torch's AdamW, which the builders below leave to the reading (they build nanoGPT's model with
Adam, what ``gpt-architecture=nanogpt`` keeps). Teachers' train loss and accuracy are measured on every
non-overlapping window of the training split, as test metrics are on the test split.

The ``cpu`` profile keeps the protocol (same conditions, alphas, seeding, objective, optimiser, dropout 0.2)
but shrinks the model (n_embd 64, 2 blocks, 4 heads; Pico: n_embd 32), the context (block 32), the batch (32)
and the run (600 iterations, lr 3e-3), so the 43 models of one teacher train in about 10 minutes on 2 CPU
cores (one single-thread process, or ``--launcher local --workers 2`` for about half that). Its teacher stays
far from its data (train loss about 2.2, accuracy about 0.35, against the paper's 0.86 / 0.72), the regime
of high teacher loss where the paper sees the strongest transfer.
"""
from __future__ import annotations

from .base import ALPHAS, Model, Setup, register
from ..engine.recipe import Recipe

PAPER_GPT = dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2)
CPU_GPT = dict(block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.2)
SMOKE_GPT = dict(block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.2)


def nanogpt_scale(profile: str) -> dict:
    """Model, recipe and seeds of the Nano-GPT setups at ``profile`` scale."""
    if profile == "paper":
        return dict(gpt=PAPER_GPT, recipe=Recipe("adam", lr=3e-4, batch_size=64, steps=5000),
                    teacher_seeds=(0, 1, 2), student_seeds=tuple(range(10, 20)), eval_batch_size=64)
    if profile == "cpu":
        return dict(gpt=CPU_GPT, recipe=Recipe("adam", lr=3e-3, batch_size=32, steps=600),
                    teacher_seeds=(0,), student_seeds=tuple(range(10, 16)), eval_batch_size=256)
    return dict(gpt=SMOKE_GPT, recipe=Recipe("adam", lr=1e-2, batch_size=8, steps=4),
                teacher_seeds=(0,), student_seeds=(10, 11), eval_batch_size=512, max_chars=20_000)


def pico(gpt: dict) -> dict:
    """Pico-GPT: the Nano-GPT config at half the embedding width."""
    return {**gpt, "n_embd": gpt["n_embd"] // 2}


def tinyshakespeare_setup(name: str, profile: str, description: str, paper_ref: str, student_width=None,
                          **changes) -> Setup:
    s = nanogpt_scale(profile)
    gpt = s["gpt"]
    student = None if student_width is None else Model("gpt", student_width(gpt))
    setup = Setup(
        name=name, modality="language", description=description, paper_ref=paper_ref,
        dataset="tinyshakespeare",
        dataset_kwargs={"block_size": gpt["block_size"], **({"max_chars": s["max_chars"]} if "max_chars" in s else {})},
        teacher=Model("gpt", gpt), student=student, teacher_recipe=s["recipe"], student_recipe=s["recipe"],
        teacher_seeds=s["teacher_seeds"], student_seeds=s["student_seeds"], alphas=ALPHAS,
        eval_batch_size=s["eval_batch_size"])
    return setup.scaled(**changes) if changes else setup


@register("tinyshakespeare-nanogpt")
def tinyshakespeare_nanogpt(profile: str) -> Setup:
    return tinyshakespeare_setup("tinyshakespeare-nanogpt", profile,
                                 "Nano-GPT self-distillation on TinyShakespeare", "Tables 14-15, Figure 7")


@register("tinyshakespeare-nanogpt-to-picogpt")
def tinyshakespeare_nanogpt_to_picogpt(profile: str) -> Setup:
    return tinyshakespeare_setup("tinyshakespeare-nanogpt-to-picogpt", profile,
                                 "Nano-GPT teacher to Pico-GPT student (half width) on TinyShakespeare",
                                 "Tables 20-21, 38-40, Figure 10", student_width=pico)
