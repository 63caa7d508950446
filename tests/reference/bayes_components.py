#!/usr/bin/python3
"""Reference values for tests/test_bayes_components.cpp (model.md's SufficientStatsEncoder,
OptimalCoTLayer, PositionalDebiasing and MDLRegularizedLoss), written independently in
PyTorch: contexts come from explicit S x S masks, not prefix sums.
Writes bayes_components.json next to this script."""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(20240)
torch.set_default_dtype(torch.float64)

D, S, LENGTHS, NH = 8, 5, [5, 3], 4
B = len(LENGTHS)
M = max(3, int(math.floor(math.log(D))))


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))


def randomize(module):
    # Non-default values everywhere, so a parameter mixed up with another shows.
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def context_matrix(causal):
    """W[b, t, s] = 1 if s is in P(t)."""
    mask = torch.zeros(B, S)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
    W = mask[:, None, :].expand(B, S, S).clone()
    if causal:
        W = W * torch.tril(torch.ones(S, S))
    return W, mask


class Stats(nn.Module):
    def __init__(self):
        super().__init__()
        self.prior = nn.Parameter(torch.full((2,), math.log(math.e - 1)))
        self.moment = nn.ModuleList([mlp(D, D // 2, 1) for _ in range(M)])
        self.count = nn.Linear(D, M)
        self.beta_head = nn.Linear(D, 1)
        self.proj = nn.Linear(2 * M + 2, D)

    def forward(self, x, causal):
        W, _ = context_matrix(causal)
        n = W.sum(-1, keepdim=True)
        nn_ = n.clamp(min=1)
        f = torch.cat([m(x) for m in self.moment], -1)
        mu = torch.einsum('bts,bsk->btk', W, f) / nn_
        c = torch.einsum('bts,bsk->btk', W, torch.sigmoid(self.count(x))) / nn_
        p = torch.sigmoid(self.beta_head(x))
        a0, b0 = F.softplus(self.prior)
        alpha = a0 + torch.einsum('bts,bsk->btk', W, p)[..., 0]
        beta = b0 + torch.einsum('bts,bsk->btk', W, 1 - p)[..., 0]
        feats = torch.cat([mu, c, alpha.log()[..., None], beta.log()[..., None]], -1)
        tot = alpha + beta
        return dict(stats=self.proj(feats), alpha=alpha, beta=beta, posterior_mean=alpha / tot,
                    posterior_variance=alpha * beta / (tot ** 2 * (tot + 1)))


class CoT(nn.Module):
    def __init__(self):
        super().__init__()
        self.entropy = mlp(D, D // 2, 1)
        self.ratio = mlp(D, D // 2, 1)

    def forward(self, x, causal):
        W, _ = context_matrix(causal)
        n = W.sum(-1)
        z = torch.einsum('bts,bsd->btd', W, x) / n.clamp(min=1)[..., None]
        H = F.softplus(self.entropy(z))[..., 0] + 1e-6
        R = F.softplus(self.ratio(z))[..., 0] + 1e-6
        L = torch.sqrt(n * 1.0 / (H * R)) * math.log2(1 / 1e-6)
        return dict(optimal_length=L.clamp(1, 512), reasoning_entropy=H)


class Debias(nn.Module):
    def __init__(self):
        super().__init__()
        self.detector = mlp(D, D // 2, NH)
        self.harmonic_weights = nn.Parameter(torch.ones(NH))
        self.gate = nn.Linear(D, D)
        self.basis = nn.Linear(2 * NH, D, bias=False)

    def forward(self, x, offset=0):
        _, mask = context_matrix(False)
        t = torch.arange(S, dtype=torch.float64) + offset
        psi_cols = []
        a = torch.sigmoid(self.detector(x)) * self.harmonic_weights
        for h in range(NH):
            P = 4 * 2 ** h
            psi_cols.append(a[..., h] * torch.sin(2 * math.pi * t / P))
            psi_cols.append(a[..., h] * torch.cos(2 * math.pi * t / P))
        psi = torch.stack(psi_cols, -1)
        corr = torch.sigmoid(self.gate(x)) * self.basis(psi)
        n = mask.sum(1)
        return dict(out=x - corr, artifact_scores=a,
                    artifact_magnitude=(a * mask[..., None]).sum((1, 2)) / (n * NH),
                    correction_magnitude=(corr.norm(dim=-1) * mask).sum(1) / n)


def mdl(logits, targets, beta, ignore=-100):
    valid = targets != ignore
    N = int(valid.sum())
    ce = F.cross_entropy(logits, targets, ignore_index=ignore, reduction='sum')
    _, counts = torch.unique(targets[valid], return_counts=True)
    q = counts.double() / N
    H = float(-(q * q.log()).sum())
    opt = N * H + math.sqrt(N * math.log(N)) if N > 1 else 0.0
    pen = max(0.0, float(ce) - opt) / N
    return dict(loss=float(ce) / N + beta * pen, standard_loss=float(ce) / N, mdl_penalty=pen,
                empirical_entropy=H, optimal_complexity=opt, actual_complexity=float(ce),
                compression_efficiency=opt / float(ce), mdl_active=float(ce) > opt, n=N)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


def params(module):
    return {k: {'shape': list(v.shape), 'data': flat(v)} for k, v in module.state_dict().items()}


def outputs(d):
    return {k: flat(v) for k, v in d.items()}


x = torch.randn(B, S, D)
out = {'D': D, 'S': S, 'lengths': LENGTHS, 'n_harmonics': NH, 'm': M, 'x': flat(x)}

stats = Stats(); randomize(stats)
cot = CoT(); randomize(cot)
deb = Debias(); randomize(deb)
out['stats'] = {'params': params(stats), 'causal': outputs(stats(x, True)),
                'bidirectional': outputs(stats(x, False))}
out['cot'] = {'params': params(cot), 'causal': outputs(cot(x, True)),
              'bidirectional': outputs(cot(x, False))}
out['debias'] = {'params': params(deb), 'offset0': outputs(deb(x)), 'offset3': outputs(deb(x, 3))}

cases = []
for N, C, scale, beta in [(12, 5, 0.3, 0.1), (12, 5, 6.0, 0.25), (7, 3, 1.0, 0.0)]:
    logits = torch.randn(N, C) * scale
    targets = torch.randint(0, C, (N,))
    targets[1] = -100
    case = mdl(logits, targets, beta)
    case.update(N=N, C=C, beta=beta, logits=flat(logits), targets=[int(v) for v in targets])
    cases.append(case)
out['mdl'] = cases

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bayes_components.json')
with open(path, 'w') as f:
    json.dump(out, f, separators=(',', ':'))
print(path, os.path.getsize(path), 'bytes')
print([(c['mdl_active'], c['loss']) for c in cases])
