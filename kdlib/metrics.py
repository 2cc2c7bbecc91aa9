"""Teacher-model functional similarity (paper Section 3.1 and Appendix A), computed in one streaming pass.

``Comparison`` accumulates sufficient statistics batch by batch, so a test set that does not fit in memory
can be fed in pieces; ``compare`` is its one-shot form. All sums are kept in float64.

Definitions (per sample i, p = softmax of the teacher, q = softmax of the compared model):
- activation_distance: mean ||p - q||_2. The paper prints "1 -" before the mean; its tables use the plain mean.
- js_divergence: mean 0.5*KL(p||m) + 0.5*KL(q||m), m = (p+q)/2, natural log (so it lies in [0, ln 2]).
- rank_disagreement: mean fraction of rank positions where the two descending class orderings differ
  (stable sort, so exact ties are ordered by class index for both models).
- prediction_disagreement / prediction_agreement: top-1 mismatch / match rate.
- correct_agreement / incorrect_agreement: top-1 agreement on samples the teacher gets right / wrong.
- accuracy, loss: of the compared model against the labels (cross-entropy, natural log).
- variation_of_information: VI between the two predicted labellings, 2H(T,M) - H(T) - H(M), nats.
- procrustes_distance: Ding et al. (2021) ||A||^2 + ||B||^2 - 2||A^T B||_* for the softmax outputs, each
  centred over samples and scaled to unit Frobenius norm; lies in [0, 2]. A constant output (zero after
  centring) is treated as the zero matrix, so the distance stays finite.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Metric name -> True when lower values mean more similar (or better, for loss).
LOWER_IS_BETTER = {
    "activation_distance": True,
    "js_divergence": True,
    "rank_disagreement": True,
    "prediction_disagreement": True,
    "prediction_agreement": False,
    "correct_agreement": False,
    "incorrect_agreement": False,
    "accuracy": False,
    "loss": True,
    "variation_of_information": True,
    "procrustes_distance": True,
}
#: The four functional-similarity metrics of the paper's main tables and tests.
FUNCTIONAL_METRICS = ("activation_distance", "rank_disagreement", "prediction_disagreement", "js_divergence")
#: Appendix A's extended metrics.
EXTENDED_METRICS = ("variation_of_information", "procrustes_distance")


def _as_tokens(teacher_logits, model_logits, labels):
    if teacher_logits.shape != model_logits.shape:
        raise ValueError(f"teacher logits shape {tuple(teacher_logits.shape)} does not match model logits "
                         f"shape {tuple(model_logits.shape)}")
    if teacher_logits.dim() < 2:
        raise ValueError(f"logits must have shape [N, K] or [B, L, K], got {tuple(teacher_logits.shape)}")
    if labels.shape != teacher_logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits shape "
                         f"{tuple(teacher_logits.shape)}: expected {tuple(teacher_logits.shape[:-1])}")
    K = teacher_logits.shape[-1]
    labels = labels.reshape(-1).long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= K):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"label {bad} is out of range: labels must lie in [0, {K - 1}] for K={K} classes")
    t = teacher_logits.reshape(-1, K).double()
    m = model_logits.reshape(-1, K).double()
    if not (torch.isfinite(t).all() and torch.isfinite(m).all()):
        raise ValueError("logits contain NaN or inf: metrics are defined for finite logits only")
    return t, m, labels


def token_terms(t: torch.Tensor, m: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token terms whose means (or ratios of sums) are the metrics, for float64 ``[N, K]`` logits.

    Keys: ``p``, ``q`` (softmax), ``pred_t``, ``pred_m`` (top-1), ``activation_distance``, ``js_divergence``,
    ``rank_disagreement``, ``loss`` (float, one per token), ``agree``, ``t_correct``, ``correct`` (bool).
    """
    log_p, log_q = F.log_softmax(t, -1), F.log_softmax(m, -1)
    p, q = log_p.exp(), log_q.exp()
    log_mid = torch.logaddexp(log_p, log_q) - math.log(2.0)
    js = 0.5 * (p * (log_p - log_mid)).sum(-1) + 0.5 * (q * (log_q - log_mid)).sum(-1)
    rank_t = torch.argsort(t, dim=-1, descending=True, stable=True)
    rank_m = torch.argsort(m, dim=-1, descending=True, stable=True)
    pred_t, pred_m = rank_t[:, 0], rank_m[:, 0]
    return {"p": p, "q": q, "pred_t": pred_t, "pred_m": pred_m,
            "activation_distance": (p - q).norm(dim=-1), "js_divergence": js.clamp_min(0),
            "rank_disagreement": (rank_t != rank_m).double().mean(-1),
            "loss": F.cross_entropy(m, y, reduction="none"),
            "agree": pred_t == pred_m, "t_correct": pred_t == y, "correct": pred_m == y}


def _entropy(counts: torch.Tensor) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


class Comparison:
    """Streaming accumulator of every metric in :data:`LOWER_IS_BETTER` for one teacher/model pair."""

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        self.n = 0
        self._sums: dict[str, float] = {}

    def _init(self, K: int):
        if self.num_classes is not None and self.num_classes != K:
            raise ValueError(f"got logits with {K} classes, but this comparison was built for {self.num_classes}")
        self.num_classes = K
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)
        self.joint = z(K, K)  # counts of (teacher prediction, model prediction)
        self.copied_errors = z(K, K)  # counts of (label, teacher's wrong prediction) the model reproduces
        self.teacher_errors = z(K, K)  # counts of (label, teacher's wrong prediction)
        self.sum_p, self.sum_q, self.cross = z(K), z(K), z(K, K)
        self.sq_p = self.sq_q = 0.0
        self._sums = dict.fromkeys(["activation_distance", "js_divergence", "rank_disagreement", "agree",
                                    "t_correct", "agree_t_correct", "agree_t_wrong", "correct", "loss"], 0.0)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor, model_logits: torch.Tensor, labels: torch.Tensor) -> "Comparison":
        t, m, y = _as_tokens(teacher_logits, model_logits, labels)
        if self.n == 0 and not self._sums:
            self._init(t.shape[-1])
        elif t.shape[-1] != self.num_classes:
            raise ValueError(f"got logits with {t.shape[-1]} classes after batches with {self.num_classes}")
        y = y.cpu()
        terms = token_terms(t.cpu(), m.cpu(), y)
        p, q, pred_t, pred_m = terms["p"], terms["q"], terms["pred_t"], terms["pred_m"]
        agree, t_correct = terms["agree"], terms["t_correct"]
        s = self._sums
        for key in ("activation_distance", "js_divergence", "rank_disagreement", "loss"):
            s[key] += float(terms[key].sum())
        s["agree"] += float(agree.sum())
        s["t_correct"] += float(t_correct.sum())
        s["agree_t_correct"] += float((agree & t_correct).sum())
        s["agree_t_wrong"] += float((agree & ~t_correct).sum())
        s["correct"] += float(terms["correct"].sum())
        K = self.num_classes
        self.joint += torch.bincount(pred_t * K + pred_m, minlength=K * K).reshape(K, K).double()
        wrong = ~t_correct
        self.teacher_errors += torch.bincount(y[wrong] * K + pred_t[wrong], minlength=K * K).reshape(K, K).double()
        copied = wrong & agree
        self.copied_errors += torch.bincount(y[copied] * K + pred_t[copied], minlength=K * K).reshape(K, K).double()
        self.sum_p += p.sum(0)
        self.sum_q += q.sum(0)
        self.cross += p.T @ q
        self.sq_p += float((p * p).sum())
        self.sq_q += float((q * q).sum())
        self.n += t.shape[0]
        return self

    def _procrustes(self) -> float:
        n = self.n
        mean_p, mean_q = self.sum_p / n, self.sum_q / n
        norm_p2 = max(self.sq_p - n * float(mean_p @ mean_p), 0.0)
        norm_q2 = max(self.sq_q - n * float(mean_q @ mean_q), 0.0)
        cross = self.cross - n * torch.outer(mean_p, mean_q)
        eps = 1e-12
        if norm_p2 <= eps and norm_q2 <= eps:
            return 0.0
        if norm_p2 <= eps or norm_q2 <= eps:
            return 1.0
        nuclear = float(torch.linalg.svdvals(cross).sum()) / math.sqrt(norm_p2 * norm_q2)
        return float(min(max(2.0 - 2.0 * nuclear, 0.0), 2.0))

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples were given: call update() with at least one batch first")
        n, s = self.n, self._sums
        n_wrong = n - s["t_correct"]
        h_joint, h_t, h_m = _entropy(self.joint.flatten()), _entropy(self.joint.sum(1)), _entropy(self.joint.sum(0))
        return {
            "activation_distance": s["activation_distance"] / n,
            "js_divergence": s["js_divergence"] / n,
            "rank_disagreement": s["rank_disagreement"] / n,
            "prediction_disagreement": 1.0 - s["agree"] / n,
            "prediction_agreement": s["agree"] / n,
            "correct_agreement": s["agree_t_correct"] / s["t_correct"] if s["t_correct"] else math.nan,
            "incorrect_agreement": s["agree_t_wrong"] / n_wrong if n_wrong else math.nan,
            "accuracy": s["correct"] / n,
            "loss": s["loss"] / n,
            "variation_of_information": max(2.0 * h_joint - h_t - h_m, 0.0),
            "procrustes_distance": self._procrustes(),
        }


def compare(teacher_logits: torch.Tensor, model_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Every functional-similarity metric of ``model_logits`` against ``teacher_logits`` over one test set."""
    return Comparison().update(teacher_logits, model_logits, labels).result()
