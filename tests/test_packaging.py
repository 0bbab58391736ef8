"""A source distribution holds what it needs to build, and a wheel builds from it."""
import glob
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tracked(prefix):
    out = subprocess.run(["git", "ls-files", prefix], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in out.stdout.split() if p]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    out = tmp_path_factory.mktemp("sdist")
    env = dict(os.environ, GAPOPS_SKIP_CUDA_BUILD="1")
    env.pop("GAPOPS_FORCE_CUDA_BUILD", None)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out)], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    (path,) = glob.glob(str(out / "gapops-*.tar.gz"))
    return path


def test_sdist_holds_license_sources_and_data(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "LICENSE" in names
    missing = [p for p in tracked("csrc") if p not in names]
    assert not missing, f"kernel sources missing from the sdist: {missing}"
    data = [p for p in tracked("gapops") if p.endswith((".npy", "LICENSE"))]
    assert all(p in names for p in data), "bundled data missing from the sdist"


def test_wheel_builds_from_the_sdist(sdist, tmp_path):
    env = dict(os.environ, GAPOPS_SKIP_CUDA_BUILD="1", MAX_JOBS="2")
    env.pop("GAPOPS_FORCE_CUDA_BUILD", None)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation",
                    "--no-deps", "-w", str(tmp_path), sdist], env=env, check=True,
                   capture_output=True)
    (wheel,) = glob.glob(str(tmp_path / "gapops-*.whl"))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("gapops/_C") and n.endswith(".so") for n in names), names
    assert "LICENSE" in {n.rsplit("/", 1)[-1] for n in names if n.endswith(".dist-info/licenses/LICENSE")
                         or n.endswith("/LICENSE")}
    bundled = [p for p in tracked("gapops") if p.endswith((".npy", "LICENSE"))]
    assert bundled and all(p in names for p in bundled), "bundled data missing from the wheel"
