"""The README's install line works in a fresh virtualenv, as a newcomer runs it from a clone:
then `followup --help` and `celery -A followup inspect --help` answer.

The dependencies come from this test run's environment (a .pth file, read-only), so the test
needs no package index; followup itself is built and installed by the README's own line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_embedding import SUBPACKAGES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def install_block() -> str:
    """The shell block of the README's Install section."""
    section = README.split("\n## Install", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the Install section has a shell block"
    return block.group(1)


def test_the_install_line_installs_from_the_checkout_not_an_index() -> None:
    lines = [line.split("#")[0].strip() for line in install_block().splitlines()]
    installs = [line for line in lines if line.startswith("pip install")]
    assert installs == ["pip install '.[flower]'"]
    assert "pip install followup" not in README and "'followup[" not in README


def test_the_readme_install_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    for folder in ("followup", *SUBPACKAGES):
        shutil.copytree(ROOT / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "deps.pth").write_text(deps + "\n")
    for old in site.glob("setuptools*"):  # Python 3.11's venv seeds an older setuptools
        shutil.rmtree(old) if old.is_dir() else old.unlink()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOLLOWUP_", "PIP_"))}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        # No package index in a test: the dependencies are already there (deps.pth), and the
        # build uses the setuptools there too.
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    script = "\n".join(
        line
        for line in install_block().splitlines()
        if not line.startswith(("python3 -m venv", "followup --help"))
    )
    installed = subprocess.run(
        ["bash", "-euc", script], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    python = str(venv / "bin" / "python")
    # From the checkout its followup/ folder comes first on sys.path: it still works.
    for command in (
        [python, "-m", "celery", "-A", "followup", "inspect", "--help"],
        [python, "-c", "import followup.worker.pipeline"],
    ):
        result = subprocess.run(
            command, cwd=clone, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
    shutil.rmtree(clone / "followup")  # what answers now is the installed package
    # celery itself comes from deps.pth (no script of its own here): `python -m celery`.
    for command in (
        [str(venv / "bin" / "followup"), "--help"],
        [python, "-m", "celery", "-A", "followup", "inspect", "--help"],
    ):
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
        assert (
            str(venv)
            in subprocess.run(
                [python, "-c", "import followup; print(followup.__file__)"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
