"""ood-bench's Hydra launcher plugin (Hydra loads launchers from the ``hydra_plugins`` namespace
package only): ``hydra/launcher=slurm`` (``conf/hydra/launcher/slurm.yaml``)."""
