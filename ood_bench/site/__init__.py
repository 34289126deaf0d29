"""The results site: a static, offline HTML report generated from the tidy CSVs under results/.

``data`` reads the results folder into numeric frames (reusing :mod:`ood_bench.report`),
``sources`` names the file and command behind every number, ``tables`` turns frames into
sortable, filterable HTML tables, ``figures`` renders SVG plots and copies committed PNGs,
``build`` renders the Jinja2 templates, byte for byte reproducibly, and ``output`` swaps the
result into the output folder, replacing only the files of an earlier build.
"""

from ood_bench.site.build import build_site

__all__ = ["build_site"]
