"""cifar-compare: two CIFAR-100 classifiers (cnn9 from scratch, EfficientNet-B0 fine-tuned), their
training, checkpoints and inference. Nothing here imports gradio or plotly, except `plots`.

The names below are imported on first use (PEP 562), so that `import cifar_models.serving` or
`cifar_models.catalog` does not import torch: the dashboard's web process never needs it."""
import importlib

_EXPORTS = {"CheckpointError": "checkpoint", "Classifier": "inference", "DataError": "data",
            "build_model": "models", "list_models": "models", "load_cifar100": "data", "load_classifier": "inference"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
