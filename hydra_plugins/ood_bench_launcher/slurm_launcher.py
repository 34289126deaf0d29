"""The class ``conf/hydra/launcher/slurm.yaml`` names: :class:`ood_bench.slurm.SlurmLauncher`
under the ``hydra_plugins`` package, where Hydra requires a launcher to be defined."""

from __future__ import annotations

try:
    from ood_bench.slurm import SlurmLauncher
except ImportError:  # hydra-submitit-launcher is not installed: no SLURM launcher, Hydra runs on
    SlurmLauncher = None  # type: ignore[assignment,misc]

if SlurmLauncher is not None:

    class OodBenchSlurmLauncher(SlurmLauncher):
        """``hydra/launcher=slurm``: see :mod:`ood_bench.slurm`."""
