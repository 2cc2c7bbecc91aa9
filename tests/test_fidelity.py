"""The paper profile is the paper's experiment: each recipe fixed against an independent computation, and every
ambiguity a named reading that is selectable, changes the run id, changes what it should and nothing else."""
import math
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vision_fakes import write_fake_imagenet

from kdlib import setups
from kdlib.data import load
from kdlib.engine.losses import kd_loss
from kdlib.metrics import Comparison
from kdlib.models import build
from kdlib.models.gpt import GPT, GPTConfig
from kdlib.runs.spec import plan
from kdlib.setups.readings import READINGS, UnknownReading, markdown_table, split_label
from kdlib.engine.objectives import Objective, objective_loss
from kdlib.engine.evaluate import evaluate, predict, score
from kdlib.engine.train import init_model

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- section 1: departures removed

def ffcv_lr(iteration: int, iters: int, lr: float = 0.5, epochs: int = 56, peak: int = 2) -> float:
    """FFCV's train_imagenet.py: get_cyclic_lr per epoch, np.interp over each epoch's iterations."""
    cyclic = lambda e: np.interp([e], [0, peak, epochs], [1e-4 * lr, lr, 0])[0]
    epoch, ix = divmod(iteration, iters)
    return float(np.interp(ix, [0, iters], [cyclic(epoch), cyclic(epoch + 1)]))


def test_imagenet_students_follow_ffcvs_cyclic_schedule():
    recipe = setups.get("imagenet-resnet50-to-resnet18", "paper").student_recipe
    iters = recipe.steps // 56
    assert iters == 1_281_167 // 1024  # the last partial batch dropped
    opt, sched = recipe.build(torch.nn.Linear(2, 2).named_parameters())
    lrs = []
    for _ in range(recipe.steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for epoch in (0, 2, 29, 55):
        for ix in (0, iters // 3):
            assert lrs[epoch * iters + ix] == pytest.approx(ffcv_lr(epoch * iters + ix, iters), rel=1e-9, abs=1e-12)
    assert lrs[0] == pytest.approx(5e-5) and max(lrs) == pytest.approx(0.5) and lrs[-1] > 0


def test_ffcv_weight_decay_spares_parameters_named_bn():
    model = build("resnet18", 1000, image_size=192, blurpool=True)
    opt, _ = setups.get("imagenet-resnet50-to-resnet18", "paper").student_recipe.build(model.named_parameters())
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 5e-5 for p in g["params"]}
    names = {n: id(p) in decayed for n, p in model.named_parameters()}
    assert not any(v for n, v in names.items() if "bn" in n)
    assert names["layer2.0.downsample.1.weight"] and names["fc.bias"]  # FFCV's substring rule, quirk included
    assert names["conv1.weight"] and names["layer2.0.conv1.conv.weight"]


def test_blurpool_sits_where_ffcv_puts_it():
    model = build("resnet18", 1000, image_size=192, blurpool=True)
    blurred = sorted(n for n, m in model.named_modules() if type(m).__name__ == "BlurPoolConv2d")
    assert blurred == ["layer2.0.conv1", "layer2.0.downsample.0", "layer3.0.conv1", "layer3.0.downsample.0",
                       "layer4.0.conv1", "layer4.0.downsample.0"]  # strided, >= 16 input channels; not the stem


def test_imagenet_training_drops_the_last_partial_batch(tmp_path):
    write_fake_imagenet(tmp_path, n_train=3)  # 9 images
    task = load("imagenet", tmp_path, resolution=32, eval_resolution=32, random_crop=False, drop_last=True)
    batches = list(task.train.batches(4, 4, torch.Generator().manual_seed(0)))
    assert [len(y) for _, _, y in batches] == [4, 4, 4, 4]  # 2 full batches per epoch, the ninth image dropped
    kept = torch.cat([idx for idx, _, _ in batches[:2]])
    assert len(set(kept.tolist())) == 8
    assert len(list(task.test.eval_batches(4))) == 2  # evaluation keeps every image


def test_tinyimagenet_cosine_moves_once_per_epoch():
    recipe = setups.get("tinyimagenet-resnet50", "paper").student_recipe
    per_epoch = math.ceil(100_000 / 256)
    assert recipe.factor(per_epoch - 1) == 1.0  # torch's CosineAnnealingLR(T_max=100) stepped after each epoch
    assert recipe.factor(per_epoch) == pytest.approx(0.5 * (1 + math.cos(math.pi / 100)))
    assert recipe.factor(50 * per_epoch + 7) == pytest.approx(0.5)


def _bf16_everywhere():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_metrics_teacher_logits_and_probes_come_from_float32_forwards_under_bf16_autocast():
    """Under the bf16 autocast a CUDA training step runs in (emulated on the CPU), evaluation turns it off: every
    logit handed to the metrics is float32 and equals a plain float32 forward, bit for bit. A live teacher's logits
    are training targets: they compute in the step's bf16 like the student's (issue "GPU engine 3";
    tests/test_live_teacher.py shows their rounding moves the student's gradient less than its own)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0, style="lecture"))
    x = torch.randint(11, (6, 8))
    batches = [(x[:3], x[:3]), (x[3:], x[3:])]
    plain = predict(model, batches)
    dtypes, handed = [], []
    model.lm_head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    real_update = Comparison.update
    with _bf16_everywhere():
        assert model(x).dtype == torch.bfloat16  # the emulation really is bf16
        dtypes.clear()
        logits = predict(model, batches)
        _, _ = score(model, batches)
        Comparison.update = lambda self, t, m, y: handed.append(m) or real_update(self, t, m, y)
        try:
            evaluate(model, batches, plain)
        finally:
            Comparison.update = real_update
        teacher_out = []
        handle = model.register_forward_hook(lambda m, i, o: teacher_out.append(o.dtype))
        objective_loss(Objective("kd", alpha=0.5), model(x), x, x, None, model, None)  # a live teacher
        handle.remove()
    assert set(dtypes[:6]) == {torch.float32}
    assert logits.dtype == torch.float32 and torch.equal(logits, plain)
    assert all(m.dtype == torch.float32 for m in handed) and torch.equal(torch.cat(handed), plain)
    assert teacher_out == [torch.bfloat16, torch.bfloat16]  # the student's step and its live teacher's, in bf16


def test_teacher_train_metrics_cover_the_whole_training_split(smoke_store, data_dir):
    from kdlib.runs.run import load_model, load_task
    from kdlib.store import read_result
    spec = plan(setups.get("tinyshakespeare-nanogpt", "smoke"))[0]
    result, task = read_result(smoke_store, spec), load_task(spec, data_dir)
    tokens, L = task.train.tokens, task.train.block_size
    n = (len(tokens) - 1) // L  # every non-overlapping window of the training split
    model = load_model(smoke_store, spec, data_dir)
    with torch.no_grad():
        logits = model(tokens[:n * L].view(n, L))
    correct = int((logits.argmax(-1) == tokens[1:n * L + 1].view(n, L)).sum())
    assert n * L > 5 * len(task.test.tokens)  # far more than the test split's size (the subset it replaced)
    assert result["train_accuracy"] * n * L == pytest.approx(correct, abs=1e-6)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[1:n * L + 1])
    assert result["train_loss"] == pytest.approx(float(loss), rel=1e-5)


def test_width_grid_is_table_95s_300_models_and_the_three_alpha_grid_an_extension():
    grid = setups.get("tinyshakespeare-width-scaling", "paper")
    students = [s for s in plan(grid) if s.role == "student"]
    assert len(students) == 300 and grid.alphas == (0.9,)  # 10 widths x (SIDDO, KD 0.9, RCD 0.9) x 10 seeds
    assert {s.variant for s in students} == {f"{p}%" for p in range(10, 101, 10)}
    extension = setups.get("tinyshakespeare-width-scaling-three-alphas", "paper")
    assert sum(s.role == "student" for s in plan(extension)) == 700


# ----------------------------------------------------------------------------- section 2: readings

def _spec_fields(setup):
    return [{k: v for k, v in asdict(s).items() if k != "tags"} for s in plan(setup)]


#: per reading and non-default choice: (a setup it touches, the spec fields it may change)
CHANGES = {
    ("adversarial-replacement", "substring"): ("tinyshakespeare-adversarial", {"train_dataset_kwargs", "teacher_id"}),
    ("gpt-architecture", "nanogpt"): ("tinyshakespeare-nanogpt", {"arch_kwargs", "teacher_id"}),
    ("gpt-optimizer", "adam"): ("tinyshakespeare-nanogpt", {"recipe", "teacher_id"}),
    ("kd-temperature-squared", "without"): ("tinyshakespeare-nanogpt-to-picogpt-t2", {"kd_t_squared"}),
    ("imagenet-ffcv-extras", "ffcv"): ("imagenet-resnet50-to-resnet18", {"label_smoothing", "eval_flip",
                                                                         "teacher_id"}),
    ("audio-front-end", "power-mel"): ("fsdd-vggish", {"dataset_kwargs", "teacher_id"}),
    ("training-precision", "bf16"): ("cifar10-resnet18", {"precision", "teacher_id"}),
    ("training-precision", "fp16-scaler"): ("cifar10-resnet18", {"precision", "teacher_id"}),
    ("vgg19-head", "compact"): ("svhn-vgg19", {"arch_kwargs", "teacher_id"}),
    ("ast-size", "tiny"): ("speechcommands-ast", {"arch_kwargs", "teacher_id"}),
    ("student-init", "student-seed"): ("tinyshakespeare-nanogpt-to-picogpt", {"init"}),
    ("featuremap-student", "nano"): ("tinyshakespeare-nanogpt-featuremap-block4", {"arch_kwargs", "init"}),
    ("featuremap-blocks", "one-based"): ("tinyshakespeare-nanogpt-featuremap-block4", {"feature_layer"}),
    ("featuremap-rcd-target", "teacher-init"): ("tinyshakespeare-nanogpt-featuremap-block4", {"feature_rcd_target"}),
    ("vgg19-batchnorm", "no-bn"): ("svhn-vgg19", {"arch", "teacher_id"}),
    ("vgg19-batchnorm", "all-bn"): ("tinyimagenet-vgg19", {"arch", "teacher_id"}),
    ("small-image-resnet-stem", "imagenet"): ("svhn-resnet18", {"arch_kwargs", "teacher_id"}),
}


#: analysis readings: they re-analyse collected runs and change no run spec (tests/test_evidence.py: what they do)
ANALYSIS = {("fdr-family", "per-control"), ("majority", "half"), ("marginal-threshold", "0.005"),
            ("marginal-threshold", "0.03"), ("best-control", "same-alpha"), ("best-control", "exclude-collapsed"),
            ("teacher-train-metrics", "augmented")}


def _alternatives(r) -> set:
    """A reading's choices off its default; a default by setup family, off the default of the setup CHANGES names."""
    name = next((n for (i, _), (n, _) in CHANGES.items() if i == r.id), None)
    default = r.default_of(setups.get(name, "paper")) if r.default_for and name else r.default
    return {(r.id, c) for c in r.choices if c != default}


def test_every_alternative_reading_is_listed_here():
    alternatives = set().union(*(_alternatives(r) for r in READINGS.values()))
    assert alternatives == set(CHANGES) | ANALYSIS
    assert {a for r in READINGS.values() if r.analysis for a in _alternatives(r)} == ANALYSIS
    for r in READINGS.values():
        assert r.default in r.choices and set(r.evidence) == set(r.choices), r.id


def test_defaults_that_differ_by_setup_family_follow_their_evidence():
    precision = lambda name, profile="paper": dict(setups.get(name, profile).readings)["training-precision"]
    assert precision("imagenet-resnet50-to-resnet18") == "fp16-scaler"  # FFCV's setup
    assert setups.get("imagenet-resnet50-to-resnet18", "paper").precision == "fp16-scaler"
    assert {precision(n) for n in ("tinyshakespeare-nanogpt", "svhn-vit", "tinyimagenet-resnet50", "fsdd-vggish")} \
        == {"float32"}
    assert setups.get("svhn-vit", "paper").precision is None  # float32 is a spec's None: earlier CPU runs keep ids
    teacher = plan(setups.get("imagenet-resnet50-to-resnet18", "paper"))[0]
    assert teacher.precision is None  # the pretrained teacher trains nothing: its logits stay float32


@pytest.mark.parametrize("reading, choice", sorted(CHANGES))
def test_a_reading_changes_the_run_ids_and_only_the_fields_it_should(reading, choice):
    name, allowed = CHANGES[(reading, choice)]
    default, chosen = setups.get(name, "paper"), setups.get(name, "paper", [f"{reading}={choice}"])
    assert chosen.label == f"{name}+{reading}={choice}" and dict(chosen.readings)[reading] == choice
    assert setups.get(chosen.label, "paper") == chosen  # a label names its readings
    changed, ids = set(), []
    for a, b, sa, sb in zip(_spec_fields(default), _spec_fields(chosen), plan(default), plan(chosen)):
        changed |= {k for k in a if a[k] != b[k]}
        ids.append(sa.run_id != sb.run_id)
    assert changed and changed <= allowed, changed
    assert any(ids)
    if reading == "kd-temperature-squared":  # the controls without a distillation term keep their runs
        assert [s.condition for s, moved in zip(plan(default), ids) if moved] == \
               [s.condition for s in plan(default) if s.condition in ("kd", "rcd")]


@pytest.mark.parametrize("reading, choice", sorted(ANALYSIS))
def test_an_analysis_reading_changes_no_run_spec(reading, choice):
    name = "tinyimagenet-resnet50-randaug" if reading == "teacher-train-metrics" else "fsdd-vggish"
    default = setups.get(name, "paper")
    chosen = setups.get(name, "paper", [f"{reading}={choice}"])
    assert chosen.label == f"{name}+{reading}={choice}" and chosen != default
    assert _spec_fields(chosen) == _spec_fields(default)
    assert [s.run_id for s in plan(chosen)] == [s.run_id for s in plan(default)]


def test_default_readings_keep_the_run_ids_of_runs_they_do_not_change():
    # vision and audio runs trained before readings existed keep their ids (and their results)
    golden = (REPO / "tests" / "golden" / "cifar10-resnet18.runs.csv").read_text()
    assert all(s.run_id in golden for s in plan(setups.get("cifar10-resnet18", "smoke")) if s.role == "student")


def test_unknown_readings_and_readings_a_setup_does_not_use_fail_clearly():
    with pytest.raises(UnknownReading, match=r"unknown reading 'gpt'.*'gpt-architecture'"):
        setups.get("tinyshakespeare-nanogpt", "smoke", ["gpt=lecture"])
    with pytest.raises(UnknownReading, match=r"gpt-architecture='gpt2' is not allowed.*\['lecture', 'nanogpt'\]"):
        setups.get("tinyshakespeare-nanogpt", "smoke", {"gpt-architecture": "gpt2"})
    with pytest.raises(UnknownReading, match=r"uses no reading \['gpt-architecture'\]"):
        setups.get("cifar10-resnet18", "smoke", ["gpt-architecture=nanogpt"])
    assert split_label("a+gpt-architecture=nanogpt") == ("a", {"gpt-architecture": "nanogpt"})


def test_the_lecture_gpt_is_the_lecture_scripts_model():
    lecture = GPT(GPTConfig(style="lecture"))
    assert sum(p.numel() for p in lecture.parameters()) == 10_788_929  # what the lecture's gpt.py prints
    assert sum(p.numel() for p in GPT(GPTConfig(n_embd=192, style="lecture")).parameters()) == 2_740_289
    assert lecture.blocks[0].attn.c_attn.bias is None and lecture.lm_head.bias is not None
    assert lecture.lm_head.weight is not lecture.wte.weight and lecture.drop.p == 0.0
    assert lecture.blocks[0].mlp.activation is F.relu
    nano = GPT(GPTConfig())
    assert nano.lm_head.weight is nano.wte.weight and nano.drop.p == 0.2 and nano.blocks[0].mlp.activation is F.gelu
    recipe = setups.get("tinyshakespeare-nanogpt", "paper").student_recipe
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay) == ("adamw", 3e-4, 0.01)  # torch's AdamW default
    assert torch.optim.AdamW([torch.zeros(1)]).defaults["weight_decay"] == 0.01


def test_the_word_reading_replaces_whole_words_and_the_substring_reading_every_the(data_dir):
    word = load("tinyshakespeare", data_dir, block_size=8, replace_words=[["the", "tha"]])
    substring = load("tinyshakespeare", data_dir, block_size=8, replace=[["the", "tha"]])
    text = word.extra["text"]
    train = text[:int(0.9 * len(text))]
    assert not re.search(r"(?<![A-Za-z])the(?![A-Za-z])", train) and "there" in train and "The" in train
    assert "the" not in substring.extra["text"]
    clean = load("tinyshakespeare", data_dir, block_size=8).extra["text"]
    clean_train = clean[:int(0.9 * len(clean))]
    assert clean_train.count("the") == 9_506 and len(re.findall(r"(?<![A-Za-z])the(?![A-Za-z])", clean_train)) == 4_951
    assert clean[int(0.9 * len(clean)):].count("tha") == 257  # "tha" occurs naturally: "that", "than"


def test_kd_without_t_squared_is_eq_1_as_printed():
    s, t, y = torch.randn(5, 7), torch.randn(5, 7), torch.randint(7, (5,))
    T, alpha = 4.0, 0.5
    kl = (F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) - F.log_softmax(s / T, -1))).sum(-1).mean()
    ce = F.cross_entropy(s, y)
    assert kd_loss(s, t, y, alpha, T, t_squared=False) == pytest.approx(float((1 - alpha) * ce + alpha * kl), rel=1e-5)
    assert kd_loss(s, t, y, alpha, T) == pytest.approx(float((1 - alpha) * ce + alpha * T ** 2 * kl), rel=1e-5)


def test_ffcv_reading_smooths_labels_and_averages_flipped_logits():
    s, t, y = torch.randn(5, 7), torch.randn(5, 7), torch.randint(7, (5,))
    smoothed = ((1 - 0.1) * F.cross_entropy(s, y) - 0.1 * F.log_softmax(s, -1).mean(-1).mean())
    assert kd_loss(s, t, y, 0.0, label_smoothing=0.1) == pytest.approx(float(smoothed), rel=1e-5)
    chosen = setups.get("imagenet-resnet50-to-resnet18", "smoke", ["imagenet-ffcv-extras=ffcv"])
    student = next(s for s in plan(chosen) if s.condition == "siddo")
    assert student.objective.label_smoothing == 0.1 and student.eval_flip and plan(chosen)[0].eval_flip
    model = init_model(lambda: build("resnet18", 4, image_size=32, width=4), 0).eval()
    x = torch.randn(3, 3, 32, 32)
    flipped = predict(model, [(x, None)], flip=True)
    with torch.no_grad():
        assert torch.allclose(flipped, model(x) + model(x.flip(-1)), atol=1e-6)  # FFCV sums them


def test_power_mel_reading_is_the_mel_spectrogram_without_log_or_standardisation(data_dir, tmp_path):
    from torchaudio.transforms import MelScale, Spectrogram
    power = load("fsdd", data_dir, front_end="power-mel", normalize=False, cache_dir=tmp_path)
    logmel = load("fsdd", data_dir, normalize=False, cache_dir=tmp_path)
    assert power.train.x.min() >= 0 and power.extra["front_end"] == "power-mel"
    torch.testing.assert_close(power.test.x, (logmel.test.x.exp() - 1e-6).clamp_min(0))
    wave = torch.randn(1, 16000)  # the same transforms torchaudio gives directly
    direct = MelScale(n_mels=32, sample_rate=16000, n_stft=257)(Spectrogram(n_fft=512, power=2.0)(wave))
    from kdlib.data.audio import log_mel
    torch.testing.assert_close((log_mel(wave)[:, 0].exp() - 1e-6), direct, rtol=1e-4, atol=1e-5 * float(direct.max()))
    setup = setups.get("fsdd-vggish", "smoke", ["audio-front-end=power-mel"])
    assert setup.dataset_kwargs["front_end"] == "power-mel" and setup.dataset_kwargs["normalize"] is False


def test_precision_and_stem_readings_do_what_they_say():
    from kdlib.engine import device as dev
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available"
        assert not isinstance(dev.autocast("cuda"), torch.autocast)  # None: float32, PyTorch's default
        assert not isinstance(dev.autocast("cuda", "float32"), torch.autocast)
        assert dev.autocast("cuda", "bf16").fast_dtype == torch.bfloat16
    chosen = setups.get("svhn-resnet18", "smoke", ["small-image-resnet-stem=imagenet"])
    model = build(chosen.teacher.arch, 10, **chosen.teacher.kwargs)
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, torch.nn.MaxPool2d)
    assert build("resnet18", 10, image_size=32).conv1.kernel_size == (3, 3)


def test_the_readme_table_is_the_register():
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README's readings table from kdlib.setups.readings"


# ----------------------------------------------------------------------------- the second pass (readings)

def test_the_gpt_optimizer_is_its_own_reading():
    printed = setups.get("tinyshakespeare-nanogpt", "paper", ["gpt-optimizer=adam"]).student_recipe
    assert (printed.optimizer, printed.lr, printed.weight_decay) == ("adam", 3e-4, 0.0)  # the paper's "Adam"
    lecture_model = setups.get("tinyshakespeare-nanogpt", "paper", ["gpt-optimizer=adam"]).teacher.kwargs
    assert lecture_model["style"] == "lecture"  # the lecture's model with the printed optimiser
    nano = setups.get("tinyshakespeare-nanogpt", "paper", ["gpt-architecture=nanogpt"])
    assert "style" not in nano.teacher.kwargs and nano.student_recipe.optimizer == "adamw"


def test_feature_map_readings_pick_the_student_the_blocks_and_rcds_target():
    pico = setups.get("tinyshakespeare-nanogpt-featuremap-block4", "paper")
    assert pico.student.kwargs["n_embd"] == 192 and pico.teacher.kwargs["n_embd"] == 384
    picogpt = setups.get("tinyshakespeare-nanogpt-to-picogpt", "paper")
    siddo = lambda s: [x for x in plan(s) if x.condition == "siddo"]
    assert [x.run_id for x in siddo(pico)] == [x.run_id for x in siddo(picogpt)]  # Table 22's SIDDO is Table 20's
    kd = [x for x in plan(pico) if x.condition in ("kd", "rcd")]
    assert {x.feature_layer for x in kd} == {"blocks.4"} and {x.init for x in kd} == {"seed"}
    nano = setups.get("tinyshakespeare-nanogpt-featuremap-block4", "paper", ["featuremap-student=nano"])
    assert nano.self_distillation and {x.init for x in plan(nano) if x.role == "student"} == {"teacher"}
    one = lambda b: setups.get(f"tinyshakespeare-nanogpt-featuremap-block{b}", "paper",
                               ["featuremap-blocks=one-based"]).feature_layer
    assert (one(4), one(5)) == ("blocks.3", "blocks.4")
    m0 = setups.get("tinyshakespeare-nanogpt-featuremap-block5", "smoke", ["featuremap-rcd-target=teacher-init"])
    targets = {(x.condition, x.feature_rcd_target) for x in plan(m0) if x.role == "student"}
    assert targets == {("siddo", None), ("kd", None), ("rcd", "teacher-init")}


def test_student_seed_init_draws_one_initialisation_per_student_seed_for_smaller_students_only():
    chosen = setups.get("tinyshakespeare-nanogpt-to-picogpt", "smoke", ["student-init=student-seed"])
    assert {x.init for x in plan(chosen) if x.role == "student"} == {"student-seed"}
    both = lambda name: setups.get(name, "paper", ["student-init=student-seed"])  # the feature maps' Pico too
    siddo = lambda s: [x.run_id for x in plan(s) if x.condition == "siddo"]
    assert siddo(both("tinyshakespeare-nanogpt-featuremap-block4")) == siddo(both("tinyshakespeare-nanogpt-to-picogpt"))
    assert siddo(both("tinyshakespeare-nanogpt-to-picogpt")) != siddo(setups.get("tinyshakespeare-nanogpt-to-picogpt",
                                                                                "paper"))
    with pytest.raises(UnknownReading, match="uses no reading"):
        setups.get("tinyshakespeare-nanogpt", "smoke", ["student-init=student-seed"])  # self-distillation: M0


def test_the_torchvision_vgg_head_is_torchvisions(tmp_path):
    import torchvision
    for arch, ours in (("vgg19", "svhn-vgg19+vgg19-batchnorm=no-bn"), ("vgg19_bn", "svhn-vgg19")):
        setup = setups.get(ours, "paper")
        assert setup.teacher.arch == arch and setup.teacher.kwargs["head"] == "torchvision"
        model = build(arch, 1000, **{k: v for k, v in setup.teacher.kwargs.items() if k != "image_size"})
        theirs = getattr(torchvision.models, arch)(num_classes=1000)
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in getattr(torchvision.models, "vgg19")(num_classes=1000).parameters()) == 143_667_240


def test_teacher_train_metrics_under_augmentation_read_the_training_loops_numbers(tmp_path):
    from kdlib.analysis.collect import gather
    from kdlib.store import RunResult, write_result
    clean = setups.get("tinyimagenet-resnet50-randaug", "smoke")
    loop = setups.get("tinyimagenet-resnet50-randaug", "smoke", ["teacher-train-metrics=augmented"])
    teacher = plan(clean)[0]
    assert plan(loop)[0].run_id == teacher.run_id  # an analysis reading: the same teacher run
    write_result(tmp_path, teacher, RunResult(run_id=teacher.run_id, spec={}, train_loss=0.1, train_accuracy=0.99,
                                              test_loss=1.0, test_accuracy=0.5,
                                              extra={"train_loss_augmented": 0.27, "train_accuracy_augmented": 0.93}))
    assert gather(clean, tmp_path)[1][["train_loss", "train_accuracy"]].values.tolist() == [[0.1, 0.99]]
    assert gather(loop, tmp_path)[1][["train_loss", "train_accuracy"]].values.tolist() == [[0.27, 0.93]]


def test_a_cuda_run_stored_before_results_recorded_their_precision_is_trained_again(tmp_path):
    """Before 0.10 a spec without a precision trained under bf16 on CUDA; now it means float32, so such a CUDA
    result is not this spec's run. A CPU result of the same spec is (the CPU was float32 then too)."""
    from kdlib.store import RunResult, read_result, write_result
    spec = plan(setups.get("cifar10-resnet18", "smoke"))[0]
    assert spec.precision is None
    stored = lambda **fields: write_result(tmp_path, spec, RunResult(run_id=spec.run_id, spec={"precision": None},
                                                                     **fields)) and read_result(tmp_path, spec)
    assert stored(device="cuda:0") is None
    assert stored(device="cuda:0", precision="float32") is not None  # recorded: trained as its spec says
    assert stored(device="cpu") is not None


def test_fp16_students_train_alone_not_in_packs():
    """One gradient scaler for a pack would skip every member's step when one member overflows: an fp16-scaler run
    trains alone, so it trains as its spec says whatever else runs."""
    from kdlib.runs.spec import packs
    fp16 = [s for s in plan(setups.get("imagenet-resnet50-to-resnet18", "paper")) if s.role == "student"]
    assert {s.precision for s in fp16} == {"fp16-scaler"} and all(not isinstance(j, tuple) for j in packs(fp16, 7))
    bf16 = [s for s in plan(setups.get("imagenet-resnet50-to-resnet18", "paper", ["training-precision=bf16"]))
            if s.role == "student"]
    assert any(isinstance(j, tuple) for j in packs(bf16, 7))
