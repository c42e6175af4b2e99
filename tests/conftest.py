"""Shared test policy and fixtures.

Kernel tests need root, bpf() and bpffs. Outside CI they skip with a reason;
under CI=true every skip is turned into a failure, because CI machines have
all of it and a skipped kernel test there would hide a regression.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI=true (a skip is a failure in CI): {reason}"


def _kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for bpf()"
    if not os.path.isdir("/sys/fs/bpf"):
        return "no /sys/fs/bpf"
    try:
        from pybpfasm import probe

        return probe.unavailable_reason()
    except ImportError:
        return None


@pytest.fixture(scope="session")
def kernel() -> None:
    """Depend on this fixture in every test that talks to the kernel."""
    reason = _kernel_unavailable_reason()
    if reason:
        pytest.skip(reason)
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=False)


@pytest.fixture
def unique_name() -> str:
    """A short unique prefix for test-owned kernel objects (netns, veths, pins)."""
    return "pyb" + uuid.uuid4().hex[:6]
