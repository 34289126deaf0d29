"""The library comparison: each measuring function on code with known answers, the Python API
the ood-bench example uses, and scripts/compare_libraries.py run end to end."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ood_bench.errors import ConfigError

# the study lives beside its script, which finds it in its own folder: so do the tests
SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from libcompare import api, code, integration  # noqa: E402
from libcompare.libraries import LIBRARIES, REPO  # noqa: E402
from libcompare.measure import Measure, na  # noqa: E402
from libcompare.render import comparison_table, findings  # noqa: E402

NA = re.compile(r"^n/a \(.+\)$")


def _write(tmp_path: Path, text: str, name: str = "mod.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_measure_needs_a_reason_for_na_and_formats_cells():
    with pytest.raises(ValueError, match="needs a reason"):
        Measure("x", "API", "detectors", None, "count")
    with pytest.raises(ValueError, match="unknown aspect"):
        Measure("x", "speed", "detectors", 1, "count")
    assert na("x", "API", "d", "m", "not installed").cell() == "n/a (not installed)"
    assert Measure("x", "API", "d", 35, "m").cell() == "35"
    assert Measure("x", "API", "d", 0.12345, "m").cell() == "0.123"
    assert Measure("x", "API", "d", 12.345, "m").cell() == "12.3"
    assert Measure("x", "API", "d", 1234.5, "m").cell() == "1234"
    assert Measure("x", "API", "d", True, "m").cell() == "yes"


def test_type_hint_coverage_counts_parameters_and_returns(tmp_path):
    path = _write(
        tmp_path,
        """
        def f(a: int, b) -> int:          # 3 slots, 2 hinted
            return a
        class C:
            def m(self, x: str):          # self excluded: 2 slots, 1 hinted
                pass
            @classmethod
            def k(cls, *args, **kw) -> None:  # 3 slots, 1 hinted
                pass
        """,
    )
    share, slots = code.hint_coverage([path])
    assert slots == 8
    assert share == pytest.approx(100 * 4 / 8)


def test_cuda_calls_counts_code_not_text(tmp_path):
    path = _write(
        tmp_path,
        '''
        """Calls x.cuda() in a docstring do not count."""
        import torch
        def f(x, net):
            # a comment: y.cuda()
            return x.cuda(), net.cuda(0), torch.cuda.is_available(), "z.cuda()"
        ''',
    )
    assert code.cuda_calls([path]) == (2, 1)


def test_complexity_and_sloc(tmp_path):
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(11))
    path = _write(tmp_path, f"def simple():\n    return 1\n\n\ndef branchy(x):\n{branches}\n")
    mean, share, worst, where = code.complexity([path])
    assert worst == 12 and where.endswith("branchy")
    assert mean == pytest.approx((1 + 12) / 2)
    assert share == pytest.approx(50.0)
    assert code.sloc([path]) == 2 + 1 + 22


def test_ruff_findings_use_one_isolated_rule_set(tmp_path):
    # an unused import (F401) and a mutable default (B006); the long line (E501) is ignored
    _write(tmp_path, "import os\n\n\ndef f(a=[]):\n    return a  " + "#" * 120 + "\n")
    n, codes = code.ruff_findings(tmp_path)
    assert n == 2 and set(codes) == {"F401", "B006"}


def test_docstring_coverage_with_interrogate(tmp_path):
    _write(tmp_path, '"""Module."""\n\n\ndef f():\n    """Doc."""\n\n\ndef g():\n    pass\n')
    assert code.docstring_coverage(tmp_path) == pytest.approx(100 * 2 / 3, abs=0.1)


def test_count_tests(tmp_path):
    _write(tmp_path, "def test_a():\n    pass\n\n\ndef helper():\n    pass\n", "test_x.py")
    _write(tmp_path, "def test_b():\n    pass\n", "not_a_test_file.py")
    assert code.count_tests(tmp_path) == (1, 1)


def test_imported_modules_skips_relative_and_guarded_imports(tmp_path):
    from libcompare.install import imported_modules

    _write(
        tmp_path,
        """
        import numpy as np, os.path
        from scipy import stats
        from . import sibling
        try:
            import optional_thing
        except ImportError:
            optional_thing = None
        def f():
            import lazy_dep
        """,
    )
    assert imported_modules(tmp_path) == {"numpy", "os", "scipy", "lazy_dep"}


def test_model_interface_reads_calls_on_the_network(tmp_path):
    _write(
        tmp_path,
        """
        def post(net, x):
            logits, feats = net(x, return_feature=True)
            w, b = net.get_fc()
            net.eval()
            return net(x)
        """,
    )
    uses = api.model_interface(tmp_path)
    assert uses == {"net(x, return_feature=…)": 1, "net.get_fc()": 1, "net(x)": 1}


def test_workarounds_are_read_from_the_adapters():
    for key in ("pytorch-ood", "openood"):
        lib = LIBRARIES[key]
        files = lib.adapter_files()
        marks = sum(len(re.findall(r"WORKAROUND:", f.read_text())) for f in files)
        found = integration.workarounds(lib)
        assert len(found) == marks > 0
        assert all(len(w) > 20 for w in found)  # each says why, not just the marker
    assert integration.measure(LIBRARIES["ood_bench"])[0].value is None


def test_adapter_modules_are_measured_as_files_or_packages(tmp_path, monkeypatch):
    from libcompare import libraries

    monkeypatch.setattr(libraries, "REPO", tmp_path)
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for rel in ("one.py", "pkg/__init__.py", "pkg/sub/deep.py", "pkg/notes.txt"):
        (tmp_path / rel).write_text("x = 1\n")
    lib = libraries.Library(**{**vars(LIBRARIES["openood"]), "adapter": ("one", "pkg", "gone")})
    assert lib.adapter_paths() == ["one.py", "pkg/"]
    got = [f.relative_to(tmp_path).as_posix() for f in lib.adapter_files()]
    assert got == ["one.py", "pkg/__init__.py", "pkg/sub/deep.py"]
    with pytest.raises(FileNotFoundError, match="fix Library.adapter"):
        libraries.Library(**{**vars(lib), "adapter": ("gone",)}).adapter_files()


def test_findings_state_figures_and_survive_na():
    libs = [LIBRARIES["pytorch-ood"], LIBRARIES["ood_bench"]]
    ms = [
        Measure("pytorch-ood", "API", "detectors", 35, "count"),
        na("ood_bench", "API", "detectors", "count", "not installed"),
        Measure("pytorch-ood", "API", "example: time", 0.5, "t", "s"),
        Measure("ood_bench", "API", "example: time", 0.25, "t", "s"),
    ]
    text = "\n".join(findings(ms, libs))
    assert "pytorch-ood 35, ood-bench n/a (not installed)" in text
    assert "pytorch-ood / ood-bench = 2.0×" in text
    table = comparison_table(ms, libs)
    assert list(table.columns) == ["aspect", "pytorch-ood", "ood-bench"]
    assert table.loc["example: time (s)", "ood-bench"] == "0.25"


# --- ood_bench.api: what the ood-bench example runs -----------------------------------------


def test_api_extract_matches_the_cached_pipeline(digits_bench, digits_backbone, digits_features):
    from torch.utils.data import DataLoader

    from ood_bench.api import detector, extract

    loader = DataLoader(digits_bench.split("test").dataset, batch_size=100)
    feats = extract(digits_backbone.model, loader)
    ref = digits_features["test"]
    np.testing.assert_allclose(feats.logits.numpy(), ref.logits.numpy(), atol=1e-5)
    assert set(feats.taps) == set(ref.taps)
    det = detector("pood_mahalanobis").fit(digits_features["fit"])
    np.testing.assert_allclose(det.score(feats), det.score(ref), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="unknown detector 'nope'.*stat_masf"):
        detector("nope")


def test_api_model_detector_reads_the_images_behind_the_features(
    digits_bench, digits_backbone, digits_features
):
    from ood_bench.api import detector, extract

    def odin(fit, test):
        det = detector("pood_odin")
        det.bind(digits_backbone.model)
        det.fit(fit)
        return det.score(test), det.forward_samples

    model = digits_backbone.model
    mine, n = odin(
        extract(model, digits_bench.split("fit").dataset),
        extract(model, digits_bench.split("test").dataset),
    )
    ref, _ = odin(digits_features["fit"], digits_features["test"])
    assert n >= len(ref)  # ODIN perturbed the images and ran the network itself
    np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-6)


def test_api_extract_caches_by_content(digits_bench, digits_backbone, tmp_path):
    from ood_bench.api import extract

    data = digits_bench.split("calib").dataset
    first = extract(digits_backbone.model, data, cache_dir=tmp_path)
    cached = list((tmp_path / "features").glob("*.pt"))
    again = extract(digits_backbone.model, data, cache_dir=tmp_path)
    assert len(cached) == 1 and list((tmp_path / "features").glob("*.pt")) == cached
    np.testing.assert_array_equal(first.penultimate.numpy(), again.penultimate.numpy())
    other = extract(digits_backbone.model, digits_bench.split("test").dataset, cache_dir=tmp_path)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2 and len(other) != len(first)


# --- the script, end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> tuple[Path, list[str]]:
    keys = ["pytorch-ood", "ood_bench"]
    if importlib.util.find_spec("openood") is not None:
        keys.insert(1, "openood")
    out = tmp_path_factory.mktemp("libraries")
    cache = tmp_path_factory.mktemp("cache")
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "compare_libraries.py"),
        str(REPO / "results" / "raw"),
        "--out", str(out),
        "--libraries", ",".join(keys),
        "--offline", "--runs", "1", "--repeats", "1", "--quiet",
        "--cache-dir", str(cache),
    ]  # fmt: skip
    # the checkout under test, not whatever an editable install points at
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, keys


def test_script_writes_the_table_with_numbers_or_explained_na(comparison):
    out, keys = comparison
    labels = [LIBRARIES[k].label for k in keys]
    rows = pd.read_csv(out / "measurements.csv", keep_default_na=False)
    assert set(rows["library"]) == set(keys)
    for aspect in ("installation", "API", "code quality", "integration", "performance"):
        assert aspect in set(rows["aspect"])
    assert (rows["method"] != "").all(), "every figure states its method"
    md = (out / "comparison.md").read_text()
    table_lines = md.split("\n\n")[2].splitlines()
    header = [c.strip() for c in table_lines[0].strip("|").split("|")]
    assert header == ["measure", "aspect", *labels]
    numeric = set(rows.loc[rows["value"].map(_is_number), "name"])
    checked = 0
    for line in table_lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.sub(r" \([^)]*\)$", "", cells[0])
        for cell in cells[2:]:
            assert cell, f"empty cell in row {cells[0]}"
            if name in numeric:
                assert _is_number(cell) or NA.match(cell), f"{cells[0]}: {cell!r}"
                checked += 1
    assert checked > 60
    for name in ("import time", "detectors", "example: lines", "ruff findings", "adapter code"):
        assert name in md
    tex = (out / "comparison.tex").read_text()
    assert "\\begin{table}" in tex and "tab:libraries" in tex


def test_script_figures_agree_with_what_is_known(comparison):
    out, keys = comparison
    rows = pd.read_csv(out / "measurements.csv", keep_default_na=False)
    v = rows.set_index(["library", "name"])["value"]
    # the three minimal examples score the same method on the same model: same AUROC
    aurocs = [float(v[(k, "example: mean AUROC")]) for k in keys]
    assert max(aurocs) - min(aurocs) < 0.1 and min(aurocs) > 60
    assert int(v[("pytorch-ood", "hard-coded .cuda( calls")]) == 0
    assert int(v[("ood_bench", "hard-coded .cuda( calls")]) == 0
    assert float(v[("ood_bench", "ruff findings")]) == 0  # this repo is ruff clean
    assert int(v[("pytorch-ood", "detectors")]) >= 30
    assert int(v[("pytorch-ood", "import failures")]) == 0
    assert v[("ood_bench", "workarounds")] == ""  # n/a: the harness needs no adapter for itself
    why = rows.set_index(["library", "name"])["why"]
    assert why[("ood_bench", "on the package index")] == "not queried (--offline)"
    if "openood" in keys:
        assert int(v[("openood", "hard-coded .cuda( calls")]) > 100
        assert int(v[("openood", "workarounds")]) >= 5


def _is_number(text: object) -> bool:
    try:
        return not math.isnan(float(str(text)))
    except ValueError:
        return False


def test_ood_bench_counts_only_its_own_detectors():
    # the pood_* / openood_* options wrap the other two libraries: theirs, not ood-bench's
    options = ["ob_neco", "ob_cop", "stat_masf", "pood_msp", "openood_knn", "openood_vim"]
    m = api.own_detectors(options)
    assert m.library == "ood_bench" and m.name == "detectors" and m.value == 3
    assert m.detail.startswith("2 ob_* + 1 stat_*;") and "3 pood_* / openood_*" in m.detail
