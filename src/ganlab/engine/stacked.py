"""S copies of one fully connected network (one per seed), as one network over stacked weights.

Seed s's Linear weight (out, in) is kept transposed, as row s of a contiguous (S, in, out) tensor, and a layer of
all S networks is one batched product: `baddbmm(b (S, 1, out), x (S, B, in), W^T (S, in, out))`. (Stacked as
(S, out, in), autograd's weight gradient came out transposed and was copied into the parameter's layout at every
backward: 28 % of a batch-1 step's CPU time.) Activations are elementwise; LayerNorm
normalises each row over its last dim and then applies seed s's affine; BatchNorm1d of S networks over (S, B, C)
is one BatchNorm1d over (B, S*C) (its statistics are per column, so per seed and channel), with the running
statistics flat (S*C,). Nothing mixes seeds, so the gradient of the sum of the S losses with respect to row s is
seed s's own gradient, and an elementwise optimiser (Adam, SGD) over the stacked tensors is S separate ones.

The stacked tensors are the training state; the S modules (`ganlab.engine.models.MlpG`/`MlpD`) stay the seeds'
own, written from the stack (`to_modules`) when a checkpoint, a grid or the outputs need them and read back
(`from_modules`) after a resume. Same code on any device: no CPU-only kernels.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ELEMENTWISE = (nn.LeakyReLU, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU)


class StackedMlp:
    """The S networks' layers over stacked parameters (leaves, in `module.parameters()` order) and buffers."""

    def __init__(self, modules: list[nn.Module]):
        first = modules[0]
        self.S, self.n_classes = len(modules), first.n_classes
        self.layers: list[tuple[str, nn.Module, list[Tensor]]] = []  # (kind, seed 0's module, its stacked tensors)
        self.params: list[Tensor] = []
        self.buffers: list[Tensor] = []  # BatchNorm running mean and var, flat (S*C,)
        self.tracked: list[Tensor] = []  # BatchNorm num_batches_tracked (S,)
        self.transposed: list[bool] = []  # per stacked parameter: row s is the module's tensor transposed
        for i, mod in enumerate(first.net):
            mods = [m.net[i] for m in modules]
            if isinstance(mod, (nn.Linear, nn.LayerNorm, nn.BatchNorm1d)):
                t = isinstance(mod, nn.Linear)  # (S, in, out)
                ps = [torch.stack([m.weight.detach().t() if t else m.weight.detach() for m in mods]).contiguous(),
                      torch.stack([m.bias.detach() for m in mods])]
                ps = [p.requires_grad_(True) for p in ps]
                self.params += ps
                self.transposed += [t, False]
                if isinstance(mod, nn.BatchNorm1d):
                    bufs = [torch.cat([getattr(m, k) for m in mods]) for k in ("running_mean", "running_var")]
                    self.buffers += bufs
                    self.tracked.append(torch.stack([m.num_batches_tracked for m in mods]))
                    ps = ps + bufs + [self.tracked[-1]]
                self.layers.append((type(mod).__name__, mod, ps))
            elif isinstance(mod, ELEMENTWISE):
                self.layers.append(("act", mod, []))
            elif isinstance(mod, nn.Unflatten):
                self.layers.append(("unflatten", mod, []))
            elif isinstance(mod, nn.Flatten):
                self.layers.append(("flatten", mod, []))
            else:
                raise ValueError(f"the joint engine cannot stack a {type(mod).__name__} layer")
        if len(self.params) != len(list(first.parameters())):
            raise ValueError("the joint engine missed some of the network's parameters")

    def __call__(self, x: Tensor, y: Optional[Tensor]) -> Tensor:
        """x (S, B, ...) and labels (S, B) -> the S networks' outputs (S, B, ...)."""
        h = x.flatten(2)
        if self.n_classes:  # `Conditioned`: one-hot labels appended to the flat input
            h = torch.cat([h, F.one_hot(y, self.n_classes).to(h.dtype)], dim=2)
        for kind, mod, ps in self.layers:
            if kind == "Linear":
                h = torch.baddbmm(ps[1].unsqueeze(1), h, ps[0])
            elif kind == "LayerNorm":
                h = F.layer_norm(h, mod.normalized_shape, eps=mod.eps) * ps[0].unsqueeze(1) + ps[1].unsqueeze(1)
            elif kind == "BatchNorm1d":
                S, B, C = h.shape
                flat = h.transpose(0, 1).reshape(B, S * C)  # (B, S*C): per-column statistics = per seed
                flat = F.batch_norm(flat, ps[2], ps[3], ps[0].reshape(-1), ps[1].reshape(-1), True,
                                    mod.momentum, mod.eps)
                ps[4].add_(1)
                h = flat.reshape(B, S, C).transpose(0, 1)
            elif kind == "act":
                h = mod(h)
            elif kind == "unflatten":
                h = h.unflatten(2, mod.unflattened_size)
            else:  # D's Flatten(0): (B, 1) -> (B,), here (S, B, 1) -> (S, B)
                h = h.flatten(1)
        return h

    def requires_grad_(self, flag: bool) -> None:
        for p in self.params:
            p.requires_grad_(flag)

    @torch.no_grad()
    def to_modules(self, modules: list[nn.Module]) -> None:
        """Write row s of every stacked tensor into seed s's module."""
        for s, m in enumerate(modules):
            for p, stacked, t in zip(m.parameters(), self.params, self.transposed):
                p.copy_(stacked[s].t() if t else stacked[s])
            self._buffers_io(m, s, into_module=True)

    @torch.no_grad()
    def from_modules(self, modules: list[nn.Module]) -> None:
        """Read the modules back into the stack (after a resume, or a grid drawn in train mode moved BN's count)."""
        for s, m in enumerate(modules):
            for p, stacked, t in zip(m.parameters(), self.params, self.transposed):
                stacked[s].copy_(p.t() if t else p)
            self._buffers_io(m, s, into_module=False)

    def _buffers_io(self, m: nn.Module, s: int, into_module: bool) -> None:
        bns = [mod for mod in m.net if isinstance(mod, nn.BatchNorm1d)]
        for j, bn in enumerate(bns):
            C = bn.num_features
            pairs = [(bn.running_mean, self.buffers[2 * j][s * C:(s + 1) * C]),
                     (bn.running_var, self.buffers[2 * j + 1][s * C:(s + 1) * C]),
                     (bn.num_batches_tracked, self.tracked[j][s])]
            for mine, stacked in pairs:
                (mine.copy_(stacked) if into_module else stacked.copy_(mine))


def opt_to_seeds(opt: torch.optim.Optimizer, net: StackedMlp, seed_opts: list[torch.optim.Optimizer]) -> None:
    """Give each seed's optimiser its row of the stacked optimiser's state (copies, so a checkpoint holds one seed)."""
    for s, so in enumerate(seed_opts):
        seed_params = so.param_groups[0]["params"]
        for p, sp, t in zip(net.params, seed_params, net.transposed):
            st = opt.state.get(p)
            if st:
                so.state[sp] = {k: (v.detach().clone() if v.dim() == 0 else
                                    (v[s].t() if t else v[s]).detach().clone(memory_format=torch.contiguous_format))
                                for k, v in st.items()}


def opt_from_seeds(opt: torch.optim.Optimizer, net: StackedMlp, seed_opts: list[torch.optim.Optimizer]) -> None:
    """The stacked optimiser's state from the seeds' (resumed) ones; all seeds must be at the same step count."""
    for j, (p, t) in enumerate(zip(net.params, net.transposed)):
        states = [so.state.get(so.param_groups[0]["params"][j], {}) for so in seed_opts]
        if not any(states):
            continue
        if not all(states):
            raise ValueError("the joint engine: some seeds have optimiser state and some do not")
        st = {}
        for k, v in states[0].items():
            if v.dim() == 0:  # Adam's step count, shared
                if any(not torch.equal(o[k], v) for o in states):
                    raise ValueError("the joint engine: the seeds' optimiser step counts differ")
                st[k] = v.clone()
            else:
                st[k] = torch.stack([o[k].t() if t else o[k] for o in states]).contiguous()
        opt.state[p] = st
