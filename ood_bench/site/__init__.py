"""The results site: a static, offline HTML report generated from the tidy CSVs under results/.

``data`` reads the results folder into numeric frames (reusing :mod:`ood_bench.report`),
``sources`` names the file and command behind every number, ``tables`` turns frames into
sortable, filterable HTML tables, ``figures`` renders SVG plots and copies committed PNGs, and
``build`` renders the Jinja2 templates into the output folder, byte for byte reproducibly.
"""

from ood_bench.site.build import build_site

__all__ = ["build_site"]
