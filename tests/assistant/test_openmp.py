"""OpenMP's wait settings (assistant/openmp.py): set before torch loads libgomp, never over the
user's own, and read by the libgomp that torch and llama.cpp share (OMP_DISPLAY_ENV=VERBOSE prints
what libgomp read when it loaded)."""

from __future__ import annotations

import os
import subprocess
import sys

from assistant import openmp


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env}, capture_output=True, text=True
    )


def test_importing_tailor_sets_the_wait_policy_that_torchs_libgomp_then_reads():
    out = _run("import os, assistant, torch; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [openmp.WAIT_POLICY, openmp.SPIN_COUNT]
    assert f"OMP_WAIT_POLICY = '{openmp.WAIT_POLICY}'" in out.stderr
    assert f"GOMP_SPINCOUNT = '{openmp.SPIN_COUNT}'" in out.stderr


def test_the_users_own_setting_wins():
    out = _run("import os, assistant, torch; print(os.environ.get('GOMP_SPINCOUNT'))", OMP_WAIT_POLICY="PASSIVE")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in out.stderr
    env: dict[str, str] = {"GOMP_SPINCOUNT": "300000"}
    assert openmp.configure(env) is False and env == {"GOMP_SPINCOUNT": "300000"}


def test_nothing_is_set_once_torch_is_loaded():
    # libgomp has read its settings by then: setting them would only mislead whoever reads the environment
    out = _run("import os, torch, assistant; print(os.environ.get('OMP_WAIT_POLICY'))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
    import torch  # noqa: F401  (in this test process too: configure leaves a given mapping alone)

    env: dict[str, str] = {}
    assert openmp.configure(env) is False and env == {}
