"""The novelty report's files: novelty.md (the summary table with its legend) and a 2-D
projection figure per (benchmark, detector, scenario) of one saved trial
(``ood-bench novelty-report``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ood_bench.atomic import atomic_write  # noqa: E402
from ood_bench.novelty.report import novelty_table  # noqa: E402

SAMPLES = "novelty_samples.csv.gz"


def markdown(df: pd.DataFrame) -> str:
    """The novelty report in Markdown: a heading, the legend and the table."""
    table = novelty_table(df)
    parts = ["# Novelty detection: new classes among the rejected samples", ""]
    if table.empty:
        return "\n".join(parts + ["(no novelty rows in these results)", ""])
    parts += [
        "Means ± std over seeds of per-job rates over repeated trials. `false alarms`: trials "
        "declaring a new class in a control (or, for the stream, alarms before the change) out "
        "of all trials, with the exact 95 % upper confidence bound (Clopper-Pearson). "
        "`bound coverage`: trials in which the lower confidence bound on the true outliers "
        "among the rejections held.",
        "",
        table.reset_index().to_markdown(index=False),
        "",
    ]
    return "\n".join(parts)


# figures ------------------------------------------------------------------------------------
def save_fig(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    """Write ``fig`` atomically as PNG and PDF (no creation date), close it; return the paths."""
    paths = []
    for ext in ("png", "pdf"):
        meta = {"CreationDate": None} if ext == "pdf" else {}
        paths.append(
            atomic_write(
                out / f"{name}.{ext}",
                lambda p, e=ext, m=meta: fig.savefig(
                    p, format=e, dpi=150, bbox_inches="tight", metadata=m
                ),
            )
        )
    plt.close(fig)
    return paths


def project_2d(x: np.ndarray, fit_on: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D coordinates: a PCA fitted on the rows ``fit_on`` (the rejected samples), or t-SNE."""
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(5, (len(x) - 1) // 3)))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit(x[fit_on]).transform(x)


def cluster_colours(clusters: np.ndarray, truth: np.ndarray, classes: list) -> dict[int, int]:
    """Colour index per found cluster: the colour of the true class it is matched to
    (Hungarian on the contingency table), other clusters get colours after the classes'."""
    from scipy.optimize import linear_sum_assignment

    found = sorted(set(clusters[clusters >= 0].tolist()))
    out: dict[int, int] = {}
    if found and classes:
        cont = np.array([[np.sum((clusters == k) & (truth == c)) for c in classes] for k in found])
        for r, c in zip(*linear_sum_assignment(-cont), strict=True):
            if cont[r, c] > 0:
                out[found[r]] = c
    spare = iter(range(len(classes), 10_000))
    return {k: out[k] if k in out else next(spare) for k in found}


def projection_figure(d: pd.DataFrame, title: str, method: str = "pca") -> plt.Figure:
    """Rejected samples of one trial in 2-D: by found cluster and by true class."""
    d = d.dropna(axis=1, how="all")
    ecols = [c for c in d.columns if c.startswith("e") and c[1:].isdigit()]
    ref = (d["kind"] == "id_reference").to_numpy()
    rej = ~ref
    xy = project_2d(d[ecols].to_numpy(dtype=float), rej, method)
    xr = xy[rej]
    kinds = d.loc[rej, "kind"].to_numpy()
    truth = np.where(kinds == "new", d.loc[rej, "true_class"].to_numpy(), -1)
    clusters = d.loc[rej, "cluster"].to_numpy()
    is_new = d.loc[rej, "cluster_is_new"].astype(str).str.lower().eq("true").to_numpy()
    classes = sorted(set(truth[kinds == "new"].tolist()))
    colours = cluster_colours(clusters, truth, classes)
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    for ax in axes:
        ax.scatter(xy[ref, 0], xy[ref, 1], s=6, c="0.85", label="ID reference", zorder=1)
    ax = axes[0]  # found clusters
    none = clusters < 0
    ax.scatter(xr[none, 0], xr[none, 1], s=10, marker="x", c="0.5", label="unclustered", zorder=2)
    for k, colour in colours.items():
        m = clusters == k
        new = bool(is_new[m].any())
        ax.scatter(
            xr[m, 0],
            xr[m, 1],
            s=14,
            color=cmap(colour % 10),
            marker="o" if new else "^",
            label=f"cluster {k}" + (" (new class)" if new else " (not a class)"),
            zorder=3,
        )
    ax.set_title("found clusters (● declared new class, ▲ not)")
    ax = axes[1]  # truth
    m = kinds == "id"
    ax.scatter(xr[m, 0], xr[m, 1], s=14, c="k", marker="s", label="ID (false alarm)", zorder=3)
    m = kinds == "nuisance"
    ax.scatter(xr[m, 0], xr[m, 1], s=14, c="tab:gray", marker="D", label="nuisance", zorder=3)
    for i, c in enumerate(classes):
        m = (kinds == "new") & (truth == c)
        label = f"new class {c}" if c < 1000 else f"new set {c - 1000}"
        ax.scatter(xr[m, 0], xr[m, 1], s=14, color=cmap(i % 10), label=label, zorder=3)
    ax.set_title("true class")
    for ax in axes:
        ax.legend(fontsize=7, loc="best", markerscale=1.2)
        ax.set_xlabel(f"{method.upper()} 1")
    axes[0].set_ylabel(f"{method.upper()} 2")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def sample_files(paths: list[Path]) -> list[Path]:
    """The ``novelty_samples.csv.gz`` files given or found under the folders."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob(SAMPLES))
        elif p.name.endswith(SAMPLES):
            files.append(p)
    return files


def figures(
    files: list[Path], out: Path, method: str, novelty_methods: list[str] | None = None
) -> list[Path]:
    """One figure per (benchmark, detector, batch scenario): its first saved trial, first seed;
    only for the novelty methods listed (``detector`` = ``<detector>+<method>``; None: all)."""
    if not files:
        return []
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if novelty_methods:
        df = df[df["detector"].str.partition("+")[2].isin(novelty_methods)]
    written = []
    for (bench, det, scen), g in df.groupby(["benchmark", "detector", "scenario"]):
        first = g.sort_values(["seed", "run_id", "trial"]).iloc[0]
        one = g[(g["run_id"] == first["run_id"]) & (g["trial"] == first["trial"])]
        if (one["kind"] != "id_reference").sum() < 3:
            continue
        fig = projection_figure(
            one, f"{bench} / {det} / {scen} (seed {first['seed']}, trial {first['trial']})", method
        )
        written += save_fig(fig, out, f"novelty_{bench}_{det}_{scen}".replace("+", "_"))
    return written
