"""The shape of the code, checked (issue #13): no import cycle between modules, one settings
module that reads every TAILOR_* variable and the README's table that lists each of them.

The layer arrows themselves are import-linter contracts in pyproject.toml (`make lint`)."""

from __future__ import annotations

import re
from pathlib import Path

import grimp

from assistant.settings import ENV_VARS

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("assistant", "tuning", "retrieval", "evals", "serving", "demo", "ui", "cli")


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)

    def edges(module: str) -> list[str]:
        # A package's __init__ importing its own submodules is how packages export names, not
        # a cycle between the things they own; only count imports between distinct modules.
        return sorted(
            m
            for m in graph.find_modules_directly_imported_by(module)
            if m.split(".")[0] in PACKAGES and not module.startswith(m + ".")
        )

    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            child = next(it, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_modules():
    """Lazy imports inside functions count too: they hide a cycle, they do not remove it."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    class Graph:
        modules = {"tuning.a", "tuning.b", "tuning.c", "tuning"}
        imports = {"tuning.a": {"tuning.b"}, "tuning.b": {"tuning.a"}, "tuning.c": {"tuning.a"}, "tuning": set()}

        def find_modules_directly_imported_by(self, m):
            return self.imports[m]

    assert _cycles(Graph()) == [["tuning.a", "tuning.b"]]


_READS = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*["'](TAILOR_[A-Z0-9_]+)""")


def test_only_the_settings_module_reads_tailor_variables():
    readers = []
    for package in PACKAGES + ("app.py",):
        for path in sorted((REPO / package).rglob("*.py")) if package != "app.py" else [REPO / "app.py"]:
            if path == REPO / "assistant" / "settings.py":
                continue
            for name in _READS.findall(path.read_text(encoding="utf-8")):
                readers.append(f"{path.relative_to(REPO)}: {name}")
    assert readers == [], "read these through assistant.settings (env_str / env_number / Settings)"


def test_every_variable_is_documented_and_every_documented_one_is_read():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `TAILOR_"))
    documented = set(re.findall(r"`(TAILOR_[A-Z0-9_]+)`", table))
    assert sorted(set(ENV_VARS) - documented) == [], "missing from the README's configuration table"
    assert sorted(documented - set(ENV_VARS)) == [], "documented but not read by assistant.settings"
    settings_source = (REPO / "assistant" / "settings.py").read_text(encoding="utf-8")
    code = "\n".join(p.read_text(encoding="utf-8") for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
    unused = [v for v in ENV_VARS if settings_source.count(f'"{v}"') < 2 and f'"{v}"' not in code]
    assert unused == [], "listed in ENV_VARS but never read"


def test_benchmarks_never_put_their_own_folder_first_on_the_path():
    """benchmarks/retrieval.py would then shadow the retrieval package: `from retrieval.service
    import ...` inside a benchmark failed that way. Shared helpers are imported as
    `benchmarks.tables` with the repository root on the path."""
    offenders = []
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        if re.search(r"sys\.path\.insert\(0, str\(Path\(__file__\)\.resolve\(\)\.parent\)\)", text) or re.search(
            r"^from tables import|^import tables", text, re.M
        ):
            offenders.append(script.name)
    assert not offenders, offenders
