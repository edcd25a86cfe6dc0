"""The shared image stack (extra ``vision``): data sets, loaders, recipes, models, evaluation.

Documented choice: loaders yield pixels in [0, 1]; models normalise inside
(``with_normalization(model, ds.mean, ds.std)``), so attacks work in [0, 1] pixel space.
"""

from research_systems_core.vision.datasets import (
    DATASET_SPECS,
    ImageDataset,
    load_image_dataset,
    parse_dataset_spec,
)
from research_systems_core.vision.evaluation import evaluate_accuracy
from research_systems_core.vision.folders import make_image_folder
from research_systems_core.vision.loaders import (
    ShardedEvalSampler,
    default_workers,
    make_loader,
    set_loader_epoch,
)
from research_systems_core.vision.models import WeightsUnavailableError, create_image_model, image_model_names
from research_systems_core.vision.selfcheck import folder_training_check
from research_systems_core.vision.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    SVHN_MEAN,
    SVHN_STD,
    TINY_IMAGENET_MEAN,
    TINY_IMAGENET_STD,
    Normalize,
    imagenet_transforms,
    mixup_fn,
    small_image_transforms,
    with_normalization,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASET_SPECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "SVHN_MEAN",
    "SVHN_STD",
    "TINY_IMAGENET_MEAN",
    "TINY_IMAGENET_STD",
    "ImageDataset",
    "Normalize",
    "ShardedEvalSampler",
    "WeightsUnavailableError",
    "create_image_model",
    "default_workers",
    "evaluate_accuracy",
    "folder_training_check",
    "image_model_names",
    "imagenet_transforms",
    "load_image_dataset",
    "make_image_folder",
    "make_loader",
    "mixup_fn",
    "parse_dataset_spec",
    "set_loader_epoch",
    "small_image_transforms",
    "with_normalization",
]
