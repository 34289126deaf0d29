"""Generated blocks on novelty detection: the per-scenario table, CIFAR-10's near-OOD pick and
the certification's simulation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ood_bench import report
from ood_bench.docsync.common import _md, _raw, pct
from ood_bench.results import read_results

# the scenarios each novelty option is quoted for: the default everywhere, another domain
# counted as new (any_domain) on the cross-domain batches and the controls, the former
# per-cluster certification on the new-class scenarios
NOVELTY_QUOTED = {
    "hdbscan": None,
    "hdbscan_any_domain": ("cross_domain", "control_noise", "control_photos"),
    "hdbscan_per_cluster": ("digits_open", "mnist_split", "cifar10_split"),
    "near_ood": None,
}
NOVELTY_COLUMNS = [
    "decision acc (%)",
    "false alarms",
    "new classes: est / true",
    "ACC (%)",
    "NMI (%)",
    "ARI (%)",
]


def novelty(results: Path) -> str:
    """The committed novelty runs (results/novelty/*.csv): one row per benchmark, method and
    scenario, means ± std over seeds (the table of novelty.md)."""
    from ood_bench.novelty.report import novelty_table

    df = read_results(*sorted((results / "novelty").glob("*.csv")))
    table = novelty_table(df).reset_index()
    if table.empty:
        return "(no novelty results committed)"
    who = table["benchmark / backbone / detector"].str.split(" / ", expand=True)
    table["benchmark / backbone"] = who[0] + " / " + who[1]
    table["method"] = who[2].str.partition("+")[2]
    keep = table.apply(
        lambda r: (
            r["method"] in NOVELTY_QUOTED
            and (
                NOVELTY_QUOTED[r["method"]] is None or r["scenario"] in NOVELTY_QUOTED[r["method"]]
            )
        ),
        axis=1,
    )
    t = table[keep].copy()
    t["method"] = pd.Categorical(t["method"], list(NOVELTY_QUOTED))
    t = t.sort_values(["benchmark / backbone", "method"], kind="stable")
    cols = ["benchmark / backbone", "method", "scenario", "seeds", "trials"]
    cols += [c for c in NOVELTY_COLUMNS if c in t]
    dets = sorted({d.partition("+")[0] for d in who[2]})
    return (
        f"Detector {', '.join(f'`{d}`' for d in dets)}; mean ± std over seeds of the rates over "
        "each seed's trials (`make novelty`; rows in `results/novelty/<benchmark>.csv`, every "
        "scenario and metric in `results/novelty/novelty.md`). `false alarms`: declarations "
        "in batches without a new class, out of all trials, with the exact 95 % upper bound "
        "(Clopper-Pearson); `cross_domain` is a control under `hdbscan` (domain: same) and a "
        "new-class scenario under `hdbscan_any_domain`. ACC / NMI / ARI: the recovered "
        "clusters on the rejected new-class samples.\n\n" + _md(t[cols].fillna("–"))
    )


def cifar_split_near(results: Path) -> str:
    """AUROC on the unseen CIFAR-10 classes per detector (results/raw/cifar10_split.csv): the
    figure that picks the near_ood option's detector."""
    d = report.ok_rows(_raw(results, "cifar10_split"))
    d = d[(d["metric"] == "auroc") & (d["ood_dataset"] == "cifar_6_9")]
    g = d.groupby("detector")["value"].agg(["mean", "std", "count"]).sort_values("mean")[::-1]
    cells = [f"`{k}` {pct(r['mean'])} ± {pct(r['std'])}" for k, r in g.iterrows()]
    return (
        f"AUROC (%) on the unseen classes `cifar_6_9`, mean ± std over {int(g['count'].max())} "
        f"seeds (`results/raw/cifar10_split.csv`): {', '.join(cells)}."
    )


def novelty_certification(results: Path) -> str:
    """The certification's null simulation and its power on a fragmented class
    (results/novelty/certification/certification.csv)."""
    c = pd.read_csv(results / "novelty" / "certification" / "certification.csv")
    rows = []
    for _, r in c.iterrows():
        rows.append(
            {
                "certify": f"`{r['certify']}`" + (" (default)" if r["certify"] == "union" else ""),
                "n_calib / m": f"{r['n_calib']} / {r['m']}",
                "realised level (%)": f"{pct(r['realised_level'], 2)} "
                f"[{pct(r['level_ci_low'], 2)}, {pct(r['level_ci_high'], 2)}]",
                "declared: fragmented class (%)": pct(r["power_fragmented"], 1),
            }
        )
    r0 = c.iloc[0]
    return (
        f"`ood-bench certification` ({int(r0['reps'])} simulated batches per row, "
        f"alpha = {r0['alpha']:g}, level = {r0['level']:g}; "
        "`results/novelty/certification/certification.csv`): the realised level is the "
        "share of ID-only batches declared when every rejection is put in some candidate "
        "cluster, split at random (exact 95 % interval); the last column, the share of batches "
        "declared when a new class of n_new rejected samples is split into fragments one "
        "smaller than j*.\n\n" + _md(pd.DataFrame(rows))
    )
