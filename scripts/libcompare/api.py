"""API figures: detector count, what a model must expose, feature reuse, the minimal examples."""

from __future__ import annotations

import ast
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from libcompare.code import parsed, python_files, sloc
from libcompare.libraries import SCRIPTS, Library, shown
from libcompare.measure import Measure, na

A = "API"
EXAMPLES = Path(__file__).resolve().parent / "examples"
MODEL_NAMES = {"net", "model", "self.model", "self.net", "self.backbone"}
# nn.Module's own methods: every network has them, so they are no interface requirement
MODULE_API = {
    "eval",
    "train",
    "to",
    "cuda",
    "cpu",
    "parameters",
    "named_parameters",
    "buffers",
    "named_buffers",
    "modules",
    "named_modules",
    "children",
    "named_children",
    "zero_grad",
    "state_dict",
    "load_state_dict",
    "requires_grad_",
    "register_forward_hook",
    "apply",
}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a name/attribute chain, "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def model_interface(root: Path) -> collections.Counter:
    """What detector code asks of the network: for every call on it, the keyword arguments
    (``net(x, return_feature=True)``) and the methods (``net.get_fc()``), counted per file."""
    uses: collections.Counter = collections.Counter()
    for _, tree in parsed(python_files(root)):
        found = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _dotted(node.func)
            if callee in MODEL_NAMES:
                name = callee.split(".")[-1]
                keys = [k.arg for k in node.keywords if k.arg]
                found.update(f"{name}(x, {k}=…)" for k in keys) if keys else found.add(f"{name}(x)")
            elif "." in callee and callee.rsplit(".", 1)[0] in MODEL_NAMES - {"model"}:
                # methods on a bare ``model`` are left out: the name also holds other models
                # (pytorch-ood's OpenMax calls a Weibull ``model.fit_high``)
                method = callee.rsplit(".", 1)[1]
                if method not in MODULE_API:
                    found.add(f"{callee.split('.')[-2]}.{method}()")
        uses.update(found)
    return uses


def _interface_text(uses: collections.Counter, top: int = 6) -> str:
    """The most frequent interface uses, as one line."""
    if not uses:
        return "a callable x → output only"
    return "; ".join(f"{u} in {n} files" for u, n in uses.most_common(top))


def openood_postprocess_uses_net(root: Path) -> tuple[int, int]:
    """Postprocessor classes of OpenOOD and how many of them score without calling the network
    (their ``postprocess(net, data)`` never touches ``net``; inherited ones do)."""
    classes = without = 0
    for _, tree in parsed(python_files(root)):
        for c in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            if not c.name.endswith("Postprocessor") or c.name == "BasePostprocessor":
                continue
            classes += 1
            post = [n for n in c.body if isinstance(n, ast.FunctionDef) and n.name == "postprocess"]
            if post and not any(
                isinstance(n, ast.Name) and n.id == "net" for n in ast.walk(post[0])
            ):
                without += 1
    return classes, without


def pytorch_ood_classes() -> dict[str, type]:
    """Every class ``pytorch_ood.detector`` exports (``__all__``), by name: its detectors
    (what else it exports, ODIN's input perturbation, is a function)."""
    import pytorch_ood.detector as det

    return {n: getattr(det, n) for n in det.__all__ if isinstance(getattr(det, n), type)}


def pytorch_ood_base(klass: type) -> str:
    """The pytorch-ood API base a detector class derives from (it decides what the class is
    fed: logits, features, feature maps, structured inputs, gradients), else ``Detector``."""
    from pytorch_ood import api

    for name in (
        "LogitsDetector",
        "FeaturesDetector",
        "FeatureMapsDetector",
        "StructuredDetector",
        "GradientDetector",
    ):
        if issubclass(klass, getattr(api, name)):
            return name
    return "Detector"


def detector_measures(lib: Library, results: pd.DataFrame | None) -> list[Measure]:
    """How many detectors, how many score precomputed features, what the network must expose."""
    root = lib.package_dir()
    names = ["detectors", "detectors scoring cached features", "model interface"]
    if root is None:
        why = f"{lib.package} is not installed here"
        return [na(lib.key, A, n, "", why) for n in names]
    iface = model_interface(root / lib.detector_subpackage)
    iface_m = Measure(
        lib.key,
        A,
        "model interface",
        _interface_text(iface),
        f"calls on net/model in {lib.package}/{lib.detector_subpackage} (AST), files per use",
    )
    if lib.key == "pytorch-ood":
        classes = pytorch_ood_classes()
        bases = collections.Counter(pytorch_ood_base(c) for c in classes.values())
        tensor_fed = sum(bases[b] for b in ("LogitsDetector", "FeaturesDetector"))
        return [
            Measure(
                lib.key,
                A,
                "detectors",
                len(classes),
                "classes in pytorch_ood.detector.__all__",
                detail=", ".join(f"{b} {n}" for b, n in bases.most_common()),
            ),
            Measure(
                lib.key,
                A,
                "detectors scoring cached features",
                tensor_fed,
                "classes whose API base takes tensors: LogitsDetector (fit_logits/"
                "predict_logits), FeaturesDetector (fit_features/predict_features)",
            ),
            iface_m,
        ]
    if lib.key == "openood":
        from ood_bench.detectors.openood import UNSUPPORTED, registered_postprocessors

        registered = registered_postprocessors()
        classes, without = openood_postprocess_uses_net(root / lib.detector_subpackage)
        return [
            Measure(
                lib.key,
                A,
                "detectors",
                len(registered),
                "names in the postprocessor registries (evaluation_api + pipeline)",
                detail=f"{len(UNSUPPORTED)} need a network trained for them",
            ),
            Measure(
                lib.key,
                A,
                "detectors scoring cached features",
                without,
                f"postprocessor classes whose postprocess(net, data) never uses net, of {classes}",
            ),
            iface_m,
        ]
    from ood_bench.api import detector_options

    options = detector_options()
    native = [o for o in options if not o.startswith(("pood_", "openood_"))]
    reuse: Measure
    if results is not None and "detector_forward_samples" in set(results["metric"]):
        d = results[(results["library"] == lib.key) & (results["status"] == "ok")]
        d = d[d["metric"] == "detector_forward_samples"].groupby("detector")["value"].max()
        mine = d.reindex(native).dropna()
        reuse = Measure(
            lib.key,
            A,
            "detectors scoring cached features",
            int((mine == 0).sum()),
            f"native presets with detector_forward_samples = 0 in every collected job, of "
            f"{len(mine)} run",
            detail="the wrapped ones follow their library's API",
        )
    else:
        reuse = na(
            lib.key,
            A,
            "detectors scoring cached features",
            "detector_forward_samples",
            "no collected results with detector_forward_samples",
        )
    hooks = Measure(
        lib.key,
        A,
        "model interface",
        "any nn.Module: layers read by forward hooks (taps found by a probe pass)",
        "ood_bench.features: hooks on named modules, no method required",
    )
    return [own_detectors(options), reuse, hooks]


def own_detectors(options: list[str]) -> Measure:
    """ood-bench's own detectors: its native ports (``ob_*``) and statistical ones (``stat_*``);
    its ``pood_*`` / ``openood_*`` options wrap the other two libraries and count as theirs."""
    native = [o for o in options if not o.startswith(("pood_", "openood_"))]
    ob = sum(o.startswith("ob_") for o in native)
    stat = sum(o.startswith("stat_") for o in native)
    wrapped = len(options) - len(native)
    return Measure(
        "ood_bench",
        A,
        "detectors",
        len(native),
        "its own options in conf/detector/: ob_* (native ports) and stat_* (statistical)",
        detail=f"{ob} ob_* + {stat} stat_*"
        + (f" + {len(native) - ob - stat} other" if len(native) > ob + stat else "")
        + f"; its {wrapped} pood_* / openood_* options wrap pytorch-ood and OpenOOD (theirs)",
    )


def example_code(lib: Library) -> Path:
    """The file of the library's minimal example."""
    return EXAMPLES / f"{lib.example}.py"


def count_calls(path: Path) -> int:
    """Call expressions in a module (AST), imports and definitions included in the module."""
    tree = ast.parse(path.read_text())
    return sum(isinstance(n, ast.Call) for n in ast.walk(tree))


def run_example(lib: Library, cache_dir: Path, repeats: int = 5) -> dict:
    """Run the library's minimal example in a fresh interpreter; its JSON, or ``{"error"}``."""
    # scripts/ first on the path: this study's examples; ood_bench as this process finds it
    path = os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "libcompare.examples.run",
            lib.example,
            "--cache-dir",
            str(Path(cache_dir).resolve()),
            "--repeats",
            str(repeats),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONPATH": path},
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        return {"error": err[-1][:300] if err else f"exit code {r.returncode}"}
    return json.loads(lines[-1])


def example_measures(lib: Library, cache_dir: Path, repeats: int = 5) -> list[Measure]:
    """Lines and calls of the minimal example, and what it gave when run here."""
    path = example_code(lib)
    rel = shown(path)
    out = [
        Measure(lib.key, A, "example: lines", sloc([path]), f"radon SLOC of {rel}"),
        Measure(lib.key, A, "example: calls", count_calls(path), f"call expressions in {rel}"),
    ]
    if lib.package_dir() is None:
        why = f"{lib.package} is not installed here"
        out += [
            na(lib.key, A, "example: mean AUROC", rel, why, "%"),
            na(lib.key, A, "example: time", rel, why, "s"),
        ]
        return out
    got = run_example(lib, cache_dir, repeats)
    if "error" in got:
        why = f"the example failed: {got['error']}"
        out += [
            na(lib.key, A, "example: mean AUROC", rel, why, "%"),
            na(lib.key, A, "example: time", rel, why, "s"),
        ]
        return out
    aurocs = got["auroc"]
    out += [
        Measure(
            lib.key,
            A,
            "example: mean AUROC",
            100 * sum(aurocs.values()) / len(aurocs),
            f"{rel} run on digits (digits_cnn, seed 0), mean over its {len(aurocs)} OOD sets",
            "%",
            detail=json.dumps({k: round(v, 4) for k, v in aurocs.items()}),
        ),
        Measure(
            lib.key,
            A,
            "example: time",
            got["seconds"],
            f"median wall time of {repeats} score() calls after a warm-up call (lazy imports): "
            "fit + score of 5 sets, forward passes included; the three run one after another",
            "s",
        ),
    ]
    return out
