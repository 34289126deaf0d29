"""ood-bench: any detector option by name on the features of one forward pass per set."""

from ood_bench.api import detector, extract


def score(model, fit_loader, calib_loader, loaders):  # noqa: ANN001, ANN201
    det = detector("pood_mahalanobis")  # or "stat_masf", "openood_mds", ... (conf/detector/)
    det.fit(extract(model, fit_loader), calib=extract(model, calib_loader))
    return [det.score(extract(model, loader)) for loader in loaders]
