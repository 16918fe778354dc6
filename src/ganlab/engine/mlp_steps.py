"""Hand-written training steps for the fully connected GANs: the book's batch-1 mode at the speed of its arithmetic.

At batch 1 one iteration of `mnist_mlp` is a few MFLOP on weights that fit in cache; autograd's graph, the
optimisers' Python and per-tensor loops, `zero_grad` and the allocator cost several times more than the arithmetic.
`MlpSteps` runs the iteration of `step.iteration` (split D update: a step on the real batch, then one on the
detached fake batch; G's step on a fresh batch) with the same maths:
- the same aten kernels: `addmm` for each Linear, the activations' and LayerNorm's own forward and backward
  kernels, BCE-with-logits (or the book's MSE on the sigmoid) and their backward kernels, the weight gradient as
  autograd computes it (`grad.t() @ input`), the optimiser's update formula (`foreach` or `fused`, as
  `train.fused` says); the same random draws in the same order (`step.draw`);
- without autograd: forward passes keep what their backward needs, backward passes are written layer by layer;
  D's weight gradients are not computed in G's step, nor G's in D's;
- each network's parameters, gradients and Adam moments live in three flat buffers, so an optimiser update is one
  call per network. The modules' parameters become views into the parameter buffer and the optimisers' state
  views into the moment buffers: checkpoints, sampling and evaluation see the usual modules and optimisers;
- nothing is batched that autograd runs apart: G's two forward passes could share one batch of 2B rows (D's steps
  leave G as it is), but a 2-row matrix product rounds differently from two 1-row ones, and the gain was within
  the noise of a shared 2-core machine.
The result equals the autograd path's to float rounding (bitwise at batch 1 in the cases tests/test_engine.py
checks); `bench/run.py` measures the speed. `supported` says which variants can run here (`train.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ganlab.config import Variant

aten = torch.ops.aten
MEAN = 1  # at::Reduction::Mean


def supported(cfg: Variant) -> Optional[str]:
    """None when `MlpSteps` can run this variant, else why not (for `train.engine: manual`'s error)."""
    m, t = cfg.model, cfg.train
    reasons = [
        (m.arch != "mlp", f"model.arch is {m.arch!r} (only 'mlp')"),
        (m.arch == "mlp" and (m.g_norm == "batchnorm" or m.d_norm == "batchnorm"), "BatchNorm layers"),
        (m.arch == "mlp" and "gelu" in (m.g_act, m.d_act), "GELU activations"),
        (m.loss not in ("bce", "mse"), f"model.loss is {m.loss!r} (only 'bce' and 'mse')"),
        (t.d_update != "split", "train.d_update is 'joint' (only the book's 'split')"),
        (t.g_noise != "fresh", "train.g_noise is 'reuse' (only 'fresh')"),
        (t.precision != "fp32", "train.precision is not fp32"),
        (t.compile, "train.compile is on"),
        (t.cuda_graph, "train.cuda_graph is on"),
    ]
    why = [r for bad, r in reasons if bad]
    return "; ".join(why) if why else None


@dataclass
class Layer:
    kind: str  # linear | lrelu | sigmoid | tanh | relu | layernorm
    w: Optional[Tensor] = None  # views into the network's flat parameter buffer ...
    wt: Optional[Tensor] = None  # (Linear: w.t(), as F.linear passes it to addmm)
    b: Optional[Tensor] = None
    gw: Optional[Tensor] = None  # ... and gradient buffer
    gb: Optional[Tensor] = None
    slope: float = 0.0
    eps: float = 0.0


class FlatNet:
    """A ganlab MLP (`Conditioned` around Linear, act, [LayerNorm], ..., Linear, [out act]) over flat buffers, with
    its optimiser's update on them."""

    KINDS = {nn.LeakyReLU: "lrelu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu"}

    def __init__(self, module: nn.Module, opt: torch.optim.Optimizer, fused: bool):
        self.n_classes = module.n_classes
        params = list(module.parameters())
        self.P = torch.cat([p.detach().reshape(-1) for p in params])
        self.G = torch.zeros_like(self.P)
        views = []
        offset = 0
        for p in params:
            views.append((self.P[offset:offset + p.numel()].view_as(p), self.G[offset:offset + p.numel()].view_as(p)))
            offset += p.numel()
        with torch.no_grad():
            for p, (v, _) in zip(params, views):
                p.data = v  # the module's parameters are now views into P
        grads = dict(zip(map(id, params), (g for _, g in views)))
        self.layers: list[Layer] = []
        for mod in module.net:
            if isinstance(mod, nn.Linear):
                self.layers.append(Layer("linear", mod.weight, mod.weight.detach().t(), mod.bias, grads[id(mod.weight)],
                                         grads[id(mod.bias)]))
            elif isinstance(mod, nn.LayerNorm):
                self.layers.append(Layer("layernorm", mod.weight, None, mod.bias, grads[id(mod.weight)],
                                         grads[id(mod.bias)], eps=mod.eps))
            elif type(mod) in self.KINDS:
                self.layers.append(Layer(self.KINDS[type(mod)], slope=getattr(mod, "negative_slope", 0.0)))
            elif not isinstance(mod, (nn.Flatten, nn.Unflatten)):
                raise ValueError(f"MlpSteps cannot run a {type(mod).__name__} layer")
        self.in_features = self.layers[0].w.shape[1] - self.n_classes
        self.eye = torch.eye(max(self.n_classes, 1), device=self.P.device, dtype=self.P.dtype)
        self.opt, self.fused, self.params = opt, fused, params
        self._bind_state()

    def _bind_state(self) -> None:
        """The optimiser's state as views into flat buffers (taken over from its state when it has one)."""
        group = self.opt.param_groups[0]
        self.adam = isinstance(self.opt, torch.optim.Adam)
        self.hyper = group
        if not self.adam:
            return
        states = [self.opt.state.get(p, {}) for p in self.params]
        if any(states) and not all(states):
            raise ValueError("MlpSteps: some parameters have Adam state and some do not")
        self.M, self.V = torch.zeros_like(self.P), torch.zeros_like(self.P)
        step = states[0]["step"].detach().clone() if states[0] else torch.zeros((), device=self.P.device)
        if states[0] and any(not torch.equal(s["step"], step) for s in states):
            raise ValueError("MlpSteps: the parameters' Adam step counts differ")
        self.step = step.to(self.P.device) if self.fused else step.cpu()
        self.k = int(step.item())  # the same count on the host, for the bias corrections
        offset = 0
        for p, st in zip(self.params, states):
            m, v = (self.M[offset:offset + p.numel()].view_as(p), self.V[offset:offset + p.numel()].view_as(p))
            if st:
                m.copy_(st["exp_avg"])
                v.copy_(st["exp_avg_sq"])
            self.opt.state[p] = {"step": self.step, "exp_avg": m, "exp_avg_sq": v}
            offset += p.numel()
        self.D = torch.empty_like(self.P)  # the update's denominator
        self.m0 = self.opt.state[self.params[0]]["exp_avg"]

    def bound(self) -> bool:
        """Whether the module's parameters and the optimiser's state are still the views into the flat buffers
        (`load_state_dict` on an optimiser replaces its state tensors)."""
        p = self.params[0]
        return p.data_ptr() == self.P.data_ptr() and (
            not self.adam or self.opt.state.get(p, {}).get("exp_avg") is self.m0)

    def update(self) -> None:
        """One optimiser step on the whole flat buffer: torch.optim's formula (foreach, or the fused kernel)."""
        h = self.hyper
        if not self.adam:
            if self.fused:
                torch._fused_sgd_([self.P], [self.G], [], weight_decay=0.0, momentum=0.0, lr=h["lr"],
                                  dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
            else:
                self.P.add_(self.G, alpha=-h["lr"])
            return
        lr, (b1, b2), eps = h["lr"], h["betas"], h["eps"]
        self.step.add_(1.0)  # torch.optim counts before the update, for both kernels
        self.k += 1
        if self.fused:
            torch._fused_adam_([self.P], [self.G], [self.M], [self.V], [], [self.step], amsgrad=False, lr=lr,
                               beta1=b1, beta2=b2, weight_decay=0.0, eps=eps, maximize=False)
            return
        k = self.k
        self.M.lerp_(self.G, 1 - b1)
        self.V.mul_(b2).addcmul_(self.G, self.G, value=1 - b2)
        torch.sqrt(self.V, out=self.D)
        self.D.div_((1 - b2 ** k) ** 0.5).add_(eps)
        self.P.addcdiv_(self.M, self.D, value=(lr / (1 - b1 ** k)) * -1)

    def forward(self, x: Tensor, y: Optional[Tensor]) -> tuple[Tensor, list]:
        """The network on flat inputs (B, in) and labels; returns (B, out) and the tape its backward reads."""
        if self.n_classes:  # the one-hot labels as `Conditioned` appends them, from a table (F.one_hot checks y)
            x = torch.cat([x, self.eye.index_select(0, y)], dim=1)
        tape = []
        h = x
        for layer in self.layers:
            k = layer.kind
            if k == "linear":
                tape.append(h)
                h = torch.addmm(layer.b, h, layer.wt)
            elif k == "layernorm":
                out, mean, rstd = torch.native_layer_norm(h, (h.shape[1],), layer.w, layer.b, layer.eps)
                tape.append((h, mean, rstd))
                h = out
            elif k == "lrelu":
                tape.append(h)
                h = nn.functional.leaky_relu(h, layer.slope)
            else:
                h = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[k](h)
                tape.append(h)
        return h, tape

    def backward(self, grad: Tensor, tape: list, weights: bool) -> Tensor:
        """Back through the network from dL/d(output) (B, out): the weight gradients into the flat gradient buffer
        when `weights`, and dL/d(input) (B, in) unless this is the first layer and only weights are wanted."""
        for i in range(len(self.layers) - 1, -1, -1):
            layer, saved = self.layers[i], tape[i]
            k = layer.kind
            if k == "linear":
                if weights:
                    torch.mm(grad.t(), saved, out=layer.gw)
                    if grad.shape[0] == 1:  # the sum over a batch of 1 is the row itself
                        layer.gb.copy_(grad[0])
                    else:
                        torch.sum(grad, 0, out=layer.gb)
                if i == 0 and weights:
                    return grad
                grad = torch.mm(grad, layer.w)
            elif k == "layernorm":
                h, mean, rstd = saved
                if weights:
                    grad = aten.native_layer_norm_backward.out(grad, h, [h.shape[1]], mean, rstd, layer.w, layer.b,
                                                               [True, True, True], out0=torch.empty_like(h),
                                                               out1=layer.gw, out2=layer.gb)[0]
                else:
                    grad = aten.native_layer_norm_backward(grad, h, [h.shape[1]], mean, rstd, layer.w, layer.b,
                                                           [True, False, False])[0]
            elif k == "lrelu":
                grad = aten.leaky_relu_backward(grad, saved, layer.slope, False)
            elif k == "sigmoid":
                grad = aten.sigmoid_backward(grad, saved)
            elif k == "tanh":
                grad = aten.tanh_backward(grad, saved)
            else:
                grad = aten.threshold_backward(grad, saved, 0)
        return grad[:, :self.in_features]


class Objective:
    """BCE-with-logits, or the book's MSE on the sigmoid, on raw scores (B, 1) as D's last Linear gives them (the
    same values as the autograd path's (B,)): the value, D(x) for the log, and dL/dscores (B, 1), with the kernels
    `ganlab.engine.losses` runs and their backward kernels."""

    def __init__(self, name: str, like: Tensor, n: int):
        self.mse = name == "mse"
        self.one = torch.ones((), device=like.device)
        self.targets = {t: torch.full((n, 1), t, device=like.device) for t in (0.0, 1.0)}  # n: the batch size

    def __call__(self, s: Tensor, target: float) -> tuple[Tensor, Tensor, Tensor]:
        t = self.targets[target]
        n = s.shape[0]
        if t.shape[0] != n:
            t = t[:n]
        p = torch.sigmoid(s)
        if self.mse:
            loss = nn.functional.mse_loss(p, t)
            grad = aten.sigmoid_backward(aten.mse_loss_backward(self.one, p, t, MEAN), p)
        else:  # F.binary_cross_entropy_with_logits is mean((1 - t) s - log sigmoid(s)): the same values, fewer ops
            ls = nn.functional.logsigmoid(s)
            loss = s - ls if target == 0.0 else ls.neg()
            grad = torch.sub(p, t)  # its backward: (sigmoid(s) - target) * 1 / B
            if n > 1:  # at batch 1 the mean and the division by 1 are exact: skipped (3 ops of ~5 us each)
                loss, grad = loss.mean(), grad.div_(n)
            else:
                loss = loss.view(())
        return loss, p.mean() if n > 1 else p.view(()), grad


class MlpSteps:
    """Runs iterations as `runners.Steps` does, with the hand-written passes above (see the module's docstring)."""

    def __init__(self, gan, data, log):
        why = supported(gan.cfg)
        if why:
            raise ValueError(f"MlpSteps cannot run this variant: {why}")
        self.gan, self.data, self.log = gan, data, log
        self._flatten()
        m, b, dev = gan.cfg.model, gan.cfg.train.batch_size, gan.rng.device
        self.b = b
        self.z = torch.empty((2 * b, m.nz), device=dev)  # rows [0, b): D's fake batch; [b, 2b): G's batch
        self.y = torch.empty(2 * b, dtype=torch.long, device=dev) if m.n_classes else None
        self.loss = Objective(m.loss, self.z, b)
        self.zero = torch.zeros((), device=dev)
        self.latent, self.n_classes, self.rng = m.latent, m.n_classes, gan.rng

    def _flatten(self) -> None:
        fused = self.gan.cfg.train.fused
        self.G, self.D = FlatNet(self.gan.G, self.gan.opt_g, fused), FlatNet(self.gan.D, self.gan.opt_d, fused)

    def _draw(self, rows: slice) -> None:
        """`GAN.latent` into the rows: the same generator calls, so the same numbers in the same order."""
        z = self.z[rows]
        if self.latent == "randn":
            z.normal_(generator=self.rng)
        elif self.latent == "rand":
            z.uniform_(generator=self.rng)
        elif self.latent == "uniform":
            z.uniform_(generator=self.rng).mul_(2).sub_(1)
        else:
            z.fill_(0.5)
        if self.n_classes:
            self.y[rows].random_(0, self.n_classes, generator=self.rng)

    @torch.no_grad()
    def __call__(self, idx: Tensor, g_step: bool) -> None:
        if not (self.G.bound() and self.D.bound()):  # a checkpoint was loaded into the modules or optimisers
            self._flatten()
        real, y = self.data.batch(idx)
        n = real.shape[0]
        fake_rows, g_rows = slice(0, n), slice(n, 2 * n)
        self._draw(fake_rows)
        if g_step:
            self._draw(g_rows)
        D, G, L = self.D, self.G, self.loss
        # D's step on the real batch
        s, tape = D.forward(real.reshape(n, -1), y)
        d_real, dx_real, grad = L(s, 1.0)
        D.backward(grad, tape, weights=True)
        D.update()
        # G on the fake batch, then D's step on it, detached
        y2 = self.y if self.n_classes else None
        fake, _ = G.forward(self.z[fake_rows], None if y2 is None else y2[fake_rows])
        s, tape = D.forward(fake, None if y2 is None else y2[fake_rows])
        d_fake, dx_fake, grad = L(s, 0.0)
        D.backward(grad, tape, weights=True)
        D.update()
        self.log.add_d(torch.stack([d_real, d_fake, self.zero, dx_real, dx_fake]))
        if g_step:  # G's step through D on a fresh batch (D's weight gradients are not needed)
            fake, g_tape = G.forward(self.z[g_rows], None if y2 is None else y2[g_rows])
            s, tape = D.forward(fake, None if y2 is None else y2[g_rows])
            g_loss, _, grad = L(s, 1.0)
            dfake = D.backward(grad, tape, weights=False)
            G.backward(dfake, g_tape, weights=True)
            G.update()
            self.log.add_g(g_loss)
        self.log.count(g_step)
