"""The plan of the package holds: the web process's modules import no torch, no function is longer than a
screen, and calls are never dispatched by name through __getattr__ (fast: no models)."""
import ast
import pkgutil
import subprocess
import sys

import pytest

from conftest import ROOT

WEB_PACKAGES = ("cifar_models.common", "cifar_models.dashboard")  # what the web process may import
MAX_FUNCTION_LINES = 60


def modules(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])]


def test_the_web_process_imports_no_torch():
    # Start-up: torch, torchvision (with torch._dynamo) and timm cost ~2.7 s to import; the web process (app.py and
    # every module of the web packages) never imports them, so Gradio starts while the model process loads them.
    # Gradio imports matplotlib on an app's first event when it is installed: it is not required here either.
    names = [m for p in WEB_PACKAGES for m in modules(p)]
    assert "cifar_models.dashboard.page" in names and "cifar_models.common.hosts" in names
    code = (f"import importlib, sys, app\nfor m in {names!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def python_files() -> list:
    return [ROOT / "app.py", *sorted((ROOT / "cifar_models").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]


def violations(source: str, name: str) -> list[str]:
    """Functions over MAX_FUNCTION_LINES lines, and classes that dispatch by name through __getattr__."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{name}:{node.lineno} {node.name} has {lines} lines")
        if isinstance(node, ast.ClassDef) and any(isinstance(m, ast.FunctionDef) and m.name == "__getattr__"
                                                  for m in node.body):
            out.append(f"{name}: class {node.name} dispatches by name")
    return out


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_over_a_screen_and_no_dispatch_by_name(path):
    assert violations(path.read_text(), path.name) == []


def test_the_rule_check_catches_a_long_function_and_a_getattr_class():
    bad = "class P:\n    def __getattr__(self, n):\n        return n\n\n\ndef f():\n" + "    x = 1\n" * 61
    assert sorted(violations(bad, "bad.py")) == ["bad.py: class P dispatches by name", "bad.py:6 f has 62 lines"]
