"""Linear SVMs with hard-negative mining, one per class (PAPER.md, "Linear SVMs").

The mining is R-CNN's (rcnn_train.m), as the released SPP code runs it:

- positives first: the ground-truth boxes of ALL training images are gathered before mining
  (:func:`gather_positives`), so every model, from the first retrain on, sees every positive
  of its class; negatives: windows whose IoU with every ground-truth box of the class is below
  ``negative_iou`` (0.3);
- one pass over the training images: the first image contributes all its negatives and every
  class is trained right after it; later images only the hard ones (score > ``hard_threshold``,
  -1.0001, under the current model);
- retrain when more than ``retrain_every`` (2,000) new negatives have come in, and at the
  end; after each retrain, cached negatives scoring below ``evict_threshold`` (-1.2) are
  dropped. A window seen twice in an image (same conv5 rectangle at the same scale) counts
  once; windows of different images are different negatives even when their rectangles agree.

Solver: liblinear's L2-regularised hinge loss solved in the dual, ``C`` = 0.001, positive-class
weight 2, and liblinear's bias feature of value 10 (the learned bias weight times 10 is the
final bias, and it is regularised, exactly as the released code's liblinear call). Two
implementations of it (``solver``): ``"liblinear"``, scikit-learn's ``LinearSVC`` (liblinear
itself, ``loss="hinge"``, ``intercept_scaling``), the solver of record; and ``"dcd"`` (the
default), liblinear's algorithm in :mod:`.dual_cd`, started from the last fit's dual variables
(liblinear always starts from zero: mining refits mostly the same rows again and again) and run
in threads. Features arrive norm-scaled. As R-CNN does, the solver gets SPARSE rows (positives
first, then negatives): post-ReLU features are mostly zeros, and its memory and time follow the
non-zeros. A fit that reaches the iteration cap (:data:`MAX_ITER`) is logged as a warning naming
the class and the retrain, and recorded (``converged``) in that class's retrain log.

Memory is bounded by design (see :class:`HardNegativeTrainer`): caches are sparse float16 rows
shared by the classes, each class's cache is capped, and fits run in parallel only as far as a
memory budget allows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .sparse_rows import CompactRows, SparseRows

log = logging.getLogger(__name__)

SOLVERS = ("dcd", "liblinear")
MAX_ITER = 10000  # liblinear's iteration cap per fit; reaching it means the fit did not converge
# bytes a fit takes per non-zero of its rows: liblinear's own copy (16: an int index and a double
# per value), the float64 CSR it is handed (12), the compact rows received by the worker (4) and
# the parent's pickled copy while the fit runs (4)
FIT_BYTES_PER_NONZERO = 36
# a fit whose objective is within this fraction of the trivial solution's is that solution
COLLAPSE_TOLERANCE = 1e-3


def trivial_objective(C: float, positive_weight: float, n_positives: int) -> float:
    """The objective of the trivial model w = 0, b = -1: every window scores -1, so each positive
    costs its hinge at -1, 2, weighted (``positive_weight``) and scaled by ``C``; negatives cost
    nothing. A fit ending near it barely separates its positives from its hard negatives."""
    return C * positive_weight * 2.0 * n_positives


@dataclass
class SvmImage:
    """One training image as the miner sees it (mining pass: its negatives).

    ``features``: (N, D) float32, norm-scaled; ``boxes``: (N, 4) internal convention (0-based
    inclusive pixels); ``keys``: (N,) int64 identifying each window's conv5 rectangle and scale
    within the image (duplicates share a key; the trainer scopes keys by ``image_id``);
    ``window_labels``: (N,) int, the class of a window that IS a ground-truth box, -1 for
    proposals (ground-truth windows are never negatives; the positives were gathered before
    mining); ``gt_boxes``/``gt_labels``: the image's ground truth, to find negatives.
    """

    image_id: str
    features: np.ndarray
    boxes: np.ndarray
    keys: np.ndarray
    window_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def _fit(x, y: np.ndarray, c: float, positive_weight: float, bias_feature: float, seed: int, tol: float = 0.1):
    """Train one linear SVM on rows ``x`` (dense array or scipy CSR) with labels ``y`` (+1 / -1).

    ``tol``: liblinear's stopping tolerance (the dual's largest violation of its optimality
    conditions); 0.1 is liblinear's default for this solver, which R-CNN ran. Returns
    ``(w (D,) float32, b, objective, converged, scores)``: ``scores`` float64 (n,) are
    ``x @ w + b`` of every row with the float32 ``w`` returned, as the miner would score them.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    n_pos, n_neg = int((y > 0).sum()), int((y < 0).sum())
    if n_pos == 0 or n_neg == 0:
        # nothing to separate: score everything as the class that exists (or nothing)
        b = 1.0 if n_neg == 0 else -1.0
        return np.zeros(x.shape[1], np.float32), b, 0.0, True, np.full(x.shape[0], b)
    if not hasattr(x, "tocsr"):
        x = np.asarray(x, np.float64)
    svm = LinearSVC(
        C=c, loss="hinge", dual=True, class_weight={1: positive_weight, -1: 1.0},
        fit_intercept=True, intercept_scaling=bias_feature, max_iter=MAX_ITER, tol=tol, random_state=seed,
    )
    # liblinear's own warning would come from a worker process with no class or retrain named;
    # the caller logs one that does (and records it in the SVM's retrain log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    converged = int(np.max(svm.n_iter_)) < MAX_ITER
    w = svm.coef_[0]
    b = float(svm.intercept_[0])
    # primal objective, as liblinear minimises it (bias feature included in the norm)
    margins = y * (np.asarray(x @ w).ravel() + b)
    weights = np.where(y > 0, positive_weight, 1.0)
    hinge = np.maximum(0.0, 1.0 - margins)
    objective = 0.5 * (w @ w + (b / bias_feature) ** 2) + c * float((weights * hinge).sum())
    w32 = w.astype(np.float32)
    scores = np.asarray(x @ w32.astype(np.float64)).ravel() + b
    return w32, b, objective, converged, scores


def _fit_task(pos: CompactRows, neg: CompactRows, c: float, positive_weight: float, bias_feature: float, seed: int,
              tol: float = 0.1):
    """A fit as a worker runs it: positives first, then negatives (R-CNN's order), as one CSR
    matrix. Returns :func:`_fit`'s result with the scores of the negatives only (the miner
    evicts by them without gathering the rows again)."""
    x = CompactRows.stack_csr([pos, neg], pos.dim)
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
    w, b, objective, converged, scores = _fit(x, y, c, positive_weight, bias_feature, seed, tol)
    return w, b, objective, converged, scores[len(pos):]


def _timed(func, *args, **kwargs):
    """``(func(*args, **kwargs), seconds it took)``: a fit's own time, wherever it runs."""
    import time

    t0 = time.perf_counter()
    return func(*args, **kwargs), time.perf_counter() - t0


def fit_bytes(pos: CompactRows, neg: CompactRows, solver: str = "liblinear") -> int:
    """Memory one fit takes (see :data:`FIT_BYTES_PER_NONZERO`, :data:`.dual_cd.BYTES_PER_NONZERO`)."""
    return _bytes_per_nonzero(solver) * (pos.nnz + neg.nnz + 2 * (len(pos) + len(neg)))


def _bytes_per_nonzero(solver: str) -> int:
    from .dual_cd import BYTES_PER_NONZERO

    return BYTES_PER_NONZERO if solver == "dcd" else FIT_BYTES_PER_NONZERO


@dataclass
class ClassState:
    """Mining state of one class: model, positives, the hard-negative cache (ids into the store)."""

    label: int
    w: np.ndarray
    b: float = -1.0
    positives: CompactRows | None = None
    neg_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # the last fit's dual variables (solver "dcd": the next fit starts from them), of the
    # positives and of each cached negative (aligned with neg_ids; 0 for one cached since)
    alpha_pos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    alpha_neg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    new_since_retrain: int = 0
    retrains: int = 0
    frozen: bool = False  # its fit collapsed: it keeps its model and mines no more
    log: list[dict] = field(default_factory=list)
    # every model a retrain gave it, as (retrain, w, b): the candidates that validation chooses
    # among (svm.select = "val"; the last one is the class's result otherwise)
    models: list[tuple[int, np.ndarray, float]] = field(default_factory=list)

    @property
    def n_positives(self) -> int:
        return 0 if self.positives is None else len(self.positives)


@dataclass
class MiningState:
    """What the miner knows after ``images_seen`` images: enough to go on exactly as if it had
    never stopped (a checkpoint, :mod:`.svm_checkpoint`).

    ``store`` holds every cached negative; ``row_ids`` lists them in a fixed order (ids of
    ``store``), ``row_image``/``row_key`` say which window each is (image ordinal, window key);
    ``caches[k]`` is class k's cache as positions in ``row_ids``, in cache order (the order the
    fits see). ``image_ids``: the images seen, in order (their position is their ordinal).
    """

    dim: int
    images_seen: int
    image_ids: list[str]
    peak_store_rows: int
    positives: list[CompactRows]
    weights: np.ndarray  # (K, D) float32
    bias: np.ndarray  # (K,) float64
    new_since_retrain: np.ndarray  # (K,) int64
    retrains: np.ndarray  # (K,) int64
    frozen: np.ndarray  # (K,) bool
    logs: list[list[dict]]
    store: SparseRows
    row_ids: np.ndarray
    row_image: np.ndarray
    row_key: np.ndarray
    caches: list[np.ndarray]
    alphas: list[np.ndarray]  # per class, the dual variables of its positives then of its cache
    models: list[list[tuple[int, np.ndarray, float]]] = field(default_factory=list)  # per class, see ClassState


class HardNegativeTrainer:
    """Trains one SVM per class: positives given up front, then a stream of images to mine.

    ``positives``: per class, the feature rows (dense (P, D) arrays or :class:`CompactRows`) of
    every ground-truth box of the class in the training set. A class without positives is not
    trained (w = 0, b = -1: it never fires) and caches nothing.

    Memory is bounded by design:

    - negatives live in one :class:`SparseRows` store shared by the classes (a window cached by
      several classes is stored once), 4 bytes per non-zero;
    - each class holds at most ``max_negatives`` negatives after a retrain (the easiest are
      evicted first, after the -1.2 rule), and at most ``retrain_every`` plus one image's windows
      more before its next retrain; so the store never holds more than
      ``K * (max_negatives + retrain_every + windows per image)`` rows;
    - fits run in ``workers`` processes, but only as many at once as fit in
      ``fit_memory_bytes`` (:func:`fit_bytes`); a class whose fit alone would not fit keeps only
      its hardest negatives for it (with a warning), and each class's rows are gathered only when
      its fit starts. The trainer's peak is the store, the positives and ``fit_memory_bytes``.

    ``solver``: ``"dcd"`` (warm-started, fits in threads) or ``"liblinear"`` (fits in processes);
    see the module's docstring.
    """

    def __init__(
        self,
        positives: list,
        dim: int,
        C: float = 0.001,
        positive_weight: float = 2.0,
        bias_feature: float = 10.0,
        negative_iou: float = 0.3,
        hard_threshold: float = -1.0001,
        evict_threshold: float = -1.2,
        retrain_every: int = 2000,
        max_negatives: int = 20000,
        fit_memory_bytes: int = 4 << 30,
        workers: int = 1,
        seed: int = 0,
        tol: float = 0.1,
        store_dir=None,
        solver: str = "dcd",
    ):
        if solver not in SOLVERS:
            raise ValueError(f"unknown SVM solver {solver!r} (choices: {', '.join(SOLVERS)})")
        self.solver = solver
        self.dim = dim
        self.states = [ClassState(label=c, w=np.zeros(dim, np.float32)) for c in range(len(positives))]
        for st, pos in zip(self.states, positives, strict=True):
            if pos is not None and len(pos):
                st.positives = pos if isinstance(pos, CompactRows) else CompactRows.from_dense(pos)
        self.trained = [st for st in self.states if st.n_positives]
        for st in self.states:
            if not st.n_positives:
                log.warning("class %d has no positive window: not trained (it never fires)", st.label)
        self.C, self.positive_weight, self.bias_feature = C, positive_weight, bias_feature
        self.negative_iou, self.hard_threshold, self.evict_threshold = negative_iou, hard_threshold, evict_threshold
        self.retrain_every, self.max_negatives = retrain_every, max_negatives
        self.fit_memory_bytes, self.workers, self.seed, self.tol = fit_memory_bytes, max(1, workers), seed, tol
        self.store = SparseRows(dim, store_dir)  # store_dir: the cached rows in a file there, paged by the system
        self._where: dict[tuple[int, int], int] = {}  # (image ordinal, window key) -> store id
        self._key_of: dict[int, tuple[int, int]] = {}  # store id -> (image ordinal, window key)
        self._members: list[set[int]] = [set() for _ in self.states]  # store ids each class caches
        self._image_ordinal: dict[str, int] = {}  # image id -> small int scoping its window keys
        self.images_seen = 0
        self.peak_store_rows = 0
        self._pool = None

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> MiningState:
        """The miner's state between two images (it shares this trainer's store: save it before
        the next image)."""
        ids = np.unique(np.concatenate([st.neg_ids for st in self.states] + [np.zeros(0, np.int64)]))
        where = np.array([self._key_of[int(i)] for i in ids.tolist()], np.int64).reshape(-1, 2)
        empty = CompactRows.concat([], self.dim)
        return MiningState(
            dim=self.dim, images_seen=self.images_seen,
            image_ids=sorted(self._image_ordinal, key=self._image_ordinal.__getitem__),
            peak_store_rows=self.peak_store_rows,
            positives=[empty if st.positives is None else st.positives for st in self.states],
            weights=np.stack([st.w for st in self.states]), bias=np.array([st.b for st in self.states], np.float64),
            new_since_retrain=np.array([st.new_since_retrain for st in self.states], np.int64),
            retrains=np.array([st.retrains for st in self.states], np.int64),
            frozen=np.array([st.frozen for st in self.states], bool), logs=[list(st.log) for st in self.states],
            store=self.store, row_ids=ids, row_image=where[:, 0], row_key=where[:, 1],
            caches=[np.searchsorted(ids, st.neg_ids) for st in self.states],
            alphas=[np.concatenate([st.alpha_pos, st.alpha_neg]) for st in self.states],
            models=[list(st.models) for st in self.states],
        )

    @classmethod
    def resume(cls, state: MiningState, **kwargs) -> HardNegativeTrainer:
        """A trainer that goes on from ``state`` (its store is adopted, not copied); ``kwargs``
        as the constructor's. Mining on from here gives the models an uninterrupted run would."""
        trainer = cls(state.positives, state.dim, **kwargs)
        if len(state.weights) != len(trainer.states):
            raise ValueError(f"the state has {len(state.weights)} classes, the positives {len(trainer.states)}")
        trainer.store = state.store
        for k, st in enumerate(trainer.states):
            st.w, st.b = state.weights[k].astype(np.float32), float(state.bias[k])
            st.neg_ids = state.row_ids[state.caches[k]]
            n_pos = len(state.alphas[k]) - len(st.neg_ids)
            st.alpha_pos, st.alpha_neg = state.alphas[k][:n_pos].copy(), state.alphas[k][n_pos:].copy()
            st.new_since_retrain, st.retrains = int(state.new_since_retrain[k]), int(state.retrains[k])
            st.frozen, st.log = bool(state.frozen[k]), list(state.logs[k])
            st.models = list(state.models[k]) if state.models else []
            trainer.store.retain(st.neg_ids)
            trainer._members[k] = set(st.neg_ids.tolist())
        for sid, o, key in zip(state.row_ids.tolist(), state.row_image.tolist(), state.row_key.tolist(), strict=True):
            trainer._where[(o, key)] = sid
            trainer._key_of[sid] = (o, key)
        # the rows arrive held once by whoever stored them; from here only their classes hold them
        trainer._drop(trainer.store.release(state.row_ids))
        trainer._image_ordinal = {image_id: i for i, image_id in enumerate(state.image_ids)}
        trainer.images_seen, trainer.peak_store_rows = state.images_seen, state.peak_store_rows
        return trainer

    # ------------------------------------------------------------------ mining
    def add_image(self, image: SvmImage) -> None:
        from ..core.boxes import iou_matrix

        ordinal = self._image_ordinal.setdefault(image.image_id, len(self._image_ordinal))
        first = self.images_seen == 0
        self.images_seen += 1
        if not self.trained:
            return
        # a window seen twice in an image (same conv5 rectangle and scale) counts once
        keys = np.asarray(image.keys, np.int64)
        _, once = np.unique(keys, return_index=True)
        candidate = np.zeros(len(keys), bool)
        candidate[once] = True
        candidate &= image.window_labels < 0  # ground-truth windows are positives, never negatives
        feats = image.features
        w = np.stack([st.w for st in self.trained], 1)
        scores = feats @ w + np.array([st.b for st in self.trained], np.float32)
        chosen: dict[int, np.ndarray] = {}
        for j, st in enumerate(self.trained):
            if st.frozen:
                continue
            gt_c = image.gt_boxes[image.gt_labels == st.label]
            max_iou = iou_matrix(image.boxes, gt_c).max(1) if len(gt_c) else np.zeros(len(feats))
            neg = candidate & (max_iou < self.negative_iou)
            if not first:
                neg &= scores[:, j] > self.hard_threshold
            chosen[st.label] = np.nonzero(neg)[0]
        self._cache(ordinal, image, chosen)
        due = [st for st in self.trained if not st.frozen
               and (first or st.new_since_retrain > self.retrain_every)]
        if due:
            self._retrain(due)

    def _cache(self, ordinal: int, image: SvmImage, chosen: dict[int, np.ndarray]) -> None:
        """Put the chosen windows into their classes' caches, storing each new window once."""
        keys = np.asarray(image.keys, np.int64)
        wanted = np.unique(np.concatenate(list(chosen.values()))) if chosen else np.zeros(0, np.int64)
        missing = [i for i in wanted.tolist() if (ordinal, int(keys[i])) not in self._where]
        if missing:
            ids = self.store.add(image.features[missing])  # held once here until the classes take them
            for i, sid in zip(missing, ids.tolist(), strict=True):
                self._where[(ordinal, int(keys[i]))] = sid
                self._key_of[sid] = (ordinal, int(keys[i]))
        else:
            ids = np.zeros(0, np.int64)
        for label, idx in chosen.items():
            st, members = self.states[label], self._members[label]
            sids = [self._where[(ordinal, int(keys[i]))] for i in idx.tolist()]
            fresh = np.array([s for s in sids if s not in members], np.int64)
            if not len(fresh):
                continue
            self.store.retain(fresh)
            members.update(fresh.tolist())
            st.neg_ids = np.concatenate([st.neg_ids, fresh])
            st.alpha_neg = np.concatenate([st.alpha_neg, np.zeros(len(fresh))])
            st.new_since_retrain += len(fresh)
        if len(ids):
            self._drop(self.store.release(ids))  # the hold taken above: rows no class took are gone
        self.peak_store_rows = max(self.peak_store_rows, self.store.live_rows)

    def _drop(self, gone: np.ndarray) -> None:
        for sid in gone.tolist():
            self._where.pop(self._key_of.pop(sid), None)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Final retrain of every class (but frozen ones); returns ``(W (K, D), b (K,))``."""
        self._retrain([st for st in self.trained if not st.frozen])
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        return np.stack([s.w for s in self.states]), np.array([s.b for s in self.states], np.float32)

    # ------------------------------------------------------------------ retraining
    def _fit_within_budget(self, st: ClassState) -> None:
        """Trim a class's cache to its hardest negatives when its fit would not fit in the budget.

        A fit copies its rows (:func:`fit_bytes`), so its memory follows its rows' non-zeros;
        keeping it within ``fit_memory_bytes`` keeps the whole trainer bounded.
        """
        cost = _bytes_per_nonzero(self.solver) * (self.store.row_nnz(st.neg_ids) + 2)  # per negative
        need = self._positives_bytes(st) + int(cost.sum())
        if not len(st.neg_ids) or need <= self.fit_memory_bytes:
            return
        room = self.fit_memory_bytes - self._positives_bytes(st)
        order = np.argsort(-self.store.scores(st.neg_ids, st.w, st.b), kind="stable")  # hardest first
        k = int(np.searchsorted(np.cumsum(cost[order]), room, side="right"))
        keep = np.zeros(len(st.neg_ids), bool)
        keep[order[:k]] = True
        log.warning("class %d: %d cached negatives would take %.1f GB in the fit, over svm.memory_mb (%d MB); "
                    "the %d hardest are kept for this fit", st.label, len(st.neg_ids),
                    need / 1e9, self.fit_memory_bytes >> 20, k)
        self._evict(st, keep)

    def _positives_bytes(self, st: ClassState) -> int:
        """A fit's memory for the class's positives (see :func:`fit_bytes`)."""
        return _bytes_per_nonzero(self.solver) * (st.positives.nnz + 2 * len(st.positives))

    def _evict(self, st: ClassState, keep: np.ndarray) -> None:
        evicted = st.neg_ids[~keep]
        st.neg_ids = st.neg_ids[keep]
        st.alpha_neg = st.alpha_neg[keep]
        self._members[st.label].difference_update(evicted.tolist())
        self._drop(self.store.release(evicted))

    def _retrain(self, states: list[ClassState]) -> None:
        for st in states:
            self._fit_within_budget(st)
        if self.workers == 1 or len(states) == 1:
            for st in states:
                self._apply(st, self._task(st)(), len(st.neg_ids))
            return
        from concurrent.futures import (
            FIRST_COMPLETED,
            ProcessPoolExecutor,
            ThreadPoolExecutor,
            wait,
        )

        if self._pool is None:
            if self.solver == "dcd":  # the compiled loop releases the GIL: threads share the rows
                self._pool = ThreadPoolExecutor(self.workers)
            else:
                import multiprocessing

                # not forked: a forked worker keeps the miner's memory of that moment (the store,
                # the positives: gigabytes at VOC size) as its own once the miner's copy changed
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))
        queue, running, in_flight = list(states), {}, 0
        while queue or running:
            # start fits while they fit in the memory budget (always at least one)
            while queue and len(running) < self.workers:
                st = queue[0]
                need = self._positives_bytes(st) + _bytes_per_nonzero(self.solver) * int(
                    (self.store.row_nnz(st.neg_ids) + 2).sum())
                if running and in_flight + need > self.fit_memory_bytes:
                    break
                queue.pop(0)
                task = self._task(st)
                fut = self._pool.submit(task.func, *task.args, **task.keywords)
                running[fut] = (st, need, len(st.neg_ids))
                in_flight += need
                del task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                st, need, n_neg = running.pop(fut)
                in_flight -= need
                self._apply(st, fut.result(), n_neg)

    def _task(self, st: ClassState):
        """The fit of ``st``'s positives and cache, as a call to run (here or in a worker) that
        returns the fit's result and its seconds."""
        from functools import partial

        neg = self.store.take(st.neg_ids)
        args = (st.positives, neg, self.C, self.positive_weight, self.bias_feature, self.seed, self.tol)
        if self.solver == "dcd":
            from . import dual_cd

            return partial(_timed, dual_cd.fit, *args, alpha_pos=st.alpha_pos, alpha_neg=st.alpha_neg,
                           max_iter=MAX_ITER)
        return partial(_timed, _fit_task, *args)

    def collapsed(self, st: ClassState, objective: float) -> bool:
        """Whether a fit is (all but) the trivial solution w = 0, b = -1.

        That solution scores every window -1 and costs ``C * positive_weight * 2`` per positive
        (their hinge at -1), whatever the negatives. When a class's features do not separate its
        positives from the hard negatives mining keeps finding, each retrain's optimum creeps up
        to that bound and then IS the trivial model: every window of the next image scores -1 >
        -1.0001 and counts as hard, the cache fills up and the class retrains after every image
        (seen on VOC: chair, fc7 of a 512-wide head, C = 0.001).
        """
        trivial = trivial_objective(self.C, self.positive_weight, st.n_positives)
        return st.n_positives > 0 and objective >= (1.0 - COLLAPSE_TOLERANCE) * trivial

    def _apply(self, st: ClassState, timed: tuple, n_neg: int) -> None:
        """Take a fit's model, then evict easy negatives (and the easiest beyond the cap).

        A fit that :meth:`collapsed` is not taken: the class keeps its previous model as its
        result and is frozen: it mines no more (more hard negatives only confirm the collapse, and
        each would make it retrain after every image) and its cache is dropped. A warning says so
        (a larger ``svm.C`` may separate such a class).
        """
        result, seconds = timed
        w, b, objective, converged, neg_scores = result[:5]
        collapsed = bool(self.collapsed(st, objective)) and st.retrains > 0
        if len(result) > 5 and not collapsed:  # the dual variables the next fit starts from
            st.alpha_pos, st.alpha_neg = result[5], result[6]
        if collapsed:
            log.warning("class %d retrain %d: the fit collapsed to the trivial solution (objective %.4f, every "
                        "window scored -1): the class keeps its previous model and mines no more; its features do "
                        "not separate its positives from its hard negatives at svm.C = %g (a larger C may)",
                        st.label, st.retrains + 1, objective, self.C)
            st.frozen = True
            self._evict(st, np.zeros(len(st.neg_ids), bool))
        else:
            st.w, st.b = w, b
            st.models.append((st.retrains + 1, w, float(b)))
        w, b = st.w, st.b
        st.retrains += 1
        if len(st.neg_ids):
            # the fit scored its negatives (the cache as it was submitted: nothing runs in between)
            s = self.store.scores(st.neg_ids, w, b) if collapsed else neg_scores
            keep = s >= self.evict_threshold  # easy negatives no longer shape the margin
            if keep.sum() > self.max_negatives:
                keep[np.argsort(-np.where(keep, s, -np.inf), kind="stable")[self.max_negatives:]] = False
            self._evict(st, keep)
        entry = {
            "retrain": st.retrains, "positives": st.n_positives, "negatives": n_neg,
            "kept_negatives": len(st.neg_ids), "objective": objective, "converged": converged,
            "collapsed": collapsed, "seconds": round(seconds, 3),
        }
        st.log.append(entry)
        log.info("class %d retrain %d: %d pos, %d neg cached (%d kept), objective %.4f",
                 st.label, st.retrains, entry["positives"], n_neg, entry["kept_negatives"], objective)
        if not converged:
            log.warning("class %d retrain %d: liblinear stopped at its %d-iteration cap before converging; "
                        "this SVM (and the negatives it mines) may be poor: a smaller svm.C converges faster (now %g)",
                        st.label, st.retrains, MAX_ITER, self.C)
        st.new_since_retrain = 0


def gather_positives(windows: Iterable[tuple[np.ndarray, np.ndarray]], n_classes: int, dim: int) -> list[CompactRows]:
    """Per class, the rows of its ground-truth windows, from ``(features (N, D), labels (N,))`` pairs.

    The positives pass (R-CNN's get_positive_pool5_features): every class's positives are known
    before mining starts, so no class mines with an untrained model.
    """
    parts: list[list[CompactRows]] = [[] for _ in range(n_classes)]
    for feats, labels in windows:
        for c in np.unique(labels):
            if c >= n_classes:
                raise ValueError(f"positive of class {c}, but there are only {n_classes} classes")
            if c >= 0:
                parts[int(c)].append(CompactRows.from_dense(feats[labels == c]))
    return [CompactRows.concat(p, dim) for p in parts]


def mine(trainer: HardNegativeTrainer, images: Iterable[SvmImage],
         after_image=None) -> tuple[np.ndarray, np.ndarray, list[list[dict]], dict]:
    """Mine over ``images`` with ``trainer`` (new, or resumed from a checkpoint), calling
    ``after_image(trainer)`` after each image, then the final retrain.

    Returns ``(W (K, D), b (K,), per-class retrain logs, memory summary)``.
    """
    for image in images:
        trainer.add_image(image)
        if after_image is not None:
            after_image(trainer)
    w, b = trainer.finish()
    summary = {"peak_cached_negatives": trainer.peak_store_rows, "store_mb": trainer.store.nbytes / 2**20}
    return w, b, [s.log for s in trainer.states], summary


def train_svms(positives: list, images: Iterable[SvmImage], dim: int, **kwargs) -> tuple[np.ndarray, np.ndarray, list[list[dict]], dict]:
    """Mine over ``images`` with every class's ``positives`` known up front (see :func:`mine`)."""
    return mine(HardNegativeTrainer(positives, dim, **kwargs), images)


