"""Result integrity: a result's identity includes the backbone's weights, each run is counted
once, sweep folders never collide, cache entries carry their key, shared folders keep the
umask, and committed results are not written from uncommitted code."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from ood_bench import environment
from ood_bench.atomic import atomic_write_text
from ood_bench.backbones import Backbone, DigitsCNN, get_backbone, known_sha256
from ood_bench.config import config_hash
from ood_bench.data.base import tensor_set
from ood_bench.errors import CacheError, CheckpointError
from ood_bench.features import FeatureExtractor
from ood_bench.job import complete_sha
from ood_bench.results import (
    backbone_conflicts,
    collect,
    keep_newest_backbone,
    one_result_per_job,
    read_results,
    to_frame,
    write_csv,
)
from tests.conftest import CONF, FAST_TRAIN, run_module

SHA_A, SHA_B = "a" * 64, "b" * 64


def job_rows(run_id: str, seed: int, sha: str = SHA_A, chash: str | None = None, auroc=0.9):
    """The rows of one successful job (id_acc + AUROC on two OOD sets)."""
    job = {
        "run_id": run_id,
        "sweep": "s",
        "config_hash": chash or f"cfg{seed}",
        "status": "ok",
        "error": "",
        "git_sha": "abc",
        "benchmark": "digits",
        "id_dataset": "digits",
        "backbone": "digits_cnn",
        "backbone_sha256": sha,
        "detector": "pood_msp",
        "library": "pytorch_ood",
        "seed": seed,
        "corruption": "none",
        "severity": 0,
        **{c: "" for c in ("python", "torch", "pytorch_ood", "sklearn", "numpy", "hydra")},
        **{"ood_bench": "", "device": "cpu", "hostname": "h", "timestamp": "t"},
    }
    rows = [{**job, "ood_dataset": "", "ood_group": "", "metric": "id_acc", "value": 0.97}]
    for name, group in (("noise", "far"), ("photos", "far")):
        rows.append(
            {**job, "ood_dataset": name, "ood_group": group, "metric": "auroc", "value": auroc}
        )
    return [{"n_id": 10, "n_ood": 10, **r} for r in rows]


# ------------------------------------------------------------------ 1. backbone in the identity


def test_complete_sha_names_the_backbone_of_a_complete_result(tmp_path):
    path = write_csv(to_frame(job_rows("r1", 0, SHA_A, "h")), tmp_path / "m.csv")
    assert complete_sha(path, "h") == SHA_A
    assert complete_sha(path, "other") is None
    assert complete_sha(tmp_path / "missing.csv", "h") is None


def test_known_sha256_of_an_explicit_checkpoint_follows_the_file(tmp_path, digits_bench):
    ckpt = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(DigitsCNN().state_dict(), ckpt)
    first = known_sha256("digits_cnn", digits_bench, tmp_path, checkpoint=str(ckpt))
    torch.manual_seed(1)
    torch.save(DigitsCNN().state_dict(), ckpt)  # replaced at the same path
    second = known_sha256("digits_cnn", digits_bench, tmp_path, checkpoint=str(ckpt))
    assert first and second and first != second


def test_known_sha256_of_a_self_trained_backbone(digits_bench, digits_backbone, cache_dir):
    train = {"epochs": 15}
    assert known_sha256("digits_cnn", digits_bench, cache_dir, train=train) == (
        digits_backbone.sha256
    )
    # another seed is not trained yet: unknown, so the job must run to know it
    assert known_sha256("digits_cnn", digits_bench, cache_dir, seed=7, train=train) is None


def test_supplied_sha256_of_a_self_trained_backbone_is_checked(
    digits_bench, digits_backbone, cache_dir
):
    train = {"epochs": 15}
    bb = get_backbone(
        "digits_cnn", digits_bench, cache_dir, train=train, sha256=digits_backbone.sha256
    )
    assert bb.sha256 == digits_backbone.sha256
    with pytest.raises(CheckpointError, match="thread"):
        get_backbone("digits_cnn", digits_bench, cache_dir, train=train, sha256="0" * 64)


def test_replaced_checkpoint_reruns_the_job_and_separates_the_results(tmp_path, digits_backbone):
    """backbone=checkpoint without sha256: replacing the file at the same path is noticed."""
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(digits_backbone.checkpoint.read_bytes())
    args = [
        "-m",
        "ood_bench.run",
        "backbone=checkpoint",
        "backbone.arch=digits_cnn",
        f"backbone.checkpoint={ckpt}",
        "detector=pood_msp",
        f"cache_dir={tmp_path / 'cache'}",
        f"results_dir={tmp_path / 'shared'}",
    ]
    run_module(*args, f"hydra.run.dir={tmp_path / 'run1'}", cwd=tmp_path)
    again = run_module(*args, f"hydra.run.dir={tmp_path / 'run2'}", cwd=tmp_path)
    assert "skipping job" in again.stdout + again.stderr  # same file, same config: skipped
    state = torch.load(ckpt, weights_only=True)
    state["head.bias"] += 1.0  # other weights at the same path
    torch.save(state, ckpt)
    third = run_module(*args, f"hydra.run.dir={tmp_path / 'run3'}", cwd=tmp_path)
    assert "skipping job" not in third.stdout + third.stderr
    assert "running the job" in third.stdout + third.stderr
    shared = sorted((tmp_path / "shared" / "jobs").glob("*.csv"))
    assert len(shared) == 2, shared  # one result per (config, backbone)
    shas = {read_results(p)["backbone_sha256"].iloc[0] for p in shared}
    assert len(shas) == 2


# ------------------------------------------------------------------ 2. each run counted once


def test_a_run_copied_into_several_folders_is_counted_once(tmp_path):
    runs = {0: "20260101T000000000000-a", 1: "20260101T000001000000-b"}
    for seed, rid in runs.items():
        write_csv(to_frame(job_rows(rid, seed)), tmp_path / "sweep1" / f"j{seed}" / "metrics.csv")
    # a second sweep skipped seed 0 (copied its CSV) and ran seed 2
    copied = tmp_path / "sweep2" / "j0" / "metrics.csv"
    copied.parent.mkdir(parents=True)
    copied.write_bytes((tmp_path / "sweep1" / "j0" / "metrics.csv").read_bytes())
    write_csv(to_frame(job_rows("20260101T000002000000-c", 2)), tmp_path / "sweep2" / "j2" / "m")
    (tmp_path / "sweep2" / "j2" / "m").rename(tmp_path / "sweep2" / "j2" / "metrics.csv")
    df = collect(tmp_path / "sweep1", tmp_path / "sweep2", tmp_path / "sweep1")
    assert df["run_id"].nunique() == 3
    assert len(df) == 3 * 3
    assert not df.duplicated(["run_id", "ood_dataset", "metric"]).any()


def test_rerun_of_one_config_keeps_the_newest_per_backbone():
    rows = (
        job_rows("20260101T000000000000-a", 0, SHA_A, "h", auroc=0.5)
        + job_rows("20260101T000009000000-b", 0, SHA_A, "h", auroc=0.9)
        + job_rows("20260101T000005000000-c", 0, SHA_B, "h", auroc=0.7)
    )
    d = one_result_per_job(to_frame(rows))
    assert set(d["run_id"]) == {"20260101T000009000000-b", "20260101T000005000000-c"}


def test_a_failure_fixed_by_a_later_run_is_dropped():
    failed = job_rows("20260101T000000000000-a", 0, "", "h")[:1]
    failed[0].update(status="failed", metric="job", value=float("nan"), error="boom")
    d = one_result_per_job(to_frame(failed + job_rows("20260101T000001000000-b", 0, SHA_A, "h")))
    assert set(d["status"]) == {"ok"}
    # a failure newer than the last success is kept (it says the job broke since)
    late = [{**failed[0], "run_id": "20260101T000002000000-c"}]
    d = one_result_per_job(to_frame(late + job_rows("20260101T000001000000-b", 0, SHA_A, "h")))
    assert set(d["status"]) == {"ok", "failed"}


def test_mixed_backbones_are_found_and_resolved():
    rows = job_rows("20260101T000000000000-a", 0, SHA_A, "h1") + job_rows(
        "20260101T000001000000-b", 0, SHA_B, "h2"
    )
    df = to_frame(rows)
    conflicts = backbone_conflicts(df)
    assert len(conflicts) == 1 and conflicts.loc[0, "n_checkpoints"] == 2
    assert set(keep_newest_backbone(df)["backbone_sha256"]) == {SHA_B}


def test_make_tables_counts_distinct_seeds_and_refuses_mixed_backbones(tmp_path):
    """Two overlapping sweeps with 3 seeds: the table says 3 seeds, not 5."""
    rows = []
    for seed in (0, 1, 2):
        rows += job_rows(f"20260101T00000{seed}000000-x", seed, SHA_A, f"c{seed}")
    both = to_frame(rows + rows[: 2 * 3])  # seeds 0 and 1 collected twice
    write_csv(both, tmp_path / "raw.csv")
    tables = ("-m", "ood_bench.cli", "tables")
    run_module(*tables, str(tmp_path / "raw.csv"), "--out", str(tmp_path / "t"), cwd=tmp_path)
    auroc = (tmp_path / "t" / "results.md").read_text().split("## AUROC")[1].split("\n## ")[0]
    row = next(line for line in auroc.splitlines() if "/ pood_msp" in line)
    assert row.split("|")[2].strip() == "3"

    mixed = rows + job_rows("20260101T000009000000-y", 0, SHA_B, "c0b")
    write_csv(to_frame(mixed), tmp_path / "mixed.csv")
    proc = run_module(
        *tables,
        str(tmp_path / "mixed.csv"),
        "--out",
        str(tmp_path / "t2"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and "different backbone checkpoints" in proc.stderr
    run_module(
        *tables,
        str(tmp_path / "mixed.csv"),
        "--out",
        str(tmp_path / "t3"),
        "--newest-backbone",
        cwd=tmp_path,
    )


# ------------------------------------------------------------------ 3. sweep folders


def _subdir(*overrides: str) -> str:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return str(OmegaConf.select(cfg, "hydra.sweep.subdir"))


def test_sweep_subfolders_differ_for_different_configs_only():
    k10 = _subdir("detector=pood_knn", "detector.params.k=10")
    k50 = _subdir("detector=pood_knn", "detector.params.k=50")
    assert k10 != k50 and k10.startswith("digits_pood_knn_s0_")
    # the benchmark names the folder: two benchmarks of one sweep never share a prefix
    assert _subdir("detector=pood_knn", "benchmark=digits_open").startswith(
        "digits_open_pood_knn_s0_"
    )
    assert _subdir("detector=pood_knn", "detector.params.k=10") == k10
    # where things are is not what is computed: the same folder
    assert _subdir("detector=pood_knn", "detector.params.k=10", "batch_size=7") == k10
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=["detector=pood_knn", "detector.params.k=10"])
    assert k10.endswith(config_hash(cfg))


def test_rerun_of_a_sweep_folder_with_other_overrides_skips_and_keeps(tmp_path, cache_dir):
    common = [f"cache_dir={cache_dir}", FAST_TRAIN, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_knn",
        "detector.params.k=10,50",
        *common,
        cwd=tmp_path,
    )
    second = run_module(
        "-m",
        "ood_bench.run",
        "-m",
        "detector=pood_knn",
        "detector.params.k=50,100",
        *common,
        cwd=tmp_path,
    )
    assert (second.stdout + second.stderr).count("skipping job") == 1
    df = collect(tmp_path / "sweep")
    assert df["config_hash"].nunique() == 3  # k = 10, 50, 100: none overwritten


# ------------------------------------------------------------------ 4. cache entries


def _tiny():
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 17, size=(12, 1, 8, 8)) / 16).astype(np.float32)
    a = tensor_set("a", x, np.arange(12) % 3, {"source": "a"})
    b = tensor_set("b", x[::-1].copy(), np.arange(12) % 3, {"source": "b"})
    torch.manual_seed(0)
    bb = Backbone("cnn", DigitsCNN(3, width=4).eval(), "f" * 64, Path("x.pt"), ["block1"], "fc1")
    return a, b, bb


def test_swapped_cache_entries_are_detected_by_their_key(tmp_path, caplog):
    a, b, bb = _tiny()
    ex = FeatureExtractor(bb, tmp_path)
    fa, fb = ex(a), ex(b)
    pa, pb = ex.path(a), ex.path(b)
    for p in (pa, pb):  # swap entries together with their checksum sidecars
        p.rename(p.with_suffix(".tmp"))
        Path(f"{p}.sha256").rename(f"{p}.sha256.tmp")
    pa.with_suffix(".tmp").rename(pb)
    Path(f"{pa}.sha256.tmp").rename(f"{pb}.sha256")
    pb.with_suffix(".tmp").rename(pa)
    Path(f"{pb}.sha256.tmp").rename(f"{pa}.sha256")
    fresh = FeatureExtractor(bb, tmp_path)
    with caplog.at_level(logging.WARNING):
        ga = fresh(a)
    assert "another entry's content" in caplog.text
    assert torch.equal(ga.logits, fa.logits) and not torch.equal(ga.logits, fb.logits)
    assert fresh.cache_misses == 1


def test_entry_without_a_key_is_re_extracted(tmp_path, caplog):
    a, _, bb = _tiny()
    ex = FeatureExtractor(bb, tmp_path)
    ex(a)
    path = ex.path(a)
    stored = torch.load(path, weights_only=True)
    del stored["key"]
    torch.save(stored, path)
    atomic_write_text(f"{path}.sha256", __import__("hashlib").sha256(path.read_bytes()).hexdigest())
    fresh = FeatureExtractor(bb, tmp_path)
    with caplog.at_level(logging.WARNING):
        fresh(a)
    assert fresh.cache_misses == 1 and "expected" in caplog.text


# ------------------------------------------------------------------ 6. shared folders


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_read_only_cache_serves_its_entries(tmp_path, monkeypatch):
    """A cache where no lock can be created: complete entries are read, a missing one is a
    clear error (root ignores file modes, so the lock's failure is simulated)."""
    a, b, bb = _tiny()
    FeatureExtractor(bb, tmp_path)(a)

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", self.lock_file)

    monkeypatch.setattr("filelock.BaseFileLock.acquire", refuse)
    ro = FeatureExtractor(bb, tmp_path)
    assert len(ro(a)) == 12 and ro.cache_hits == 1
    with pytest.raises(CacheError, match="read-only"):
        ro(b)


# ------------------------------------------------------------------ provenance


def test_git_sha_ignores_generated_outputs(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    for d in ("ood_bench", "results"):
        (repo / d).mkdir(parents=True)
        (repo / d / "f.txt").write_text("1")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(environment, "REPO", repo)
    (repo / "results" / "f.txt").write_text("2")
    assert environment.uncommitted_code() == []
    (repo / "ood_bench" / "new.py").write_text("")
    assert environment.uncommitted_code() == ["ood_bench/new.py"]
    monkeypatch.delenv("ALLOW_DIRTY", raising=False)
    monkeypatch.delenv("OOD_BENCH_PAPER", raising=False)
    with pytest.raises(SystemExit, match="only the paper"):  # results/: the paper's alone
        environment.require_clean_tree(repo / "results" / "raw" / "x.csv", "test")
    monkeypatch.setenv("OOD_BENCH_PAPER", "1")
    with pytest.raises(SystemExit, match="ALLOW_DIRTY=1"):
        environment.require_clean_tree(repo / "results" / "raw" / "x.csv", "test")
    environment.require_clean_tree(tmp_path / "elsewhere.csv", "test")  # not committed results
    monkeypatch.setenv("ALLOW_DIRTY", "1")
    environment.require_clean_tree(repo / "results" / "raw" / "x.csv", "test")


def test_bad_seed_leaves_a_failed_row(tmp_path):
    proc = run_module(
        "-m",
        "ood_bench.run",
        "seed=abc",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    df = pd.read_csv(tmp_path / "run" / "metrics.csv", keep_default_na=False)
    assert df["status"].tolist() == ["failed"]
    assert "seed must be an integer" in df["error"].iloc[0]


def test_novelty_jobs_resume_like_the_others(tmp_path, cache_dir):
    """The novelty runner shares the job scaffold: a rerun of a finished job is skipped."""
    args = [
        "-m",
        "ood_bench.run_novelty",
        "benchmark=digits_open",
        "detector=stat_maha_cauchy",
        "novelty=hdbscan",
        "trials=2",
        "novelty/scenario@scenarios=[control_id]",
        f"cache_dir={cache_dir}",
        FAST_TRAIN,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    first = run_module(*args, cwd=tmp_path)
    assert "skipping job" not in first.stdout + first.stderr
    assert (tmp_path / "run" / "novelty_trials.csv.gz").is_file()
    again = run_module(*args, cwd=tmp_path)
    assert "skipping job" in again.stdout + again.stderr
    df = read_results(tmp_path / "run" / "metrics.csv")
    assert (df["status"] == "ok").all() and df["run_id"].nunique() == 1
