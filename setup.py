"""Which packages the wheel holds; everything else about the build is pyproject.toml's.

`followup`, and every package under the folders that pyproject.toml's package-dir maps into
it (worker/ is followup.worker, so worker/platforms/cxone/ is followup.worker.platforms.cxone),
found rather than listed: a new platform package is in the wheel with no line here.
"""

from setuptools import find_packages, setup

FOLDERS = ("config", "tasks", "worker", "simulator", "cli")  # pyproject.toml's package-dir

found = find_packages(include=[*FOLDERS, *(f"{folder}.*" for folder in FOLDERS)])
setup(packages=["followup", *(f"followup.{name}" for name in found)])
