"""The paper's further language experiments (Sections 4.3, 4.4.2, 4.5; Appendices C.3.1, F.2).

- Temperature: Nano-GPT -> Pico-GPT KD at T = 2 and T = 4 (with the T^2 factor), against SIDDO and RCD
  (RCD uses the same T, so the control keeps the KD objective's form).
- Feature-map matching: Nano-GPT self-distillation where the distillation term is the MSE between the outputs
  of transformer block 4 (resp. 5; nanoGPT's 0-based ``h[4]``/``h[5]``, the last two of six blocks) of student
  and teacher, (1-alpha)*CE + alpha*MSE, read through forward hooks. RCD's counterpart matches a constant
  target of the same shape, zeros: the feature-space analogue of a teacher that carries no information.
  The ``cpu`` and ``smoke`` profiles keep six blocks so that blocks 4 and 5 exist.
- Adversarial: the teacher trains on TinyShakespeare with every "the" replaced by "tha"; students train on
  the clean text. Every model is probed on the clean test split (``kdlib.engine.probes.th_completion``).
- Width scaling (Section 4.2.3, Figure 11): Pico-GPT students at 10%, 20%, ..., 100% of the teacher's width,
  teacher seed 0, each width under SIDDO, KD and RCD at alpha 0.9: Table 95's 300 models (10 widths x 3
  conditions x 10 student seeds) and the alpha Section 4.2.3 reports ("from 10% to 100% width at alpha=0.9").
  ``tinyshakespeare-width-scaling-three-alphas`` is the extension with KD and RCD at every alpha (700 models).
  A width's n_embd is the teacher's times the fraction, rounded to a multiple of the head count (at least one
  head's worth); at 100% the student is the teacher's architecture and, drawn from the same init seed, starts
  exactly from M0. The ``cpu`` profile keeps 4 widths (10, 40, 70, 100%) to stay within a CPU budget.
"""
from __future__ import annotations

from .base import Model, register
from .language import pico, tinyshakespeare_setup


def _temperature(t: int):
    name = f"tinyshakespeare-nanogpt-to-picogpt-t{t}"

    @register(name)
    def make(profile: str):
        return tinyshakespeare_setup(name, profile, f"Nano-GPT to Pico-GPT KD at temperature {t}",
                                     "Tables 27-29, 41-46, Figure 14", student_width=pico, temperature=float(t))
    return make


for _t in (2, 4):
    _temperature(_t)


def _featuremap(block: int):
    name = f"tinyshakespeare-nanogpt-featuremap-block{block}"

    @register(name)
    def make(profile: str):
        setup = tinyshakespeare_setup(name, profile, f"Nano-GPT feature-map matching KD on block {block}",
                                      "Tables 22-24, Figure 12", feature_layer=f"blocks.{block}")
        if setup.teacher.kwargs["n_layer"] < 6:
            deep = {**setup.teacher.kwargs, "n_layer": 6}
            setup = setup.scaled(teacher=type(setup.teacher)("gpt", deep))
        return setup
    return make


for _b in (4, 5):
    _featuremap(_b)


@register("tinyshakespeare-adversarial")
def tinyshakespeare_adversarial(profile: str):
    setup = tinyshakespeare_setup("tinyshakespeare-adversarial", profile,
                                  'Adversarial Nano-GPT teacher ("the" -> "tha"), students on clean text',
                                  "Tables 30, 91-94, Figure 15", probes=("th_completion",))
    return setup.scaled(teacher_dataset_kwargs={**setup.dataset_kwargs, "replace": [["the", "tha"]]})


def width_fraction(gpt: dict, fraction: float) -> dict:
    """The GPT config at ``fraction`` of its width, n_embd rounded to a multiple of n_head."""
    heads = gpt["n_head"]
    return {**gpt, "n_embd": max(heads, round(gpt["n_embd"] * fraction / heads) * heads)}


def _width_scaling(name: str, alphas: tuple[float, ...] | None, description: str):
    @register(name)
    def make(profile: str):
        setup = tinyshakespeare_setup(name, profile, description, "Section 4.2.3, Figure 11, Table 95",
                                      student_width=pico)
        percents = {"paper": range(10, 101, 10), "cpu": (10, 40, 70, 100), "smoke": (50, 100)}[profile]
        variants = tuple((f"{p}%", Model("gpt", width_fraction(setup.teacher.kwargs, p / 100))) for p in percents)
        return setup.scaled(teacher_seeds=setup.teacher_seeds[:1], student_variants=variants,
                            alphas=alphas or setup.alphas)
    return make


_width_scaling("tinyshakespeare-width-scaling", (0.9,),
               "Pico-GPT students at 10-100% of the Nano-GPT teacher's width, KD and RCD at alpha 0.9")
_width_scaling("tinyshakespeare-width-scaling-three-alphas", None,
               "Width scaling with KD and RCD at every alpha (an extension of the paper's grid)")
