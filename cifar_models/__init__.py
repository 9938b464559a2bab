"""cifar-compare: two CIFAR-100 classifiers (cnn9 from scratch, EfficientNet-B0 fine-tuned), their
training, checkpoints and inference. Nothing here imports gradio or plotly, except `plots`."""
from .checkpoint import CheckpointError
from .data import DataError, load_cifar100
from .inference import Classifier, load_classifier
from .models import build_model, list_models

__all__ = ["CheckpointError", "Classifier", "DataError", "build_model", "list_models", "load_cifar100",
           "load_classifier"]
