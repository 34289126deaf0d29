"""Novelty detection: does a new class hide among the samples a detector rejects? Recover it.

Post hoc, on a frozen network, without retraining. Given a batch of m test samples:

1. **Reject** at level ``alpha``: conformal p-values of the OOD detector's score, calibrated on
   held-out ID data (``calib``), p <= alpha.
2. **Count**: how many rejections can false alarms explain? Given the calibration set, each ID
   test sample is rejected independently with probability pi = 1 - F(c_(n-k+1)),
   k = floor(alpha (n + 1)), and pi ~ Beta(k, n - k + 1) over calibration sets (continuous
   scores; ties make it smaller). So the number V of false rejections among the ID samples N of
   the batch is Beta-binomial(|N|, k, n - k + 1) *marginally over the shared calibration set* —
   exact, not the Binomial(m, alpha) that would ignore the dependence the shared calibration set
   induces (the Beta-binomial is wider). Its upper (1 - level) quantile q(s) bounds V with
   probability >= 1 - level. Since |N| <= m - R + V, V lies in {j <= R : j <= q(m - R + j)};
   its maximum j* bounds the false rejections, and R - j* is a (1 - level) lower confidence
   bound on the true outliers among the R rejections, simultaneously for every cluster (a
   closed-testing argument with one local test, Goeman & Solari 2011).
3. **Embed** the rejected samples: cached tap features (multi-layer pooled or penultimate),
   optionally standardised on the ID ``fit`` split, L2-normalised per layer, PCA-reduced.
4. **Cluster** them: HDBSCAN (default), or a Gaussian mixture / k-means with the number of
   clusters chosen by BIC or silhouette. *Anchored*: a class-stratified sample of the held-out
   ID data is clustered with them, so the known classes form their own clusters and a single
   new class stands apart instead of being "the whole data" (HDBSCAN's failure mode with one
   group); a cluster that is not compact is re-clustered (``refine``).
5. **Decide per cluster**: the *candidates* are the clusters that are

   - *not known*: at most ``max_id_frac`` of its points are ID reference samples;
   - *large*: at least ``min_size`` rejected samples;
   - *compact*: median distance to its centroid no larger than a quantile (default: the max)
     of the ID classes' own dispersions, measured the same way in the same embedding on the
     held-out ID data;
   - *low-level typical* (``domain: same``, the default): at most ``max_frac`` of its members
     have a small conformal p-value of a first-layer statistic. A new class of the same domain
     shares the ID data's low-level statistics; sensor noise and other domains do not — and
     pooled features of i.i.d. noise concentrate (law of large numbers), so noise is as
     *compact* as a class and only this criterion tells them apart. ``domain: any`` counts
     another domain as a new class (the criterion is then evidence only).

6. **Certify**: ``certify: union`` (default) declares the candidates when together they hold
   more rejections than false alarms can explain, sum of sizes - j* >= ``min_certified`` — a
   class split into fragments is certified as a whole; ``any``: one candidate alone must,
   then the others count; ``each``: every declared candidate must (a simultaneous statement).
   "New class present" = at least one candidate declared; their number estimates the number
   of new classes.
7. **Assign** (``assign``): each rejected sample the clustering left out joins the nearest
   declared class when nearer to it than to every known class (the decision is unchanged).

Guarantee: with only ID data in the batch (and min_certified >= 1), a declaration needs a set
of rejections larger than j*; when R <= q(m), j* = R, so it needs R > q(m): P(false
declaration) <= P(R > q(m)) <= level, exactly (Beta-binomial), whatever the embedding, the
clustering and the rule (union, any, each). Outliers that are not a class (noise) are genuine
rejections: no counting argument can help, and the structural criteria carry the decision;
the ``control_noise`` scenario measures their false-alarm rate.

Modules: :mod:`~ood_bench.novelty.bound` (the count), :mod:`~ood_bench.novelty.embedding`,
:mod:`~ood_bench.novelty.clustering`, :mod:`~ood_bench.novelty.decision` (the method,
:class:`NoveltyDetector`) with :mod:`~ood_bench.novelty.result`,
:mod:`~ood_bench.novelty.simulation` (the certification's level and power by simulation); the
harness apart from the
method: :mod:`~ood_bench.novelty.sample`, :mod:`~ood_bench.novelty.scenarios` and
:mod:`~ood_bench.novelty.evaluation`.
"""

from ood_bench.novelty.bound import (
    excess_pvalue,
    false_rejection_bound,
    false_rejection_quantile,
    n_rejectable,
)
from ood_bench.novelty.clustering import CLUSTER_METHODS, SELECT, Clusterer, dispersion, kmeans_bic
from ood_bench.novelty.decision import NoveltyDetector
from ood_bench.novelty.embedding import NORMALISE, PCA_FIT, Embedding, resolve_layers, tap_layers
from ood_bench.novelty.evaluation import cluster_accuracy, clustering_scores, true_classes
from ood_bench.novelty.result import ClusterEvidence, NoveltyResult
from ood_bench.novelty.sample import ID, KIND_NAMES, NEW, NUISANCE, Sample
from ood_bench.novelty.scenarios import (
    Scenario,
    TrialResult,
    run_batch_trial,
    run_stream_trial,
    summarise,
)
from ood_bench.results import NOVELTY_METRICS

__all__ = [
    "CLUSTER_METHODS",
    "ID",
    "KIND_NAMES",
    "NEW",
    "NORMALISE",
    "NOVELTY_METRICS",
    "NUISANCE",
    "PCA_FIT",
    "SELECT",
    "ClusterEvidence",
    "Clusterer",
    "Embedding",
    "NoveltyDetector",
    "NoveltyResult",
    "Sample",
    "Scenario",
    "TrialResult",
    "cluster_accuracy",
    "clustering_scores",
    "dispersion",
    "excess_pvalue",
    "false_rejection_bound",
    "false_rejection_quantile",
    "kmeans_bic",
    "n_rejectable",
    "resolve_layers",
    "run_batch_trial",
    "run_stream_trial",
    "summarise",
    "tap_layers",
    "true_classes",
]
