"""What every script does with a user's mistake: one line on stderr that says what to do, exit status 2.

    if __name__ == "__main__":
        run(main)

`main(argv)` raises UserError (or one of its subclasses: CheckpointError, DataError, UnknownNameError,
ConfigError, MissingFileError) for a mistake; run() prints `error: MESSAGE` and exits 2. `--debug` on the
command line (see `add_debug_flag`) or CIFAR_COMPARE_DEBUG=1 prints the traceback as well. Anything that
is not a UserError is a bug and keeps Python's traceback. argparse's own errors already exit 2 with a
usage line. The argparse types below reject bad flag values the same way. No torch at import."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from .common.errors import ConfigError, MissingFileError, UnknownNameError, UserError

__all__ = ["UserError", "UnknownNameError", "ConfigError", "MissingFileError", "run", "add_debug_flag",
           "debug_requested", "positive_int", "non_negative_int", "positive_float", "non_negative_float",
           "fraction", "device_name", "existing_file"]

DEBUG_ENV = "CIFAR_COMPARE_DEBUG"


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"on a mistake, show the Python traceback too (or set {DEBUG_ENV}=1)")


def run(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Call main(argv); a UserError becomes `error: MESSAGE` on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main(argv)
    except UserError as e:
        if debug_requested(argv):
            traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------- argparse types
def _number(kind: type, test: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a whole number above 0")
non_negative_int = _number(int, lambda v: v >= 0, "a whole number, 0 or more")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a number above 0")
non_negative_float = _number(float, lambda v: 0 <= v < float("inf"), "a number, 0 or more")
fraction = _number(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def device_name(text: str) -> str:
    """auto, cpu, cuda, cuda:N (checked against this machine), mps."""
    import torch  # only scripts that use torch anyway take a --device

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def existing_file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"file {text!r} not found")
    return text
