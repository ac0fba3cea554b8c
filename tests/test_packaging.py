"""The built wheel is one namespace, ``dialgraph/``, and works from any working directory.

A user's project often has its own ``tools/`` or ``server/`` folder. Before the four
folders installed as ``dialgraph.*``, such a folder shadowed ours: ``from tools import ...``
failed with ``ImportError (unknown location)``. This builds the wheel, installs it into a
fresh virtualenv (its dependencies come from the project's venv through a path entry, so
nothing is downloaded but the build backend), and runs the CLI from a directory that has
both folders.
"""

from __future__ import annotations

import fcntl
import os
import site
import subprocess
import sys
import sysconfig
import tempfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Each xdist worker running a test of this module builds its own wheel, and setuptools
    # builds in the source tree (build/, *.egg-info): one build at a time, or they collide.
    lock_path = Path(tempfile.gettempdir()) / "dialgraph-wheel-build.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build(out)
    (built,) = out.glob("dialgraph-*.whl")
    return built


def _build(out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )


def test_wheel_holds_the_namespace_and_its_dist_info_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"dialgraph"}
    assert len(dist_info) == 1
    assert not any(n.startswith("dialgraph/__init__") for n in names)  # a namespace, open to plugins
    for pkg in ("graphs", "tools", "server", "telephony"):
        assert f"dialgraph/{pkg}/__init__.py" in names
    # data the product needs at run time
    assert "dialgraph/server/core/migrations/env.py" in names
    assert any(n.startswith("dialgraph/server/core/migrations/versions/0001") for n in names)
    assert "dialgraph/telephony/speech/data/silero_vad.onnx" in names
    assert "dialgraph/telephony/speech/data/smart-turn-v3.2-cpu.onnx" in names
    assert "dialgraph/telephony/speech/data/smart-turn-v3.2-cpu.LICENSE" in names
    assert "dialgraph/telephony/simulator/scenarios/scheduling_demo.yaml" in names
    assert "dialgraph/tools/data/support_faq.yaml" in names
    # every package folder in the repo made it in (pyproject lists them one by one)
    for pkg in ("graphs", "tools", "server", "telephony"):
        for init in (ROOT / pkg).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"dialgraph/{rel}" in names, f"{rel} is missing from [tool.setuptools] packages"


@pytest.mark.slow
@pytest.mark.offline_speech
def test_installed_wheel_runs_from_a_directory_with_its_own_tools_and_server(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies, without our editable install: a path entry is not a site dir, so the
    # editable finder's own .pth file in the project venv is not run.
    ours = sysconfig.get_paths()["purelib"]
    (purelib / "deps.pth").write_text("\n".join([ours, *site.getsitepackages()]) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    cli = [str(env_dir / "bin" / "dialgraph")]  # the console script the wheel declares

    work = tmp_path / "user_project"
    for shadow in ("tools", "server", "graphs", "telephony"):
        (work / shadow).mkdir(parents=True)
        (work / shadow / "__init__.py").write_text("raise ImportError('the user project, not dialgraph')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALGRAPH_", "DATABASE_URL", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(work)  # the user's folders first on the path, as in their notebook

    where = subprocess.run(
        [str(py), "-c", "import dialgraph.tools, dialgraph.server; print(dialgraph.tools.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(purelib))

    check = subprocess.run([*cli, "config", "check"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    demo = subprocess.run([*cli, "demo"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "PASSED" in demo.stdout
