"""The tutorial's training pipeline, kept in benchmarks/ only as the reference fracbench is measured against.

This is what the public "CNN from scratch" PyTorch tutorial (the paper's code) does in every
epoch, on this machine's CPU:

* ``torchvision.datasets.ImageFolder`` over a folder of class subfolders (FracAtlas's
  ``Fractured`` / ``Non_fractured``), so every image is opened and decoded by PIL, and converted
  to RGB, in every epoch;
* ``Resize((150, 150))``, ``RandomHorizontalFlip()``, ``ToTensor()``,
  ``Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])``;
* ``DataLoader(batch_size=32, shuffle=True)`` with the default ``num_workers=0``;
* the same ConvNet (fracbench's ``paper_cnn`` is the tutorial's class unchanged),
  ``Adam(lr=0.001, weight_decay=0.0001)``, ``CrossEntropyLoss``, and the tutorial's bookkeeping
  (``loss.cpu().data * images.size(0)``, ``torch.max(outputs.data, 1)``).

fracbench never imports this module.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

# FracAtlas's folder names; ImageFolder numbers classes alphabetically (Fractured = 0), the
# tutorial's own convention, which does not matter for throughput
CLASS_DIRS = {1: "Fractured", 0: "Non_fractured"}


def build_folder(files: Iterable[tuple[Path, int]], dest: Path) -> Path:
    """``dest/<class>/<n>_<name>`` symlinks to ``(path, label)`` files: the layout ImageFolder reads."""
    dest = Path(dest)
    for i, (path, label) in enumerate(files):
        link = dest / CLASS_DIRS[int(label)] / f"{i:06d}_{Path(path).name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(Path(path).resolve())
    return dest


def tutorial_transform(size: int = 150) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),  # 0-255 to 0-1, numpy to tensors
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),  # 0-1 to [-1, 1]
    ])


class TutorialPipeline:
    """ImageFolder + DataLoader + the tutorial's training loop, around a given model."""

    def __init__(self, folder: Path, model: nn.Module, size: int = 150, batch_size: int = 32,
                 num_workers: int = 0) -> None:
        self.dataset = ImageFolder(str(folder), transform=tutorial_transform(size))
        self.loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.0001)
        self.loss_function = nn.CrossEntropyLoss()

    def train(self, max_batches: int | None = None) -> int:
        """One epoch (or its first ``max_batches`` batches) as the tutorial trains; returns images seen."""
        self.model.train()
        train_accuracy = 0.0
        train_loss = 0.0
        seen = 0
        for images, labels in itertools.islice(self.loader, max_batches):
            self.optimizer.zero_grad()
            outputs = self.model(images)
            loss = self.loss_function(outputs, labels)
            loss.backward()
            self.optimizer.step()
            train_loss += loss.cpu().data * images.size(0)
            _, prediction = torch.max(outputs.data, 1)
            train_accuracy += int(torch.sum(prediction == labels.data))
            seen += images.size(0)
        return seen
