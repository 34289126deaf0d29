"""OpenOOD adapter: network wrapper, device workaround, every postprocessor on digits, sign.

Tests that run OpenOOD skip, with the install hint, when it is not installed; the wrapper and
the device workaround need no OpenOOD and always run.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from ood_bench.config import build
from ood_bench.data.base import tensor_set
from ood_bench.detectors import openood as oo
from ood_bench.detectors.openood import OpenOODNet
from ood_bench.errors import ConfigError, NotApplicable
from ood_bench.features import Features
from ood_bench.metrics import ood_metrics
from tests.conftest import CONF, OPENOOD_SKIP, ROOT, run_module


def _have_openood() -> bool:
    try:
        oo.load_openood()
        return True
    except oo.OpenOODMissing:
        return False


# a one-line reason per test: the install lines are printed once per session (conftest.py)
needs_openood = pytest.mark.skipif(not _have_openood(), reason=OPENOOD_SKIP)
OPTIONS = sorted(p.stem for p in (CONF / "detector").glob("openood_*.yaml"))
# fit + score above ~20 s each on 2 CPU cores (mixtures / Gram matrices of every layer): -m slow
SLOW = {"openood_gmm", "openood_gram"}


def subset(feats: Features, n: int) -> Features:
    """Every k-th sample (about n of them): the same images behind the features, fewer of them."""
    from torch.utils.data import Subset

    from ood_bench.data.base import ImageSet

    idx = list(range(0, len(feats), max(1, len(feats) // n)))
    src = feats.source
    part = ImageSet(src.name, Subset(src.dataset, idx), {**src.spec, "subset": n}, src.group)
    return Features(feats.logits[idx], feats.penultimate[idx], feats.labels[idx], source=part)


@pytest.fixture(scope="module")
def small(digits_features):
    """Smaller scored splits for the per-postprocessor tests (2 CPU cores, ~40 postprocessors);
    the whole fit split, as k-NN with OpenOOD's K=50 needs more than 50 samples per class."""
    f = digits_features
    return {
        "fit": f["fit"],
        "calib": subset(f["calib"], 135),
        "test": subset(f["test"], 150),
        "gaussian_noise": subset(f["gaussian_noise"], 150),
        "uniform_noise": subset(f["uniform_noise"], 150),
    }


def make(option: str, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"detector={option}", *overrides])
    return build(cfg.detector, "detector")


# --- without OpenOOD ----------------------------------------------------------------------------
def test_missing_openood_says_how_to_install(monkeypatch, digits_backbone):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "openood" else real(n, *a)
    )
    oo.load_openood.cache_clear()
    try:
        det = make("openood_knn")  # composing and building never imports OpenOOD
        assert det.name == "openood_knn" and det.library == "openood"
        with pytest.raises(oo.OpenOODMissing) as e:
            det.bind(digits_backbone.model)
        msg = str(e.value)
        assert "pip install --no-deps -e /path/to/OpenOOD" in msg and "git clone" in msg
        assert "libmr==0.1.9" in msg and "faiss-cpu" in msg
    finally:
        oo.load_openood.cache_clear()


def test_cuda_calls_land_on_the_configured_device():
    cpu = torch.device("cpu")
    saved = torch.cuda.FloatTensor
    with oo.openood_context(cpu):
        a = torch.ones(2).cuda()
        b = torch.ones(1, device="cuda") * 1.5
        c = torch.nn.Linear(2, 2).cuda().weight
        d = torch.cuda.FloatTensor([1, 2])
        e = torch.zeros(3).to("cuda")
    assert all(t.device == cpu for t in (a, b, c, d, e))
    assert d.dtype == torch.float32 and torch.cuda.FloatTensor is saved


# --- the network wrapper ------------------------------------------------------------------------
def test_wrapper_on_digits_cnn(digits_backbone, digits_features):
    model = digits_backbone.model
    net = OpenOODNet(model, digits_backbone.taps, digits_backbone.penultimate).eval()
    t = digits_features["test"]
    x = torch.stack([t.source.dataset[i][0] for i in range(16)])
    with torch.no_grad():
        logits = net(x)
        _, feat = net(x, return_feature=True)
        _, flist = net(x, return_feature_list=True)
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(logits, t.logits[:16], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(feat, t.penultimate[:16], rtol=1e-4, atol=1e-4)
        assert [f.shape[1:] for f in flist] == [(32, 8, 8), (64, 4, 4), (64, 4, 4), (128,)]
        assert net.fc is model.head and net.get_fc_layer() is model.head
        w, b = net.get_fc()
        np.testing.assert_array_equal(w, model.head.weight.numpy())
        np.testing.assert_array_equal(b, model.head.bias.numpy())
        torch.testing.assert_close(net.forward_threshold(x, float("inf")), logits)
        torch.testing.assert_close(net.forward_threshold(x, 0.5), model.head(feat.clip(max=0.5)))
        torch.testing.assert_close(net.intermediate_forward(x, 2), flist[2])
        torch.testing.assert_close(net.intermediate_forward(x).norm(dim=1), torch.ones(16))
        assert net.feature_size == 128 and net.num_classes == 10
        net.check(x)
    with pytest.raises(AttributeError, match="layer4"):
        _ = net.layer4


def test_wrapper_refuses_logits_that_are_not_the_head_of_the_penultimate(digits_backbone):
    class Scaled(torch.nn.Module):  # logits = 2 · head(features): fc-based scores would lie
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return 2 * self.m(x)

    m = Scaled(digits_backbone.model)
    net = OpenOODNet(m, ["m.block1", "m.fc1"], "m.fc1")
    with pytest.raises(ConfigError, match="not m.head"):
        net.check(torch.rand(4, 1, 8, 8))


@pytest.fixture(scope="module")
def resnet():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=3).eval()


def test_wrapper_on_torchvision_resnet18(resnet):
    from ood_bench.backbones import discover_taps

    model = resnet
    x = torch.rand(4, 3, 32, 32)
    taps, pen = discover_taps(model, x)
    assert taps == ["relu", "layer1", "layer2", "layer3", "layer4", "avgpool"] and pen == "avgpool"
    net = OpenOODNet(model, taps, pen).eval()
    with torch.no_grad():
        logits, feat = net(x, return_feature=True)
        _, flist = net(x, return_feature_list=True)
        torch.testing.assert_close(logits, model(x))
        assert feat.shape == (4, 512) and len(flist) == 6
        assert net.fc is model.fc and net.layer4 is model.layer4  # what RankFeat reads
        assert net.intermediate_forward(x, 4).shape == (4, 512, 1, 1)  # layer4, as OpenOOD
        assert net.intermediate_forward(x, 3).shape == (4, 256, 2, 2)  # layer3
        torch.testing.assert_close(net.forward_threshold(x, 1e9), logits)
        net.check(x)


# --- with OpenOOD -------------------------------------------------------------------------------
@needs_openood
def test_every_registered_postprocessor_has_a_current_config():
    names = oo.registered_postprocessors()
    assert len(names) >= 50 and {"msp", "knn", "vim", "rts"} <= set(names)
    assert OPTIONS == sorted(f"openood_{n}" for n in names)
    spec = importlib.util.spec_from_file_location(
        "openood_make_configs", ROOT / "scripts" / "openood_make_configs.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stale = [
        n
        for n in names
        if (CONF / "detector" / f"openood_{n}.yaml").read_text() != script.render(n)
    ]
    assert not stale, f"rerun scripts/openood_make_configs.py: {stale}"


@needs_openood
@pytest.mark.parametrize(
    "option", [pytest.param(o, marks=pytest.mark.slow) if o in SLOW else o for o in OPTIONS]
)
def test_postprocessor_on_digits(option, digits_backbone, small):
    det = make(option)  # every option on its defaults (ViM's / Residual's dim scaled: 64 of 128)
    name = det.postprocessor
    state, why = oo.status(name)
    if state == "unsupported":
        with pytest.raises(NotApplicable, match="cannot run") as e:
            det.bind(digits_backbone.model)
        assert why in str(e.value)
        return
    det.bind(digits_backbone.model, "cpu")
    if name == "rankfeat":
        with pytest.raises(NotApplicable, match="ResNet-only"):
            det.fit(small["fit"], small["calib"])
        return
    det.fit(small["fit"], small["calib"])
    s_id = det.score(small["test"], "test")
    s_ood = det.score(small["gaussian_noise"], "gaussian_noise")
    assert s_id.shape == (len(small["test"]),) and np.isfinite(s_ood).all()
    # higher = more OOD: noise scores above ID test (a flipped sign gives AUROC < 0.5)
    assert ood_metrics(s_id, s_ood)["auroc"] > 0.5, name


def test_vim_principal_dim_follows_the_paper_and_openoods_settings():
    from ood_bench.detectors.base import vim_principal_dim

    # OpenOOD's scripts: ResNet-18 512 -> 256, LeNet 84 -> 42, ResNet-50 2048 -> 1000; ViT -> 512
    assert [vim_principal_dim(d) for d in (512, 84, 2048, 768)] == [256, 42, 1000, 512]
    assert [vim_principal_dim(d) for d in (128, 192)] == [64, 96]  # digits_cnn, cifar_cnn


@needs_openood
@pytest.mark.parametrize("option", ["openood_vim", "openood_residual"])
def test_vim_and_residual_defaults_scale_to_the_features(option, digits_backbone, small):
    """dim=null: the ViM paper's rule on the 128-d features (64), recorded for the rows; the
    same scores as dim=64 given; a dim that leaves no residual space is refused with the rule."""
    det = make(option)
    det.bind(digits_backbone.model)
    det.fit(small["fit"], small["calib"])
    assert det.pp.dim == 64 and det.config["postprocessor"]["postprocessor_args"]["dim"] == 64
    assert det.recorded_params() == {"dim": 64.0}
    given = make(option, "detector.params.dim=64")
    given.bind(digits_backbone.model)
    given.fit(small["fit"], small["calib"])
    np.testing.assert_array_equal(det.score(small["test"]), given.score(small["test"]))
    big = make(option, "detector.params.dim=128")
    big.bind(digits_backbone.model)
    with pytest.raises(ConfigError, match=r"detector.params.dim=64 \(the ViM paper's rule"):
        big.fit(small["fit"], small["calib"])


@needs_openood
def test_scores_are_openood_conf_negated(digits_backbone, small):
    """The sign convention, pinned against scores computed here from the cached logits."""
    t = small["test"]
    expected = {
        "openood_msp": -torch.softmax(t.logits, 1).amax(1),
        "openood_mls": -t.logits.amax(1),
        "openood_ebo": -torch.logsumexp(t.logits, 1),
    }
    for option, want in expected.items():
        det = make(option)
        det.bind(digits_backbone.model)
        det.fit(small["fit"], small["calib"])
        s = det.score(t)
        np.testing.assert_allclose(s, want.double().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s, -det.confidence(t))


@needs_openood
def test_three_channel_postprocessors_see_the_grayscale_network(digits_backbone, small):
    """ODIN on zero-padded inputs equals ODIN written here for 1 channel (OpenOOD's std 0.5)."""
    det = make("openood_odin")
    det.bind(digits_backbone.model)
    det.fit(small["fit"], small["calib"])
    t = small["test"]
    x = torch.stack([t.source.dataset[i][0] for i in range(len(t))]).requires_grad_(True)
    model, temp, eps = digits_backbone.model, 1000.0, 0.0014
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out / temp, out.argmax(1))
    loss.backward()
    grad = (torch.ge(x.grad, 0).float() - 0.5) * 2 / 0.5
    with torch.no_grad():
        want = torch.softmax(model(x.detach() - eps * grad) / temp, 1).amax(1)
    np.testing.assert_allclose(det.score(t), -want.double().numpy(), rtol=1e-5, atol=1e-7)


@needs_openood
def test_aps_searches_openood_grid_on_ood_validation(digits_backbone, small):
    det = make("openood_knn", "detector.aps=true", "+detector.sweep.K_list=[5,50,100]")
    assert "ood_validation" in det.needs
    det.bind(digits_backbone.model)
    det.tune(small["calib"], small["uniform_noise"])
    det.fit(small["fit"], small["calib"])
    assert set(det.tuned) == {"K_list"} and det.tuned["K_list"] in (5, 50, 100)
    assert det.params()["tuned"] == det.tuned
    msp = make("openood_msp", "detector.aps=true")
    msp.bind(digits_backbone.model)
    msp.tune(small["calib"], small["uniform_noise"])
    with pytest.raises(ConfigError, match="no APS sweep"):
        msp.fit(small["fit"], small["calib"])


@needs_openood
def test_rankfeat_runs_on_a_resnet18(resnet):
    model = resnet
    x, y = torch.rand(12, 3, 32, 32), torch.arange(12) % 3
    src = tensor_set("rand", x.numpy(), y.numpy(), {"source": "test"})
    feats = Features(torch.zeros(12, 3), torch.zeros(12, 512), y, source=src)
    det = oo.OpenOODDetector("openood_rankfeat", "rankfeat", batch_size=6)
    det.bind(model)
    s = det.fit(feats, feats).score(feats)
    assert s.shape == (12,) and np.isfinite(s).all()


@pytest.mark.slow
@needs_openood
def test_runner_flags_aps_rows(tmp_path, cache_dir):
    run_module(
        "-m",
        "ood_bench.run",
        "detector=openood_knn",
        "detector.aps=true",
        "backbone.train.epochs=15",
        f"cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path}",
        cwd=ROOT,
    )
    import pandas as pd

    df = pd.read_csv(tmp_path / "metrics.csv")
    assert set(df.library) == {"openood"} and (df.status == "ok").all()
    flag = df[df.metric == "tuned_on_ood"]
    assert flag.ood_dataset.tolist() == ["sklearn_photos"] and flag.value.tolist() == [1.0]
    assert "sklearn_photos" not in set(df[df.metric == "auroc"].ood_dataset)
