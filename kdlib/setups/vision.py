"""Vision setups: SVHN, TinyImageNet and ImageNet from the paper, CIFAR-10 subset and digits built in (offline).

Paper recipes (teacher seeds 0-2, student seeds 10-19, alphas 0.1/0.5/0.9, T = 1; steps = epochs x
ceil(N / batch)):

- SVHN (Appendix D.2): ResNet18, VGG19, ViT; Adam lr 1e-3, batch 256, 100 epochs; mean = std = 0.5.
- TinyImageNet (4.1.1, 4.2.1, B, C.1, D.1): ResNet50 (self-distillation, also with RandAugment and with
  label-smoothing students, Table 33), VGG19 (with momentum 0.9; also with RandAugment) and ResNet50 ->
  ResNet18; SGD lr 0.01, cosine annealing over the run (T_max = 100 epochs), 100 epochs, batch 256.
  The paper states momentum only for VGG19, so the ResNets use plain SGD; no weight decay is stated.
- ImageNet (4.2.1, 4.4.1, C.2): torchvision's pretrained ResNet50 (IMAGENET1K_V2, top-1 80.858) is the one
  teacher (teacher_recipe None, teacher seed 0 only); ResNet18 students follow FFCV's rn18 56-epoch config
  ("using the FFCV setup"): SGD momentum 0.9, weight decay 5e-5 except on parameters named "bn" (FFCV's rule,
  which leaves the downsample BatchNorms decayed), batch 1024 with the last partial batch dropped, lr 0.5 on
  FFCV's cyclic schedule (per step, linear from 1e-4 x lr at epoch 0 to lr at epoch 2, then linear to 0 at
  epoch 56; the paper's "step ratio 0.1 / step length 30" are FFCV's unused step-schedule defaults), 56
  epochs, BlurPool where FFCV puts it (strided convs with >= 16 input channels), RandomResizedCrop + flip at
  160 px ramping to 192 px between epochs 41 and 48, test centre crop 256 (FFCV's validation resolution).
  FFCV's label smoothing 0.1 and flip-averaged test logits are a reading (``imagenet-ffcv-extras``, off by
  default; :mod:`kdlib.setups.readings`).

Where the paper admits several readings (VGG19 with or without BatchNorm, the small-image ResNet stem, FFCV's
extras, training precision) they are named readings in :mod:`kdlib.setups.readings`. Departures that remain,
each forced: torchvision's JPEG decoding of the original ImageNet files instead of FFCV's re-encoded
90%-quality files and its quasi-random loader order (both FFCV's own library). The SVHN ViT's size is not given in
the paper (see :mod:`kdlib.models.vision`).

Profiles: ``cpu`` keeps each protocol (conditions, alphas, seeding, optimiser family, schedule) on class-
balanced subsets with narrow networks and few epochs; lr (TinyImageNet: also momentum 0.9) is raised where
few epochs would leave the teacher untrained. Measured on 2 CPU cores (43 models): ``cifar10-resnet18``
7.5 min with the serial launcher, 5.5 min with ``--launcher local --workers 2`` (teacher train loss 1.6,
test accuracy 0.32); ``digits-resnet18`` 1 min. The others need data this machine lacks; from single-thread
throughput their ``cpu`` profiles take about as long as CIFAR's (SVHN), about 20 min (TinyImageNet: the
ResNet50's 64 px bottleneck stages are slow) and 20 min plus the pretrained teacher's download (ImageNet,
2 images per class: a pipeline check more than an experiment). ``smoke`` runs a few steps of tiny networks
on any amount of data (tests use fake copies) in seconds.
"""
from __future__ import annotations


from .base import ALPHAS, Model, Setup, epoch_steps, register
from ..engine.recipe import Recipe

SEEDS = {"paper": dict(teacher_seeds=(0, 1, 2), student_seeds=tuple(range(10, 20))),
         "cpu": dict(teacher_seeds=(0,), student_seeds=tuple(range(10, 16))),
         "smoke": dict(teacher_seeds=(0,), student_seeds=(10, 11))}
TRAIN_SIZE = {"svhn": 73_257, "tinyimagenet": 100_000, "imagenet": 1_281_167, "cifar10_subset": 10_000,
              "digits": 1_437}
SMOKE_RECIPE = dict(batch_size=8, steps=2)


def vision_setup(name: str, profile: str, description: str, paper_ref: str, dataset: str, scale: dict,
                 teacher: str | Model, student: str | None = None, **changes) -> Setup:
    """A setup from a ``scale`` dict of one profile: ``model`` kwargs (plus per-arch extras under the arch's
    name), ``data`` kwargs, ``recipe`` (and ``teacher_recipe`` if it differs) and ``eval_batch_size``."""
    model = lambda arch: arch if isinstance(arch, Model) else Model(arch, {**scale["model"], **scale.get(arch, {})})
    fields = dict(teacher_recipe=scale.get("teacher_recipe", scale["recipe"]), alphas=ALPHAS, **SEEDS[profile])
    return Setup(name=name, modality="vision", description=description, paper_ref=paper_ref, dataset=dataset,
                 dataset_kwargs=scale["data"], teacher=model(teacher),
                 student=None if student is None else model(student), student_recipe=scale["recipe"],
                 eval_batch_size=scale["eval_batch_size"], **{**fields, **changes})


# ----------------------------------------------------------------------------- small images (32x32, 8x8)

def small_image_scale(profile: str, dataset: str, arch: str, image_size: int = 32, in_channels: int = 3) -> dict:
    """SVHN's recipe (Adam lr 1e-3, batch 256, 100 epochs), also used by the built-in CIFAR/digits setups."""
    model = {"image_size": image_size, "in_channels": in_channels}
    if profile == "paper":
        return dict(model=model, data={}, eval_batch_size=1024,
                    recipe=Recipe("adam", lr=1e-3, batch_size=256, steps=epoch_steps(100, TRAIN_SIZE[dataset], 256)))
    if profile == "cpu":  # digits: all 1,437 training images; others: 200 per class
        per_class = None if dataset == "digits" else 200
        n = TRAIN_SIZE[dataset] if per_class is None else 10 * per_class
        narrow = {"resnet18": {"width": 8}, "vgg19_bn": {"width": 8}, "vgg19": {"width": 8},
                  "vit": {"width": 64, "depth": 2, "heads": 4}}[arch]
        data = {} if per_class is None else {"train_per_class": per_class, "test_per_class": 100}
        return dict(model={**model, **narrow}, data=data, eval_batch_size=1000,
                    recipe=Recipe("adam", lr=3e-3, batch_size=64, steps=epoch_steps(3, n, 64)))
    tiny = {"resnet18": {"width": 4}, "vgg19_bn": {"width": 4}, "vgg19": {"width": 4},
            "vit": {"width": 16, "depth": 1, "heads": 2}}[arch]
    return dict(model={**model, **tiny}, data={"train_per_class": 4, "test_per_class": 4}, eval_batch_size=256,
                recipe=Recipe("adam", lr=1e-3, **SMOKE_RECIPE))


def svhn(name: str, arch: str, description: str, paper_ref: str):
    @register(name)
    def make(profile: str) -> Setup:
        return vision_setup(name, profile, description, paper_ref, "svhn", small_image_scale(profile, "svhn", arch),
                            arch)
    return make


svhn("svhn-resnet18", "resnet18", "ResNet18 self-distillation on SVHN", "Tables 2-4, 61-62, Figure 3")
svhn("svhn-vgg19", "vgg19_bn", "VGG19 (BN) self-distillation on SVHN", "Tables 63-67, Figure 20")
svhn("svhn-vit", "vit", "ViT self-distillation on SVHN", "Tables 68-72, Figure 21")


@register("cifar10-resnet18")
def cifar10_resnet18(profile: str) -> Setup:
    return vision_setup("cifar10-resnet18", profile,
                        "ResNet18 self-distillation on the offline CIFAR-10 JPEG subset (SVHN's recipe; built in)",
                        "built-in (no paper table)", "cifar10_subset",
                        small_image_scale(profile, "cifar10_subset", "resnet18"), "resnet18")


@register("digits-resnet18")
def digits_resnet18(profile: str) -> Setup:
    return vision_setup("digits-resnet18", profile,
                        "ResNet18 self-distillation on scikit-learn's 8x8 digits (SVHN's recipe; built in)",
                        "built-in (no paper table)", "digits",
                        small_image_scale(profile, "digits", "resnet18", image_size=8, in_channels=1), "resnet18")


# ----------------------------------------------------------------------------- TinyImageNet

def tinyimagenet_scale(profile: str, momentum: float, randaugment: bool) -> dict:
    """TinyImageNet recipe (D.1, C.1): SGD lr 0.01, cosine annealing stepped per epoch (T_max = 100 epochs),
    100 epochs, batch 256."""
    data = {"randaugment": True} if randaugment else {}
    model = {"image_size": 64}
    if profile == "paper":
        steps = epoch_steps(100, TRAIN_SIZE["tinyimagenet"], 256)
        return dict(model=model, data=data, eval_batch_size=500,
                    recipe=Recipe("sgd", lr=0.01, batch_size=256, steps=steps, momentum=momentum, schedule="cosine",
                                  epoch_length=epoch_steps(1, TRAIN_SIZE["tinyimagenet"], 256)))
    if profile == "cpu":  # the first 10 classes, 50 images each (500), 4 epochs; momentum and lr 0.05 to learn
        return dict(model={**model, "width": 4}, vgg19={"width": 8}, eval_batch_size=500,
                    data={**data, "num_classes": 10, "train_per_class": 50, "test_per_class": 50},
                    recipe=Recipe("sgd", lr=0.05, batch_size=50, momentum=0.9, steps=epoch_steps(4, 500, 50),
                                  schedule="cosine", epoch_length=epoch_steps(1, 500, 50)))
    return dict(model={**model, "width": 4}, data={**data, "train_per_class": 2, "test_per_class": 2},
                eval_batch_size=256, recipe=Recipe("sgd", lr=0.01, momentum=momentum, schedule="cosine",
                                                   **SMOKE_RECIPE))


def tinyimagenet(name: str, teacher: str, description: str, paper_ref: str, student: str | None = None,
                 momentum: float = 0.0, randaugment: bool = False, **changes):
    @register(name)
    def make(profile: str) -> Setup:
        return vision_setup(name, profile, description, paper_ref, "tinyimagenet",
                            tinyimagenet_scale(profile, momentum, randaugment), teacher, student, **changes)
    return make


tinyimagenet("tinyimagenet-resnet50", "resnet50", "ResNet50 self-distillation on TinyImageNet",
             "Tables 5-7, 47-50, Figure 4")
tinyimagenet("tinyimagenet-resnet50-randaug", "resnet50",
             "ResNet50 self-distillation on TinyImageNet with RandAugment (teacher and students)",
             "Tables 5, 8-9, 51-54, Figure 4", randaugment=True)
tinyimagenet("tinyimagenet-vgg19", "vgg19", "VGG19 self-distillation on TinyImageNet (SGD momentum 0.9)",
             "Tables 55-56, D.1.3", momentum=0.9)
tinyimagenet("tinyimagenet-vgg19-randaug", "vgg19",
             "VGG19 self-distillation on TinyImageNet with RandAugment (SGD momentum 0.9)",
             "Tables 57-60, Figure 19", momentum=0.9, randaugment=True)
tinyimagenet("tinyimagenet-resnet50-to-resnet18", "resnet50", "ResNet50 teacher to ResNet18 student on TinyImageNet",
             "Tables 16-17, 34-36, Figure 8", student="resnet18")
tinyimagenet("tinyimagenet-resnet50-label-smoothing", "resnet50",
             "ResNet50 on TinyImageNet: KD and RCD beside label smoothing at epsilon = alpha",
             "Table 33 (Appendix B)", conditions=("siddo", "kd", "rcd", "ls"))


# ----------------------------------------------------------------------------- ImageNet

IMAGENET_TEACHER = Model("resnet50", {"image_size": 224, "weights": "IMAGENET1K_V2"})


def imagenet_scale(profile: str) -> dict:
    """ImageNet student recipe (C.2, FFCV rn18 56 epochs) with torchvision's pretrained ResNet50 teacher."""
    ffcv = dict(momentum=0.9, weight_decay=5e-5, schedule="cyclic", peak=2 / 56, no_decay="bn")
    if profile == "paper":
        steps = epoch_steps(56, TRAIN_SIZE["imagenet"], 1024, drop_last=True)
        return dict(model={"image_size": 192}, resnet18={"blurpool": True}, eval_batch_size=512, teacher_recipe=None,
                    data={"resolution": 160, "final_resolution": 192, "ramp": [41 / 56, 48 / 56],
                          "eval_resolution": 256, "num_workers": 8, "drop_last": True},
                    recipe=Recipe("sgd", lr=0.5, batch_size=1024, steps=steps, **ffcv))
    if profile == "cpu":  # 2 images per class at 112 px, fixed centre crops so the teacher's logits are cached
        return dict(model={"image_size": 112}, resnet18={"blurpool": True, "width": 8}, eval_batch_size=250,
                    teacher_recipe=None,
                    data={"resolution": 112, "eval_resolution": 112, "random_crop": False, "train_per_class": 2,
                          "test_per_class": 1, "num_workers": 2, "drop_last": True},
                    recipe=Recipe("sgd", lr=0.1, batch_size=100, steps=epoch_steps(6, 2000, 100, drop_last=True),
                                  **ffcv))
    # smoke: no pretrained weights offline, so a tiny ResNet50 teacher is trained for a few steps
    return dict(model={"image_size": 96, "width": 4}, resnet18={"blurpool": True}, eval_batch_size=256,
                data={"resolution": 64, "final_resolution": 96, "ramp": [0.25, 0.5], "eval_resolution": 64,
                      "train_per_class": 3, "test_per_class": 2, "drop_last": True},
                recipe=Recipe("sgd", lr=0.1, batch_size=4, steps=4, **ffcv))


def imagenet(name: str, description: str, paper_ref: str, **changes):
    @register(name)
    def make(profile: str) -> Setup:
        if profile == "smoke":
            return vision_setup(name, profile, description, paper_ref, "imagenet", imagenet_scale(profile),
                                "resnet50", "resnet18", **changes)
        return vision_setup(name, profile, description, paper_ref, "imagenet", imagenet_scale(profile),
                            IMAGENET_TEACHER, "resnet18", teacher_seeds=(0,), **changes)
    return make


imagenet("imagenet-resnet50-to-resnet18", "Pretrained ResNet50 teacher to ResNet18 student on ImageNet",
         "Tables 18-19, Figure 9")
imagenet("imagenet-resnet50-to-resnet18-t2", "Pretrained ResNet50 teacher to ResNet18 student on ImageNet, T = 2",
         "Tables 25-26, 37, Figure 13", temperature=2.0)
