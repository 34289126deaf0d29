"""Statistics for comparing detectors: intervals per run, paired tests between two detectors,
rankings across benchmarks. Every function takes arrays of per-sample scores (higher = more
OOD) or tables of metrics; docs/statistics.md gives the formulas and references."""

from ood_bench.stats.intervals import (
    BOOTSTRAP_METRICS,
    AurocInterval,
    BootstrapInterval,
    auroc_ci,
    bootstrap_ci,
    bootstrap_distribution,
    delong,
    tpr_at_fpr,
)
from ood_bench.stats.paired import (
    PairedResult,
    compare_with_reference,
    delong_test,
    holm,
    paired_bootstrap,
)
from ood_bench.stats.ranking import (
    FriedmanResult,
    average_ranks,
    bayesian_signed_rank,
    cd_diagram,
    critical_difference,
    friedman,
    nemenyi_pvalues,
    nemenyi_q,
    rank_table,
)

__all__ = [
    "BOOTSTRAP_METRICS",
    "AurocInterval",
    "BootstrapInterval",
    "FriedmanResult",
    "PairedResult",
    "auroc_ci",
    "average_ranks",
    "bayesian_signed_rank",
    "bootstrap_ci",
    "bootstrap_distribution",
    "cd_diagram",
    "compare_with_reference",
    "critical_difference",
    "delong",
    "delong_test",
    "friedman",
    "holm",
    "nemenyi_pvalues",
    "nemenyi_q",
    "paired_bootstrap",
    "rank_table",
    "tpr_at_fpr",
]
