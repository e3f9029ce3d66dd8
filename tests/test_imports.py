"""Imports flow one way: no module of fracbench imports (directly or through others, lazily or not) a module
that imports it back, and every module imports in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

grimp = pytest.importorskip("grimp")


def _cycles() -> list[tuple[str, str]]:
    g = grimp.build_graph("fracbench")
    found = set()
    for m in g.modules:
        for n in g.find_modules_directly_imported_by(m):
            if g.chain_exists(importer=n, imported=m):
                found.add(tuple(sorted((m, n))))
    return sorted(found)


def test_no_import_circle_anywhere():
    assert _cycles() == [], "modules that import each other (through any chain, lazy imports included)"


def test_the_circle_check_sees_a_planted_circle(tmp_path, monkeypatch):
    """A package of two modules importing each other inside functions: the same check finds it."""
    pkg = tmp_path / "circ"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from circ import b\n    return b\n")
    (pkg / "b.py").write_text("def g():\n    from circ import a\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = grimp.build_graph("circ")
    assert g.chain_exists(importer="circ.a", imported="circ.b") and g.chain_exists(importer="circ.b", imported="circ.a")


def test_every_module_imports_in_a_fresh_interpreter():
    code = ("import importlib, pkgutil, fracbench\n"
            "for m in pkgutil.walk_packages(fracbench.__path__, 'fracbench.'):\n"
            "    importlib.import_module(m.name)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
