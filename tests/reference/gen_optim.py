#!/usr/bin/python3
"""Reference values for tests/test_optim.cpp, from PyTorch.

Writes tests/reference/optim.json: AdamW and SGD trajectories over fixed parameters
and fixed gradient sequences (f32 and f64), clip_grad_norm_ results, and learning
rates of the warmup schedules through torch.optim.lr_scheduler.LambdaLR.
Run: /usr/bin/python3 tests/reference/gen_optim.py
Generated with Debian's torch 1.13, whose AdamW forms m as beta1*m + (1-beta1)*g;
torch 2.x (and the engine) use lerp(m, g, 1-beta1): equal up to rounding.
"""
import json
import math
import os

import torch

torch.use_deterministic_algorithms(True)
gen = torch.Generator().manual_seed(20240611)

SHAPES = [[3, 4], [5], [2, 1, 3]]
STEPS = 6


def rand(shape, dtype, scale=1.0):
    return ((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).to(dtype)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def make_problem(dtype, grad_scale=1.0):
    """Initial params and a gradient sequence; param 1 has no gradient at step 3."""
    params = [rand(s, dtype) for s in SHAPES]
    grads = []
    for step in range(STEPS):
        # Gradient scales vary by step so the moments do real work.
        gs = [rand(s, dtype, scale=(0.5 + step) * grad_scale) for s in SHAPES]
        if step == 3:
            gs[1] = None
        grads.append(gs)
    lrs = [1e-2, 2e-2, 5e-3, 1e-2, 3e-2, 1e-3]
    return params, grads, lrs


def run(opt_factory, params0, grads, lrs, decay):
    params = [p.clone().requires_grad_(True) for p in params0]
    opt = opt_factory(params, decay)
    traj = []
    for step, gs in enumerate(grads):
        for g in opt.param_groups:
            g["lr"] = lrs[step]
        for p, g in zip(params, gs):
            p.grad = None if g is None else g.clone()
        opt.step()
        traj.append([flat(p) for p in params])
    return traj, opt, params


def groups(params, decay, wd):
    return [
        {"params": [p for p, d in zip(params, decay) if d], "weight_decay": wd},
        {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0},
    ]


def problem_json(params, grads, lrs):
    return {
        "shapes": SHAPES,
        "params": [flat(p) for p in params],
        "grads": [[None if g is None else flat(g) for g in gs] for gs in grads],
        "lrs": lrs,
    }


out = {}

# ---------------- AdamW ----------------
adamw_cases = []
for dtype, name in [(torch.float32, "f32"), (torch.float64, "f64")]:
    for beta1, beta2, eps, wd, decay, grad_scale in [
        (0.9, 0.999, 1e-8, 0.1, [True, False, True], 1.0),
        (0.3, 0.95, 1e-6, 0.5, [True, True, False], 1.0),  # beta1 < 0.5: the other lerp formula
        (0.9, 0.999, 1e-8, 0.01, [True, True, True], 1e-8),  # gradients ~ eps: eps placement matters
    ]:
        params, grads, lrs = make_problem(dtype, grad_scale)

        def factory(ps, dec, beta1=beta1, beta2=beta2, eps=eps, wd=wd):
            return torch.optim.AdamW(groups(ps, dec, wd), lr=lrs[0], betas=(beta1, beta2), eps=eps,
                                     weight_decay=wd, foreach=False)

        traj, opt, ps = run(factory, params, grads, lrs, decay)
        case = problem_json(params, grads, lrs)
        case.update({
            "dtype": name, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": wd, "grad_scale": grad_scale,
            "decay": decay, "trajectory": traj,
            "m": [flat(opt.state[p]["exp_avg"]) for p in ps],
            "v": [flat(opt.state[p]["exp_avg_sq"]) for p in ps],
            "steps": [int(opt.state[p]["step"]) for p in ps],
        })
        adamw_cases.append(case)
out["adamw"] = adamw_cases

# ---------------- SGD ----------------
sgd_cases = []
for dtype, name in [(torch.float32, "f32"), (torch.float64, "f64")]:
    for momentum, dampening, wd, nesterov, decay in [
        (0.0, 0.0, 0.0, False, [True, True, True]),
        (0.9, 0.0, 0.01, False, [True, False, True]),
        (0.9, 0.0, 0.05, True, [False, True, True]),
        (0.8, 0.25, 0.0, False, [True, True, True]),
    ]:
        params, grads, lrs = make_problem(dtype)

        def factory(ps, dec, momentum=momentum, dampening=dampening, wd=wd, nesterov=nesterov):
            return torch.optim.SGD(groups(ps, dec, wd), lr=lrs[0], momentum=momentum, dampening=dampening,
                                   weight_decay=wd, nesterov=nesterov, foreach=False)

        traj, opt, ps = run(factory, params, grads, lrs, decay)
        case = problem_json(params, grads, lrs)
        case.update({
            "dtype": name, "momentum": momentum, "dampening": dampening, "weight_decay": wd,
            "nesterov": nesterov, "decay": decay, "trajectory": traj,
        })
        if momentum != 0:
            case["momentum_buffer"] = [flat(opt.state[p]["momentum_buffer"]) for p in ps]
        sgd_cases.append(case)
out["sgd"] = sgd_cases

# ---------------- clip_grad_norm_ ----------------
clip_cases = []
for dtype, name in [(torch.float32, "f32"), (torch.float64, "f64")]:
    for max_norm, scale in [(1.0, 1.0), (100.0, 1.0), (0.5, 3.0), (1e-3, 0.01)]:
        grads = [rand(s, dtype, scale=scale) for s in SHAPES]
        params = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        clip_cases.append({
            "dtype": name, "max_norm": max_norm, "shapes": SHAPES,
            "grads": [flat(g) for g in grads],
            "norm": float(norm),
            "clipped": [flat(p.grad) for p in params],
        })
out["clip"] = clip_cases


# ---------------- schedules ----------------
# The lambdas of transformers' optimization.py (get_cosine_with_min_lr_schedule_with_warmup,
# num_cycles = 0.5, and get_constant_schedule_with_warmup), copied so the script does not
# need transformers.
def cosine_lambda(step, warmup, total, min_lr_rate):
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


def constant_lambda(step, warmup):
    if step < warmup:
        return float(step) / float(max(1.0, warmup))
    return 1.0


def lambda_lrs(base, lam, last):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    lrs = []
    for _ in range(last + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


sched_cases = []
for base, warmup, total, min_lr in [(3e-4, 10, 100, 3e-5), (1e-3, 0, 50, 0.0), (5e-4, 7, 7, 0.0),
                                    (2e-3, 25, 1000, 1e-4)]:
    lrs = lambda_lrs(base, lambda s: cosine_lambda(s, warmup, total, min_lr / base), total)
    picks = sorted({0, 1, max(0, warmup - 1), warmup, warmup + 1, (warmup + total) // 2, total - 1, total})
    picks = [s for s in picks if 0 <= s <= total]
    sched_cases.append({"kind": "cosine", "base": base, "warmup": warmup, "total": total, "min_lr": min_lr,
                        "steps": picks, "lrs": [lrs[s] for s in picks]})
for base, warmup in [(1e-3, 0), (3e-4, 4)]:
    lrs = lambda_lrs(base, lambda s: constant_lambda(s, warmup), 10)
    picks = [0, 1, 3, 4, 5, 10]
    sched_cases.append({"kind": "constant", "base": base, "warmup": warmup, "steps": picks,
                        "lrs": [lrs[s] for s in picks]})
out["schedules"] = sched_cases

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {path} ({os.path.getsize(path)} bytes), torch {torch.__version__}")
