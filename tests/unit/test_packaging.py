"""The llmfleet package as the receiver host gets it: built from the project folder, offline.

The manifest format and the gpgv check live in plugins/module_utils/llmfleet_bundle.py (Ansible
ships that file to the hosts); the package must carry that same file as the top-level module
`llmfleet_bundle`, so an installed CLI imports exactly what the module_utils file says.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".cache")


def test_a_wheel_built_offline_carries_the_module_utils_file(tmp_path: Path) -> None:
    # What the receiver's role copies to its host (pyproject.toml, README.md, src, plugins),
    # built the way it installs it: no index, no dependencies, no build isolation.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    for name in ("src", "plugins"):
        shutil.copytree(REPO / name, project / name, ignore=IGNORE)
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-index", "--no-deps"),
            *("--no-build-isolation", "--disable-pip-version-check", "--quiet"),
            *("--wheel-dir", str(tmp_path / "dist"), str(project)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("llmfleet-*.whl")
    with zipfile.ZipFile(wheel) as zipped:
        names = set(zipped.namelist())
        shipped = zipped.read("llmfleet_bundle.py")
    assert shipped == (REPO / "plugins/module_utils/llmfleet_bundle.py").read_bytes()
    assert {"llmfleet/cli.py", "llmfleet/bundle/manifest.py", "llmfleet/fileio.py"} <= names
    assert not any(name.startswith("llmfleet_gpu") for name in names)  # only what is imported

    # Imported from the wheel alone (no site-packages, no source tree on the path).
    probe = (
        "import llmfleet_bundle, llmfleet.bundle.manifest as m;"
        "assert m.parse_manifest is llmfleet_bundle.parse_manifest;"
        "print(llmfleet_bundle.__file__); print(m.__file__)"
    )
    imported = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={"PYTHONPATH": str(wheel)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == [
        f"{wheel}/llmfleet_bundle.py",
        f"{wheel}/llmfleet/bundle/manifest.py",
    ]
