#!/usr/bin/env python3
"""Reference fixtures for the model tests, computed with transformers on CPU in f32.

Each case directory under tests/fixtures/model/<case>/ holds an HF model (config.json +
model.safetensors, stored in f32, bf16 or f16) and reference.safetensors with:
  input_ids [B,T] i64, targets [B,T] i64, logits [B,T,V] f32, loss [1] f32 (mean
  cross-entropy of logits vs targets), grad.<param name> f32 for every parameter.
llama_gqa_tied also has reference_packed.safetensors (same keys) and doc_starts.json: its
rows are packed documents, and the reference runs every document on its own (positions
from 0, nothing shared), which is what a document mask must reproduce.

Weights of stored-bf16/f16 cases are rounded to that dtype first, so the f32 reference and
the stored checkpoint describe the same model.

Usage: python3 scripts/make_model_fixtures.py [OUT_DIR]   (default tests/fixtures/model)
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

B, T = 2, 8
COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
              attn_implementation="eager")


def randomize(model, seed):
    """Larger-than-default random weights, non-trivial norms and biases, so every
    parameter matters to the output and gets a clearly non-zero gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def round_to(model, dtype):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


def state_for_save(model, dtype):
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def loss_and_grads(model, input_ids, targets, doc_starts=None):
    model.zero_grad()
    if doc_starts is None:
        logits = model(input_ids=input_ids).logits
    else:
        # Each document alone: positions restart at 0, no attention across documents.
        rows = []
        for b, starts in enumerate(doc_starts):
            bounds = list(starts) + [input_ids.shape[1]]
            pieces = [model(input_ids=input_ids[b:b + 1, s:e]).logits
                      for s, e in zip(bounds[:-1], bounds[1:])]
            rows.append(torch.cat(pieces, dim=1))
        logits = torch.cat(rows, dim=0)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if model.config.tie_word_embeddings and name == "lm_head.weight":
            continue
        grads["grad." + name] = p.grad.detach().clone()
    return logits.detach(), loss.detach(), grads


def to_classic_form(cfg):
    """Rewrite transformers-5 `rope_parameters` as the classic rope_theta/rope_scaling keys."""
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = None if params.get("rope_type", "default") == "default" else params
    return cfg


def write_reference(d, model, seed, file_name, doc_starts=None):
    g = torch.Generator().manual_seed(seed + 1000)
    input_ids = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    targets = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    logits, loss, grads = loss_and_grads(model, input_ids, targets, doc_starts)
    ref = {"input_ids": input_ids, "targets": targets, "logits": logits.contiguous(),
           "loss": loss.reshape(1)}
    ref.update({k: v.contiguous() for k, v in grads.items()})
    save_file(ref, os.path.join(d, file_name))
    if doc_starts is not None:
        with open(os.path.join(d, "doc_starts.json"), "w") as f:
            json.dump(doc_starts, f)
    print(f"{os.path.basename(d)}/{file_name}: loss {loss.item():.6f}, "
          f"{sum(p.numel() for p in model.parameters())} params")


def write_case(out, name, model, stored_dtype, seed, classic=False):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    # Rewrite the weights in the stored dtype (save_pretrained keeps f32).
    save_file(state_for_save(model, stored_dtype), os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    cfg_path = os.path.join(d, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.pop("transformers_version", None)
    if classic:
        cfg = to_classic_form(cfg)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    write_reference(d, model, seed, "reference.safetensors")
    return d


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "model")
    torch.manual_seed(0)

    # (a) Llama with GQA and tied embeddings, two layers, stored f32, rope_parameters form.
    cfg = LlamaConfig(num_hidden_layers=2, tie_word_embeddings=True, rope_theta=10000.0, **COMMON)
    m = LlamaForCausalLM(cfg).float()
    randomize(m, 1)
    d = write_case(out, "llama_gqa_tied", m, torch.float32, seed=1)
    # (a') the same model on packed rows: documents [0,3), [3,8) and [0,5), [5,6), [6,8).
    write_reference(d, m, 2, "reference_packed.safetensors", doc_starts=[[0, 3], [0, 5, 6]])

    # (b) Qwen2 with q/k/v biases, untied, stored bf16, classic config form.
    cfg = Qwen2Config(num_hidden_layers=1, tie_word_embeddings=False, rope_theta=1000000.0, **COMMON)
    m = Qwen2ForCausalLM(cfg).float()
    randomize(m, 3)
    round_to(m, torch.bfloat16)
    write_case(out, "qwen2_bias", m, torch.bfloat16, seed=3, classic=True)

    # (c) Llama-3.1 style rope scaling with an explicit head_dim (16 != 32/4), stored f16.
    # original_max_position_embeddings is small so the scaling bends this tiny head's bands.
    cfg = LlamaConfig(num_hidden_layers=1, tie_word_embeddings=False, head_dim=16,
                      rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                      **COMMON)
    m = LlamaForCausalLM(cfg).float()
    randomize(m, 4)
    round_to(m, torch.float16)
    write_case(out, "llama3_rope_scaled", m, torch.float16, seed=4)

    # (d) Mistral, tied, classic form, sliding window larger than the sequence.
    cfg = MistralConfig(num_hidden_layers=1, tie_word_embeddings=True, sliding_window=4096,
                        rope_theta=10000.0, **COMMON)
    m = MistralForCausalLM(cfg).float()
    randomize(m, 5)
    write_case(out, "mistral_tied", m, torch.float32, seed=5, classic=True)


if __name__ == "__main__":
    main()
