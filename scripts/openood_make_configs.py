"""Write ``conf/detector/openood_<name>.yaml`` for every postprocessor OpenOOD registers.

    python scripts/openood_make_configs.py            # (re)write the YAMLs
    python scripts/openood_make_configs.py --check    # exit 1 when one is missing or stale

Each YAML names the postprocessor and carries no hyperparameter value of its own: the defaults
are read from OpenOOD's ``configs/postprocessors/`` when the detector runs. ``params`` lists
OpenOOD's argument names as null (= OpenOOD's default), so ``detector.params.K=10`` overrides one
without Hydra's ``+``.
The header comment gives OpenOOD's defaults and the adapter's status of the method.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ood_bench.detectors.openood import (
    load_openood,
    read_config,
    registered_postprocessors,
    status,
)

ROOT = Path(__file__).resolve().parent.parent


def render(name: str) -> str:
    """The YAML text of detector ``openood_<name>``: a header with OpenOOD's defaults, APS
    grid and the adapter's status, then the options with every argument null."""
    cls = load_openood().registry[name].__name__
    state, why = status(name)
    cfg = read_config(name).get("postprocessor", {})
    args = cfg.get("postprocessor_args") or {}
    sweep = cfg.get("postprocessor_sweep") or {}
    head = f"# OpenOOD {name} ({cls}), post-processing a frozen classifier."
    if state == "unsupported":
        head += f"\n# NOT RUNNABLE here: {why}."
    elif why:
        head += f"\n# Note: {why}."
    defaults = ", ".join(f"{k}={v}" for k, v in args.items()) or "none"
    lines = [
        head,
        f"# OpenOOD's defaults (configs/postprocessors, read at run time): {defaults}.",
        f"# APS grid (aps=true searches it on an OOD validation set): {sweep or 'none'}.",
        "_target_: ood_bench.detectors.openood.OpenOODDetector",
        f"name: openood_{name}",
        f"postprocessor: {name}",
        "# overrides of OpenOOD's postprocessor_args (null: OpenOOD's default)",
        f"params: {{{', '.join(f'{k}: null' for k in args)}}}",
        "aps: false            # true: OpenOOD's APS on an OOD validation set (rows flagged)",
        "search_ood: null      # the OOD set APS tunes on (null: the benchmark's first)",
        "sweep: {}             # overrides of OpenOOD's postprocessor_sweep (the APS grid)",
        "config_root: ${oc.env:OPENOOD_CONFIG_ROOT,null}   # OpenOOD's configs/ (null: beside "
        "the package)",
        "taps: null            # null: the backbone's taps",
        "penultimate: null",
        "batch_size: 200       # OpenOOD Evaluator's default",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write (or, with ``--check``, compare) every YAML; exit code 1 when a check fails."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check, write nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "conf" / "detector")
    a = ap.parse_args()
    stale = []
    for name in registered_postprocessors():
        path = a.out / f"openood_{name}.yaml"
        text = render(name)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not a.check:
            path.write_text(text)
    known = {f"openood_{n}.yaml" for n in registered_postprocessors()}
    extra = sorted(p.name for p in a.out.glob("openood_*.yaml") if p.name not in known)
    if extra:
        print(f"not registered in OpenOOD: {extra}")
    verb = "stale or missing" if a.check else "written"
    print(f"{len(stale)} {verb}: {stale}" if stale else "all OpenOOD detector configs up to date")
    return 1 if (a.check and (stale or extra)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
