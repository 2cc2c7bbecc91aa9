"""Audio setups: VGGish and AST self-distillation on SpeechCommands v2 and UrbanSound8K (paper Section 4.1.2,
Appendix E), and the built-in FSDD setup that runs offline.

Paper recipe (Appendix E): log-mel features (see kdlib/data/audio.py), SGD with lr 0.01 and batch 256 for
100 epochs (SpeechCommands) or 150 epochs (UrbanSound8K), constant lr; the paper states no momentum or
weight decay, so we use none. Teachers use seeds 0-2, students seeds 10-19, alphas 0.1/0.5/0.9, T = 1.
Steps are epochs x ceil(N / batch) with the paper's training-set sizes (84,843 and 6,985 clips).

``fsdd-vggish`` is not in the paper: the same VGGish protocol on the Free Spoken Digit Dataset's official
split (2,700 train / 300 test), with the SpeechCommands recipe (100 epochs) as its ``paper`` profile.

The ``cpu`` profile keeps the protocol (conditions, alphas, seeding, self-distillation, features) and scales
model, data and run so the 43 models of one teacher take minutes on 2 CPU cores:

- VGGish at width 1/8 (8-16-32-32-64-64 channels, FC 512-512-128, 0.6M parameters), plain SGD (no momentum,
  as the paper) at lr 0.1 with batch 32 for 4 epochs: 80-90% train accuracy on FSDD depending on the
  seed, so the teacher stays imperfect on its training data;
- AST with 48 dims, 2 layers, 4 heads, 8 x 8 patches at stride 6, Adam at lr 1e-3 with batch 32 for 4 epochs
  (plain SGD barely moves a from-scratch transformer in so few steps);
- seeded random subsets of SpeechCommands (2,700 train / 1,000 test clips, as many training clips as FSDD)
  and UrbanSound8K (800 / 400 clips, 3 epochs: a 4 s clip costs 4x a 1 s one); FSDD is used whole.

Measured on 2 shared CPU cores with one thread: ``fsdd-vggish`` cpu took 6.5 min for all 43 models
(teacher: 81% train / 80% test accuracy, train loss 0.52). The SpeechCommands and UrbanSound8K cpu
profiles were sized by timing one model on random inputs of their shapes (8-10 s each, so about 6-7 min
per setup); their accuracies are unmeasured here (the datasets are not available offline).

``smoke`` shrinks everything further (a few optimiser steps on at most 64 clips) for tests and CI.
"""
from __future__ import annotations


from .base import ALPHAS, Model, Setup, epoch_steps, register
from ..data.mel import num_frames
from ..engine.recipe import Recipe

PAPER_TRAIN_SIZE = {"speechcommands": 84_843, "urbansound8k": 6_985, "fsdd": 2_700}
PAPER_EPOCHS = {"speechcommands": 100, "urbansound8k": 150, "fsdd": 100}
SECONDS = {"speechcommands": 1.0, "urbansound8k": 4.0, "fsdd": 1.0}
CPU_SUBSET = {"speechcommands": dict(max_train=2700, max_test=1000),
              "urbansound8k": dict(max_train=800, max_test=400), "fsdd": {}}
CPU_EPOCHS = {"speechcommands": 4, "urbansound8k": 3, "fsdd": 4}
PAPER_AST = dict(embed_dim=768, depth=12, heads=12, patch=8, stride=4)


def audio_scale(dataset: str, arch: str, profile: str) -> dict:
    """Model kwargs, recipe, dataset kwargs and seeds of ``arch`` on ``dataset`` at ``profile`` scale."""
    frames = num_frames(SECONDS[dataset])
    ast = lambda kw: {"n_mels": 32, "frames": frames, **kw}
    if profile == "paper":
        n, batch = PAPER_TRAIN_SIZE[dataset], 256
        return dict(model={} if arch == "vggish" else ast(PAPER_AST), dataset_kwargs={},
                    recipe=Recipe("sgd", lr=0.01, batch_size=batch, steps=epoch_steps(PAPER_EPOCHS[dataset], n, batch)),
                    teacher_seeds=(0, 1, 2), student_seeds=tuple(range(10, 20)))
    if profile == "cpu":
        subset = CPU_SUBSET[dataset]
        n, batch, epochs = subset.get("max_train", PAPER_TRAIN_SIZE[dataset]), 32, CPU_EPOCHS[dataset]
        steps = epoch_steps(epochs, n, batch)
        if arch == "vggish":
            model, recipe = dict(width=0.125), Recipe("sgd", lr=0.1, batch_size=batch, steps=steps)
        else:
            model = ast(dict(embed_dim=48, depth=2, heads=4, patch=8, stride=6))
            recipe = Recipe("adam", lr=1e-3, batch_size=batch, steps=steps)
        return dict(model=model, dataset_kwargs=subset, recipe=recipe, teacher_seeds=(0,),
                    student_seeds=tuple(range(10, 16)))
    model = dict(width=1 / 32, hidden=128, embedding=16) if arch == "vggish" else \
        ast(dict(embed_dim=16, depth=1, heads=2, patch=8, stride=8))
    return dict(model=model, dataset_kwargs=dict(max_train=64, max_test=32),
                recipe=Recipe("sgd", lr=0.05, batch_size=16, steps=4), teacher_seeds=(0,), student_seeds=(10, 11))


def audio_setup(dataset: str, arch: str, profile: str, description: str, paper_ref: str) -> Setup:
    s = audio_scale(dataset, arch, profile)
    return Setup(name=f"{dataset}-{arch}", modality="audio", description=description, paper_ref=paper_ref,
                 dataset=dataset, dataset_kwargs=s["dataset_kwargs"], teacher=Model(arch, s["model"]),
                 teacher_recipe=s["recipe"], student_recipe=s["recipe"], teacher_seeds=s["teacher_seeds"],
                 student_seeds=s["student_seeds"], alphas=ALPHAS)


AUDIO_SETUPS = {
    ("speechcommands", "vggish"): ("VGGish self-distillation on SpeechCommands v2",
                                   "Section 4.1.2, Tables 10-11, 73-75, Figure 5"),
    ("speechcommands", "ast"): ("AST self-distillation on SpeechCommands v2", "Appendix E.1.2, Tables 76-80, Figure 22"),
    ("urbansound8k", "vggish"): ("VGGish self-distillation on UrbanSound8K",
                                 "Section 4.1.2, Tables 12-13, 81-83, Figure 6"),
    ("urbansound8k", "ast"): ("AST self-distillation on UrbanSound8K", "Appendix E.2.2, Tables 84-87"),
    ("fsdd", "vggish"): ("VGGish self-distillation on the Free Spoken Digit Dataset (built-in, offline)",
                         "not in the paper: Appendix E protocol with the SpeechCommands recipe"),
}


def _make(dataset: str, arch: str, description: str, paper_ref: str):
    return lambda profile: audio_setup(dataset, arch, profile, description, paper_ref)


for (_dataset, _arch), (_description, _ref) in AUDIO_SETUPS.items():
    register(f"{_dataset}-{_arch}")(_make(_dataset, _arch, _description, _ref))
