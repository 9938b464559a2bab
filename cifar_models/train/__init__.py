"""Training: `loop` (setup, epoch, finish: read it top to bottom), `state` (the resumable state), `features`
(the cache of frozen stages' outputs), `distributed` (torchrun), `recipes` (the defaults every recipe
starts from). `train` is the whole of it."""
from .loop import train  # noqa: F401
