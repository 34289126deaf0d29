"""Adapter for OpenOOD's postprocessors (``detector=openood_<name>``), on CPU or GPU, offline.

OpenOOD (github.com/Jingkang50/OpenOOD) is not on PyPI and is optional: nothing here imports it
until a detector is bound or fitted, so the rest of the project works without it, and then the
error says how to install it (:data:`INSTALL_HINT`).

How a postprocessor runs here, as OpenOOD's own ``Evaluator`` runs it, minus its downloads:

1. Its default arguments are read from OpenOOD's ``configs/postprocessors/<name>.yml`` in the
   installed checkout (``config_root``; never downloaded), ``params`` overriding
   ``postprocessor_args``; the class count comes from the backbone's head.
2. The backbone is wrapped in :class:`~ood_bench.detectors.openood.net.OpenOODNet` (OpenOOD's
   network interface derived from the backbone's taps), and for ReAct/ASH/SCALE/AdaScale in
   the same OpenOOD network wrapper the Evaluator applies.
3. ``setup(net, id_loader_dict, ood_loader_dict)`` runs on the harness's own splits:
   ``train`` = the ``fit`` split, ``val`` = the held-out ``calib`` split, ``test`` = ``calib``
   too (only ResidualPostprocessor reads it, for a statistic it never uses: the ID test split
   stays unseen). ``ood_loader_dict['val']`` is the OOD validation set only with ``aps=true``.
4. Scores come from ``postprocess(net, batch)`` on batches of the set's own images, negated:
   OpenOOD's ``conf`` is higher for ID, the harness's scores are higher for OOD.

Every workaround for OpenOOD's assumptions is applied from this package, without editing its
files; each is named ``WORKAROUND`` in a comment that says why.

Modules: :mod:`.loader` (importing OpenOOD offline, stubs), :mod:`.catalogue` (status of every
postprocessor and its special cases), :mod:`.configs` (its YAML configs), :mod:`.device` (CUDA
calls onto the configured device), :mod:`.net` (:class:`OpenOODNet`), :mod:`.adapter`
(:class:`OpenOODDetector`).
"""

from ood_bench.detectors.openood.adapter import OpenOODDetector
from ood_bench.detectors.openood.catalogue import (
    CONFIG_FILES,
    INIT_BY_SET_HYPERPARAM,
    NET_WRAPPERS,
    NOTES,
    SCALED_DEFAULTS,
    THREE_CHANNELS,
    UNSUPPORTED,
    status,
)
from ood_bench.detectors.openood.configs import find_config_root, read_config
from ood_bench.detectors.openood.device import openood_context
from ood_bench.detectors.openood.loader import (
    IMPORT_ONLY_STUBS,
    INSTALL_HINT,
    OPENOOD_COMMIT,
    RUNTIME_REQUIREMENTS,
    OpenOODMissing,
    load_openood,
    registered_postprocessors,
)
from ood_bench.detectors.openood.net import OpenOODNet

__all__ = [
    "CONFIG_FILES",
    "IMPORT_ONLY_STUBS",
    "INIT_BY_SET_HYPERPARAM",
    "INSTALL_HINT",
    "NET_WRAPPERS",
    "NOTES",
    "OPENOOD_COMMIT",
    "RUNTIME_REQUIREMENTS",
    "SCALED_DEFAULTS",
    "THREE_CHANNELS",
    "UNSUPPORTED",
    "OpenOODDetector",
    "OpenOODMissing",
    "OpenOODNet",
    "find_config_root",
    "load_openood",
    "openood_context",
    "read_config",
    "registered_postprocessors",
    "status",
]
