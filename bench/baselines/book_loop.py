"""The book's MNIST GAN training loops, written the way *Make Your First GAN With PyTorch* writes them (notebook 08,
and notebook 16's conditional GAN).

A faithful baseline, not ganlab code: each network owns its loss and optimiser and a `train()` that does one
optimiser step for one sample; the loop walks a pandas-backed Dataset item by item, steps D on the real image,
then on a detached fake, then steps G through D, drawing a fresh seed for each call.

Used by bench/train_cpu.py (speed) and by tests/test_engine.py (ganlab's batch-1 schedule must give the same
weights as this loop).
"""

from __future__ import annotations

import random
from typing import Callable

import pandas
import torch
from torch import nn


class MnistDataset(torch.utils.data.Dataset):
    """The book's dataset: a DataFrame, one row per image, label first; pixels scaled to [0, 1] per item."""

    def __init__(self, frame: pandas.DataFrame):
        self.data_df = frame

    def __len__(self) -> int:
        return len(self.data_df)

    def __getitem__(self, index: int):
        label = self.data_df.iloc[index, 0]
        target = torch.zeros((10))
        target[label] = 1.0
        image_values = torch.FloatTensor(self.data_df.iloc[index, 1:].values) / 255.0
        return label, image_values, target


class TensorRows(torch.utils.data.Dataset):
    """The book's items from a uint8 array in memory, created on `device` (the book's GPU notebooks set CUDA as the
    default tensor type): for 784-pixel rows, MnistDataset's (label, image, one-hot target); for (3, 128, 128)
    faces, notebook 14's (1, 3, 128, 128) image (the book reads each face from HDF5 and crops it: slower still)."""

    def __init__(self, pixels, device: torch.device):
        self.pixels, self.device = pixels, device

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int):
        if index >= len(self.pixels):
            raise IndexError(index)
        image = torch.tensor(self.pixels[index], dtype=torch.float32, device=self.device) / 255.0
        if image.dim() == 1:
            return 0, image, torch.zeros((10), device=self.device)
        return 0, image.unsqueeze(0), None


class Discriminator(nn.Module):
    """Notebook 08's D; `model` swaps in another network of raw scores (notebook 14's CNN), Sigmoid kept."""

    def __init__(self, lr: float = 0.0001, model: nn.Module | None = None):
        super().__init__()
        self.model = nn.Sequential(model, nn.Sigmoid()) if model is not None else nn.Sequential(
            nn.Linear(784, 200), nn.LeakyReLU(0.02), nn.LayerNorm(200), nn.Linear(200, 1), nn.Sigmoid())
        self.loss_function = nn.BCELoss()
        self.optimiser = torch.optim.Adam(self.parameters(), lr=lr)
        self.counter = 0
        self.progress = []

    def forward(self, inputs):
        return self.model(inputs)

    def train(self, inputs, targets):  # noqa: the book shadows nn.Module.train
        outputs = self.forward(inputs)
        loss = self.loss_function(outputs, targets)
        self.counter += 1
        if self.counter % 10 == 0:
            self.progress.append(loss.item())
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()


class Generator(nn.Module):
    """Notebook 08's G; `model` swaps in another generator (notebook 14's CNN)."""

    def __init__(self, lr: float = 0.0001, model: nn.Module | None = None):
        super().__init__()
        self.model = model if model is not None else nn.Sequential(
            nn.Linear(100, 200), nn.LeakyReLU(0.02), nn.LayerNorm(200), nn.Linear(200, 784), nn.Sigmoid())
        self.optimiser = torch.optim.Adam(self.parameters(), lr=lr)
        self.counter = 0
        self.progress = []

    def forward(self, inputs):
        return self.model(inputs)

    def train(self, D, inputs, targets):  # noqa: the book shadows nn.Module.train
        g_output = self.forward(inputs)
        d_output = D.forward(g_output)
        loss = D.loss_function(d_output, targets)
        self.counter += 1
        if self.counter % 10 == 0:
            self.progress.append(loss.item())
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()


def generate_random_seed(size: int) -> torch.Tensor:
    return torch.randn(size)


def train_gan(D: Discriminator, G: Generator, dataset: MnistDataset, epochs: int = 1, limit: int | None = None,
              seed_fn: Callable[[int], torch.Tensor] = generate_random_seed) -> int:
    """The book's loop. Returns the number of images seen."""
    device = next(D.parameters()).device
    one, zero = torch.tensor([1.0], device=device), torch.tensor([0.0], device=device)
    seen = 0
    for _ in range(epochs):
        for label, image_data_tensor, target_tensor in dataset:
            if limit is not None and seen >= limit:
                return seen
            D.train(image_data_tensor, one)  # the book: torch.FloatTensor([1.0]), on the default device
            D.train(G.forward(seed_fn(100)).detach(), zero)
            G.train(D, seed_fn(100), one)
            seen += 1
    return seen


class ConditionalDiscriminator(Discriminator):
    """Notebook 16's D: the image and the one-hot label, concatenated, into Linear(794, 200)."""

    def __init__(self, lr: float = 0.0001):
        super().__init__(lr, model=nn.Sequential(nn.Linear(784 + 10, 200), nn.LeakyReLU(0.02), nn.LayerNorm(200),
                                                 nn.Linear(200, 1)))  # + the Sigmoid Discriminator appends

    def forward(self, image_tensor, label_tensor):
        return self.model(torch.cat((image_tensor, label_tensor)))

    def train(self, inputs, label_tensor, targets):  # noqa: the book shadows nn.Module.train
        outputs = self.forward(inputs, label_tensor)
        loss = self.loss_function(outputs, targets)
        self.counter += 1
        if self.counter % 10 == 0:
            self.progress.append(loss.item())
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()


class ConditionalGenerator(Generator):
    """Notebook 16's G: the seed and the one-hot label, concatenated, into Linear(110, 200)."""

    def __init__(self, lr: float = 0.0001):
        super().__init__(lr, model=nn.Sequential(nn.Linear(100 + 10, 200), nn.LeakyReLU(0.02), nn.LayerNorm(200),
                                                 nn.Linear(200, 784), nn.Sigmoid()))

    def forward(self, seed_tensor, label_tensor):
        return self.model(torch.cat((seed_tensor, label_tensor)))

    def train(self, D, inputs, label_tensor, targets):  # noqa: the book shadows nn.Module.train
        g_output = self.forward(inputs, label_tensor)
        d_output = D.forward(g_output, label_tensor)
        loss = D.loss_function(d_output, targets)
        self.counter += 1
        if self.counter % 10 == 0:
            self.progress.append(loss.item())
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()


def generate_random_one_hot(size: int, device: torch.device | None = None) -> torch.Tensor:
    label_tensor = torch.zeros((size), device=device)
    label_tensor[random.randint(0, size - 1)] = 1.0
    return label_tensor


def train_cgan(D: ConditionalDiscriminator, G: ConditionalGenerator, dataset, epochs: int = 1,
               limit: int | None = None, seed_fn: Callable[[int], torch.Tensor] = generate_random_seed) -> int:
    """Notebook 16's loop: the real image with its label, a fake of a random label, G on another random label."""
    device = next(D.parameters()).device
    one, zero = torch.tensor([1.0], device=device), torch.tensor([0.0], device=device)
    seen = 0
    for _ in range(epochs):
        for label, image_data_tensor, label_tensor in dataset:
            if limit is not None and seen >= limit:
                return seen
            D.train(image_data_tensor, label_tensor, one)
            random_label = generate_random_one_hot(10, device)
            D.train(G.forward(seed_fn(100), random_label).detach(), random_label, zero)
            random_label = generate_random_one_hot(10, device)
            G.train(D, seed_fn(100), random_label, one)
            seen += 1
    return seen
