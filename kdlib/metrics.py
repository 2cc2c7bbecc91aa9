"""Teacher-model functional similarity (paper Section 3.1 and Appendix A): every metric's definition in one place.

A metric is a :class:`Metric` in :data:`METRICS`: its display name, its preferred direction, the table family
it belongs to, and its formula. Most metrics are *additive*: a rate computed from sums over test tokens of the
per-token terms in :data:`TERMS` (e.g. activation distance = sum of ||p - q||_2 / number of tokens). The same
``rate`` turns the streaming sums of :class:`Comparison` into the study's numbers and the audit's resampled
sums into bootstrap replicates, so both always agree. Variation of information and Procrustes distance need the
whole test set (a joint label histogram, a cross-covariance) and read it from the :class:`Comparison`.

Any vocabulary streams: nothing is K x K unless K is small. Pairs of classes (the joint prediction histogram, the
teacher's errors and their copies) are sparse :class:`PairCounts`; Procrustes keeps its K x K cross-covariance while
it fits :data:`PROCRUSTES_BUDGET`, else the examples' softmax rows while those fit (the same distance, computed
over examples), else it is NaN and :attr:`Comparison.notes` says why; tokens are processed :data:`CHUNK_VALUES`
logits at a time. Labels equal to ``ignore_index`` (-100, PyTorch's and Hugging Face's padding label) are dropped
with their logits before any metric.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .outputs import as_tokens, check_labels, check_logits

#: Table families, in display order: the paper's main tables show functional + performance, Appendix A's
#: extended tables add "extended"; "agreement" quantities feed Eqs. 2-3.
FAMILIES = ("functional", "extended", "performance", "agreement")

#: Logits (float64) per pass of the per-token terms: the rows of a chunk are CHUNK_VALUES // K tokens, so a batch of
#: any size at any K needs a bounded amount of memory (about 15 such arrays: 0.5 GB).
CHUNK_VALUES = 2 ** 22
#: Float64 values Procrustes may hold: its K x K cross-covariance when K * K fits (K <= 4096), else both models'
#: softmax rows when 2 * N * K fits (N tokens); otherwise it is skipped (NaN, with a note).
PROCRUSTES_BUDGET = 2 ** 24


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
    ``rank_disagreement``, ``loss``, ``t_loss`` (the teacher's; float, one per token), ``agree``, ``t_correct``,
    ``correct`` (bool). The losses are cross-entropy, read off the log-softmax (the same numbers as
    ``F.cross_entropy``, without a second pass over K).
    """
    log_p, log_q = F.log_softmax(t, -1), F.log_softmax(m, -1)
    nll = lambda log_z: -log_z.gather(1, y[:, None]).squeeze(1)
    p, q = log_p.exp(), log_q.exp()
    log_mid = torch.logaddexp(log_p, log_q) - math.log(2.0)
    js = 0.5 * (p * (log_p - log_mid)).sum(-1) + 0.5 * (q * (log_q - log_mid)).sum(-1)
    rank_t, rank_m = descending_order(t), descending_order(m)
    pred_t, pred_m = rank_t[:, 0], rank_m[:, 0]
    return {"p": p, "q": q, "pred_t": pred_t, "pred_m": pred_m,
            "activation_distance": (p - q).norm(dim=-1), "js_divergence": js.clamp_min(0),
            "rank_disagreement": (rank_t != rank_m).double().mean(-1),
            "loss": nll(log_q), "t_loss": nll(log_p),
            "agree": pred_t == pred_m, "t_correct": pred_t == y, "correct": pred_m == y}


def descending_order(z: torch.Tensor) -> torch.Tensor:
    """``torch.argsort(z, -1, descending=True, stable=True)`` of float64 logits [N, K] (exact ties in class order).

    Logits that are float32 values (every float32 model's) take one integer sort of keys (value, class index),
    about twice as fast at large K, rows split over torch's threads: the float32 bit pattern as an integer orders
    the values once negative ones are flipped; -0.0 is first made 0.0, which it equals."""
    K = z.shape[-1]
    bits = max(1, (K - 1).bit_length())
    z32 = z.detach().float()
    if z.device.type != "cpu" or bits > 30 or not torch.equal(z32.double(), z):
        return torch.argsort(z, dim=-1, descending=True, stable=True)
    key = (z32 + 0.0).numpy().view(np.int32).astype(np.int64)
    key ^= (key >> 31) & 0x7FFFFFFF  # increasing with the value
    np.negative(key, out=key)  # decreasing, so an ascending sort puts the largest first
    key <<= bits
    key |= np.arange(K)  # ties: lower class index first
    threads = min(torch.get_num_threads(), len(key))
    if threads > 1 and key.size >= 2 ** 18:
        with ThreadPoolExecutor(threads) as pool:  # numpy sorts without the GIL
            list(pool.map(np.ndarray.sort, np.array_split(key, threads)))
    else:
        key.sort(axis=-1)
    return torch.from_numpy(key & ((1 << bits) - 1))


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
    "t_loss": lambda k: k["t_loss"],
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
    a, b, n = c.joint.pairs()
    n = n.double()
    K = c.num_classes
    h_joint = _entropy(n)
    h_t, h_m = _entropy(torch.bincount(a, n, minlength=K)), _entropy(torch.bincount(b, n, minlength=K))
    return max(2.0 * h_joint - h_t - h_m, 0.0)


def _procrustes(c: "Comparison") -> float:
    if c.cross is None and c.rows is None:
        return math.nan  # did not fit PROCRUSTES_BUDGET: c.notes says so
    n = c.n
    mean_p, mean_q = c.sum_p / n, c.sum_q / n
    norm_p2 = max(c.sq_p - n * float(mean_p @ mean_p), 0.0)
    norm_q2 = max(c.sq_q - n * float(mean_q @ mean_q), 0.0)
    eps = 1e-12
    if norm_p2 <= eps and norm_q2 <= eps:
        return 0.0
    if norm_p2 <= eps or norm_q2 <= eps:
        return 1.0
    nuclear = _cross_nuclear_norm(c, mean_p, mean_q) / math.sqrt(norm_p2 * norm_q2)
    return float(min(max(2.0 - 2.0 * nuclear, 0.0), 2.0))


def _cross_nuclear_norm(c: "Comparison", mean_p: torch.Tensor, mean_q: torch.Tensor) -> float:
    """||A^T B||_* for the centred softmax outputs A, B [N, K]: from the K x K cross-covariance A^T B, or, over
    examples, from the N x N factors R of A^T = Q_a R_a and B^T = Q_b R_b (A^T B = Q_a R_a R_b^T Q_b^T has the
    singular values of R_a R_b^T)."""
    if c.cross is not None:
        return float(torch.linalg.svdvals(c.cross - c.n * torch.outer(mean_p, mean_q)).sum())
    r = [torch.linalg.qr((torch.cat(rows) - mean).T, mode="r").R for rows, mean in zip(c.rows, (mean_p, mean_q))]
    return float(torch.linalg.svdvals(r[0] @ r[1].T).sum())


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


def labels_for(labels: torch.Tensor, logits: torch.Tensor, ignore_index: int | None = -100,
               labels_name: str = "labels", name: str = "logits", hint: str = "") -> torch.Tensor:
    """:func:`kdlib.outputs.check_labels`, where labels equal to ``ignore_index`` (padding; None: none) pass and are
    kept as they are, for the metrics to drop."""
    if ignore_index is None:
        return check_labels(labels, logits, labels_name, name, hint)
    pad = labels == ignore_index
    return check_labels(labels.masked_fill(pad, 0), logits, labels_name, name, hint).masked_fill(pad, ignore_index)


class PairCounts:
    """How often each pair of classes (a, b) occurred: sparse, so memory grows with the distinct pairs seen, never
    with K x K. ``codes`` are ``a * K + b`` in increasing order (the row-major order of the K x K table)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.codes = torch.zeros(0, dtype=torch.long)
        self.counts = torch.zeros(0, dtype=torch.long)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        codes = torch.cat([self.codes, a * self.num_classes + b])
        weights = torch.cat([self.counts, torch.ones(len(a), dtype=torch.long)])
        self.codes, index = torch.unique(codes, return_inverse=True)
        self.counts = torch.zeros(len(self.codes), dtype=torch.long).index_add_(0, index, weights)

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, count) of every pair seen, in row-major order."""
        return self.codes // self.num_classes, self.codes % self.num_classes, self.counts

    def count(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Counts of the pairs (a[i], b[i]), 0 for pairs never seen."""
        codes = torch.as_tensor(a) * self.num_classes + torch.as_tensor(b)
        if not len(self.codes):
            return torch.zeros_like(codes)
        at = torch.searchsorted(self.codes, codes).clamp_max(len(self.codes) - 1)
        return torch.where(self.codes[at] == codes, self.counts[at], 0)

    def sum(self) -> int:
        return int(self.counts.sum())

    def __getitem__(self, ab: tuple[int, int]) -> int:
        return int(self.count(torch.tensor([ab[0]]), torch.tensor([ab[1]]))[0])

    def dense(self) -> torch.Tensor:
        """The K x K table of counts (float64): for small K only."""
        K = self.num_classes
        return torch.zeros(K * K, dtype=torch.float64).index_put_((self.codes,), self.counts.double()).reshape(K, K)


class Comparison:
    """Streaming accumulator of every metric in :data:`METRICS` for one teacher/model pair.

    Sums are kept in float64, so a test set can be fed in pieces of any size with the same result. Labels equal to
    ``ignore_index`` (None: none) are dropped with both models' logits. Pair statistics are sparse
    (:class:`PairCounts`): ``joint`` (teacher prediction, model prediction), ``teacher_errors`` (label, teacher's
    wrong prediction) and ``copied_errors`` (those the model reproduces); :attr:`notes` says why a metric is NaN."""

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = -100):
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index={ignore_index!r} is not allowed: use an integer label (e.g. -100) or None")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.n = 0
        self.sums: dict[str, float] = {}
        self._units: list[tuple[torch.Tensor, torch.Tensor]] = []  # (unit ids, their term sums) per chunk

    def _init(self, K: int):
        if self.num_classes is not None and self.num_classes != K:
            raise ValueError(f"got logits with {K} classes, but this comparison was built for {self.num_classes}")
        self.num_classes = K
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)
        self.joint, self.teacher_errors, self.copied_errors = PairCounts(K), PairCounts(K), PairCounts(K)
        self.sum_p, self.sum_q = z(K), z(K)
        self.cross = z(K, K) if K * K <= PROCRUSTES_BUDGET else None  # Procrustes in class space
        self.rows = None if self.cross is not None else ([], [])  # else over examples, while they fit
        self.sq_p = self.sq_q = 0.0
        self.sums = dict.fromkeys(TERMS, 0.0)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor, model_logits: torch.Tensor, labels: torch.Tensor,
               units: torch.Tensor | None = None) -> "Comparison":
        """Add a batch: logits ``[N, K]`` or ``[N, L, K]``, labels of their shape without K. ``units`` (optional, the
        labels' shape): each label's resampling unit (an integer id), for :meth:`unit_sums`."""
        if teacher_logits.shape != model_logits.shape:
            raise ValueError(f"teacher logits shape {tuple(teacher_logits.shape)} does not match model logits "
                             f"shape {tuple(model_logits.shape)}")
        t, _ = as_tokens(teacher_logits, None, "teacher")
        y = labels_for(labels, teacher_logits, self.ignore_index, "labels", "teacher").reshape(-1)
        m, _ = as_tokens(model_logits, None, "model")
        u = None if units is None else torch.as_tensor(units).reshape(-1).long()
        if u is not None and len(u) != len(y):
            raise ValueError(f"units has {len(u)} entries but labels have {len(y)}: give one unit id per label")
        if self.ignore_index is not None and bool((y == self.ignore_index).any()):
            keep = y != self.ignore_index
            t, m, y, u = t[keep], m[keep], y[keep], None if u is None else u[keep]
        if self.n == 0 and not self.sums:
            self._init(t.shape[-1])
        elif t.shape[-1] != self.num_classes:
            raise ValueError(f"got logits with {t.shape[-1]} classes after batches with {self.num_classes}")
        step = max(1, CHUNK_VALUES // self.num_classes)
        for i in range(0, len(y), step):
            tc, mc = t[i:i + step].double().cpu(), m[i:i + step].double().cpu()
            if not (torch.isfinite(tc).all() and torch.isfinite(mc).all()):  # raise, naming the first bad example
                check_logits(teacher_logits, "teacher", finite=True)
                check_logits(model_logits, "model", finite=True)
            self._add(tc, mc, y[i:i + step].cpu(), None if u is None else u[i:i + step].cpu())
        return self

    def _add(self, t: torch.Tensor, m: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None) -> None:
        terms = token_terms(t, m, y)
        values = [fn(terms) for fn in TERMS.values()]
        for name, v in zip(TERMS, values):
            self.sums[name] += float(v.sum())
        if u is not None:
            ids, index = torch.unique(u, return_inverse=True)
            per_token = torch.stack([v.double() for v in values], -1)
            self._units.append((ids, torch.zeros(len(ids), len(values), dtype=torch.float64).index_add_(0, index,
                                                                                                     per_token)))
        p, q, pred_t, pred_m = terms["p"], terms["q"], terms["pred_t"], terms["pred_m"]
        self.joint.add(pred_t, pred_m)
        wrong = ~terms["t_correct"]
        self.teacher_errors.add(y[wrong], pred_t[wrong])
        copied = wrong & terms["agree"]
        self.copied_errors.add(y[copied], pred_t[copied])
        self.sum_p += p.sum(0)
        self.sum_q += q.sum(0)
        if self.cross is not None:
            self.cross += p.T @ q
        elif self.rows is not None:
            if 2 * (self.n + len(y)) * self.num_classes <= PROCRUSTES_BUDGET:
                self.rows[0].append(p)
                self.rows[1].append(q)
            else:
                self.rows = None  # too many tokens to hold at this K: Procrustes is skipped (see notes)
        self.sq_p += float((p * p).sum())
        self.sq_q += float((q * q).sum())
        self.n += len(y)

    @property
    def notes(self) -> dict[str, str]:
        """Why a metric is NaN although tokens were given: {metric: reason}."""
        if self.sums and self.cross is None and self.rows is None:
            return {"procrustes_distance": (
                f"procrustes_distance skipped: K={self.num_classes} classes and N={self.n} tokens do not fit its "
                f"memory budget (K*K or 2*N*K <= {PROCRUSTES_BUDGET:,} float64 values); every other metric is exact")}
        return {}

    def unit_sums(self) -> np.ndarray:
        """[U, len(TERMS)] sums of the per-token terms (in TERMS order) per resampling unit given to :meth:`update`,
        in increasing unit id; a unit whose labels were all ``ignore_index`` has no row."""
        ids = torch.cat([torch.zeros(0, dtype=torch.long), *(i for i, _ in self._units)])
        sums = torch.cat([torch.zeros(0, len(TERMS), dtype=torch.float64), *(s for _, s in self._units)])
        unique, index = torch.unique(ids, return_inverse=True)
        out = torch.zeros(len(unique), len(TERMS), dtype=torch.float64).index_add_(0, index, sums)
        if int(out[:, list(TERMS).index("tokens")].sum()) != self.n:
            raise ValueError("units were given to some update() calls only: give them to every call")
        return out.numpy()

    def teacher(self) -> dict[str, float]:
        """The teacher's own accuracy and loss on the tokens given."""
        return {"accuracy": ratio(self.sums["t_correct"], self.sums["tokens"]),
                "loss": ratio(self.sums["t_loss"], self.sums["tokens"])}

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no tokens to score: call update() with at least one label that is not "
                             f"ignore_index={self.ignore_index}")
        return {name: m.rate(self.sums) if m.additive else m.rate(self) for name, m in METRICS.items()}


def compare(teacher_logits: torch.Tensor, model_logits: torch.Tensor, labels: torch.Tensor,
            ignore_index: int | None = -100) -> dict[str, float]:
    """Every functional-similarity metric of ``model_logits`` against ``teacher_logits`` over one test set."""
    return Comparison(ignore_index=ignore_index).update(teacher_logits, model_logits, labels).result()
