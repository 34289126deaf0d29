"""OpenOOD: its MDS postprocessor (Mahalanobis) without its Evaluator, which only runs on
OpenOOD's own downloaded benchmarks. On a CPU machine with numpy 2, as here."""

import sys
import types

import torch


def score(model, fit_loader, calib_loader, loaders):  # noqa: ANN001, ANN201
    # openood.postprocessors imports every method, and through them training-only packages
    # (diffdist: not installed; imgaug: breaks on numpy 2): serve empty modules for them
    for name in ("diffdist", "diffdist.functional", "imgaug", "imgaug.augmenters"):
        sys.modules.setdefault(name, types.ModuleType(name))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # it calls .cuda() on every batch
    from openood.postprocessors import MDSPostprocessor
    from openood.utils import Config

    class Net(torch.nn.Module):  # it calls net(x, return_feature=True)
        def __init__(self, model):  # noqa: ANN001
            super().__init__()
            self.body = torch.nn.Sequential(*list(model.children())[:-1])
            self.head = list(model.children())[-1]

        def forward(self, x, return_feature=False):  # noqa: ANN001, ANN202
            feature = self.body(x)
            logits = self.head(feature)
            return (logits, feature) if return_feature else logits

    def batches(loader):  # noqa: ANN001, ANN202 - its loaders yield {"data", "label"} dicts
        return [{"data": x, "label": y} for x, y in loader]

    net = Net(model).eval()
    # the class count is looked up by dataset name: cifar10 has the 10 classes needed here
    config = Config({"dataset": {"name": "cifar10"}, "postprocessor": {"postprocessor_args": {}}})
    postprocessor = MDSPostprocessor(config)
    postprocessor.setup(net, {"train": batches(fit_loader)}, {})
    # its confidence is higher for ID: negate it
    return [-postprocessor.inference(net, batches(x), progress=False)[1] for x in loaders]
