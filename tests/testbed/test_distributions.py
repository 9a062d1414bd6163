"""The two distributions: the operator's wheel (what the image installs) carries no emulator and
no demo; the testbed's wheel carries the CRD the emulated API serves, the same bytes as crds/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lucidgrant_testbed import CRDS
from tests.e2e.harness import ROOT


def build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    # From the venv's setuptools, offline; setuptools builds in the source tree, so the source
    # is a copy in tmp_path and the checkout stays clean.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.fixture
def operator_wheel(tmp_path: Path) -> list[str]:
    # What the Dockerfile's builder stage copies, and nothing else.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "operator",
        src / "operator",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    return build_wheel(src, tmp_path / "wheel").namelist()


def test_operator_wheel_has_the_operator_and_no_emulator_or_demo(operator_wheel: list[str]) -> None:
    packages = {name.split("/")[0] for name in operator_wheel}
    assert packages == {"lucidgrant", "lucidgrant-0.1.0.dist-info"}, packages
    assert "lucidgrant/__main__.py" in operator_wheel
    assert "lucidgrant/py.typed" in operator_wheel
    unwanted = [n for n in operator_wheel if "testbed" in n or "demo" in n or "emulat" in n]
    assert not unwanted, unwanted
    entry_points = [n for n in operator_wheel if n.endswith("entry_points.txt")]
    assert entry_points, "the wheel declares its console scripts"


def test_testbed_wheel_carries_the_crd_as_in_the_repository(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # crds/ beside testbed/, as in the repository, so that the package's symlink resolves.
    shutil.copytree(
        ROOT / "testbed",
        src / "testbed",
        symlinks=True,
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"),
    )
    shutil.copytree(ROOT / "crds", src / "crds")
    wheel = build_wheel(src / "testbed", tmp_path / "wheel")
    crd = "lucidgrant_testbed/crds/lucidgrant.dev_lucidgrants.yaml"
    assert crd in wheel.namelist()
    assert wheel.read(crd) == (ROOT / "crds" / "lucidgrant.dev_lucidgrants.yaml").read_bytes()
    assert "lucidgrant_testbed/lucid/server.py" in wheel.namelist()
    assert "lucidgrant_testbed/demo.py" in wheel.namelist()


def test_installed_testbed_finds_the_crd_without_the_working_directory() -> None:
    assert CRDS.is_absolute()
    assert sorted(p.name for p in CRDS.iterdir()) == sorted(
        p.name for p in (ROOT / "crds").iterdir()
    )
    assert (CRDS / "lucidgrant.dev_lucidgrants.yaml").read_bytes() == (
        ROOT / "crds" / "lucidgrant.dev_lucidgrants.yaml"
    ).read_bytes()
