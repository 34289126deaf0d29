"""A newcomer's afternoon (issue 33): the README's commands leave the repository clean, errors
come first and alone, your own data through a config folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def scratch_copy(tmp_path: Path) -> Path:
    """The repository's tracked files (as in this work tree) in a fresh git repository."""
    repo = tmp_path / "repo"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # ood_bench/conf -> ../conf
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "copy"], check=True)
    return repo


def readme_section(title: str) -> list[str]:
    """The shell commands of a README section's bash blocks (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [c.strip() for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip()]


def shell(repo: Path, command: str) -> subprocess.CompletedProcess:
    """Run a README command in ``repo`` with this interpreter for ``.venv/bin/...``."""
    py = sys.executable
    command = re.sub(r"(^|\s)\.venv/bin/ood-bench", rf"\g<1>{py} -m ood_bench.cli", command)
    command = re.sub(r"(^|\s)\.venv/bin/python", rf"\g<1>{py}", command)
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "OMP_NUM_THREADS": "1",
        "OOD_BENCH_CACHE": str(repo / ".cache"),
    }
    env.pop("OOD_BENCH_PAPER", None)
    env.pop("OOD_BENCH_RESULTS", None)
    return subprocess.run(command, shell=True, cwd=repo, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_readme_sweep_commands_leave_the_repository_clean(tmp_path):
    repo = scratch_copy(tmp_path)
    commands = readme_section("Run a sweep and make its tables")
    assert len(commands) == 3, commands
    # the README's commands, made cheap: two detectors, one seed, a 2-epoch backbone
    commands[0] = re.sub(r"detector=\S+", "detector=pood_msp,pood_energy", commands[0])
    commands[0] = re.sub(r"seed=\S+", "seed=0", commands[0]) + " backbone.train.epochs=2"
    for command in commands:
        done = shell(repo, command)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True
    ).stdout
    assert status == "", status
    assert (repo / "scratch" / "tables" / "results.md").is_file()


@pytest.mark.parametrize(
    "command",
    [
        "collect outputs/x --out results/raw/my_sweep.csv",
        "tables scratch/x.csv --out results/tables",
        "figures scratch/x.csv --out results/figures",
        "report results --out results/site",
    ],
)
def test_commands_refuse_to_write_committed_results(command, monkeypatch, capsys):
    from ood_bench import cli

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("OOD_BENCH_PAPER", raising=False)
    with pytest.raises(SystemExit, match=r"committed results.*scratch/"):
        cli.main(command.split())


def test_site_conflict_names_the_files(tmp_path):
    from ood_bench.errors import DataError
    from ood_bench.site.data import load

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(ROOT / "results/raw/digits_all.csv", raw / "digits_all.csv")
    text = (raw / "digits_all.csv").read_text().splitlines()
    head = text[0].split(",")
    i = head.index("backbone_sha256")
    rows = []
    for line in text[1:]:  # the same jobs from another checkpoint (the CSV has no quoted commas
        cells = line.split(",")  # in these columns: checked below)
        if len(cells) != len(head) or not cells[i]:
            continue
        cells[i] = "f" * 64
        cells[head.index("run_id")] = cells[head.index("run_id")] + "x"
        rows.append(",".join(cells))
    assert rows
    (raw / "my_sweep.csv").write_text("\n".join([text[0], *rows]) + "\n")
    with pytest.raises(DataError, match=r"my_sweep\.csv") as e:
        load(tmp_path)
    assert "digits_all.csv" in str(e.value) and "remove" in str(e.value)


# ------------------------------------------------------------------ errors first and alone


def test_config_typo_answers_first_without_torch(tmp_path):
    code = (
        "import sys; from ood_bench import cli; "
        "rc = cli.main(['run', '-m', 'detector=pood_msp,stat_maha_enrgy', 'seed=0,1']); "
        "assert 'torch' not in sys.modules and 'hydra' not in sys.modules; sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: unknown detector option 'stat_maha_enrgy'. Did you mean: stat_maha_energy"
    ), done.stderr
    assert "Fix:" in done.stderr and done.stderr.count("\n") == 1  # one line, no option list


def test_config_check_knows_config_dir_and_keys(tmp_path):
    from ood_bench import cli

    (tmp_path / "detector").mkdir()
    (tmp_path / "detector" / "mine.yaml").write_text("name: pood_msp\n")
    assert cli.unknown_option(["detector=mine"]) is not None
    assert cli.unknown_option(["--config-dir", str(tmp_path), "detector=mine"]) is None
    assert cli.unknown_option([f"--config-dir={tmp_path}", "+detector@x=mine"]) is None
    ok = ["seed=0,1", "data_root=/x", "hydra/launcher=slurm", "benchmark=digits", "backbone=lenet"]
    assert cli.unknown_option(ok + ["novelty/scenario@scenarios=[a,b]"]) is None
    assert "unknown benchmark option 'digit'" in cli.unknown_option(["benchmark=digit"])


def test_project_errors_print_one_line(monkeypatch, capsys):
    from ood_bench.errors import DataError, one_line_errors

    @one_line_errors
    def task() -> None:
        raise DataError("no data at /x. Fix: pass data_root=")

    monkeypatch.delenv("OOD_BENCH_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as e:
        task()
    assert e.value.code == 1
    assert capsys.readouterr().err == "error: no data at /x. Fix: pass data_root=\n"
    monkeypatch.setenv("OOD_BENCH_DEBUG", "1")
    with pytest.raises(DataError):
        task()


@pytest.mark.slow
def test_run_prints_a_project_error_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("OOD_BENCH_DEBUG", None)
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [sys.executable, "-m", "ood_bench.cli", "run", "benchmark=mnist_fashion"]
        + [f"data_root={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: data root ")


# ------------------------------------------------------------------ bring your own data

EXAMPLES = ROOT / "docs" / "examples" / "conf"


def documented_command(yaml: Path) -> list[str]:
    """The ``ood-bench run ...`` command in the example file's header comment, as arguments."""
    header = [line[1:].strip() for line in yaml.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(header) if line.startswith("ood-bench run "))
    words = []
    for line in header[start:]:
        words += line.removesuffix("\\").split()
        if not line.endswith("\\"):  # the command's last line
            break
    return words[2:]


def tiny_images(root: Path) -> None:
    """Both examples' files under ``root``: 3 classes of 28×28 grey images, an OOD set."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 90), ("test", 30)):
        y = np.arange(n) % 3
        x = (rng.random((n, 28, 28)) * 40 + y[:, None, None] * 90).astype(np.uint8)
        (root / "my_data").mkdir(parents=True, exist_ok=True)
        np.savez(root / "my_data" / f"{split}.npz", x=x, y=y)
        for i, (img, c) in enumerate(zip(x, y, strict=True)):
            d = root / "my_images" / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    ood = (rng.random((20, 28, 28)) * 255).astype(np.uint8)
    np.savez(root / "my_ood.npz", x=ood)
    (root / "my_ood_images" / "any").mkdir(parents=True)
    for i, img in enumerate(ood):
        Image.fromarray(img).save(root / "my_ood_images" / "any" / f"{i}.png")


@pytest.mark.slow
@pytest.mark.parametrize("example", ["my_npz", "my_imagefolder"])
def test_your_own_data_examples_run(example, tmp_path):
    import pandas as pd

    tiny_images(tmp_path / "data")
    args = documented_command(EXAMPLES / "benchmark" / f"{example}.yaml")
    assert args[:3] == ["--config-dir", "docs/examples/conf", f"benchmark={example}"], args
    args = [
        a.replace("/path/to/data", str(tmp_path / "data")).replace("stat_maha_energy", "pood_msp")
        for a in args
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "ood_bench.cli", "run", *args, "threads=1"]
        + [f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert set(rows["status"]) == {"ok"} and set(rows["benchmark"]) == {example}
    assert {"my_ood", "my_ood_images"} & set(rows["ood_dataset"])


# ------------------------------------------------------------------ make openood offline


@pytest.mark.parametrize("src", ["http://127.0.0.1:9/openood.tar.gz", "missing.tar.gz"])
def test_make_openood_offline_names_the_vendored_tarball(src, tmp_path):
    done = subprocess.run(
        [str(ROOT / ".ci" / "openood.sh"), src, str(tmp_path / "oo"), "/bin/false"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make openood: "), done.stderr
    assert "OPENOOD_SRC=../shared/vendor/OpenOOD-3c35632ee91b.tar.gz" in lines[0]


def test_makefile_openood_recipe_is_the_script():
    text = (ROOT / "Makefile").read_text()
    assert len(text.splitlines()) <= 100
    assert '.ci/openood.sh "$(OPENOOD_SRC)" $(OPENOOD_DIR) $(PY)' in text


# ------------------------------------------------------------------ make test


def test_openood_install_hint_once_per_session(tmp_path):
    (tmp_path / "test_three.py").write_text(
        "import pytest\nfrom tests.conftest import OPENOOD_SKIP\n\n"
        + "".join(
            f"@pytest.mark.skipif(True, reason=OPENOOD_SKIP)\ndef test_{i}():\n    pass\n\n"
            for i in range(3)
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-ra", "-q"]
        + ["-p", "no:cacheprovider", str(tmp_path / "test_three.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "3 skipped" in done.stdout, done.stdout + done.stderr
    assert done.stdout.count("git clone https://github.com/Jingkang50/OpenOOD") == 1, done.stdout


def test_make_test_quick_skips_existing_files_and_readme_says_how_long():
    text = (ROOT / "Makefile").read_text()
    assert "test-quick: venv" in text and len(text.splitlines()) <= 100
    skip = re.search(r"QUICK_SKIP \?= (.*?)\ntest-quick", text, re.S).group(1)
    names = skip.replace("\\", " ").split()
    assert names and all((ROOT / "tests" / f"{n}.py").is_file() for n in names), names
    readme = (ROOT / "README.md").read_text()
    assert (
        "about 8-10 minutes on a quiet 2-core machine" in readme and "`make test-quick`" in readme
    )
