"""The paper's further language experiments (Sections 4.3, 4.4.2, 4.5; Appendices C.3.1, F.2).

- Temperature: Nano-GPT -> Pico-GPT KD at T = 2 and T = 4 (with the T^2 factor), against SIDDO and RCD
  (RCD uses the same T, so the control keeps the KD objective's form).
- Feature-map matching: Nano-GPT self-distillation where the distillation term is the MSE between the outputs
  of transformer block 4 (resp. 5; nanoGPT's 0-based ``h[4]``/``h[5]``, the last two of six blocks) of student
  and teacher, (1-alpha)*CE + alpha*MSE, read through forward hooks. RCD's counterpart matches a constant
  target of the same shape, zeros: the feature-space analogue of a teacher that carries no information.
  The ``cpu`` and ``smoke`` profiles keep six blocks so that blocks 4 and 5 exist.
- Adversarial: the teacher trains on TinyShakespeare with every "the" replaced by "tha"; students train on
  the clean text. Every model is probed on the clean test split (``kdlib.probes.th_completion``).
"""
from __future__ import annotations

from . import register
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
