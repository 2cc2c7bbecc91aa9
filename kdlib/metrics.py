"""Teacher-model functional similarity (paper Section 3.1 and Appendix A): every metric's definition in one place.

A metric is a :class:`Metric` in :data:`METRICS`: its display name, its preferred direction, the table family
it belongs to, and its formula. Most metrics are *additive*: a rate computed from sums over test tokens of the
per-token terms in :data:`TERMS` (e.g. activation distance = sum of ||p - q||_2 / number of tokens). The same
``rate`` turns the streaming sums of :class:`Comparison` into the study's numbers and the audit's resampled
sums into bootstrap replicates, so both always agree. Variation of information and Procrustes distance need the
whole test set (a joint label histogram, a cross-covariance) and read it from the :class:`Comparison`.

**Adding a metric touches this file alone**: ``register_term`` a per-token term if it needs a new one, then
``register_metric``; :class:`Comparison`, the collected tables, ``kdlib.report``'s tables (by family) and
``kdlib.audit`` pick it up (``tests/test_metrics.py`` registers a toy metric and finds it in the tables).

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .outputs import as_tokens

#: Table families, in display order: the paper's main tables show functional + performance, Appendix A's
#: extended tables add "extended"; "agreement" quantities feed Eqs. 2-3.
FAMILIES = ("functional", "extended", "performance", "agreement")


@dataclass(frozen=True)
class Metric:
    """One metric: ``rate(sums)`` from per-token sums (``additive``), else ``rate(comparison)``; ``short`` is
    its abbreviation where a table is narrow (explained in the table's caption)."""
    name: str
    display: str
    lower_is_better: bool
    family: str
    rate: Callable
    additive: bool = True
    short: str = ""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"metric {self.name!r}: unknown family {self.family!r}; allowed {list(FAMILIES)}")


def token_terms(t: torch.Tensor, m: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token quantities of float64 ``[N, K]`` teacher / model logits and labels ``[N]``.

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


#: Per-token terms summed over the test set: name -> fn(token_terms) -> one value per token.
TERMS: dict[str, Callable[[dict], torch.Tensor]] = {
    "tokens": lambda k: torch.ones_like(k["loss"]),
    "t_correct": lambda k: k["t_correct"],
    "activation_distance": lambda k: k["activation_distance"],
    "js_divergence": lambda k: k["js_divergence"],
    "rank_disagreement": lambda k: k["rank_disagreement"],
    "agree": lambda k: k["agree"],
    "agree_t_correct": lambda k: k["agree"] & k["t_correct"],
    "agree_t_wrong": lambda k: k["agree"] & ~k["t_correct"],
    "correct": lambda k: k["correct"],
    "loss": lambda k: k["loss"],
}


def ratio(a, b):
    """a / b elementwise in float64 (NaN where b is 0); a float for scalars, an array for arrays."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.true_divide(np.asarray(a, dtype=np.float64), b)
    return float(r) if np.ndim(r) == 0 else r


def _entropy(counts: torch.Tensor) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def _variation_of_information(c: "Comparison") -> float:
    h_joint, h_t, h_m = _entropy(c.joint.flatten()), _entropy(c.joint.sum(1)), _entropy(c.joint.sum(0))
    return max(2.0 * h_joint - h_t - h_m, 0.0)


def _procrustes(c: "Comparison") -> float:
    n = c.n
    mean_p, mean_q = c.sum_p / n, c.sum_q / n
    norm_p2 = max(c.sq_p - n * float(mean_p @ mean_p), 0.0)
    norm_q2 = max(c.sq_q - n * float(mean_q @ mean_q), 0.0)
    cross = c.cross - n * torch.outer(mean_p, mean_q)
    eps = 1e-12
    if norm_p2 <= eps and norm_q2 <= eps:
        return 0.0
    if norm_p2 <= eps or norm_q2 <= eps:
        return 1.0
    nuclear = float(torch.linalg.svdvals(cross).sum()) / math.sqrt(norm_p2 * norm_q2)
    return float(min(max(2.0 - 2.0 * nuclear, 0.0), 2.0))


METRICS: dict[str, Metric] = {}


def register_term(name: str, fn: Callable[[dict], torch.Tensor]) -> None:
    """Add a per-token term ``fn(token_terms) -> [N]`` whose sum additive metrics may use."""
    if name in TERMS:
        raise ValueError(f"term {name!r} is already defined: terms are {list(TERMS)}")
    TERMS[name] = fn


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (after the existing ones of its family in every table)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already defined: metrics are {list(METRICS)}")
    METRICS[metric.name] = metric
    return metric


for _metric in (
    Metric("activation_distance", "Activation Distance", True, "functional",
           lambda s: ratio(s["activation_distance"], s["tokens"]), short="AD"),
    Metric("rank_disagreement", "Rank Disagreement", True, "functional",
           lambda s: ratio(s["rank_disagreement"], s["tokens"]), short="RD"),
    Metric("prediction_disagreement", "Prediction Disagreement", True, "functional",
           lambda s: 1.0 - ratio(s["agree"], s["tokens"]), short="PD"),
    Metric("js_divergence", "JS Divergence", True, "functional", lambda s: ratio(s["js_divergence"], s["tokens"]),
           short="JS"),
    Metric("variation_of_information", "Information Variation", True, "extended", _variation_of_information,
           additive=False, short="VI"),
    Metric("procrustes_distance", "Procrustes Distance", True, "extended", _procrustes, additive=False,
           short="Proc"),
    Metric("accuracy", "Accuracy", False, "performance", lambda s: ratio(s["correct"], s["tokens"]), short="Acc"),
    Metric("loss", "Loss", True, "performance", lambda s: ratio(s["loss"], s["tokens"]), short="Loss"),
    Metric("prediction_agreement", "Prediction Agreement", False, "agreement",
           lambda s: ratio(s["agree"], s["tokens"]), short="PA"),
    Metric("correct_agreement", "Correct Agreement", False, "agreement",
           lambda s: ratio(s["agree_t_correct"], s["t_correct"]), short="CA"),
    Metric("incorrect_agreement", "Incorrect Agreement", False, "agreement",
           lambda s: ratio(s["agree_t_wrong"], s["tokens"] - s["t_correct"]), short="IA"),
):
    register_metric(_metric)

#: The four functional-similarity metrics of the paper's main tables and its hypothesis tests (fixed by the
#: paper's protocol, so a metric registered later is reported but never changes a verdict).
FUNCTIONAL_METRICS = ("activation_distance", "rank_disagreement", "prediction_disagreement", "js_divergence")


def metric(name: str) -> Metric:
    """The registered metric ``name``; unknown names raise with the allowed ones."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}: allowed are {list(METRICS)}")
    return METRICS[name]


def lower_is_better(name: str) -> bool:
    return metric(name).lower_is_better


def display_name(name: str, arrow: bool = False, short: bool = False) -> str:
    """'Activation Distance', with ``arrow`` 'Activation Distance (↓)' (the preferred direction); ``short``: the
    abbreviation ('AD') where the metric has one."""
    m = metric(name)
    text = (m.short or m.display) if short else m.display
    return f"{text} ({'↓' if m.lower_is_better else '↑'})" if arrow else text


def table_metrics(extended: bool = False) -> tuple[str, ...]:
    """Rows of the paper's mean +- SEM tables: functional, (extended,) then performance metrics."""
    families = ("functional", "extended", "performance") if extended else ("functional", "performance")
    return tuple(m.name for f in families for m in METRICS.values() if m.family == f)


def additive_metrics() -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if m.additive)


def rates(sums) -> dict:
    """Every additive metric from ``sums`` (a mapping term -> sum: floats, or arrays for many replicates)."""
    return {name: METRICS[name].rate(sums) for name in additive_metrics()}


class Comparison:
    """Streaming accumulator of every metric in :data:`METRICS` for one teacher/model pair.

    Sums are kept in float64, so a test set can be fed in pieces of any size with the same result."""

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        self.n = 0
        self.sums: dict[str, float] = {}

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
        self.sums = dict.fromkeys(TERMS, 0.0)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor, model_logits: torch.Tensor, labels: torch.Tensor) -> "Comparison":
        if teacher_logits.shape != model_logits.shape:
            raise ValueError(f"teacher logits shape {tuple(teacher_logits.shape)} does not match model logits "
                             f"shape {tuple(model_logits.shape)}")
        t, y = as_tokens(teacher_logits, labels, "teacher", finite=True)
        m, _ = as_tokens(model_logits, None, "model", finite=True)
        t, m, y = t.double().cpu(), m.double().cpu(), y.cpu()
        if self.n == 0 and not self.sums:
            self._init(t.shape[-1])
        elif t.shape[-1] != self.num_classes:
            raise ValueError(f"got logits with {t.shape[-1]} classes after batches with {self.num_classes}")
        terms = token_terms(t, m, y)
        for name, fn in TERMS.items():
            self.sums[name] += float(fn(terms).sum())
        p, q, pred_t, pred_m = terms["p"], terms["q"], terms["pred_t"], terms["pred_m"]
        K = self.num_classes
        self.joint += torch.bincount(pred_t * K + pred_m, minlength=K * K).reshape(K, K).double()
        wrong = ~terms["t_correct"]
        self.teacher_errors += torch.bincount(y[wrong] * K + pred_t[wrong], minlength=K * K).reshape(K, K).double()
        copied = wrong & terms["agree"]
        self.copied_errors += torch.bincount(y[copied] * K + pred_t[copied], minlength=K * K).reshape(K, K).double()
        self.sum_p += p.sum(0)
        self.sum_q += q.sum(0)
        self.cross += p.T @ q
        self.sq_p += float((p * p).sum())
        self.sq_q += float((q * q).sum())
        self.n += t.shape[0]
        return self

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples were given: call update() with at least one batch first")
        return {name: m.rate(self.sums) if m.additive else m.rate(self) for name, m in METRICS.items()}


def compare(teacher_logits: torch.Tensor, model_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Every functional-similarity metric of ``model_logits`` against ``teacher_logits`` over one test set."""
    return Comparison().update(teacher_logits, model_logits, labels).result()
