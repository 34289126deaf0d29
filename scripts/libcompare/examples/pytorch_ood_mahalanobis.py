"""pytorch-ood: its Mahalanobis detector, as in the library's README."""

import torch
from pytorch_ood.detector import Mahalanobis


def score(model, fit_loader, calib_loader, loaders):  # noqa: ANN001, ANN201
    features = torch.nn.Sequential(*list(model.children())[:-1])  # images → penultimate
    detector = Mahalanobis(features)
    detector.fit(fit_loader)
    with torch.no_grad():
        return [torch.cat([detector(x) for x, _ in loader]).numpy() for loader in loaders]
