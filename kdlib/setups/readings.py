"""Every point where the paper admits more than one reading: the register, and what each reading does to a setup.

A :class:`Reading` names the setups it touches (``applies``), quotes the paper, lists its choices with the
evidence for each, and says which is the default and why. :func:`apply` turns a setup's choices into the run
specs' fields (model, data, recipe, objective, precision), so a run trained under another reading has another
run id, and runs under the default readings keep the ids they had before readings existed: a reading's default
is written into a spec only where it changes what is trained. Users choose a reading with
``--reading ID=CHOICE`` (``READINGS="ID=CHOICE ..."`` in ``run_all.sh``, ``readings`` in the notebooks); a setup
under non-default readings is stored and reported under its own label (:func:`label`), e.g.
``tinyshakespeare-nanogpt+gpt-architecture=nanogpt``. ``python -m kdlib list`` shows the readings each setup
uses; the README's table is :func:`markdown_table` (a test keeps them equal).

Departures that remain because plain PyTorch cannot do what the paper did are listed in :data:`FORCED`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from .base import Model, Setup


@dataclass(frozen=True)
class Reading:
    """One ambiguity: ``choices`` maps each reading's name to what it means, ``evidence`` to what supports it."""
    id: str
    title: str
    paper: str
    choices: dict[str, str]
    evidence: dict[str, str]
    default: str
    why: str
    applies: Callable[[Setup], bool]
    apply: Callable[[Setup, str], Setup]
    touches: str  # which setups, in words (for the README and `kdlib list`)
    analysis: bool = False  # it changes only how collected runs are analysed: no run spec, no run id
    default_for: Callable[[Setup], str] | None = None  # a default that differs by setup family (``default`` else)

    def default_of(self, setup: Setup) -> str:
        """The default choice for ``setup``: :attr:`default_for`'s where the evidence differs by family."""
        return self.default if self.default_for is None else self.default_for(setup)


def _models(setup: Setup) -> list[Model]:
    return [setup.teacher, setup.student_model, *(m for _, m in setup.student_variants)]


def _map_models(setup: Setup, change: Callable[[Model], Model]) -> Setup:
    return replace(setup, teacher=change(setup.teacher),
                   student=None if setup.student is None else change(setup.student),
                   student_variants=tuple((label_, change(m)) for label_, m in setup.student_variants))


def _uses(arch_prefix: str) -> Callable[[Setup], bool]:
    return lambda s: any(m.arch.startswith(arch_prefix) for m in _models(s))


# ----------------------------------------------------------------------------- what each reading does

def _analysis(field: str, cast=str) -> Callable[[Setup, str], Setup]:
    """An analysis reading: it sets one of the verdict rule's choices and changes nothing that is trained."""
    return lambda setup, choice: replace(setup, **{field: cast(choice)})


def _adversarial(setup: Setup, choice: str) -> Setup:
    replacements = setup.teacher_dataset_kwargs["replace"]
    kwargs = {k: v for k, v in setup.teacher_dataset_kwargs.items() if k != "replace"}
    key = "replace_words" if choice == "word" else "replace"
    return replace(setup, teacher_dataset_kwargs={**kwargs, key: replacements})


def _gpt(setup: Setup, choice: str) -> Setup:
    if choice == "nanogpt":
        return setup
    return _map_models(setup, lambda m: Model(m.arch, {**m.kwargs, "style": "lecture"}) if m.arch == "gpt" else m)


def _gpt_optimizer(setup: Setup, choice: str) -> Setup:
    """``adamw``: the lecture script's torch.optim.AdamW at its default weight decay (0.01), on every parameter;
    ``adam``: the setup's recipe as printed (Adam, no weight decay)."""
    if choice == "adam":
        return setup
    adamw = lambda r: None if r is None else replace(r, optimizer="adamw", weight_decay=0.01)
    return replace(setup, teacher_recipe=adamw(setup.teacher_recipe), student_recipe=adamw(setup.student_recipe))


def _t_squared(setup: Setup, choice: str) -> Setup:
    return setup if choice == "with" else replace(setup, kd_t_squared=False)


def _ffcv(setup: Setup, choice: str) -> Setup:
    return setup if choice == "plain" else replace(setup, label_smoothing=0.1, eval_flip=True)


def _audio(setup: Setup, choice: str) -> Setup:
    if choice == "log-mel":
        return setup
    return replace(setup, dataset_kwargs={**setup.dataset_kwargs, "front_end": "power-mel", "normalize": False})


def _precision(setup: Setup, choice: str) -> Setup:
    """float32 is a spec's ``precision=None`` (PyTorch's default, and every run on a CPU)."""
    return replace(setup, precision=None if choice == "float32" else choice)


def _precision_default(setup: Setup) -> str:
    return "fp16-scaler" if setup.dataset == "imagenet" else "float32"


def _vgg(setup: Setup, choice: str) -> Setup:
    if choice == "svhn-bn":
        return setup
    arch = "vgg19_bn" if choice == "all-bn" else "vgg19"
    return _map_models(setup, lambda m: Model(arch, m.kwargs) if m.arch.startswith("vgg19") else m)


def _vgg_head(setup: Setup, choice: str) -> Setup:
    if choice == "compact":
        return setup
    return _map_models(setup, lambda m: Model(m.arch, {**m.kwargs, "head": choice}) if m.arch.startswith("vgg19")
                       else m)


def _student_init(setup: Setup, choice: str) -> Setup:
    return setup if choice == "teacher-seed" else replace(setup, student_init=choice)


def _featuremap_student(setup: Setup, choice: str) -> Setup:
    """``pico``: a Pico-GPT student (half the teacher's width; the engine learns the tutorial's projection)."""
    if choice == "nano":
        return setup
    from .language import pico
    return replace(setup, student=Model(setup.teacher.arch, pico(setup.teacher.kwargs)))


def _featuremap_blocks(setup: Setup, choice: str) -> Setup:
    """``one-based``: "block 4" is the 4th block, module ``blocks.3``."""
    if choice == "zero-based":
        return setup
    prefix, _, block = setup.feature_layer.rpartition(".")
    return replace(setup, feature_layer=f"{prefix}.{int(block) - 1}")


def _featuremap_rcd(setup: Setup, choice: str) -> Setup:
    return setup if choice == "zeros" else replace(setup, feature_rcd_target=choice)


TINY_AST = {"embed_dim": 192, "depth": 12, "heads": 3}  # DeiT-Tiny's width


def _ast_size(setup: Setup, choice: str) -> Setup:
    if choice == "base":
        return setup
    return _map_models(setup, lambda m: Model(m.arch, {**m.kwargs, **TINY_AST}) if m.arch == "ast" else m)


def _paper_ast(setup: Setup) -> bool:
    """An AST at the paper profile's size (the cpu and smoke profiles shrink it anyway)."""
    return any(m.arch == "ast" and m.kwargs.get("embed_dim") == 768 for m in _models(setup))


def _stem(setup: Setup, choice: str) -> Setup:
    if choice == "cifar":
        return setup
    return _map_models(setup, lambda m: Model(m.arch, {**m.kwargs, "stem": "imagenet"})
                       if m.arch.startswith("resnet") else m)


def _unchanged(setup: Setup, choice: str) -> Setup:
    return setup


def _small_resnet(setup: Setup) -> bool:
    return any(m.arch.startswith("resnet") and m.kwargs.get("image_size", 32) <= 64 for m in _models(setup))


# ----------------------------------------------------------------------------- the register

READINGS: dict[str, Reading] = {r.id: r for r in [
    Reading(
        id="adversarial-replacement", title="Adversarial replacement",
        paper='Sec. 4.5: "every occurrence of \'t\' \'h\' \'e\' replaced with \'t\' \'h\' \'a\'"; "\'tha\' never '
              'naturally occurs in the dataset"',
        choices={"word": 'the lowercase word "the" becomes "tha" ("The", "there", "other" stay)',
                 "substring": 'every substring "the" becomes "tha" (also inside "there", "them", "other")'},
        evidence={"word": 'Tables 30, 93, 94: the adversarial teacher still completes "th" with \'e\' 285, 273 and '
                          '266 times, impossible if no "the" survived in its text; "tha" does occur naturally '
                          '("that", "than": 257 times in the test split), so "never occurs" fits only the word; '
                          'the test split\'s 491 words "the" sit beside the teacher\'s 454 "tha" completions',
                  "substring": 'the literal words; it replaces 9,506 substrings of the train split, after which '
                               'the cpu-profile teacher completes "tha" after almost every "th"'},
        default="word", why="the paper's own counts rule out the substring reading; case: lowercase only, as the "
                            "paper writes the characters and the probe's prompts end in a lowercase \"th\"",
        applies=lambda s: bool(s.teacher_dataset_kwargs and "replace" in s.teacher_dataset_kwargs),
        apply=_adversarial, touches="tinyshakespeare-adversarial"),
    Reading(
        id="gpt-architecture", title="GPT architecture",
        paper='F.1: "GPT2-style", n_embd 384, 6 heads, 6 blocks, dropout 0.2, block 256, Adam lr 3e-4, batch 64, '
              '5,000 iterations; cites Karpathy (2022)',
        choices={"lecture": "the lecture's gpt.py: ReLU MLP, untied lm_head with bias, bias-free q/k/v, no "
                            "embedding dropout, N(0, 0.02) init",
                 "nanogpt": "nanoGPT's model.py: GELU, tied head, embedding dropout, scaled residual init"},
        evidence={"lecture": "every hyperparameter the paper lists, lr 3e-4 and the constant schedule included, is "
                             "the header of the lecture's gpt.py, not nanoGPT's shakespeare_char config (lr 1e-3, "
                             "warm-up, cosine decay); Table 38's teacher (train loss 0.865, test 1.567) overfits "
                             "more than nanoGPT's model on this recipe (H200: train 0.999 on a train subset, test "
                             "1.533), as an untied head without embedding dropout would",
                  "nanogpt": "\"GPT2-style\" and the name Nano-GPT (nanoGPT's model.py)"},
        default="lecture", why="the recipe the paper prints is the lecture script's, so is its model; the GPU "
                               "check (benchmarks/paper_slice.sh --reading) settles it against Table 38",
        applies=_uses("gpt"), apply=_gpt, touches="every TinyShakespeare setup"),
    Reading(
        id="gpt-optimizer", title="GPT optimiser",
        paper='F.1 and 4.2.2: "Training uses the Adam optimiser with a learning rate of 3e-4, and a batch size of 64, '
              'for 5000 iterations"',
        choices={"adamw": "torch.optim.AdamW(lr=3e-4) at its default weight decay 0.01, on every parameter",
                 "adam": "torch.optim.Adam(lr=3e-4), no weight decay: the optimiser the paper prints"},
        evidence={"adamw": "the lecture's gpt.py, whose header is every hyperparameter the paper prints (lr 3e-4, "
                           "batch 64, 5,000 iterations, n_embd 384, 6 heads, 6 blocks, dropout 0.2, block 256), "
                           "builds torch.optim.AdamW(model.parameters(), lr=learning_rate); \"Adam\" is how AdamW "
                           "is commonly named",
                  "adam": "the paper's word, read literally"},
        default="adamw", why="the paper's recipe is the lecture script's, and so is its optimiser; both runnable "
                             "with either architecture",
        applies=_uses("gpt"), apply=_gpt_optimizer, touches="every TinyShakespeare setup"),
    Reading(
        id="kd-temperature-squared", title="T^2 in Eq. 1",
        paper='Eq. 1 has no T^2; Section 5: "(with the usual T^2 prefactor in Eq. 1)"',
        choices={"with": "alpha * T^2 * KL (Hinton et al.'s scaling)", "without": "alpha * KL, Eq. 1 as printed"},
        evidence={"with": "Section 5's words; the PyTorch KD tutorial the paper cites multiplies by T^2",
                  "without": "Eq. 1 as printed"},
        default="with", why="the paper says so in words where it discusses temperature; at T = 1 both are equal",
        applies=lambda s: s.temperature != 1.0, apply=_t_squared, touches="the temperature setups (T = 2, 4)"),
    Reading(
        id="imagenet-ffcv-extras", title="ImageNet label smoothing and flip averaging",
        paper='C.2: "trained on ImageNet using the FFCV setup"',
        choices={"plain": "cross-entropy without label smoothing; test logits of the image alone",
                 "ffcv": "FFCV's label smoothing 0.1 on every cross-entropy term and test logits summed over the "
                         "image and its horizontal flip"},
        evidence={"plain": "SIDDO is plain CE by the paper's design; Table 18's SIDDO top-1 is 0.680, FFCV's "
                           "published result for this configuration (with both) 0.713",
                  "ffcv": "FFCV's rn18 configuration sets label_smoothing 0.1 and lr_tta, whose val_loop adds the "
                          "flipped image's logits to the plain ones (output += model(ch.flip(images, dims=[3])))"},
        default="plain", why="the paper's SIDDO accuracy sits below FFCV's, as the plain reading predicts; "
                             "label smoothing would change the controls the paper defines",
        applies=lambda s: s.dataset == "imagenet", apply=_ffcv, touches="the ImageNet setups"),
    Reading(
        id="featuremap-student", title="Feature-map student",
        paper="Sec. 4.3 and Tables 22-24: feature-map KD \"on the transformer model NanoGPT\"",
        choices={"pico": "a Pico-GPT student (n_embd 192), its block output mapped to the teacher's width by a "
                         "learned linear projection trained with it (the cited tutorial's regressor) and used only "
                         "in the loss; its SIDDO is the Pico-GPT setup's SIDDO run",
                 "nano": "a Nano-GPT student, matched block by block with the Nano-GPT teacher"},
        evidence={"pico": "the SIDDO column of Tables 22 and 23 equals Table 20's Pico-GPT SIDDO in every digit "
                          "(0.202, 0.915, 0.252, 0.056, 0.571, 1.473) and SEM, where Nano-GPT's SIDDO (Table 14) "
                          "differs (activation distance 0.196, loss 1.559); Section 3.3 pairs KD, SIDDO and RCD on "
                          "one initialisation and data order, so the KD students paired with those SIDDO runs are "
                          "Pico-GPTs; the footnote cites the PyTorch KD tutorial, whose feature-map student has a "
                          "smaller width and a trained regressor",
                  "nano": "the text (\"on the transformer model NanoGPT\") and the captions of Tables 22-24; most KD "
                          "students' losses (1.49-1.59) sit nearer Nano's SIDDO (1.559) than Pico's (1.473), though "
                          "block 5 at alpha 0.9 (1.493) does not"},
        default="pico", why="the tables' SIDDO runs are Pico-GPTs and the tests pair every KD student with one; the "
                            "caption names the teacher",
        applies=lambda s: s.feature_layer is not None, apply=_featuremap_student, touches="the feature-map setups"),
    Reading(
        id="featuremap-blocks", title="Which blocks are \"block 4\" and \"block 5\"",
        paper='Sec. 4.3, Tables 22-24: "Feature Map KD for Block 4", "... Block 5" of a six-block model',
        choices={"zero-based": "nanoGPT's 0-based h[4] and h[5]: the last two of the six blocks",
                 "one-based": "the 4th and 5th blocks, h[3] and h[4]: the final block is never matched"},
        evidence={"zero-based": "in the code the tutorial and nanoGPT suggest, blocks are indexed from 0 "
                                "(model.transformer.h[4]), and 4 and 5 are then the two deepest blocks, the natural "
                                "pair to study; block 5 transferring more than block 4 (Section 4.3) fits a deeper "
                                "block",
                  "one-based": "prose counts from one; block 5 still lies deeper than block 4"},
        default="zero-based", why="the two deepest blocks are the pair a study of feature matching picks; the "
                                  "paper's ordering of the two is satisfied by both; kept as before",
        applies=lambda s: s.feature_layer is not None, apply=_featuremap_blocks, touches="the feature-map setups"),
    Reading(
        id="featuremap-rcd-target", title="RCD's target in feature-map matching",
        paper="Sec. 3 defines RCD for logits (a class-uniform teacher); Sec. 4.3 runs RCD beside feature-map KD "
              "without saying what it matches",
        choices={"zeros": "a zero feature map of the teacher's shape: a target that carries nothing",
                 "teacher-init": "the block output of the teacher's untrained initialisation M0 on the same batch: "
                                 "the architecture's own teacher without knowledge, as an untrained network's "
                                 "near-uniform logits are for logit KD"},
        evidence={"zeros": "the feature-space analogue of a constant uniform target; Tables 22-23's RCD columns stay "
                           "near SIDDO (activation distance 0.203-0.227 against 0.202), unlike logit RCD at alpha "
                           "0.9 (Table 20: 0.663), so the target is mild at every alpha",
                  "teacher-init": "RCD keeps the distillation's form and removes the teacher's information; M0 is "
                                  "that teacher before training; nothing in the tables separates the two"},
        default="zeros", why="the simplest target that carries no information; nothing the paper prints settles it, "
                             "kept as before, both runnable",
        applies=lambda s: s.feature_layer is not None, apply=_featuremap_rcd, touches="the feature-map setups"),
    Reading(
        id="audio-front-end", title="Audio front end",
        paper="Appendix E: a torchaudio spectrogram (n_fft 512, power 2) converted to the MelScale (32 mels); no "
              "log or standardisation is stated",
        choices={"log-mel": "log(mel + 1e-6), each mel bin standardised with the training split's statistics",
                 "power-mel": "the mel power spectrogram itself, no log, no standardisation"},
        evidence={"log-mel": "the usual front end of VGGish and AST; plain SGD at lr 0.01 on inputs spanning ten "
                             "orders of magnitude is what log and standardisation avoid; the cpu profile's recipe "
                             "(SGD lr 0.1) diverges on power-mel input (fsdd-vggish: the teacher's loss is nan at "
                             "step 4, measured)",
                  "power-mel": "the paper's words, read literally; and Table 12 (VGGish, UrbanSound8K): JS divergence "
                               "\"inf, nan\" for SIDDO and KD 0.1, whose losses are 2.813 +/- 0.330 and 2.460 +/- "
                               "0.248 at 0.79 accuracy, i.e. students trained on plain CE reach saturating logits "
                               "(overflowing softmaxes, overconfident errors; Table 82, seed 1, likewise) while RCD's "
                               "uniform target tames them (0.730 +/- 0.005) and the LayerNorm AST stays finite on the "
                               "same data: the behaviour of unnormalised power inputs, not of standardised log-mel"},
        default="log-mel",
        why="re-weighed, kept: Table 12 points to power-mel, but on power-mel the paper's own VGGish recipe (SGD lr "
            "0.01, batch 256) stalls at chance on FSDD (loss 117 over its first 5 steps, then flat at 2.29-2.30 = "
            "ln 10 through step 40; log-mel falls from 2.299 to 2.210), and Table 10's SpeechCommands VGGish is "
            "finite everywhere; both runnable, the GPU check settles it against Tables 10 and 12",
        applies=lambda s: s.modality == "audio", apply=_audio, touches="the audio setups"),
    Reading(
        id="training-precision", title="Training precision",
        paper="not stated (A100 GPUs, Appendix G)",
        choices={"float32": "float32 training and evaluation (PyTorch's default: TF32 allowed for convolutions, not "
                            "for matrix products)",
                 "bf16": "training steps under bf16 autocast on CUDA (every evaluation a float32 forward)",
                 "fp16-scaler": "FFCV's choice: training steps under fp16 autocast with a gradient scaler, and the "
                                "test-set evaluation under fp16 autocast too"},
        evidence={"float32": "the lecture gpt.py whose header the paper prints trains in float32, as do plain PyTorch "
                             "scripts for SVHN, TinyImageNet and audio (the paper's recipes name no autocast, AMP "
                             "or mixed precision)",
                  "bf16": "a common A100 choice; nothing in the paper or its cited code uses it",
                  "fp16-scaler": "FFCV's ImageNet example, whose setup the ImageNet students follow (C.2: \"trained "
                                 "on ImageNet using the FFCV setup\"), trains under torch autocast (fp16) with a "
                                 "GradScaler and evaluates under autocast"},
        default="float32", default_for=_precision_default,
        why="by setup family, from the code each family's recipe comes from: fp16-scaler for the ImageNet students "
            "(FFCV), float32 for every other setup; on a CPU every choice trains in float32",
        applies=lambda s: True, apply=_precision, touches="every setup (on CUDA)"),
    Reading(
        id="variation-of-information", title="Variation of information",
        paper="Appendix A: VoI \"over discrete labellings\" (Meila, 2003), no formula",
        choices={"labels": "VI of the two models' predicted labels, 2H(T,M) - H(T) - H(M) in nats"},
        evidence={"labels": "Meila's definition over labellings. Recorded against it: Table 31's RCD VoI is "
                            "0.638 +/- 0.000 at every alpha while prediction disagreement moves, which a label-based "
                            "VI cannot do; no definition found reproduces it"},
        default="labels", why="the only definition the text supports", applies=lambda s: True, apply=_unchanged,
        touches="every setup (a metric)"),
    Reading(
        id="vgg19-batchnorm", title="VGG19 with or without BatchNorm",
        paper='Table 1 lists "VGG19BN / VGG19"; Appendices D.1 and D.2 say "VGG19"',
        choices={"svhn-bn": "VGG19-BN on SVHN, plain VGG19 on TinyImageNet", "all-bn": "VGG19-BN everywhere",
                 "no-bn": "plain VGG19 everywhere"},
        evidence={"svhn-bn": "SVHN's recipe (Adam, lr 1e-3, no schedule) is where BatchNorm is the usual choice; "
                             "TinyImageNet's (SGD, momentum 0.9) is VGG19's original",
                  "all-bn": "Table 1 names VGG19BN", "no-bn": "both appendices say VGG19"},
        default="svhn-bn", why="one architecture per table line of Table 1; kept as before",
        applies=_uses("vgg19"), apply=_vgg, touches="the VGG19 setups"),
    Reading(
        id="vgg19-head", title="VGG19's classifier",
        paper='Table 1 and D.1-D.2 name "VGG19BN, VGG19 (Simonyan and Zisserman, 2014)"; no head or size',
        choices={"torchvision": "torchvision's VGG19: an adaptive 7x7 average pool and the 25088-4096-4096 "
                                "classifier with dropout 0.5 (140.4M parameters at 200 classes, 143.7M at 1000)",
                 "compact": "a 512-512 classifier on the 512 pooled features, for small images (21.4M "
                            "parameters at 64 px and 200 classes, 20.6M at 32 px and 10)"},
        evidence={"torchvision": "Simonyan and Zisserman's network, which the paper cites, has the 4096-4096 head; "
                                 "every other vision model of the paper is torchvision's as it comes (ResNet18/50, "
                                 "the ViT's encoder), and torchvision.models.vgg19(num_classes=K) is what \"VGG19\" "
                                 "builds in PyTorch; it accepts 32 and 64 px images as they are (the adaptive pool)",
                  "compact": "CIFAR-style VGG code often shrinks the head for 32 px images; the paper says nothing "
                             "of it"},
        default="torchvision", why="the architecture the paper names and cites, as PyTorch builds it; the compact "
                                   "head is kdlib's own earlier choice, kept runnable",
        applies=_uses("vgg19"), apply=_vgg_head, touches="the VGG19 setups"),
    Reading(
        id="student-init", title="The initialisation of a smaller student",
        paper='Sec. 1 and 3: SIDDO is "the same initialisation seed ... as the teacher"; 4.2.2 and F: "The student '
              'models share seeds and data orders from seeds 10 to 19"',
        choices={"teacher-seed": "every student of a teacher starts from one initialisation drawn from the teacher "
                                 "seed (KD, SIDDO and RCD of every student seed alike)",
                 "student-seed": "one initialisation per student seed (10-19), shared by that seed's KD, SIDDO "
                                 "and RCD students, as Section 3.3's pairing needs"},
        evidence={"teacher-seed": "Sections 1 and 3 define SIDDO by the teacher's initialisation seed and a different "
                                  "data order, and say so for students of another architecture (\"using the same "
                                  "architecture in the self-distillation case\"); the vision and audio appendices "
                                  "(D.2, E) say the same of self-distilled students (\"trained with the same seeds and "
                                  "data orders from seeds 10-19\"), who all start from the teacher's M0, so there the "
                                  "seeds name data orders",
                  "student-seed": "\"share seeds and data orders from seeds 10 to 19\" read as both the "
                                  "initialisation and the data order; it changes the seed-to-seed spread, so the "
                                  "SEMs and the Wilcoxon tests"},
        default="teacher-seed", why="the protocol's own definition of SIDDO names the teacher's seed; kept as before, "
                                    "both runnable",
        applies=lambda s: not s.self_distillation or s.feature_layer is not None, apply=_student_init,
        touches="setups with a smaller student (Pico-GPT, the ImageNet ResNet18, temperature, width, feature maps)"),
    Reading(
        id="vit-size", title="The SVHN ViT's size",
        paper='Table 1: "Vision Transformer (ViT) (Dosovitskiy et al., 2021)"; no size, patch or parameter count',
        choices={"cifar": "width 512, 6 layers, 8 heads, MLP 512, 4 x 4 patches (image_size/8), dropout 0.1: the "
                          "common from-scratch ViT for 32 px images (9.5M parameters)"},
        evidence={"cifar": "Table 68's teachers (test accuracy 0.855-0.861, train accuracy 0.994, test loss 0.69-0.77) "
                           "sit ten points below ResNet18 and VGG19 on the same recipe, as a from-scratch ViT without "
                           "augmentation does; ViT-B/16 on 32 px images would see 4 tokens; its compute (about 0.4 "
                           "A100-hours in float32) fits Appendix G's 0.5 hours per model. Nothing the paper prints "
                           "names another size"},
        default="cifar", why="the one size the evidence fits and nothing contradicts; registered so that it is "
                             "stated, not hidden in a docstring",
        applies=_uses("vit"), apply=_unchanged, touches="the ViT setup"),
    Reading(
        id="ast-size", title="The AST's size",
        paper='Table 1: "AST (Gong et al., 2021) (Audio Spectrogram Transformer)"; no size',
        choices={"base": "AST-Base: 768 dims, 12 layers, 12 heads (Gong et al.'s model), 8 x 8 patches at stride 4 "
                         "on 32 mels (85.2M parameters)",
                 "tiny": "DeiT-Tiny's width: 192 dims, 12 layers, 3 heads, the same patches (5.4M parameters)"},
        evidence={"base": "the model the paper cites is AST-Base; Tables 76 and 84's teachers (test accuracy "
                          "0.83-0.85 on SpeechCommands, 0.77-0.78 on UrbanSound8K) fit a from-scratch transformer "
                          "on 32 mels of either size",
                  "tiny": "compute: AST-Base trained from scratch for 100 epochs of SpeechCommands takes at least 6 "
                          "A100-hours per model in float32 (0.4 in bf16), 213 models per dataset would use about "
                          "the paper's whole budget, while Appendix G assumes 0.5 hours per model (an assumption, "
                          "not a measurement)"},
        default="base", why="the cited model; the compute argument is weak (Appendix G's hours are model counts "
                            "times 0.5), recorded and runnable",
        applies=_paper_ast, apply=_ast_size, touches="the AST setups (paper profile)"),
    Reading(
        id="small-image-resnet-stem", title="ResNet stem on small images",
        paper="Table 1 names ResNet18 / ResNet50 for 32 px (SVHN) and 64 px (TinyImageNet) images; no stem",
        choices={"cifar": "conv1 3x3 stride 1 and no max-pool (the usual CIFAR/SVHN ResNet)",
                 "imagenet": "torchvision's 7x7 stride-2 conv1 and max-pool"},
        evidence={"cifar": "a 32 px image reaches layer4 at 4x4 (1x1 with torchvision's stem)",
                  "imagenet": "torchvision's models as they come"},
        default="cifar", why="the standard for images this small; kept as before",
        applies=_small_resnet, apply=_stem, touches="ResNets on images of at most 64 px"),
    Reading(
        id="teacher-train-metrics", title="The teachers' train loss and accuracy under augmentation",
        paper='D.1.4, Table 56: "For the VGG19 on the TinyImageNet with RandAugment, we observe a high train loss of '
              'circa 0.27 and a train accuracy of circa 0.93"; how train metrics were measured is not stated',
        choices={"clean": "after training, the teacher evaluated on the un-augmented training split (eval mode)",
                 "augmented": "what the training loop saw: the mean loss and accuracy over the teacher's last epoch "
                              "of augmented training batches (train mode)"},
        evidence={"clean": "the same measurement as every other setup's teacher, so the train-loss regimes the paper "
                           "compares across setups stay comparable; every train accuracy the paper prints is an exact "
                           "count over the whole split (Table 56: 0.933990 = 93,399/100,000), which a clean pass gives",
                  "augmented": "4.1.1: \"we increase the teacher train loss via data augmentation\"; Table 5's "
                               "ResNet50 RandAugment teachers reach train accuracy 0.84 where the same network without "
                               "it reaches 0.9998 in as many epochs, a gap that fits accuracy on augmented inputs; a "
                               "loop's totals over its last epoch are whole-split counts too (no dropped batch)"},
        default="clean", why="one measurement for every teacher; the loop's numbers are stored beside (new teacher "
                             "runs) and shown under this reading without training again",
        applies=lambda s: bool(s.dataset_kwargs.get("randaugment")), apply=_analysis("teacher_train_metrics"),
        touches="the RandAugment setups (the teachers' table)", analysis=True),
    Reading(
        id="fdr-family", title="The FDR family of the verdict's tests",
        paper='Section 3.3: "To control the expected false discovery rate across the functional similarity metrics '
              'within each setting, we apply Benjamini-Hochberg ... for each alpha ... and teacher seed"',
        choices={"setting": "one BH family per (teacher seed, alpha): every functional metric against every control "
                            "(4 x 2 = 8 p-values)",
                 "per-control": "one BH family per control: the 4 functional metrics against it"},
        evidence={"setting": "\"within each setting ... for each alpha and teacher seed\": the setting is the family",
                  "per-control": "\"across the functional similarity metrics\": the metrics are the family, each "
                                 "control comparison its own (with SIDDO p-values 0.0186, 0.0244, 0.042, 0.097 "
                                 "and RCD's all 1/1024, 8 give 3 ticks, 4 per control 2)"},
        default="setting", why="the sentence's \"within each setting\" names the unit; kept as before, both "
                               "runnable, re-analysed without training",
        applies=lambda s: True, apply=_analysis("fdr_family"), touches="every setup (the analysis)", analysis=True),
    Reading(
        id="majority", title="The majority of metrics a supported verdict needs",
        paper='Section 3.3: "the effect is in the expected direction for a majority of the functional similarity '
              'metrics under both control comparisons"',
        choices={"strict": "more than half: at least 3 of the 4 functional metrics ticked",
                 "half": "at least half: 2 of 4 ticked"},
        evidence={"strict": "\"majority\" in its ordinary sense",
                  "half": "the paper calls ViT seed 1 at alpha 0.5 supported with 2 ticks (Table 72) and VGG19/SVHN "
                          "seed 2 \"marginal statistically supported\" with rank disagreement alone (Table 67)"},
        default="strict", why="the word's meaning; the paper's own calls that need less are listed as evidence",
        applies=lambda s: True, apply=_analysis("majority"), touches="every setup (the analysis)", analysis=True),
    Reading(
        id="marginal-threshold", title="Where a supported transfer becomes marginal",
        paper='Section 3.3: "marginal statistically supported transfer ... the raw transfer metrics remain close to '
              'control"; no number',
        choices={"0.01": "a mean functional improvement over the better control below 0.01",
                 "0.005": "below 0.005, the smallest threshold above every gain the paper calls marginal",
                 "0.03": "below 0.03, the smallest gain the paper calls substantial"},
        evidence={"0.01": "between the gains the paper calls marginal (0.002-0.004) and substantial (0.03-0.06)",
                  "0.005": "the paper's marginal examples (0.002-0.004) stay marginal",
                  "0.03": "the paper's substantial examples (0.03-0.06) stay supported"},
        default="0.01", why="the middle of the range the paper's own words leave open",
        applies=lambda s: True, apply=_analysis("marginal_threshold", float), touches="every setup (the analysis)",
        analysis=True),
    Reading(
        id="best-control", title="The best control of the agreement deltas (Eqs. 2-3)",
        paper="Section 3.3: the delta against \"the highest performing control baseline\"; Figure 6 (lower panel) "
              "drops RCD 0.9 \"due to its reduced accuracy\"",
        choices={"per-quantity": "per quantity (correct, incorrect agreement), the control with the highest mean "
                                 "among SIDDO and every RCD alpha of the teacher seed",
                 "same-alpha": "the same, among SIDDO and RCD at KD's alpha only",
                 "exclude-collapsed": "the same, less every control whose mean accuracy is below half SIDDO's "
                                      "(Figure 6's rule made precise)"},
        evidence={"per-quantity": "\"highest performing control baseline\", over every control trained",
                  "same-alpha": "the tests pair KD(alpha) with RCD(alpha)",
                  "exclude-collapsed": "Figure 6 removes a control whose accuracy collapsed, as it biases the "
                                       "deltas towards underestimating the asymmetry"},
        default="per-quantity", why="Figure 6's upper panel and the paper's other figures use every baseline",
        applies=lambda s: True, apply=_analysis("best_control"), touches="every setup (the analysis)", analysis=True),
]}

#: Departures that remain, each forced (plain PyTorch cannot do what the paper did).
FORCED = {
    "ImageNet JPEG decoding": "FFCV's .beton files re-encode every training image as a 90%-quality JPEG and its "
                              "loader draws a quasi-random order; both are FFCV's own library, so torchvision "
                              "decodes the original JPEGs and draws a seeded permutation per epoch",
    "pretrained teacher": "torchvision's ResNet50 IMAGENET1K_V2 weights are the paper's teacher (top-1 80.858); "
                          "they are downloaded from PyTorch's hub, not trained",
}


class UnknownReading(ValueError):
    """A reading id or choice that is not registered, or a reading the setup does not use."""


def parse(pairs) -> dict[str, str]:
    """``["ID=CHOICE", ...]`` (or a dict) as ``{id: choice}``, checked against the register."""
    if isinstance(pairs, dict):
        chosen = dict(pairs)
    else:
        chosen = {}
        for pair in pairs or ():
            key, sep, value = str(pair).partition("=")
            if not sep:
                raise UnknownReading(f"reading {pair!r} is not ID=CHOICE: readings are {sorted(READINGS)}")
            chosen[key.strip()] = value.strip()
    for key, value in chosen.items():
        if key not in READINGS:
            raise UnknownReading(f"unknown reading {key!r}: allowed are {sorted(READINGS)}")
        if value not in READINGS[key].choices:
            raise UnknownReading(f"reading {key}={value!r} is not allowed: choose one of "
                                 f"{list(READINGS[key].choices)}")
    return chosen


def used_by(setup: Setup) -> list[str]:
    """The ids of the readings that touch ``setup`` (before any is applied)."""
    return [r.id for r in READINGS.values() if r.applies(setup)]


def apply(setup: Setup, chosen: dict[str, str] | None = None) -> Setup:
    """``setup`` under the default readings, except those ``chosen`` names; its ``readings`` records all of them.
    A chosen reading the setup does not use is an error (it would change nothing)."""
    chosen = parse(chosen or {})
    used = used_by(setup)
    unused = sorted(set(chosen) - set(used))
    if unused:
        raise UnknownReading(f"setup {setup.name!r} uses no reading {unused}: it uses {used}")
    defaults = {r: READINGS[r].default_of(setup) for r in used}
    choices = {r: chosen.get(r, defaults[r]) for r in used}
    for r, choice in choices.items():
        setup = READINGS[r].apply(setup, choice)
    tag = "".join(f"+{r}={c}" for r, c in sorted(choices.items()) if c != defaults[r])
    return replace(setup, readings=tuple(sorted(choices.items())), tag=tag)


def split_label(label: str) -> tuple[str, dict[str, str]]:
    """A setup's label (``name+id=choice+...``, :attr:`Setup.label`) as (name, chosen readings)."""
    name, *off = label.split("+")
    return name, parse(off)


def markdown_table() -> str:
    """The README's table of readings, one row per reading."""
    rows = ["| id | setups | the paper | readings (default first) | evidence |", "|---|---|---|---|---|"]
    for r in READINGS.values():
        order = [r.default, *(c for c in r.choices if c != r.default)]
        mark = " (default by setup, see why)" if r.default_for else " (default)"
        readings = "; ".join(f"**{c}**{mark if c == r.default else ''}: {r.choices[c]}" for c in order)
        evidence = "; ".join(f"{c}: {r.evidence[c]}" for c in order)
        rows.append(f"| `{r.id}` | {r.touches} | {r.paper} | {readings} | {evidence}. Default: {r.why} |")
    return "\n".join(rows)
