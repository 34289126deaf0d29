"""Clustering of the embedded rejections: HDBSCAN, or a GMM / k-means with k chosen by BIC or
silhouette; and the dispersion that defines a compact cluster."""

from __future__ import annotations

import numpy as np

from ood_bench.errors import ConfigError

CLUSTER_METHODS = ("hdbscan", "gmm", "kmeans")
SELECT = ("bic", "silhouette")


class Clusterer:
    """HDBSCAN, or a Gaussian mixture / k-means whose number of clusters maximises a criterion
    (BIC: lowest; silhouette: highest, k >= 2) over 1..``k_max``. Labels: -1 = unclustered."""

    def __init__(
        self,
        method: str = "hdbscan",
        min_cluster_size: int = 10,
        min_samples: int | None = 3,
        cluster_selection_method: str = "eom",
        allow_single_cluster: bool = False,
        select: str = "bic",
        k_max: int = 10,
        covariance_type: str = "diag",
        n_init: int = 2,
        seed: int = 0,
    ):
        """Validate ``method`` and ``select`` and store the settings."""
        if method not in CLUSTER_METHODS:
            raise ConfigError(f"clustering.method={method!r} is not one of {CLUSTER_METHODS}")
        if select not in SELECT:
            raise ConfigError(f"clustering.select={select!r} is not one of {SELECT}")
        self.method, self.min_cluster_size, self.min_samples = method, min_cluster_size, min_samples
        self.cluster_selection_method = cluster_selection_method
        self.allow_single_cluster = bool(allow_single_cluster)
        self.select, self.k_max, self.covariance_type = select, int(k_max), covariance_type
        self.n_init, self.seed = int(n_init), int(seed)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Cluster labels of the rows of ``z`` (-1: unclustered; all -1 when too few points)."""
        n = len(z)
        if n < max(2, self.min_cluster_size):
            return np.full(n, -1, dtype=np.int64)
        if self.method == "hdbscan":
            from sklearn.cluster import HDBSCAN

            return (
                HDBSCAN(
                    min_cluster_size=self.min_cluster_size,
                    min_samples=self.min_samples,
                    cluster_selection_method=self.cluster_selection_method,
                    allow_single_cluster=self.allow_single_cluster,
                    copy=True,
                )
                .fit_predict(z)
                .astype(np.int64)
            )
        return self._select_k(z)

    def _fit_k(self, z: np.ndarray, k: int) -> tuple[np.ndarray, float]:
        """Labels for k clusters and their BIC."""
        if self.method == "gmm":
            from sklearn.mixture import GaussianMixture

            gm = GaussianMixture(
                k,
                covariance_type=self.covariance_type,
                n_init=self.n_init,
                random_state=self.seed,
                reg_covar=1e-4,
            ).fit(z)
            return gm.predict(z), float(gm.bic(z))
        from sklearn.cluster import KMeans

        km = KMeans(k, n_init=self.n_init, random_state=self.seed).fit(z)
        return km.labels_, kmeans_bic(z, km.labels_, km.cluster_centers_)

    def _select_k(self, z: np.ndarray) -> np.ndarray:
        """Labels of the GMM / k-means fit with the best BIC or silhouette."""
        from sklearn.metrics import silhouette_score

        n = len(z)
        k_hi = max(1, min(self.k_max, n // max(2, self.min_cluster_size)))
        best_lab, best = np.zeros(n, dtype=np.int64), -np.inf
        for k in range(1 if self.select == "bic" else 2, k_hi + 1):
            lab, bic = self._fit_k(z, k)
            if self.select == "bic":
                crit = -bic
            else:
                crit = silhouette_score(z, lab) if len(np.unique(lab)) > 1 else -np.inf
            if crit > best:
                best, best_lab = crit, lab
        return np.asarray(best_lab, dtype=np.int64)


def kmeans_bic(z: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    """BIC of a k-means partition read as a spherical Gaussian mixture with one shared variance
    (Pelleg & Moore 2000, X-means); lower is better."""
    n, d = z.shape
    k = len(centers)
    sse = float(((z - centers[labels]) ** 2).sum())
    var = max(sse / max(n - k, 1) / d, 1e-12)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    nz = sizes[sizes > 0]
    loglik = float((nz * np.log(nz / n)).sum()) - 0.5 * n * d * np.log(2 * np.pi * var)
    loglik -= 0.5 * (n - k) * d  # the SSE term: sse / (2 var) with var = sse / ((n - k) d)
    n_params = k * d + 1 + (k - 1)
    return -2.0 * loglik + n_params * np.log(n)


def dispersion(z: np.ndarray) -> float:
    """Median distance of the points to their mean: a class's spread, robust to a few strays."""
    return float(np.median(np.linalg.norm(z - z.mean(0), axis=1)))
