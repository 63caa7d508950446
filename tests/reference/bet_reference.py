#!/usr/bin/python3
"""Independent PyTorch reference of the Bayesian Expectation Transformer (docs/model.md).

It exists for two things: parity data for the C++ engine (gen_model_reference.py) and the
PyTorch peer of the training benchmark (bench/peer/train_peer.py). It follows model.md
literally; state_dict names are the ones of model.md's "Parameter names".

The permutation relabellings are an explicit input (`perm_pos`, long tensor [L, k, B, S]:
per layer, per path, per sequence the position id of every token), never drawn inside the
model, because the C++ engine draws them with its own counter-based RNG. `draw_perm_pos`
draws them the way model.md describes (bidirectional: a permutation of 0..n-1 over the valid
positions, padding keeps n..S-1; causal: the first S entries of a random permutation of
0..max_len-1) for the data generator and the benchmark peer.

Where model.md leaves a choice open, this file takes the following (the C++ engine must
take the same ones for parity):

 1. Context and counts. n(t) = |P(t)|: causal n(t) = number of valid s <= t (= t+1 at a
    valid t, = n_b at a padding t); bidirectional n(t) = n_b at every position, padding
    positions included. Every "mean over P(t)" is (masked sum) / max(n(t), 1); causal sums
    are prefix sums (cumsum) of the masked per-token values, bidirectional ones a masked sum
    over the sequence broadcast to every position (padding rows included). Padding values are
    multiplied by 0 before summing (so a finite padding value never leaks).
 2. Stats feature order: stats = proj([mu_0..mu_{m-1}, c_0/n..c_{m-1}/n, ln alpha, ln beta]).
    Moment MLP j is `stats.moment.{j}` = Sequential(Linear(D, D/2), ReLU, Linear(D/2, 1));
    the m soft counts are one Linear(D, m) (`stats.count`); `stats.prior` = [a0, b0].
 3. Mixing weight w per query position: w = 1 where n(t) <= 1, otherwise
    clamp(lam * ln n(t) / n(t), 0.01, 1) (clamp's gradient as torch.clamp: passes inside
    [0.01, 1] inclusive, zero outside). Padding queries use their n(t) from (1) and are
    ignored downstream.
 4. Attention paths. The standard path uses ids 0..S-1; path i uses perm_pos[layer, i].
    With pe=rope the standard path and the k permutation paths are folded into one batch of
    (k+1)*B, sharing the Q/K/V projections (the probabilities of all paths multiply the one
    V by broadcasting). The scale hd^-0.5 is applied to q before the rotation (exact: both
    are linear). With pe != rope (or k = 0) the paths are not computed at all: the output is
    (1 - w + w*gamma) * O_std (k > 0) or O_std (k = 0). O_std with pe=rope is rotated with
    ids 0..S-1; the standard layer's attention is exactly this standard path.
    order_dispersion (per sequence) = mean over valid tokens t and features f of the
    population std over the k permutation paths (the standard path not included) of the
    attention output after the output projection; 0 when the paths are not computed or
    k <= 1. It is a diagnostic, computed without gradient.
 5. Dropout sites (off in all reference data): embeddings (after the positional encoding is
    added), attention probabilities, the attention branch before it is added (before LN2 in
    `bet`, before norm1 in `standard`), the FFN hidden layer, the FFN branch before it is
    added. These are exactly nn.TransformerEncoderLayer's sites; the other residual branches
    of the bet layer (st.stats into LN1, the CoT gate, the stats gate, the debiasing
    correction) have no dropout.
 6. CoT gate input order: [x (D), reasoning_entropy, ln optimal_length]; the logarithm is
    natural. log2(1/eps) uses eps = 1e-6, a = 1, max_cot_length = 512. z(t) is the masked
    (causal: prefix) mean of the layer's x after LN2.
 7. PositionalDebiasing with pe=none returns its input unchanged and computes nothing: its
    parameters still exist (state_dict) and get zero gradients; artifact_scores,
    artifact_magnitude and correction_magnitude are then None. With any other pe it uses the
    token index t = 0..S-1 (never the permutation ids). psi interleaves per harmonic:
    [a_0 sin_0, a_0 cos_0, a_1 sin_1, ...]. gate (W_p) is a default-initialised Linear(D, D).
    artifact_scores are a = sigmoid(MLP_A(x)) * harmonic_weights (the weights included);
    correction_magnitude is the mean over valid tokens of ||correction_t||_2 over D.
 8. Heads: no final LayerNorm (post-LN layers already end in one). classify pools the last
    hidden state by masked mean over valid tokens. Embeddings are not scaled by sqrt(D).
    `temperature` is a buffer of shape [] (in state_dict, no gradient, not trained); logits
    are divided by it. With tied embeddings the lm head has neither weight nor bias.
 9. Standard layer initialisation: Q, K, V, O as separate Linear(D, D), each Xavier uniform
    with zero bias (model.md's rule; PyTorch's nn.MultiheadAttention initialises the packed
    [3D, D] in_proj instead and O with the default Linear init, so the bounds differ).
10. MDL loss: H_emp in nats over the N valid targets of the batch (classify: the B labels;
    lm: the targets at valid positions). optimal = N*H_emp + sqrt(N ln N) for N > 1, else 0.
    mdl_active = CE > optimal. compression_efficiency = optimal / CE. N = 0 gives every term
    0. H_emp and optimal carry no gradient.
11. Sinusoidal PE uses position t = token index 0..S-1; learned PE is `pos.weight` rows
    0..S-1. The rope angle for pair i (0 <= i < hd/2) is pos * 10000^(-2i/hd).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, BOS, EOS = 0, 1, 2
PE_KINDS = ("rope", "sinusoidal", "learned", "none")


def n_stats_for(d_model):
    return max(3, int(math.floor(math.log(d_model))))


def mlp(d_in, d_hidden, d_out):
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


def xavier_zero(lin):
    nn.init.xavier_uniform_(lin.weight)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin


def context_counts(mask, causal):
    """n(t) as a float tensor [B, S] (see note 1)."""
    m = mask.to(torch.get_default_dtype()) if not mask.is_floating_point() else mask
    if causal:
        return torch.cumsum(m, dim=1)
    return m.sum(dim=1, keepdim=True).expand_as(m)


def context_sum(v, mask, causal):
    """sum_{s in P(t)} v_s for v [B, S, F] -> [B, S, F]; O(S) (prefix sum in causal mode)."""
    v = v * mask.to(v.dtype).unsqueeze(-1)
    if causal:
        return torch.cumsum(v, dim=1)
    return v.sum(dim=1, keepdim=True).expand_as(v)


def context_mean(v, mask, causal, n_t):
    return context_sum(v, mask, causal) / n_t.clamp(min=1.0).unsqueeze(-1)


def masked_token_mean(v, mask):
    """Mean over the valid tokens of each sequence: v [B, S, ...] -> [B, ...]."""
    m = mask.to(v.dtype)
    while m.dim() < v.dim():
        m = m.unsqueeze(-1)
    n = mask.to(v.dtype).sum(dim=1).clamp(min=1.0)
    while n.dim() < v.dim() - 1:
        n = n.unsqueeze(-1)
    return (v * m).sum(dim=1) / n


def rope_tables(pos, hd, dtype):
    """cos and sin [..., S, hd] for position ids pos [..., S] (half-split: pair i uses the
    same angle in dims i and i + hd/2)."""
    half = hd // 2
    inv_freq = torch.pow(10000.0, -2.0 * torch.arange(half, dtype=dtype, device=pos.device) / hd)
    ang = pos.to(dtype).unsqueeze(-1) * inv_freq
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rope_rotate(x, pos=None, tables=None):
    """Half-split RoPE: x' = x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1].
    x [..., S, hd]; pos broadcastable to x.shape[:-1], or tables from rope_tables."""
    cos, sin = tables if tables is not None else rope_tables(pos, x.shape[-1], x.dtype)
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def draw_perm_pos(n_layers, k, mask, causal, max_len, generator=None):
    """Position relabellings [L, k, B, S] as model.md describes, from a torch generator."""
    B, S = mask.shape
    if k == 0:
        return torch.zeros(n_layers, 0, B, S, dtype=torch.long)
    if causal:
        keys = torch.rand(n_layers, k, B, max_len, generator=generator)
        return keys.argsort(dim=-1)[..., :S].contiguous()
    # Valid positions get a random rank among themselves (0..n-1); padding keys sort
    # after all valid ones in token order, so padding keeps n..S-1.
    keys = torch.rand(n_layers, k, B, S, generator=generator, dtype=torch.float64)
    pad_keys = 2.0 + torch.arange(S, dtype=torch.float64)
    keys = torch.where(mask.bool().expand_as(keys), keys, pad_keys.expand_as(keys))
    return keys.argsort(dim=-1).argsort(dim=-1)


class SufficientStatsEncoder(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.m = n_stats_for(d_model)
        self.moment = nn.ModuleList([mlp(d_model, d_model // 2, 1) for _ in range(self.m)])
        self.count = nn.Linear(d_model, self.m)
        self.beta_head = nn.Linear(d_model, 1)
        self.prior = nn.Parameter(torch.full((2,), math.log(math.e - 1.0)))
        self.proj = nn.Linear(2 * self.m + 2, d_model)

    def forward(self, x, mask, causal):
        n_t = context_counts(mask, causal).to(x.dtype)
        f = torch.cat([mj(x) for mj in self.moment], dim=-1)  # [B, S, m]
        c = torch.sigmoid(self.count(x))  # [B, S, m]
        p = torch.sigmoid(self.beta_head(x))  # [B, S, 1]
        sums = context_sum(torch.cat([f, c, p, 1.0 - p], dim=-1), mask, causal)
        inv_n = 1.0 / n_t.clamp(min=1.0).unsqueeze(-1)
        mu = sums[..., : self.m] * inv_n
        cn = sums[..., self.m: 2 * self.m] * inv_n
        prior = F.softplus(self.prior)
        alpha = prior[0] + sums[..., 2 * self.m]
        beta = prior[1] + sums[..., 2 * self.m + 1]
        feats = torch.cat([mu, cn, alpha.log().unsqueeze(-1), beta.log().unsqueeze(-1)], dim=-1)
        stats = self.proj(feats)
        ab = alpha + beta
        return {
            "stats": stats,
            "alpha": alpha,
            "beta": beta,
            "posterior_mean": alpha / ab,
            "posterior_variance": alpha * beta / (ab * ab * (ab + 1.0)),
            "n_t": n_t,
            "alpha0": prior[0],
            "beta0": prior[1],
        }


class MartingaleAwareAttention(nn.Module):
    """Multi-head attention with k permutation paths (permutation=False: plain attention,
    the standard layer's, without lam/gamma)."""

    def __init__(self, d_model, n_heads, pe, k_permutations, dropout=0.0, permutation=True):
        super().__init__()
        assert d_model % n_heads == 0
        self.d_model, self.n_heads, self.hd = d_model, n_heads, d_model // n_heads
        assert pe != "rope" or self.hd % 2 == 0
        self.pe = pe
        self.n_paths = k_permutations if permutation else 0
        self.q = xavier_zero(nn.Linear(d_model, d_model))
        self.k = xavier_zero(nn.Linear(d_model, d_model))
        self.v = xavier_zero(nn.Linear(d_model, d_model))
        self.o = xavier_zero(nn.Linear(d_model, d_model))
        if permutation:
            self.lam = nn.Parameter(torch.tensor(1.0))
            self.gamma = nn.Parameter(torch.tensor(1.0))
        self.attn_drop = nn.Dropout(dropout)

    def _heads(self, t):
        B, S, _ = t.shape
        return t.view(B, S, self.n_heads, self.hd).transpose(1, 2)  # [B, H, S, hd]

    def _allowed(self, mask, causal):
        B, S = mask.shape
        allowed = mask.bool()[:, None, None, :]  # [B, 1, 1, S] keys
        if causal:
            tri = torch.ones(S, S, dtype=torch.bool, device=mask.device).tril()
            allowed = allowed & tri
        return allowed  # broadcast to [B, H, S, S]

    def _attend(self, q, k, v, allowed):
        """q (already scaled), k [B, H, S, hd]; v [B, H, S, hd] -> [B, S, D] after o."""
        # In place: the product's output is not saved for its backward.
        scores = torch.matmul(q, k.transpose(-1, -2)).masked_fill_(~allowed, float("-inf"))
        probs = self.attn_drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(probs, v).transpose(1, 2)  # [B, S, H, hd]
        return self.o(out.reshape(out.shape[0], out.shape[1], self.d_model))

    def mixing_weight(self, n_t):
        w = (self.lam * n_t.clamp(min=1.0).log() / n_t.clamp(min=1.0)).clamp(0.01, 1.0)
        return torch.where(n_t <= 1.0, torch.ones_like(w), w)

    def forward(self, h, mask, causal, n_t=None, perm_pos=None, force_paths=False):
        """h [B, S, D]; perm_pos [k, B, S] long (needed when pe=rope and k > 0).
        force_paths computes the permutation paths even where positions do not enter
        attention (only for check_reference.py, to show the shortcut is exact)."""
        B, S, D = h.shape
        H, hd = self.n_heads, self.hd
        # The scale goes on q before the rotation (both are linear, so this is exact).
        q = self._heads(self.q(h) * (hd ** -0.5))
        k, v = self._heads(self.k(h)), self._heads(self.v(h))
        allowed = self._allowed(mask, causal)
        rope = self.pe == "rope"
        diag = {"order_dispersion": h.new_zeros(B)}
        if self.n_paths == 0 or not (rope or force_paths):
            if rope:
                tables = rope_tables(torch.arange(S, device=h.device), hd, h.dtype)
                q, k = rope_rotate(q, tables=tables), rope_rotate(k, tables=tables)
            o_std = self._attend(q, k, v, allowed)
            if self.n_paths == 0:
                return o_std, diag
            # Positions do not enter attention, so every permutation path equals the
            # standard path exactly: (1 - w) O + w gamma mean_i O = (1 - w + w gamma) O.
            w = self.mixing_weight(n_t).unsqueeze(-1)
            diag["w"] = w.squeeze(-1)
            return (1.0 - w + w * self.gamma) * o_std, diag
        assert perm_pos is not None and perm_pos.shape == (self.n_paths, B, S), "perm_pos must be [k, B, S]"
        # Standard path and k permutation paths folded into the batch: [(k+1) * B, ...].
        std_ids = torch.arange(S, device=h.device).expand(1, B, S)
        ids = torch.cat([std_ids, perm_pos.to(h.device)], dim=0)  # [P, B, S]
        P = ids.shape[0]
        if rope:
            tables = rope_tables(ids[:, :, None, :], hd, h.dtype)  # [P, B, 1, S, hd]
            qp = rope_rotate(q.unsqueeze(0), tables=tables)  # [P, B, H, S, hd]
            kp = rope_rotate(k.unsqueeze(0), tables=tables)
        else:
            qp, kp = q.unsqueeze(0).expand(P, -1, -1, -1, -1), k.unsqueeze(0).expand(P, -1, -1, -1, -1)
        scores = torch.matmul(qp.reshape(P * B, H, S, hd), kp.reshape(P * B, H, S, hd).transpose(-1, -2))
        scores = scores.view(P, B, H, S, S).masked_fill_(~allowed, float("-inf"))
        probs = self.attn_drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(probs, v)  # v broadcasts over the path dim: [P, B, H, S, hd]
        out = self.o(out.transpose(2, 3).reshape(P, B, S, D))
        o_std, o_perm = out[0], out[1:]
        mean_perm = o_perm.mean(dim=0)
        w = self.mixing_weight(n_t).unsqueeze(-1)
        diag["w"] = w.squeeze(-1)
        with torch.no_grad():  # population std over the k paths (the standard path not included)
            std = (o_perm - mean_perm).square().mean(dim=0).sqrt()
            diag["order_dispersion"] = masked_token_mean(std, mask).mean(dim=-1)
        return (1.0 - w) * o_std + w * self.gamma * mean_perm, diag


class OptimalCoTLayer(nn.Module):
    def __init__(self, d_model, a=1.0, eps=1e-6, max_cot_length=512.0):
        super().__init__()
        self.entropy = mlp(d_model, d_model // 2, 1)
        self.ratio = mlp(d_model, d_model // 2, 1)
        self.a, self.eps, self.max_cot_length = a, eps, max_cot_length

    def forward(self, x, mask, causal, n_t):
        z = context_mean(x, mask, causal, n_t)
        h_cot = F.softplus(self.entropy(z)).squeeze(-1) + 1e-6
        r = F.softplus(self.ratio(z)).squeeze(-1) + 1e-6
        length = torch.sqrt(n_t * self.a / (h_cot * r)) * math.log2(1.0 / self.eps)
        length = length.clamp(1.0, self.max_cot_length)
        return {"reasoning_entropy": h_cot, "optimal_length": length}


class PositionalDebiasing(nn.Module):
    def __init__(self, d_model, n_harmonics=8, active=True):
        super().__init__()
        self.n_harmonics = n_harmonics
        self.active = active  # False for pe=none: the module is the identity
        self.detector = mlp(d_model, d_model // 2, n_harmonics)
        self.harmonic_weights = nn.Parameter(torch.ones(n_harmonics))
        self.gate = nn.Linear(d_model, d_model)
        self.basis = nn.Linear(2 * n_harmonics, d_model, bias=False)
        nn.init.normal_(self.basis.weight, 0.0, 0.02)

    def phi(self, positions, dtype):
        """positions [B, S] (or [S]) -> [..., S, 2*n_harmonics] interleaved sin/cos."""
        periods = 4.0 * torch.pow(2.0, torch.arange(self.n_harmonics, dtype=dtype))
        ang = 2.0 * math.pi * positions.to(dtype).unsqueeze(-1) / periods
        return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)

    def forward(self, x, mask, positions=None):
        if not self.active:
            return x, {"artifact_scores": None, "artifact_magnitude": None, "correction_magnitude": None}
        B, S, _ = x.shape
        if positions is None:
            positions = torch.arange(S, device=x.device)
        a = torch.sigmoid(self.detector(x)) * self.harmonic_weights  # [B, S, nh]
        psi = a.repeat_interleave(2, dim=-1) * self.phi(positions, x.dtype)
        correction = torch.sigmoid(self.gate(x)) * self.basis(psi)
        with torch.no_grad():
            diag = {
                "artifact_scores": a.detach(),
                "artifact_magnitude": masked_token_mean(a, mask).mean(dim=-1),
                "correction_magnitude": masked_token_mean(correction.norm(dim=-1), mask),
            }
        return x - correction, diag


def ffn(d_model, dropout):
    return nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(4 * d_model, d_model))


class BETLayer(nn.Module):
    def __init__(self, d_model, n_heads, pe, k_permutations, dropout=0.0, n_harmonics=8):
        super().__init__()
        self.stats = SufficientStatsEncoder(d_model)
        self.attn = MartingaleAwareAttention(d_model, n_heads, pe, k_permutations, dropout)
        self.cot = OptimalCoTLayer(d_model)
        self.cot_gate = xavier_zero(nn.Linear(d_model + 2, d_model))
        self.stats_gate = xavier_zero(nn.Linear(d_model, 1))
        self.debias = PositionalDebiasing(d_model, n_harmonics, active=(pe != "none"))
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm3 = nn.LayerNorm(d_model, eps=1e-5)
        self.ffn = ffn(d_model, dropout)
        self.drop_attn = nn.Dropout(dropout)
        self.drop_ffn = nn.Dropout(dropout)

    def forward(self, x, mask, causal, perm_pos=None, positions=None):
        st = self.stats(x, mask, causal)
        n_t = st["n_t"]
        h = self.norm1(x + st["stats"])
        a, adiag = self.attn(h, mask, causal, n_t=n_t, perm_pos=perm_pos)
        x = self.norm2(x + self.drop_attn(a))
        cot = self.cot(x, mask, causal, n_t)
        gate_in = torch.cat([x, cot["reasoning_entropy"].unsqueeze(-1),
                             cot["optimal_length"].log().unsqueeze(-1)], dim=-1)
        x = x + torch.tanh(self.cot_gate(gate_in))
        x = x + (0.5 * torch.tanh(self.stats_gate(st["stats"])) + 0.5) * st["stats"]
        x, ddiag = self.debias(x, mask, positions)
        x = self.norm3(x + self.drop_ffn(self.ffn(x)))
        diag = {k: st[k] for k in ("alpha", "beta", "posterior_mean", "posterior_variance", "n_t")}
        diag["stats"] = st["stats"]
        diag["attn_in"], diag["attn_out"] = h, a
        diag.update(adiag)
        diag.update(cot)
        diag.update(ddiag)
        return x, diag


class StandardLayer(nn.Module):
    """Post-LN encoder layer laid out as nn.TransformerEncoderLayer (norm_first=False)."""

    def __init__(self, d_model, n_heads, pe, dropout=0.0):
        super().__init__()
        self.attn = MartingaleAwareAttention(d_model, n_heads, pe, 0, dropout, permutation=False)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.ffn = ffn(d_model, dropout)
        self.drop_attn = nn.Dropout(dropout)
        self.drop_ffn = nn.Dropout(dropout)

    def forward(self, x, mask, causal, perm_pos=None, positions=None):
        a, diag = self.attn(x, mask, causal)
        diag["attn_in"], diag["attn_out"] = x, a
        x = self.norm1(x + self.drop_attn(a))
        x = self.norm2(x + self.drop_ffn(self.ffn(x)))
        return x, diag


def sinusoidal_table(S, D, dtype):
    t = torch.arange(S, dtype=dtype).unsqueeze(-1)
    i2 = torch.arange(0, D, 2, dtype=dtype)
    ang = t / torch.pow(10000.0, i2 / D)
    pe = torch.zeros(S, D, dtype=dtype)
    pe[:, 0::2] = ang.sin()
    pe[:, 1::2] = ang.cos()[:, : D // 2]
    return pe


class BETModel(nn.Module):
    def __init__(self, vocab_size, d_model=128, n_heads=4, n_layers=2, task="classify",
                 n_classes=2, layer="bet", pe="rope", k_permutations=3, max_len=256,
                 dropout=0.1, n_harmonics=8, tie_embeddings=False):
        super().__init__()
        assert pe in PE_KINDS and task in ("classify", "lm") and layer in ("bet", "standard")
        self.task, self.pe, self.layer_kind, self.k_permutations = task, pe, layer, k_permutations
        self.max_len, self.d_model, self.tie = max_len, d_model, tie_embeddings
        self.causal = task == "lm"
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if pe == "learned":
            self.pos = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.pos.weight, 0.0, 0.02)
        self.layers = nn.ModuleList([
            BETLayer(d_model, n_heads, pe, k_permutations, dropout, n_harmonics) if layer == "bet"
            else StandardLayer(d_model, n_heads, pe, dropout)
            for _ in range(n_layers)])
        if task == "classify":
            self.head = nn.Linear(d_model, n_classes)
        elif not tie_embeddings:
            self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.emb_drop = nn.Dropout(dropout)

    def embed_tokens(self, ids):
        x = self.embed(ids)
        S = ids.shape[1]
        if self.pe == "sinusoidal":
            x = x + sinusoidal_table(S, self.d_model, x.dtype)
        elif self.pe == "learned":
            x = x + self.pos.weight[:S]
        return self.emb_drop(x)

    def forward(self, ids, mask, perm_pos=None, positions=None, temperature=None):
        """ids [B, S] long, mask [B, S] (1 valid), perm_pos [L, k, B, S] long.
        Returns logits (classify [B, C]; lm [B, S, V]) divided by the temperature, the
        embedded input, every layer's output and diagnostics."""
        x = self.embed_tokens(ids)
        out = {"embedded": x, "hidden": [], "layers": []}
        needs_perm = self.layer_kind == "bet" and self.pe == "rope" and self.k_permutations > 0
        for i, layer in enumerate(self.layers):
            pp = perm_pos[i] if needs_perm else None
            x, diag = layer(x, mask, self.causal, perm_pos=pp, positions=positions)
            out["hidden"].append(x)
            out["layers"].append(diag)
        if self.task == "classify":
            logits = self.head(masked_token_mean(x, mask))
        elif self.tie:
            logits = x @ self.embed.weight.t()
        else:
            logits = self.head(x)
        t = self.temperature if temperature is None else temperature
        out["logits"] = logits / t
        return out


class MDLRegularizedLoss(nn.Module):
    def __init__(self, beta=0.1):
        super().__init__()
        self.beta = beta

    def forward(self, logits, targets, target_mask=None):
        """classify: logits [B, C], targets [B]; lm: logits [B, S, V], targets [B, S],
        target_mask [B, S] (1 where the target counts)."""
        if logits.dim() == 3:
            sel = target_mask.bool()
            logits, targets = logits[sel], targets[sel]
        N = targets.shape[0]
        zero = logits.sum() * 0.0
        if N == 0:
            z = zero.detach()
            return {"loss": zero, "standard_loss": z, "mdl_penalty": z, "mdl_active": False,
                    "empirical_entropy": z, "optimal_complexity": z, "actual_complexity": z,
                    "compression_efficiency": z, "n_targets": 0}
        ce = F.cross_entropy(logits, targets, reduction="sum")
        with torch.no_grad():
            counts = torch.bincount(targets).to(logits.dtype)
            p = counts[counts > 0] / N
            h_emp = -(p * p.log()).sum()
            optimal = N * h_emp + math.sqrt(N * math.log(N)) if N > 1 else h_emp * 0.0
        excess = ce - optimal
        active = bool(excess.item() > 0.0)
        penalty = torch.clamp(excess, min=0.0) / N
        loss = ce / N + self.beta * penalty
        return {"loss": loss, "standard_loss": (ce / N).detach(), "mdl_penalty": penalty.detach(),
                "mdl_active": active, "empirical_entropy": h_emp, "optimal_complexity": optimal,
                "actual_complexity": ce.detach(), "compression_efficiency": optimal / ce.detach(),
                "n_targets": N}
