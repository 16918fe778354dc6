"""The plain PyTorch baseline: the training loop most GAN code is written as (pytorch/examples dcgan/main.py).

A `Dataset` that scales one image per `__getitem__`, a `DataLoader` with worker processes, a per-batch
`.to(device)`, separate backward passes for D's real and fake terms, and `.item()` reads each iteration for the
log line. Same networks, loss and batch size as the ganlab run it is compared with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, symmetric: bool):
        self.images, self.symmetric = images, symmetric  # uint8 (N, C, H, W)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(self.images[i]).float() / 255.0
        return x * 2 - 1 if self.symmetric else x


def make_loader(images: np.ndarray, batch_size: int, symmetric: bool, workers: int, cuda: bool):
    return torch.utils.data.DataLoader(ImageDataset(images, symmetric), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, pin_memory=cuda, drop_last=True,
                                       persistent_workers=workers > 0)


def train_steps(G: nn.Module, D: nn.Module, opt_g, opt_d, loader, nz: int, device: torch.device,
                steps: int) -> int:
    """`steps` iterations of the pytorch/examples DCGAN loop. Returns the number of real images used."""
    seen, it = 0, iter(loader)
    for _ in range(steps):
        try:
            real = next(it)
        except StopIteration:
            it = iter(loader)
            real = next(it)
        real = real.to(device)
        b = real.size(0)
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        D.zero_grad()
        out = D(real)
        err_real = F.binary_cross_entropy_with_logits(out, ones)
        err_real.backward()
        d_x = torch.sigmoid(out).mean().item()
        fake = G(torch.randn(b, nz, device=device))
        out = D(fake.detach())
        err_fake = F.binary_cross_entropy_with_logits(out, zeros)
        err_fake.backward()
        d_gz1 = torch.sigmoid(out).mean().item()
        opt_d.step()
        G.zero_grad()
        out = D(fake)
        err_g = F.binary_cross_entropy_with_logits(out, ones)
        err_g.backward()
        d_gz2 = torch.sigmoid(out).mean().item()
        opt_g.step()
        _ = (err_real.item() + err_fake.item(), err_g.item(), d_x, d_gz1, d_gz2)  # the log line's values
        seen += b
    return seen
