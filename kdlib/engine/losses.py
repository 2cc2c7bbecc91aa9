"""Training objectives of the study (paper Eq. 1, Appendix B, Section 4.3).

All losses take logits of shape ``[N, K]`` with labels ``[N]``, or ``[B, L, K]`` with labels
``[B, L]`` (language models); sequence inputs are flattened to tokens and averaged per token. Shapes and
labels are checked (:mod:`kdlib.outputs`); ``validate=False`` skips the label-range check, which reads the
labels on the host (the trainer's labels come from checked datasets, and a GPU step must not wait).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..outputs import as_tokens


def check_alpha(alpha: float) -> float:
    if not (0.0 <= float(alpha) <= 1.0) or math.isnan(float(alpha)):
        raise ValueError(f"alpha={alpha!r} is not allowed: alpha must lie in [0, 1]")
    return float(alpha)


def check_temperature(temperature: float) -> float:
    if not float(temperature) > 0.0:
        raise ValueError(f"temperature={temperature!r} is not allowed: temperature must be > 0")
    return float(temperature)


def _distill(student: torch.Tensor, labels: torch.Tensor, target_log_probs: torch.Tensor,
             alpha: float, temperature: float, t_squared: bool, label_smoothing: float) -> torch.Tensor:
    """(1-alpha)*CE(y, softmax(z_s)) + alpha*T^2*KL(target || softmax(z_s/T)), mean over samples (without the
    T^2 when ``t_squared`` is False; the CE against labels smoothed by ``label_smoothing``)."""
    ce = (F.cross_entropy(student, labels, label_smoothing=label_smoothing) if alpha < 1.0
          else student.new_zeros(()))
    if alpha == 0.0:
        return ce
    student_log_probs = F.log_softmax(student / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, target_log_probs, reduction="batchmean", log_target=True)
    return (1.0 - alpha) * ce + alpha * (temperature ** 2 if t_squared else 1.0) * kl


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            alpha: float, temperature: float = 1.0, validate: bool = True, t_squared: bool = True,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """Logit-matching knowledge distillation, paper Eq. 1 with the usual T^2 factor (``t_squared=False``: Eq. 1
    as printed, the ``kd-temperature-squared`` reading); ``label_smoothing`` smooths the CE term's labels."""
    alpha, temperature = check_alpha(alpha), check_temperature(temperature)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits shape {tuple(teacher_logits.shape)} does not match student logits "
                         f"shape {tuple(student_logits.shape)}")
    student, labels = as_tokens(student_logits, labels, "student", check_range=validate)
    teacher, _ = as_tokens(teacher_logits.detach(), None, "teacher")
    target = F.log_softmax(teacher.to(student.dtype) / temperature, dim=-1)
    return _distill(student, labels, target, alpha, temperature, t_squared, label_smoothing)


def rcd_loss(student_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
             temperature: float = 1.0, validate: bool = True, t_squared: bool = True,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Random Control Distillation: Eq. 1 with the teacher replaced by the class-uniform 1/K."""
    alpha, temperature = check_alpha(alpha), check_temperature(temperature)
    student, labels = as_tokens(student_logits, labels, "student", check_range=validate)
    K = student.shape[-1]
    target = student.new_full((1, K), -math.log(K)).expand_as(student)
    return _distill(student, labels, target, alpha, temperature, t_squared, label_smoothing)


def label_smoothing_loss(student_logits: torch.Tensor, labels: torch.Tensor, epsilon: float,
                         validate: bool = True) -> torch.Tensor:
    """Cross-entropy against (1-epsilon)*one_hot(y) + epsilon/K (Szegedy et al. 2016)."""
    if not (0.0 <= float(epsilon) <= 1.0):
        raise ValueError(f"epsilon={epsilon!r} is not allowed: epsilon must lie in [0, 1]")
    student, labels = as_tokens(student_logits, labels, "student", check_range=validate)
    log_probs = F.log_softmax(student, dim=-1)
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
    uniform = -log_probs.mean(dim=-1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


def feature_map_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared error between matched intermediate outputs (feature-map matching KD)."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"student features shape {tuple(student_features.shape)} does not match teacher "
                         f"features shape {tuple(teacher_features.shape)}")
    return F.mse_loss(student_features, teacher_features.detach())
