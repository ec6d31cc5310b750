"""The built wheel installs one top-level import name, `driftstream`, with the capability
folders (stream/, state/, transport/, producers/, consumers/) mapped under it.

The wheel is built once for the module, without network or build isolation, from a copy of
the tracked files, so no build/ or *.egg-info lands in the repository. It takes a few
seconds: ``-m "not packaging"`` leaves it out of a quick run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import PurePosixPath

import pytest

from tests.support import PACKAGES, REPO

pytestmark = pytest.mark.packaging


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in _tracked_files():
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is skipped
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [path] = out.glob("driftstream-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _dist_info(wheel: zipfile.ZipFile) -> str:
    [name] = {n.split("/")[0] for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info")}
    return name


def test_the_only_top_level_import_name_is_driftstream(wheel):
    top = {PurePosixPath(name).parts[0] for name in wheel.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"driftstream"}, sorted(top)
    top_level = f"{_dist_info(wheel)}/top_level.txt"
    if top_level in wheel.namelist():
        assert wheel.read(top_level).decode().split() == ["driftstream"]


def test_every_mapped_folder_is_in_the_wheel_under_the_root(wheel):
    """Each folder of package-dir lands whole under its package: all its tracked modules."""
    names = set(wheel.namelist())
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    assert set(package_dir) == set(PACKAGES)
    tracked = _tracked_files()
    for package, folder in package_dir.items():
        inside = package.replace(".", "/")
        modules = [
            PurePosixPath(f).name
            for f in tracked
            if PurePosixPath(f).parent == PurePosixPath(folder) and f.endswith(".py")
        ]
        assert "__init__.py" in modules, folder
        missing = [m for m in modules if f"{inside}/{m}" not in names]
        assert not missing, f"{folder}/ modules missing from {inside}/ in the wheel: {missing}"
    for sub in ("stream", "state", "transport", "producers", "consumers"):
        assert f"driftstream/{sub}/__init__.py" in names, sub


def test_the_command_is_the_cli_entry_point(wheel):
    entry_points = wheel.read(f"{_dist_info(wheel)}/entry_points.txt").decode()
    assert "[console_scripts]" in entry_points
    assert "driftstream = driftstream.cli:main" in entry_points
