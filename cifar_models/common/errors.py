"""The user's mistakes, as types: a script shows their message as one line and exits with status 2
(cifar_models/cli.py); anything else is a bug and keeps its traceback. No torch here: cheap to import anywhere."""
from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """Something the user can fix (a name, a path, a flag value); the message says what to do."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise print their message in quotes
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class UnknownNameError(UserError, KeyError):
    """An unknown model, recipe or architecture name (a KeyError, as the registry always raised)."""


class ConfigError(UserError, ValueError):
    """Recipe or flag values that cannot work together (a ValueError, as before)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named is not there."""


class MissingPackageError(UserError, ImportError):
    """An optional package a feature needs is not installed."""


def import_or_explain(module: str, package: str | None = None) -> ModuleType:
    """import module, or say in one line which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackageError(f"{module} is needed for this and is not installed ({e}): "
                                  f"pip install {package or module} (or pip install -r requirements.txt)") from e
