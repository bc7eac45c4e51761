"""The Lantern Bay Bikes demo: its files (package data under lantern_bay/) and the loader that
`tailor demo load` and the web app's demo panel call."""

from .loader import DEMO_TAG, DemoResult, demo_dir, demo_eval_sets, demo_exclusions, demo_facts, load_demo

__all__ = [
    "DEMO_TAG",
    "DemoResult",
    "demo_dir",
    "demo_eval_sets",
    "demo_exclusions",
    "demo_facts",
    "load_demo",
]
