#!/usr/bin/python3
"""Asserts model.md's "Must hold" properties on bet_reference.py, to validate the reference
itself before its numbers are used as parity data. Run: tests/reference/check_reference.py
(exit status 0 when every check passes). float64 throughout."""
import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __import__("os").path.dirname(__file__))
import bet_reference as R  # noqa: E402

torch.set_default_dtype(torch.float64)
FAILED = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILED.append(name)


def close(a, b, tol=1e-10):
    return (a - b).abs().max().item() <= tol, f"max diff {(a - b).abs().max().item():.3g}"


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=12, d_model=16, n_heads=2, n_layers=2, task="classify", n_classes=3,
               layer="bet", pe="rope", k_permutations=2, max_len=32, dropout=0.0)
    cfg.update(kw)
    m = R.BETModel(**cfg).double().eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # move away from the init's special values so every term matters
        m.embed.weight.normal_(0.0, 1.0, generator=g)
        for name, p in m.named_parameters():
            if name.endswith(("attn.lam", "attn.gamma")):
                p.uniform_(0.6, 1.4, generator=g)
            elif name.endswith(("stats.prior", "harmonic_weights")) or ".norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("debias.basis.weight"):
                p.normal_(0.0, 0.5, generator=g)
            elif name.endswith("bias") and p.abs().max() == 0:
                p.normal_(0.0, 0.1, generator=g)
    return m


def batch(B=3, S=7, lengths=(7, 5, 3), vocab=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, S), generator=g)
    ids[:, 0] = R.BOS
    mask = torch.zeros(B, S)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids[mask == 0] = R.PAD
    return ids, mask


def perms(model, mask, seed=2):
    g = torch.Generator().manual_seed(seed)
    return R.draw_perm_pos(len(model.layers), model.k_permutations, mask, model.causal,
                           model.max_len, g)


def valid(t, mask):
    return t[mask.bool()]


# --- perm id drawing follows model.md -----------------------------------------------------
def check_perm_ids():
    ids, mask = batch()
    pp = R.draw_perm_pos(2, 3, mask, False, 32, torch.Generator().manual_seed(0))
    ok = True
    for l in range(2):
        for i in range(3):
            for b in range(3):
                n = int(mask[b].sum())
                ok &= sorted(pp[l, i, b, :n].tolist()) == list(range(n))
                ok &= pp[l, i, b, n:].tolist() == list(range(n, 7))
    check("bidirectional perm ids: permutation of 0..n-1 on valid, padding keeps n..S-1", ok)
    pc = R.draw_perm_pos(2, 3, mask, True, 32, torch.Generator().manual_seed(0))
    ok = all(len(set(pc[l, i, b].tolist())) == 7 and pc[l, i, b].max() < 32
             for l in range(2) for i in range(3) for b in range(3))
    check("causal perm ids: distinct ids from 0..max_len-1", ok)


# --- SufficientStatsEncoder -------------------------------------------------------------------
def check_stats():
    torch.manual_seed(3)
    enc = R.SufficientStatsEncoder(16).double()
    with torch.no_grad():
        enc.prior.copy_(torch.tensor([0.3, -0.7]))
    x = torch.randn(3, 7, 16)
    _, mask = batch()
    for causal in (False, True):
        st = enc(x, mask, causal)
        n_t = R.context_counts(mask, causal)
        a0, b0 = F.softplus(enc.prior)
        ok, d = close(valid(st["alpha"] + st["beta"], mask), valid(a0 + b0 + n_t, mask), 1e-12)
        check(f"alpha + beta = alpha0 + beta0 + n(t) ({'causal' if causal else 'bidirectional'})", ok, d)
    # Bidirectional: invariant to any permutation of the valid tokens (same vector everywhere).
    st = enc(x, mask, False)
    xp = x.clone()
    for b in range(3):
        n = int(mask[b].sum())
        xp[b, :n] = x[b, torch.randperm(n)]
    stp = enc(xp, mask, False)
    ok, d = close(valid(st["stats"], mask), valid(stp["stats"], mask))
    check("stats: bidirectional invariant to permutations of valid tokens", ok, d)
    same = all((st["stats"][b] - st["stats"][b, 0]).abs().max() < 1e-12 for b in range(3))
    check("stats: bidirectional gives the same vector at every position", same)
    # Causal: position t does not see later tokens.
    st = enc(x, mask, True)
    ok = True
    for t in range(6):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
        st2 = enc(x2, mask, True)
        ok &= (st["stats"][:, : t + 1] - st2["stats"][:, : t + 1]).abs().max().item() < 1e-12
    check("stats: causal outputs at t ignore later tokens", ok)
    # Padding changes nothing; explicit O(S^2) definition matches the prefix sums.
    for causal in (False, True):
        st = enc(x, mask, causal)
        x2 = x.clone()
        x2[mask == 0] = 1e3 * torch.randn_like(x2[mask == 0])
        st2 = enc(x2, mask, causal)
        ok, d = close(valid(st["stats"], mask), valid(st2["stats"], mask))
        check(f"stats: padding values change nothing ({'causal' if causal else 'bidirectional'})", ok, d)
        a0, b0 = F.softplus(enc.prior)
        ok = True
        for b in range(3):
            for t in range(int(mask[b].sum())):
                P = [s for s in range(7) if mask[b, s] and (s <= t or not causal)]
                xs = x[b, P]
                mu = torch.cat([mj(xs) for mj in enc.moment], -1).mean(0)
                c = torch.sigmoid(enc.count(xs)).sum(0) / len(P)
                p = torch.sigmoid(enc.beta_head(xs)).squeeze(-1)
                al, be = a0 + p.sum(), b0 + (1 - p).sum()
                ref = enc.proj(torch.cat([mu, c, al.log().view(1), be.log().view(1)]))
                ok &= (ref - st["stats"][b, t]).abs().max().item() < 1e-12
        check(f"stats: equals the per-position definition ({'causal' if causal else 'bidirectional'})", ok)


# --- MartingaleAwareAttention -----------------------------------------------------------------
def plain_mha(attn, h, mask, causal):
    """nn.functional.multi_head_attention_forward, PyTorch's own, with the same weights."""
    B, S, D = h.shape
    w_in = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight])
    b_in = torch.cat([attn.q.bias, attn.k.bias, attn.v.bias])
    am = torch.triu(torch.full((S, S), float("-inf")), 1) if causal else None
    out, _ = F.multi_head_attention_forward(
        h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), D, attn.n_heads, w_in, b_in,
        None, None, False, 0.0, attn.o.weight, attn.o.bias, training=False,
        key_padding_mask=(mask == 0), need_weights=False, attn_mask=am)
    return out.transpose(0, 1)


def check_attention():
    _, mask = batch()
    torch.manual_seed(4)
    h = torch.randn(3, 7, 16)
    for causal in (False, True):
        mode = "causal" if causal else "bidirectional"
        n_t = R.context_counts(mask, causal)
        attn = R.MartingaleAwareAttention(16, 2, "none", 3).double()
        with torch.no_grad():
            for lin in (attn.q, attn.k, attn.v, attn.o):
                lin.bias.normal_(0, 0.2)
        plain = plain_mha(attn, h, mask, causal)
        for lam, gamma in ((1.0, 1.0), (0.37, 1.8), (2.5, 0.3)):
            with torch.no_grad():
                attn.lam.fill_(lam)
                attn.gamma.fill_(gamma)
            out, _ = attn(h, mask, causal, n_t=n_t)
            w = attn.mixing_weight(n_t).unsqueeze(-1)
            ok, d = close(valid(out, mask), valid((1 - w + w * gamma) * plain, mask), 1e-12)
            check(f"attn pe=none = (1-w+w*gamma) * PyTorch MHA, lam={lam} gamma={gamma} ({mode})", ok, d)
            if gamma == 1.0:
                ok, d = close(valid(out, mask), valid(plain, mask), 1e-12)
                check(f"attn pe=none, gamma=1: plain attention ({mode})", ok, d)
            pp = R.draw_perm_pos(1, 3, mask, causal, 32, torch.Generator().manual_seed(5))[0]
            forced, dg = attn(h, mask, causal, n_t=n_t, perm_pos=pp, force_paths=True)
            ok, d = close(valid(out, mask), valid(forced, mask), 1e-12)
            check(f"attn pe=none: shortcut equals computing every path ({mode})", ok and dg["order_dispersion"].abs().max() < 1e-12, d)
        # w definition
        with torch.no_grad():
            attn.lam.fill_(1.3)
        w = attn.mixing_weight(n_t)
        ref = torch.where(n_t <= 1, torch.ones_like(n_t),
                          (1.3 * n_t.clamp(min=1).log() / n_t.clamp(min=1)).clamp(0.01, 1))
        check(f"attn w per query ({mode})", bool((w == ref).all()) and bool((w[n_t <= 1] == 1).all()))

        # rope: folded paths equal an explicit loop; masked keys get no weight.
        attn = R.MartingaleAwareAttention(16, 2, "rope", 3).double()
        with torch.no_grad():
            attn.lam.fill_(0.8)
            attn.gamma.fill_(1.4)
            for lin in (attn.q, attn.k, attn.v, attn.o):
                lin.bias.normal_(0, 0.2)
        pp = R.draw_perm_pos(1, 3, mask, causal, 32, torch.Generator().manual_seed(6))[0]
        out, dg = attn(h, mask, causal, n_t=n_t, perm_pos=pp)
        o_std = explicit_attention(attn, h, mask, causal, torch.arange(7).expand(3, 7))
        o_paths = torch.stack([explicit_attention(attn, h, mask, causal, pp[i]) for i in range(3)])
        w = attn.mixing_weight(n_t).unsqueeze(-1)
        ref = (1 - w) * o_std + w * attn.gamma * o_paths.mean(0)
        ok, d = close(valid(out, mask), valid(ref, mask), 1e-12)
        check(f"attn rope: folded paths = explicit loop over permutations ({mode})", ok, d)
        disp = torch.stack([o_paths[:, b, : int(mask[b].sum())].std(0, unbiased=False).mean() for b in range(3)])
        ok, d = close(dg["order_dispersion"], disp, 1e-12)
        check(f"attn rope: order_dispersion = mean population std over paths ({mode})", ok and disp.min() > 1e-6, d)
        check(f"attn rope: paths differ ({mode})", (o_paths[0] - o_paths[1]).abs().max() > 1e-3)
        h2 = h.clone()
        h2[mask == 0] = 1e3 * torch.randn_like(h2[mask == 0])
        out2, _ = attn(h2, mask, causal, n_t=n_t, perm_pos=pp)
        ok, d = close(valid(out, mask), valid(out2, mask))
        check(f"attn rope: masked keys get no weight ({mode})", ok, d)
        if causal:
            ok = True
            for t in range(6):
                h3 = h.clone()
                h3[:, t + 1:] = torch.randn_like(h3[:, t + 1:])
                o3, _ = attn(h3, mask, causal, n_t=n_t, perm_pos=pp)
                ok &= (o3[:, : t + 1] - out[:, : t + 1]).abs().max().item() < 1e-12
            check("attn rope: causal outputs never depend on later tokens", ok)
        # k = 0: the output is O_std.
        attn0 = R.MartingaleAwareAttention(16, 2, "rope", 0).double()
        attn0.load_state_dict(attn.state_dict())
        o0, _ = attn0(h, mask, causal, n_t=n_t)
        ok, d = close(valid(o0, mask), valid(o_std, mask), 1e-12)
        check(f"attn k=0: output is the standard path ({mode})", ok, d)


def explicit_attention(attn, h, mask, causal, ids):
    """Straightforward per-(b, head, t) attention with RoPE ids, no batching tricks."""
    B, S, D = h.shape
    H, hd = attn.n_heads, attn.hd
    q, k, v = attn.q(h), attn.k(h), attn.v(h)
    out = torch.zeros(B, S, D)
    half = hd // 2
    inv = 10000.0 ** (-2.0 * torch.arange(half) / hd)

    def rot(x, pos):
        a = pos * inv
        x1, x2 = x[:half], x[half:]
        return torch.cat([x1 * a.cos() - x2 * a.sin(), x2 * a.cos() + x1 * a.sin()])

    for b in range(B):
        for hh in range(H):
            sl = slice(hh * hd, (hh + 1) * hd)
            for t in range(S):
                keys = [s for s in range(S) if mask[b, s] and (s <= t or not causal)]
                qt = rot(q[b, t, sl], float(ids[b, t]))
                sc = torch.stack([qt @ rot(k[b, s, sl], float(ids[b, s])) for s in keys]) / math.sqrt(hd)
                p = torch.softmax(sc, 0)
                out[b, t, sl] = (p[:, None] * v[b, keys, sl]).sum(0)
    return attn.o(out)


# --- OptimalCoTLayer, PositionalDebiasing -----------------------------------------------------
def check_cot_debias():
    torch.manual_seed(7)
    _, mask = batch()
    x = torch.randn(3, 7, 16)
    cot = R.OptimalCoTLayer(16).double()
    for causal in (False, True):
        n_t = R.context_counts(mask, causal)
        out = cot(x, mask, causal, n_t)
        ok = True
        for b in range(3):
            for t in range(int(mask[b].sum())):
                P = [s for s in range(7) if mask[b, s] and (s <= t or not causal)]
                z = x[b, P].mean(0)
                hc = F.softplus(cot.entropy(z)) + 1e-6
                r = F.softplus(cot.ratio(z)) + 1e-6
                L = (torch.sqrt(len(P) / (hc * r)) * math.log2(1e6)).clamp(1, 512)
                ok &= abs(L.item() - out["optimal_length"][b, t].item()) < 1e-9
                ok &= abs(hc.item() - out["reasoning_entropy"][b, t].item()) < 1e-12
        check(f"cot: optimal_length and entropy follow the definition ({'causal' if causal else 'bidirectional'})", ok)

    deb = R.PositionalDebiasing(16, 8).double()
    with torch.no_grad():
        deb.basis.weight.normal_(0, 0.5)
        deb.harmonic_weights.uniform_(0.5, 1.5)
    y, dg = deb(x, mask)
    y2, _ = deb(x, mask, positions=torch.arange(7) + 3 * 512)
    ok, d = close(y, y2, 1e-9)
    check("debias: shifting positions by a common multiple of all periods changes nothing", ok, d)
    y3, _ = deb(x, mask, positions=torch.arange(7) + 256)
    check("debias: a shift that is not a multiple of 512 does change the output", (y - y3).abs().max() > 1e-3)
    with torch.no_grad():
        deb.basis.weight.zero_()
    y4, _ = deb(x, mask)
    check("debias: U = 0 is the identity", bool((y4 == x).all()))
    ident = R.PositionalDebiasing(16, 8, active=False).double()
    check("debias: pe=none is the identity", ident(x, mask)[0] is x)
    # psi interleaving and periods
    phi = deb.phi(torch.tensor([5]), torch.float64)[0]
    exp = torch.tensor([f(2 * math.pi * 5 / (4 * 2 ** h)) for h in range(8) for f in (math.sin, math.cos)])
    ok, d = close(phi, exp, 1e-12)
    check("debias: phi interleaves (sin, cos) per harmonic with periods 4*2^h", ok, d)


# --- whole model ------------------------------------------------------------------------------
def check_model():
    # Bidirectional pe=none classifier: invariant to any permutation of the valid tokens.
    m = make_model(pe="none")
    ids, mask = batch()
    out = m(ids, mask, perms(m, mask))
    ids_p = ids.clone()
    for b in range(3):
        n = int(mask[b].sum())
        ids_p[b, :n] = ids[b, torch.randperm(n)]
    out_p = m(ids_p, mask, perms(m, mask, seed=9))
    ok, d = close(out["logits"], out_p["logits"])
    check("model: bidirectional pe=none logits invariant to permutations of valid tokens", ok, d)

    # Causality (rope, with permutation paths; ids depend on t only).
    for layer in ("bet", "standard"):
        m = make_model(task="lm", layer=layer)
        ids, mask = batch()
        pp = perms(m, mask)
        out = m(ids, mask, pp)
        ok = True
        for t in range(6):
            ids2 = ids.clone()
            ids2[:, t + 1:] = torch.randint(3, 12, ids2[:, t + 1:].shape)
            ids2[mask == 0] = 0
            o2 = m(ids2, mask, pp)
            ok &= (o2["logits"][:, : t + 1] - out["logits"][:, : t + 1]).abs().max().item() < 1e-12
            for l in range(2) if layer == "bet" else ():
                for key in ("alpha", "optimal_length", "artifact_scores"):
                    ok &= (o2["layers"][l][key][:, : t + 1] - out["layers"][l][key][:, : t + 1]).abs().max().item() < 1e-12
        check(f"model ({layer}): causal outputs at t ignore every later token", ok)

    # Padding invariance, and the same input alone and inside a batch.
    for task in ("classify", "lm"):
        for layer in ("bet", "standard"):
            for pe in ("rope", "none", "sinusoidal", "learned"):
                m = make_model(task=task, layer=layer, pe=pe)
                ids, mask = batch()
                pp = perms(m, mask)
                out = m(ids, mask, pp)
                ids2 = ids.clone()
                ids2[mask == 0] = torch.randint(1, 12, ids2[mask == 0].shape)
                o2 = m(ids2, mask, pp)
                ok = close(valid(o2["hidden"][-1], mask), valid(out["hidden"][-1], mask))[0]
                # sequence 2 (length 3) alone, with S = 3 and its own ids
                alone = m(ids[2:3, :3], mask[2:3, :3], pp[:, :, 2:3, :3])
                ok &= close(alone["hidden"][-1][0], out["hidden"][-1][2, :3])[0]
                # and inside a longer batch (more padding)
                idsL = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
                maskL = torch.cat([mask, torch.zeros(3, 4)], 1)
                ppL = torch.cat([pp, torch.arange(7, 11).expand(*pp.shape[:3], 4)], -1)
                oL = m(idsL, maskL, ppL)
                ok &= close(valid(oL["hidden"][-1][:, :7], mask), valid(out["hidden"][-1], mask))[0]
                if task == "classify":
                    ok &= close(oL["logits"], out["logits"])[0] and close(o2["logits"], out["logits"])[0]
                    ok &= close(alone["logits"][0], out["logits"][2])[0]
                else:
                    ok &= close(valid(oL["logits"][:, :7], mask), valid(out["logits"], mask))[0]
                check(f"model ({task}, {layer}, pe={pe}): padding changes nothing; alone = in a batch", ok)

    # Standard layer = nn.TransformerEncoderLayer (post-LN, ReLU, eps 1e-5) for pe=none.
    for causal in (False, True):
        torch.manual_seed(11)
        lay = R.StandardLayer(16, 2, "none").double().eval()
        ref = torch.nn.TransformerEncoderLayer(16, 2, 64, 0.0, batch_first=True).double().eval()
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(torch.cat([lay.attn.q.weight, lay.attn.k.weight, lay.attn.v.weight]))
            ref.self_attn.in_proj_bias.copy_(torch.cat([lay.attn.q.bias, lay.attn.k.bias, lay.attn.v.bias]) + 0.1)
            lay.attn.q.bias.add_(0.1), lay.attn.k.bias.add_(0.1), lay.attn.v.bias.add_(0.1)
            ref.self_attn.out_proj.weight.copy_(lay.attn.o.weight)
            ref.self_attn.out_proj.bias.copy_(lay.attn.o.bias)
            ref.linear1.weight.copy_(lay.ffn[0].weight), ref.linear1.bias.copy_(lay.ffn[0].bias)
            ref.linear2.weight.copy_(lay.ffn[3].weight), ref.linear2.bias.copy_(lay.ffn[3].bias)
        _, mask = batch()
        x = torch.randn(3, 7, 16)
        y, _ = lay(x, mask, causal)
        am = torch.triu(torch.full((7, 7), float("-inf")), 1) if causal else None
        yr = ref(x, src_mask=am, src_key_padding_mask=(mask == 0))
        ok, d = close(valid(y, mask), valid(yr, mask), 1e-10)
        check(f"standard layer = nn.TransformerEncoderLayer, pe=none ({'causal' if causal else 'bidirectional'})", ok, d)

    # Gradient of the loss: finite differences through the whole model (float64).
    for task in ("classify", "lm"):
        m = make_model(task=task, n_layers=1, d_model=8, pe="rope")
        ids, mask = batch(lengths=(7, 4, 2))
        pp = perms(m, mask)
        tg = torch.tensor([1, 1, 2]) if task == "classify" else torch.randint(3, 12, (3, 7))
        crit = R.MDLRegularizedLoss(0.1)
        params = [p for p in m.parameters()]
        names = [n for n, _ in m.named_parameters()]

        def f(*ps):
            with torch.no_grad():
                for p, v in zip(params, ps):
                    p.copy_(v)
            return crit(m(ids, mask, pp)["logits"], tg, mask)["loss"]

        loss = crit(m(ids, mask, pp)["logits"], tg, mask)["loss"]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        worst = 0.0
        gen = torch.Generator().manual_seed(0)
        for name, p, g in zip(names, params, grads):
            g = torch.zeros_like(p) if g is None else g
            flat = p.detach().view(-1)
            for j in torch.randint(0, flat.numel(), (3,), generator=gen).tolist():
                old = flat[j].item()
                with torch.no_grad():
                    flat[j] = old + 1e-6
                    lp = crit(m(ids, mask, pp)["logits"], tg, mask)["loss"].item()
                    flat[j] = old - 1e-6
                    lm_ = crit(m(ids, mask, pp)["logits"], tg, mask)["loss"].item()
                    flat[j] = old
                fd = (lp - lm_) / 2e-6
                worst = max(worst, abs(fd - g.view(-1)[j].item()) / max(1.0, abs(fd)))
        check(f"model ({task}): autograd gradients = finite differences", worst < 1e-6, f"worst {worst:.2g}")


# --- MDL loss ---------------------------------------------------------------------------------
def check_loss():
    crit = R.MDLRegularizedLoss(0.1)
    torch.manual_seed(12)
    logits = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1])
    r = crit(logits, y)
    ce = F.cross_entropy(logits, y, reduction="sum")
    p = torch.tensor([0.6, 0.4])
    h = -(p * p.log()).sum()
    opt = 5 * h + math.sqrt(5 * math.log(5))
    ok = abs(r["empirical_entropy"].item() - h.item()) < 1e-12 and abs(r["optimal_complexity"].item() - opt.item()) < 1e-12
    pen = max(0.0, ce.item() - opt.item()) / 5
    ok &= abs(r["loss"].item() - (ce.item() / 5 + 0.1 * pen)) < 1e-12
    ok &= r["mdl_active"] == (ce.item() > opt.item())
    check("mdl: terms follow the definition", ok)
    # Active: gradient is (1 + beta) times the cross-entropy's; inactive: equal to it.
    for scale, active in ((5.0, True), (0.0, False)):
        lg = (scale * torch.randn(6, 4)).requires_grad_()
        yy = torch.tensor([0, 1, 2, 3, 0, 1])
        if not active:
            lg = torch.zeros(6, 4).requires_grad_()  # CE = 6 ln 4 < optimal
        r = crit(lg, yy)
        g = torch.autograd.grad(r["loss"], lg)[0]
        gce = torch.autograd.grad(F.cross_entropy(lg, yy), lg)[0]
        fac = 1.1 if r["mdl_active"] else 1.0
        ok = r["mdl_active"] == active and close(g, fac * gce, 1e-12)[0]
        check(f"mdl: gradient = {fac} x cross-entropy's when {'active' if active else 'inactive'}", ok)
    r = crit(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    check("mdl: N = 0 contributes nothing", r["loss"].item() == 0.0 and r["n_targets"] == 0)
    r = crit(torch.randn(1, 4), torch.tensor([2]))
    check("mdl: optimal = 0 for N = 1", r["optimal_complexity"].item() == 0.0)


# --- the stored parity data is self-sufficient and matches this reference -----------------
def check_json_files():
    import glob
    import json
    import os
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "model", "*.json")))
    check("reference data present", len(files) > 0, f"{len(files)} files")

    def t(d, dtype=torch.float64):
        return torch.tensor(d["data"], dtype=dtype).reshape(d["shape"])

    for path in files:
        doc = json.load(open(path))
        c = doc["config"]
        m = R.BETModel(c["vocab_size"], c["d_model"], c["n_heads"], c["n_layers"], c["task"],
                       c["n_classes"] or 2, c["layer"], c["pe"], c["k_permutations"], c["max_len"],
                       dropout=0.0, n_harmonics=c["n_harmonics"], tie_embeddings=c["tie_embeddings"]).double().eval()
        sd = {k: t(v) for k, v in doc["params"].items()}
        missing = m.load_state_dict(sd, strict=True)
        inp = doc["inputs"]
        ids, mask = t(inp["ids"], torch.long), t(inp["mask"], torch.long)
        pp, tg = t(inp["perm_pos"], torch.long), t(inp["targets"], torch.long)
        ok = not missing.missing_keys and not missing.unexpected_keys
        causal = c["attention"] == "causal"
        for l in range(pp.shape[0]):
            for i in range(pp.shape[1]):
                for b in range(pp.shape[2]):
                    n = int(mask[b].sum())
                    ids_b = pp[l, i, b].tolist()
                    if causal:
                        ok &= len(set(ids_b)) == len(ids_b) and max(ids_b) < c["max_len"]
                    else:
                        ok &= sorted(ids_b[:n]) == list(range(n)) and ids_b[n:] == list(range(n, len(ids_b)))
        out = m(ids, mask, pp)
        res = R.MDLRegularizedLoss(c["mdl_beta"])(out["logits"], tg, mask)
        res["loss"].backward()
        rel = lambda a, b: ((a - b).abs().max() / max(1.0, b.abs().max().item())).item()
        worst = rel(out["logits"], t(doc["outputs"]["logits"]))
        worst = max(worst, abs(res["loss"].item() - doc["loss"]["loss"]))
        for n_, p in m.named_parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            worst = max(worst, rel(g, t(doc["grads"][n_])))
        ok &= set(doc["grads"]) == {n_ for n_, _ in m.named_parameters()}
        ok &= res["mdl_active"] == doc["loss"]["mdl_active"]
        check(f"data {os.path.basename(path)}: reloads and reproduces logits, loss, grads", ok and worst < 1e-8,
              f"worst rel {worst:.2g}")


if __name__ == "__main__":
    check_perm_ids()
    check_stats()
    check_attention()
    check_cot_debias()
    check_model()
    check_loss()
    check_json_files()
    print(f"{len(FAILED)} failed" if FAILED else "all checks passed")
    sys.exit(1 if FAILED else 0)
