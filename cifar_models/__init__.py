"""cifar-compare: CIFAR-100 classifiers (cnn9 from scratch, EfficientNet-B0 fine-tuned, any timm model), their
training, checkpoints, evaluation, and the dashboard that shows them side by side.

The plan is the folders:

    data, models, checkpoint, inference, explain   the core (torch): data set, model registry, weights,
                                                   classifying images, Grad-CAM
    common/      no torch: what both serving processes share (the ModelHost interface, the checkpoint JSON and
                 eval report owners, image decoding, limits)
    train/       the training loop, its resumable state, the feature cache, torchrun, recipes
    eval/        test reports, metrics, calibration, corruptions, photo-like images
    serve/       the model process (torch): the loaded models behind the ModelHost, batching
    dashboard/   the web process (no torch): the Gradio page and its figures

The names below are imported on first use (PEP 562), so that importing `cifar_models.common` or
`cifar_models.dashboard` does not import torch: the dashboard's web process never needs it."""
import importlib

_EXPORTS = {"CheckpointError": "common.meta", "Classifier": "inference", "DataError": "data",
            "build_model": "models", "list_models": "models", "load_cifar100": "data", "load_classifier": "inference"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
