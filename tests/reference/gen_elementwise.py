#!/usr/bin/python3
"""Reference values for tests/test_elementwise.cpp and tests/test_reduce.cpp,
computed with PyTorch in float64.

Writes elementwise.json next to this script. Tensors are stored flattened
(row-major) with their shapes.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20240611)
D = torch.float64


def tensor(t):
    return {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}


cases = {}

# ---- unary ops: a spread of points including the tails where naive forms overflow.
x = torch.cat([torch.linspace(-6, 6, 31, dtype=D),
               torch.tensor([-80.0, -30.0, -20.5, -1e-3, 1e-3, 19.5, 20.5, 30.0, 80.0], dtype=D)])
pos = torch.cat([torch.linspace(0.05, 9, 21, dtype=D), torch.tensor([1e-4, 123.0], dtype=D)])
unary = {
    "x": tensor(x),
    "pos": tensor(pos),
    "exp": tensor(torch.exp(x)),
    "tanh": tensor(torch.tanh(x)),
    "sigmoid": tensor(torch.sigmoid(x)),
    "relu": tensor(torch.relu(x)),
    "gelu": tensor(F.gelu(x)),
    "softplus": tensor(F.softplus(x)),
    "abs": tensor(torch.abs(x)),
    "neg": tensor(-x),
    "clamp": {"lo": -0.5, "hi": 0.7, "out": tensor(torch.clamp(x, -0.5, 0.7))},
    "log": tensor(torch.log(pos)),
    "sqrt": tensor(torch.sqrt(pos)),
    "pow": [{"e": e, "out": tensor(torch.pow(pos, e))} for e in (2.0, 3.0, 0.5, -1.0, -0.5, 1.7, 0.0)],
    # gradients of the ops whose derivative has its own formula
    "grad": {},
}
for name, fn in (("gelu", F.gelu), ("softplus", F.softplus), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
    xx = x.clone().requires_grad_(True)
    fn(xx).sum().backward()
    unary["grad"][name] = tensor(xx.grad)
cases["unary"] = unary

# ---- broadcasting binaries: [3, 1, 4] with [2, 4]; b kept away from zero for div.
a = torch.randn(3, 1, 4, dtype=D)
b = torch.randn(2, 4, dtype=D)
b = torch.where(b.abs() < 0.2, b.sign() * 0.2 + b, b)
b[0, 1] = a[1, 0, 1]  # a tie for maximum
cases["binary"] = {
    "a": tensor(a), "b": tensor(b),
    "add": tensor(a + b), "sub": tensor(a - b), "mul": tensor(a * b), "div": tensor(a / b),
    "maximum": tensor(torch.maximum(a, b)),
    "scalar": {"s": 1.75, "add": tensor(a + 1.75), "mul": tensor(a * 1.75), "rsub": tensor(1.75 - a)},
}

# ---- where / masked_fill, with broadcasting of every operand.
cond = (torch.rand(2, 1, 4) > 0.5).to(torch.int64)
wa = torch.randn(3, 1, dtype=D)
wb = torch.randn(2, 3, 4, dtype=D)
mf_a = torch.randn(2, 3, 4, dtype=D)
mf_mask = (torch.rand(3, 1) > 0.5).to(torch.int32)
mf_mask[0, 0], mf_mask[1, 0] = 1, 0
cases["select"] = {
    "cond": tensor(cond), "a": tensor(wa), "b": tensor(wb),
    "where": tensor(torch.where(cond != 0, wa, wb)),
    "mf_a": tensor(mf_a), "mf_mask": tensor(mf_mask), "mf_value": -7.5,
    "masked_fill": tensor(mf_a.masked_fill(mf_mask != 0, -7.5)),
}

# ---- reductions over a [3, 4, 5] tensor.
r = torch.randn(3, 4, 5, dtype=D)
sums = []
for dims in ([], [0], [1], [2], [0, 2], [1, 2], [-1, 0]):
    for keep in (False, True):
        td = tuple(dims) if dims else tuple(range(r.dim()))
        sums.append({"dims": dims, "keepdim": keep, "sum": tensor(r.sum(td, keepdim=keep)),
                     "mean": tensor(r.mean(td, keepdim=keep))})
# integer-valued entries, so maxima tie and the first index must win
ri = torch.randint(-3, 4, (3, 4, 5)).to(D)
maxes = []
for dim in (0, 1, 2, -1):
    v, i = ri.max(dim)
    maxes.append({"dim": dim, "values": tensor(v), "indices": i.reshape(-1).tolist(),
                  "argmax": torch.argmax(ri, dim).reshape(-1).tolist()})
cum = [{"dim": dim, "out": tensor(torch.cumsum(r, dim))} for dim in (0, 1, 2, -2)]
cases["reduce"] = {"x": tensor(r), "sums": sums, "xi": tensor(ri), "max": maxes, "cumsum": cum}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "elementwise.json")
with open(out, "w") as f:
    json.dump(cases, f, separators=(",", ":"))
print("wrote", out, os.path.getsize(out), "bytes")
