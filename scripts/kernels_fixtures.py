#!/usr/bin/env python3
"""Reference values for cpt's fused ops (src/kernels), computed with PyTorch/transformers on CPU.

Writes tests/fixtures/kernels/reference.safetensors (f32, a few KB): inputs, outputs and
gradients for attention (causal + document mask + GQA), RMSNorm, RoPE (with transformers'
Llama-3 frequency scaling), SwiGLU, cross-entropy, and three steps of torch.optim.AdamW.

usage: python3 scripts/kernels_fixtures.py [OUT]
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}


def put(name, t):
    out[name] = t.detach().to(torch.float32).contiguous().clone()


def attention():
    b, hq, hkv, t, d = 2, 4, 2, 13, 16
    q = torch.randn(b, hq, t, d, requires_grad=True)
    k = torch.randn(b, hkv, t, d, requires_grad=True)
    v = torch.randn(b, hkv, t, d, requires_grad=True)
    # batch 0 packs two documents (5 + 8 tokens); batch 1 is one document
    seg = torch.tensor([[0] * 5 + [1] * 8, [0] * 13], dtype=torch.int64)
    scale = d ** -0.5
    kk = k.repeat_interleave(hq // hkv, dim=1)
    vv = v.repeat_interleave(hq // hkv, dim=1)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = causal[None] & (seg[:, :, None] == seg[:, None, :])  # [b, i, j]
    o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=allowed[:, None], scale=scale)
    do = torch.randn_like(o)
    o.backward(do)
    for n, x in [("q", q), ("k", k), ("v", v), ("out", o), ("dout", do)]:
        put(f"attn.{n}", x)
    put("attn.segments", seg.float())
    put("attn.dq", q.grad)
    put("attn.dk", k.grad)
    put("attn.dv", v.grad)


def rms_norm():
    x = torch.randn(3, 5, 24, requires_grad=True)
    w = (1.0 + 0.1 * torch.randn(24)).requires_grad_()
    eps = 1e-5
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    g = torch.randn_like(y)
    y.backward(g)
    for n, t_ in [("x", x), ("weight", w), ("y", y), ("g", g), ("dx", x.grad), ("dweight", w.grad)]:
        put(f"rms.{n}", t_)


def rope():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    head_dim = 16
    cfg = LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    )
    emb = LlamaRotaryEmbedding(cfg)
    put("rope.inv_freq", emb.inv_freq)
    b, h, t = 2, 3, 7
    x = torch.randn(b, h, t, head_dim, requires_grad=True)
    # batch 1 is packed: a second document restarts positions at 0
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 0, 1, 2, 3]])
    cos, sin = emb(x, pos)
    y, _ = apply_rotary_pos_emb(x, x, cos, sin)
    g = torch.randn_like(y)
    y.backward(g)
    put("rope.x", x)
    put("rope.positions", pos.float())
    put("rope.y", y)
    put("rope.g", g)
    put("rope.dx", x.grad)


def swiglu():
    a = torch.randn(4, 33, requires_grad=True)
    b = torch.randn(4, 33, requires_grad=True)
    y = F.silu(a) * b
    g = torch.randn_like(y)
    y.backward(g)
    for n, t_ in [("gate", a), ("up", b), ("y", y), ("g", g), ("dgate", a.grad), ("dup", b.grad)]:
        put(f"swiglu.{n}", t_)


def cross_entropy():
    n, hdim, vocab = 10, 16, 37
    h = torch.randn(n, hdim, requires_grad=True)
    w = (0.5 * torch.randn(vocab, hdim)).requires_grad_()
    tg = torch.randint(0, vocab, (n,))
    loss = F.cross_entropy(h @ w.t(), tg, reduction="none")
    g = torch.rand(n)
    loss.backward(g)
    for k_, t_ in [("hidden", h), ("weight", w), ("loss", loss), ("g", g), ("dhidden", h.grad), ("dweight", w.grad)]:
        put(f"ce.{k_}", t_)
    put("ce.targets", tg.float())


def adamw():
    p0 = torch.nn.Parameter(torch.randn(5, 7))
    p1 = torch.nn.Parameter(torch.randn(11))
    put("adamw.p0.init", p0)
    put("adamw.p1.init", p1)
    opt = torch.optim.AdamW(
        [{"params": [p0], "weight_decay": 0.1}, {"params": [p1], "weight_decay": 0.0}],
        lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False,
    )
    for step in range(1, 4):
        g0, g1 = torch.randn(5, 7), torch.randn(11)
        put(f"adamw.p0.grad{step}", g0)
        put(f"adamw.p1.grad{step}", g1)
        p0.grad, p1.grad = g0, g1
        opt.step()
        put(f"adamw.p0.step{step}", p0)
        put(f"adamw.p1.step{step}", p1)


for f in (attention, rms_norm, rope, swiglu, cross_entropy, adamw):
    f()
root = Path(__file__).resolve().parent.parent
path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests/fixtures/kernels/reference.safetensors"
path.parent.mkdir(parents=True, exist_ok=True)
save_file(out, str(path), metadata={"generator": "scripts/kernels_fixtures.py", "torch": torch.__version__})
print(f"wrote {path} ({path.stat().st_size} bytes, {len(out)} tensors)")
