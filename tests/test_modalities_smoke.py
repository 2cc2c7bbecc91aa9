"""Every vision and audio setup's code path at the smoke profile, on tiny fake data in the real on-disk formats."""
import pytest
from audio_fakes import build_fake_audio_root
from vision_fakes import build_fake_vision_root

from kdlib import setups
from kdlib.runs.spec import plan
from kdlib.analysis.collect import collect
from kdlib.runs.setup import run_setup

pytestmark = pytest.mark.slow  # every vision and audio setup trains here (about a minute)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("fake_data")
    build_fake_vision_root(root)
    build_fake_audio_root(root)
    monkeypatch_module.setenv("KDLIB_CACHE_DIR", str(root / "cache"))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


NAMES = [n for n in setups.names() if setups.get(n, "smoke").modality in ("vision", "audio")]


def test_every_paper_vision_and_audio_setup_is_registered():
    expected = {"svhn-resnet18", "svhn-vgg19", "svhn-vit", "tinyimagenet-resnet50", "tinyimagenet-resnet50-randaug",
                "tinyimagenet-vgg19", "tinyimagenet-vgg19-randaug", "tinyimagenet-resnet50-to-resnet18",
                "imagenet-resnet50-to-resnet18", "imagenet-resnet50-to-resnet18-t2",
                "tinyimagenet-resnet50-label-smoothing", "cifar10-resnet18", "digits-resnet18",
                "speechcommands-vggish", "speechcommands-ast", "urbansound8k-vggish", "urbansound8k-ast",
                "fsdd-vggish"}
    assert expected <= set(NAMES)
    assert setups.get("imagenet-resnet50-to-resnet18-t2", "paper").temperature == 2.0
    assert "ls" in setups.get("tinyimagenet-resnet50-label-smoothing", "paper").conditions


@pytest.mark.parametrize("name", NAMES)
def test_smoke_profile_runs_end_to_end(name, fake_root, tmp_path):
    setup = setups.get(name, "smoke")
    run_setup(setup, tmp_path, fake_root, progress=False)
    students, teachers = collect(setup, tmp_path, write=False)
    assert len(teachers) == len(setup.teacher_seeds)
    assert len(students) == len(plan(setup)) - len(setup.teacher_seeds)
    assert students["js_divergence"].notna().all() and students["accuracy"].between(0, 1).all()


def test_label_smoothing_runs_equal_rcd_at_the_same_alpha(fake_root, tmp_path):
    """Appendix B end to end: LS(epsilon = alpha) and RCD(alpha) students end with the same function.

    Their gradients are equal (tests/test_losses.py trains float64 models to 1e-9); in float32 through a
    BatchNorm ResNet-50 on batches of 8, rounding differences grow to ~1e-3 relative, far below KD's gap."""
    setup = setups.get("tinyimagenet-resnet50-label-smoothing", "smoke")
    run_setup(setup, tmp_path, fake_root, progress=False)
    students, _ = collect(setup, tmp_path, write=False)
    metrics = ["activation_distance", "js_divergence", "accuracy", "loss", "prediction_agreement"]
    for alpha in setup.alphas:
        rcd = students[(students.condition == "rcd") & (students.alpha == alpha)].sort_values("student_seed")
        ls = students[(students.condition == "ls") & (students.alpha == alpha)].sort_values("student_seed")
        assert len(rcd) == len(ls) > 0
        kd = students[(students.condition == "kd") & (students.alpha == alpha)].sort_values("student_seed")
        for m in metrics:
            assert ls[m].to_numpy() == pytest.approx(rcd[m].to_numpy(), rel=1e-2, abs=1e-4), (alpha, m)
        gap_ls = abs(ls["js_divergence"].to_numpy() - rcd["js_divergence"].to_numpy()).max()
        gap_kd = abs(kd["js_divergence"].to_numpy() - rcd["js_divergence"].to_numpy()).max()
        assert gap_ls < gap_kd / 10, (alpha, gap_ls, gap_kd)
