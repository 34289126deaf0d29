"""The minimal example of each library: Mahalanobis on a given model and data loaders.

Each module defines ``score(model, fit_loader, calib_loader, loaders) -> list[np.ndarray]``
(scores of every loader's samples, higher = more OOD) written as a user of that library would
write it, with every workaround it needs here; :mod:`.run` runs one in a fresh interpreter and
the comparison counts its lines and calls. ``model`` is a plain ``nn.Module`` classifier whose
children run in sequence, the last one being the linear head; the loaders yield ``(x, y)``.
"""
