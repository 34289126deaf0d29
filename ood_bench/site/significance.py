"""Which detectors are statistically tied with the best, and the AUROC intervals of the
leaderboards, from the per-sample scores kept by every job (``scores/<csv stem>/<run_id>.npz``).

The statistic is exactly the leaderboard's: per seed, the mean AUROC over the OOD sets of a group
(near, far, all), then the mean over seeds. Its DeLong variance is exact for that mean: per seed,
the mean over K sets of AUROCs that share the ID test samples is one generalised U-statistic
whose placement values are, for an OOD sample of set k, its placement / K, and for an ID sample
the mean of its K placements, so

  Var = Σ_k var(V_ood,k) / (K² m_k) + var(mean_k V_id,k) / n        (one seed)
  Var(mean over S seeds) = Σ_s Var_s / S²                           (seeds independent)

and the paired test between two detectors uses the differences of their placement values on the
same samples (DeLong et al. 1988; :mod:`ood_bench.stats.intervals` computes the placements).
The reference is the leaderboard's best among the detectors run on the benchmark's full number
of seeds; every other detector is compared with it on the seeds both have, two-sided, and
Holm's correction is applied over all of them (per benchmark, backbone and OOD group). A
detector is *tied* with the best (not significantly worse) when its Holm-adjusted p-value
exceeds :data:`ALPHA_TIE` or its AUROC is above the reference's.
The interval and the test hold the trained backbones and data splits fixed: they measure the
sampling noise of the evaluation sets, not the spread between training runs (the ± std of the
leaderboard shows that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from ood_bench import report
from ood_bench.errors import DataError
from ood_bench.scores import JobScores, load
from ood_bench.stats import holm
from ood_bench.stats.intervals import placements, wald_interval
from ood_bench.verify import scores_dir_for

log = logging.getLogger(__name__)

KEYS = ["benchmark", "backbone", "detector"]
ALPHA_TIE = 0.05  # the level of the Holm-corrected test against the best
LEVEL = 0.95  # the AUROC interval's confidence level
COLUMNS = ["auroc", "se", "low", "high", "scored_seeds", "diff", "p", "p_holm", "best", "tied"]


@dataclass
class GroupPlacements:
    """One detector's placement values on one seed for one OOD group: the ID samples' mean
    placement over the group's sets, and each set's OOD placements already divided by K."""

    v_id: np.ndarray
    v_ood: list[np.ndarray]
    key: tuple  # the samples: ID index and each set's (name, index), to check pairing

    @property
    def auroc(self) -> float:
        return float(sum(v.sum() for v in self.v_ood))

    def var(self, other: GroupPlacements | None = None) -> float:
        """DeLong's variance of this AUROC, or of its difference with ``other``'s."""
        d_id = self.v_id - (other.v_id if other else 0.0)
        d_ood = [
            a - (b if other else 0.0)
            for a, b in zip(self.v_ood, other.v_ood if other else self.v_ood, strict=True)
        ]
        out = np.var(d_id, ddof=1) / len(d_id)
        return float(out + sum(np.var(v, ddof=1) * len(v) for v in d_ood))


def group_sets(js: JobScores, group: str) -> list[str]:
    """The OOD sets of ``group`` (``all``: every set) in a job's scores, sorted."""
    return sorted(n for n, s in js.ood_sets.items() if group == "all" or s.group == group)


def group_placements(js: JobScores, group: str) -> GroupPlacements | None:
    """The placement values of the group's sets (None when the job has none of the group)."""
    names = group_sets(js, group)
    if not names:
        return None
    ids = js.id_set
    k = len(names)
    v_id = np.zeros(len(ids.score))
    v_ood = []
    for name in names:
        s = js.ood_sets[name]
        vi, vo = placements(ids.score, s.score)
        v_id += vi / k
        # var(v/K)·m = var(v)·m/K²; stored so that var(x)*len(x) gives var(v)/(K² m)
        v_ood.append(vo / (k * len(vo)))
    key = (ids.index.tobytes(), tuple((n, js.ood_sets[n].index.tobytes()) for n in names))
    return GroupPlacements(v_id, v_ood, key)


def score_paths(res_root: Path, df: pd.DataFrame) -> pd.DataFrame:
    """The clean, successful jobs that have a scores file: benchmark, backbone, detector, seed,
    path (one job per seed: the newest run wins as in the CSVs)."""
    d = report.ok_rows(df)
    d = d[d["corruption"] == "none"].drop_duplicates("run_id")
    rows = []
    for _, r in d.iterrows():
        p = scores_dir_for(res_root / r["source"]) / f"{r['run_id']}.npz"
        if p.is_file():
            rows.append({**{k: r[k] for k in KEYS}, "seed": int(r["seed"]), "path": p})
    cols = [*KEYS, "seed", "path"]
    return pd.DataFrame(rows, columns=cols).drop_duplicates(cols[:4], keep="last")


def _load(path: Path) -> JobScores | None:
    try:
        return load(path)
    except DataError as e:
        log.warning("scores skipped: %s", e)
        return None


def significance(
    res_root: Path,
    df: pd.DataFrame,
    lb: pd.DataFrame,
    groups: tuple[str, ...] = ("near", "far", "all"),
) -> pd.DataFrame:
    """Per (benchmark, backbone, detector, group) with stored scores: the AUROC from the scores,
    its DeLong standard error and :data:`LEVEL` interval (logit), the seeds scored, and against
    the reference (the best of the leaderboard ``lb`` among full-seed detectors): the difference,
    p-value, Holm-adjusted p-value, ``best`` and ``tied``. Empty without scores."""
    paths = score_paths(res_root, df)
    index = pd.MultiIndex.from_tuples([], names=[*KEYS, "group"])
    if paths.empty:
        return pd.DataFrame(columns=COLUMNS, index=index)
    out = []
    for (bench, bb), jobs in paths.groupby(["benchmark", "backbone"]):
        if (bench, bb) not in lb.droplevel("detector").index:
            continue
        board = lb.xs((bench, bb), level=["benchmark", "backbone"])
        full = board["seeds"].max()
        refs = {}
        for g in groups:
            col = f"auroc_{g}"
            ranked = board[(board["seeds"] == full) & board[col].notna()]
            ranked = ranked[ranked.index.isin(jobs["detector"])]
            if len(ranked):
                refs[g] = ranked[col].idxmax()
        out.append(_benchmark(bench, bb, jobs, refs))
    if not out:
        return pd.DataFrame(columns=COLUMNS, index=index)
    return pd.concat(out).sort_index()


def _benchmark(bench: str, bb: str, jobs: pd.DataFrame, refs: dict[str, str]) -> pd.DataFrame:
    """:func:`significance` for one benchmark and backbone."""
    per: dict[tuple[str, str], list[tuple[float, float, float | None, float | None]]] = {}
    for seed, sj in jobs.groupby("seed"):
        ref_pl: dict[str, GroupPlacements | None] = {}
        for g, ref in refs.items():
            path = sj.loc[sj["detector"] == ref, "path"]
            js = _load(path.iloc[0]) if len(path) else None
            ref_pl[g] = group_placements(js, g) if js else None
        for _, r in sj.iterrows():
            js = _load(r["path"])
            if js is None:
                continue
            for g in refs:
                pl = group_placements(js, g)
                if pl is None:
                    continue
                rp = ref_pl[g]
                diff = dvar = None
                if rp is not None and rp.key == pl.key:
                    diff, dvar = pl.auroc - rp.auroc, pl.var(rp)
                elif rp is not None:
                    log.warning(
                        "%s seed %s: %s and %s were not scored on the same samples: not compared",
                        bench,
                        seed,
                        r["detector"],
                        refs[g],
                    )
                per.setdefault((r["detector"], g), []).append((pl.auroc, pl.var(), diff, dvar))
    rows = []
    for (det, g), vals in per.items():
        a = np.array([v[0] for v in vals])
        var = np.array([v[1] for v in vals])
        auroc, se = a.mean(), np.sqrt(var.sum()) / len(a)
        low, high = wald_interval(np.array(auroc), np.array(se), LEVEL, "logit")
        paired = [(d, v) for _, _, d, v in vals if d is not None]
        diff = p = np.nan
        if paired and det != refs[g]:
            diff = float(np.mean([d for d, _ in paired]))
            dse = np.sqrt(sum(v for _, v in paired)) / len(paired)
            p = 1.0 if dse == 0 and diff == 0 else 0.0 if dse == 0 else 2 * norm.sf(abs(diff) / dse)
        rows.append(
            {
                "benchmark": bench,
                "backbone": bb,
                "detector": det,
                "group": g,
                "auroc": auroc,
                "se": se,
                "low": float(low),
                "high": float(high),
                "scored_seeds": len(a),
                "diff": diff,
                "p": p,
                "best": det == refs[g],
            }
        )
    d = pd.DataFrame(rows)
    d["p_holm"] = np.nan
    for _, idx in d.groupby("group").groups.items():
        sub = d.loc[idx]
        tested = sub["p"].notna()
        if tested.any():
            d.loc[sub.index[tested], "p_holm"] = holm(sub.loc[tested, "p"].to_numpy())
    # not significantly worse than the best: tied, or better (a detector of fewer seeds can be)
    d["tied"] = d["best"] | (d["p_holm"] > ALPHA_TIE) | (d["diff"] > 0)
    return d.set_index([*KEYS, "group"])[COLUMNS]
