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


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_over_a_screen_and_no_dispatch_by_name(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {lines} lines"
        if isinstance(node, ast.ClassDef):
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            assert "__getattr__" not in methods, f"{path.name}: class {node.name} dispatches by name"


def test_the_rule_checks_would_catch_a_long_function_and_a_getattr_class(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("class P:\n    def __getattr__(self, n):\n        return n\n\n\ndef f():\n" + "    x = 1\n" * 61)
    tree = ast.parse(bad.read_text())
    longest = max(n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    getattr_classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                       and any(isinstance(m, ast.FunctionDef) and m.name == "__getattr__" for m in n.body)]
    assert longest > MAX_FUNCTION_LINES and getattr_classes == ["P"]
