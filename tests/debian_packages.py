"""Debian packages the tests run (nginx, prometheus, prometheus-alertmanager), installed as root
when missing, like the other local servers the tests start."""

from __future__ import annotations

import os
import shutil
import subprocess

SYSTEM_BINARIES = "/usr/sbin:/usr/bin"


def installed(program: str, package: str) -> str:
    """The path of `program`; when it is missing and this is root, `apt-get install` its package
    (after `apt-get update` on a machine that has no package lists yet).

    The tests run their own instances on free loopback ports: the service the package starts
    (named after it, like nginx or prometheus on :9090) is stopped again at once."""
    found = shutil.which(program) or shutil.which(program, path=SYSTEM_BINARIES)
    if not found and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "--no-install-recommends", package]
        if subprocess.run(install, capture_output=True, timeout=600, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, check=True)  # a fresh machine
            subprocess.run(install, capture_output=True, timeout=600, check=True)
        subprocess.run(["invoke-rc.d", package, "stop"], capture_output=True, timeout=60, check=False)
        found = shutil.which(program, path=SYSTEM_BINARIES)
    if not found:
        raise RuntimeError(f"{program} is not installed (apt-get install -y {package})")
    return found
