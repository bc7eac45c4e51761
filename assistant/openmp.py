"""How OpenMP's worker threads wait, set before the first `import torch` loads libgomp.

llama.cpp (built with OpenMP by `make setup`) and torch share one libgomp in Tailor's process:
torch's wheel loads `libgomp.so.1` first and llama.cpp's library binds to the same copy. libgomp
reads its wait settings once, when it loads. With its defaults a worker that finds no work goes
to sleep on a futex almost at once, and llama.cpp wakes it again at every decode step: on a
2-core Intel Xeon one chat stream decoded 15 tokens/s (raw llama.cpp, alone in a process
without torch, 89), the two cores were only 56-76 % busy during an evaluation, and an eighth
of its CPU time went to the kernel (futex calls).

OMP_WAIT_POLICY=ACTIVE keeps a waiting worker spinning, but by itself for up to 30 billion
spins (minutes): an idle server then burns a core long after each reply, and so does torch's
own idle pool. GOMP_SPINCOUNT bounds the spin to a million (about 10 ms by libgomp's own
estimate) before the worker sleeps, so nothing runs while Tailor is idle. Measured on that
machine (benchmarks/chat.py, README "Engine"): one stream 15.2 -> 55.8 tokens/s, 8 replies
one after another 14-16 -> 6 s, a 16-fact 4-arm evaluation 141-155 -> 91-105 s, and no CPU
used in the seconds after a reply.

Set only where the user set neither variable (theirs win, e.g. OMP_WAIT_POLICY=PASSIVE to turn
this off), and only while libgomp is not yet loaded: assistant/__init__.py calls `configure()`
so every entry point (CLI, app, server, training job, tests) does it before importing torch."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

WAIT_POLICY = "ACTIVE"
SPIN_COUNT = "1000000"  # spins before a waiting worker sleeps (about 10 ms by libgomp's estimate)
_LOADERS = ("torch", "llama_cpp")  # the libgomp llama.cpp uses is loaded by either (faiss brings its own copy)


def configure(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set the wait policy and the spin count unless the user set either, or a library that
    loads libgomp is already imported (too late: libgomp read its settings when it loaded).
    Returns whether it set them."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    if any(name in sys.modules for name in _LOADERS):
        return False
    env["OMP_WAIT_POLICY"] = WAIT_POLICY
    env["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
