"""One import namespace: everything installed lives under `hivegrid`, and the code imports it so."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"coordinator", "worker", "client"}  # repo folders mapped to hivegrid.<name>


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _python_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return [ROOT / f for f in out if not f.startswith("hivegrid/")]


def test_the_package_list_covers_every_folder_with_an_init() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir = setuptools["package-dir"]
    listed = set(setuptools["packages"])
    found = set()
    for prefix, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if any(part in MAPPED for part in rel.parts) and prefix == "hivegrid":
                continue  # the symlinks inside hivegrid/ point at the mapped folders
            found.add(".".join([prefix, *rel.parts]))
    assert found == listed


def test_no_module_imports_the_repository_folders_by_their_own_names() -> None:
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in MAPPED:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert offenders == []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    # Built from a copy of the tracked files (symlinks kept), so the tree is left as it was.
    src = tmp_path / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in listed:
        origin, copy = ROOT / name, src / name
        if not origin.is_symlink() and not origin.is_file():
            continue  # deleted in the work tree
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            copy.symlink_to(origin.readlink())
        else:
            shutil.copyfile(origin, copy)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hivegrid-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"hivegrid"}
    for module in (
        "hivegrid/client/__init__.py",
        "hivegrid/worker/__init__.py",
        "hivegrid/coordinator/core/scheduler.py",
        "hivegrid/coordinator/runtime/__init__.py",
        "hivegrid/v1/worker_pb2.py",
    ):
        assert module in names
