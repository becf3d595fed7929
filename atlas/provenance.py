"""Where a run record comes from: the commit of the code and the device it ran on."""

from __future__ import annotations

import platform
import subprocess

import torch

from atlas import CHECKOUT

#: Paths whose changes do not make the code "dirty": the run records themselves.
NOT_CODE = ("results",)


def git_commit() -> dict[str, object]:
    """The checked-out commit and whether tracked files other than the run records differ from it;
    none for an installed package (which is not a checkout, whatever folder it was installed in)."""
    if CHECKOUT is None:
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        excludes = [f":(exclude){p}" for p in NOT_CODE]
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes],
                                cwd=CHECKOUT, capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit, "dirty": bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"cpu: {cpu} ({torch.get_num_threads()} threads)"
