"""The package builds as a wheel and an sdist, and the wheel installed into a fresh virtual
environment runs: `metadapt --version` and a short training command."""
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from metadapt.version import __version__

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    sdist = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; import sys; "
                            f"print(b.build_sdist({str(out)!r}))"], capture_output=True, text=True,
                           timeout=600, cwd=ROOT)
    assert sdist.returncode == 0, sdist.stderr[-2000:]
    return out


def test_wheel_and_sdist_carry_the_version_the_license_and_the_type_marker(dist):
    (wheel,) = dist.glob(f"metadapt-{__version__}-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "metadapt/py.typed" in names and "metadapt/version.py" in names
    assert any(n.endswith("LICENSE") for n in names)
    (sdist,) = dist.glob(f"metadapt-{__version__}.tar.gz")
    members = tarfile.open(sdist).getnames()
    assert {f"metadapt-{__version__}/LICENSE", f"metadapt-{__version__}/pyproject.toml"} <= set(members)


def test_the_wheel_installs_and_runs_in_a_fresh_environment(dist, tmp_path):
    (wheel,) = dist.glob("metadapt-*.whl")
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    python = env / "bin" / "python"
    # the fresh environment sees this one's torch etc. (no network), but metadapt only from the wheel:
    # a .pth appends this interpreter's site-packages (a virtual environment's too, which
    # --system-site-packages would miss) after the fresh one's; the .pth files in them, an editable
    # install's among them, are not read
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    parent = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    Path(own, "parent_environment.pth").write_text("".join(f"{p}\n" for p in parent))
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import metadapt; print(metadapt.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert str(env) in where.stdout, where.stdout + where.stderr
    version = subprocess.run([str(env / "bin" / "metadapt"), "--version"], capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.startswith(f"metadapt {__version__}")
    run = subprocess.run([str(env / "bin" / "metadapt"), "train", str(ROOT / "configs/sinusoid/maml.yaml"),
                          "train.iterations=3", "train.val_every=3", "train.val_tasks=4",
                          "train.meta_batch_size=2", "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run/checkpoints/last.pt").is_file()
