#!/usr/bin/env python3
"""Reference fixtures for the LoRA tests, computed with PEFT + transformers on CPU in f32.

Each case under tests/fixtures/lora/<case>/ starts from a base model of tests/fixtures/model/
and holds:
  adapter/            a PEFT adapter (PeftModel.save_pretrained) with random, non-zero A and
                      B (0.1 N(0,1)) and perturbed modules_to_save, so every part changes the output
  reference.safetensors
    input_ids, targets [B,T] i64 (the base case's window)
    logits [B,T,V] f32: PeftModel(base, adapter) in eval mode
    losses [5] f32: mean cross-entropy before each of five torch.optim.AdamW steps on that
                    window (dropout 0; decay groups as cpt's: no decay for 1-D tensors and
                    embed_tokens)
    trained.<name> f32: every tensor of the adapter after the five steps, under the names
                    of adapter_model.safetensors

Cases: Llama with tied embeddings (all-linear, embed_tokens and lm_head saved as separate
copies, PEFT's default), Qwen2 with q/k/v biases (attention projections, rsLoRA, lm_head
saved), Mistral with tied embeddings (q/v/down, embed_tokens saved with ensure_weight_tying).

Usage: python3 scripts/make_lora_fixtures.py [OUT_DIR]   (default tests/fixtures/lora)
"""
import json
import os
import sys
import warnings

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

warnings.filterwarnings("ignore")
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = os.path.join(ROOT, "tests", "fixtures", "model")
LR, BETAS, EPS, WD, STEPS = 1e-2, (0.9, 0.95), 1e-8, 0.1, 5

CASES = [
    ("llama_tied_all_linear", "llama_gqa_tied",
     dict(r=4, lora_alpha=8, target_modules="all-linear", modules_to_save=["embed_tokens", "lm_head"])),
    ("qwen2_bias_rslora", "qwen2_bias",
     dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
          modules_to_save=["lm_head"])),
    ("mistral_tied_ensure", "mistral_tied",
     dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], modules_to_save=["embed_tokens"],
          ensure_weight_tying=True)),
]


def randomize_adapter(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.requires_grad:  # modules_to_save copies
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def train(model, input_ids, targets):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed_tokens" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    model.train()
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        logits = model(input_ids=input_ids).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float32)


def make_case(out, name, base_name, lora_kwargs, seed):
    base_dir = os.path.join(MODELS, base_name)
    ref = load_file(os.path.join(base_dir, "reference.safetensors"))
    input_ids, targets = ref["input_ids"], ref["targets"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **lora_kwargs))
    randomize_adapter(model, seed)
    case_dir = os.path.join(out, name)
    adapter_dir = os.path.join(case_dir, "adapter")
    model.save_pretrained(adapter_dir)
    # Record the base by its place in the repository, not this machine's path.
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = f"tests/fixtures/model/{base_name}"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    readme = os.path.join(adapter_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()
        with model.disable_adapter():
            base_logits = model(input_ids=input_ids).logits.float()
    print(f"{name}: the adapter moves the logits by up to {(logits - base_logits).abs().max().item():.3f}")
    losses = train(model, input_ids, targets)
    trained = get_peft_model_state_dict(model)
    refs = {"input_ids": input_ids, "targets": targets, "logits": logits.contiguous(), "losses": losses}
    refs.update({f"trained.{k}": v.detach().float().clone().contiguous() for k, v in trained.items()})
    save_file(refs, os.path.join(case_dir, "reference.safetensors"))
    print(f"{name}: {len(trained)} adapter tensors, losses {[round(x, 4) for x in losses.tolist()]}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "lora")
    torch.manual_seed(0)
    for i, (name, base_name, kwargs) in enumerate(CASES):
        make_case(out, name, base_name, dict(kwargs), seed=100 + i)


if __name__ == "__main__":
    main()
