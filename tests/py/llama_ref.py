"""An independent Llama in PyTorch (run in float64 as the oracle), written from the HF transformers conventions
(tsp-spec §2): RMSNorm w * x / sqrt(mean(x^2) + eps); RoPE inv_freq_i = theta^(-2i/d) with
rotate_half pairing (i, i + d/2); scores / sqrt(d), causal softmax; query head i uses kv head
i // (n_h / n_kv); SwiGLU MLP down(silu(gate(x)) * up(x)); mean cross-entropy with ignore_index -100
over the shifted labels. Used as the oracle of the C++ engine; it shares no code with it."""
import math

import torch


def param_shapes(cfg):
    """HF tensor name -> shape, in HF order (no lm_head when tied)."""
    h, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    kvd = h // nh * nkv
    shapes = {"model.embed_tokens.weight": (V, h)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (h, h),
                       p + "self_attn.k_proj.weight": (kvd, h), p + "self_attn.v_proj.weight": (kvd, h),
                       p + "self_attn.o_proj.weight": (h, h), p + "post_attention_layernorm.weight": (h,),
                       p + "mlp.gate_proj.weight": (I, h), p + "mlp.up_proj.weight": (I, h),
                       p + "mlp.down_proj.weight": (h, I)})
    shapes["model.norm.weight"] = (h,)
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (V, h)
    return shapes


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta):
    # x: [B, H, S, d]; pos: [S] or [B, S]
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = pos[..., None].double() * inv_freq
    if ang.dim() == 3:  # per-sequence positions: broadcast over heads
        ang = ang[:, None]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rot = torch.cat([-x2, x1], dim=-1)
    return x * cos + rot * sin


def doc_mask(position_ids):
    """Block-diagonal causal mask [B, 1, S, S] of packed documents (HF's convention: a document
    starts at each sequence's first token and wherever its position is 0)."""
    B, S = position_ids.shape
    start = position_ids == 0
    start[:, 0] = True
    doc = start.long().cumsum(-1)
    same = doc[:, :, None] == doc[:, None, :]
    return (same & torch.ones(S, S, dtype=torch.bool).tril())[:, None]


def forward_loss(cfg, P, input_ids, labels, position_ids=None):
    """P: dict of float64 tensors with HF names (requires_grad); input_ids/labels: [B, S+1];
    position_ids (packed documents): [B, S+1] too, or None (one document a sequence)."""
    pos = None if position_ids is None else position_ids[:, :-1]
    logits = forward_logits(cfg, P, input_ids[:, :-1], pos)
    tgt = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="mean")


def forward_logits(cfg, P, ids, position_ids=None):
    """Logits [B, S, V] of every position of ids [B, S] (a full recompute, no cache); with
    position_ids [B, S], packed documents (RoPE at those positions, doc_mask)."""
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d, L = h // nh, cfg["num_hidden_layers"]
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    B, S = ids.shape
    x = P["model.embed_tokens.weight"][ids]
    pos = torch.arange(S)
    mask = torch.ones(S, S, dtype=torch.bool).tril()
    if position_ids is not None:
        pos, mask = position_ids, doc_mask(position_ids)
    for l in range(L):
        p = f"model.layers.{l}."
        y = rmsnorm(x, P[p + "input_layernorm.weight"], eps)
        q = (y @ P[p + "self_attn.q_proj.weight"].T).view(B, S, nh, d).transpose(1, 2)
        k = (y @ P[p + "self_attn.k_proj.weight"].T).view(B, S, nkv, d).transpose(1, 2)
        v = (y @ P[p + "self_attn.v_proj.weight"].T).view(B, S, nkv, d).transpose(1, 2)
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        s = s.masked_fill(~mask, float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, S, nh * d)
        x = x + o @ P[p + "self_attn.o_proj.weight"].T
        y = rmsnorm(x, P[p + "post_attention_layernorm.weight"], eps)
        g = y @ P[p + "mlp.gate_proj.weight"].T
        u = y @ P[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ P[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else P["lm_head.weight"]
    return x @ head.T
