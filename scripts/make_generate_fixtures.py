#!/usr/bin/env python3
"""Reference outputs for `cpt generate`, computed with transformers on CPU in f32.

Writes under tests/fixtures/generate/:
  greedy.json   for each tiny model of tests/fixtures/model/ (Llama GQA tied, Qwen2 with
                biases, Llama-3 rope-scaled, Mistral): `generate(do_sample=False)` on a batch
                of left-padded prompts of token ids, on each prompt alone, and with a
                repetition penalty; the generated ids after the prompt, cut after the first
                EOS (transformers pads finished rows).
  text-llama/   a tiny random Llama with the byte-level BPE tokenizer of
                tests/fixtures/eval/tiny-llama and a chat template; text.json holds greedy
                outputs for text prompts (tokenized with BOS, decoded with
                skip_special_tokens=True).
  chat.json     chat templates of released models rendered by transformers'
                `render_jinja_template` (what `apply_chat_template` calls) on a few
                conversations.

Usage: python3 scripts/make_generate_fixtures.py   (torch, transformers, tokenizers)
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "model")
OUT = os.path.join(ROOT, "tests", "fixtures", "generate")
CASES = ["llama_gqa_tied", "qwen2_bias", "llama3_rope_scaled", "mistral_tied"]
MAX_NEW = 16
PAD = 0


def cut_after_eos(ids, eos):
    out = []
    for t in ids:
        out.append(t)
        if t in eos:
            break
    return out


def greedy(model, prompts, eos, **kw):
    """Left-padded batch through generate(do_sample=False); the new ids of each row."""
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                             pad_token_id=PAD, eos_token_id=eos, **kw)
    return [cut_after_eos(row[longest:].tolist(), eos) for row in out]


def model_cases():
    cases = []
    g = torch.Generator().manual_seed(7)
    for name in CASES:
        d = os.path.join(MODELS, name)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        vocab = model.config.vocab_size
        eos = [2]
        prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (5, 9, 2)]
        case = {
            "model": name,
            "eos": eos,
            "max_new_tokens": MAX_NEW,
            "prompts": prompts,
            "batched": greedy(model, prompts, eos),
            "single": [greedy(model, [p], eos)[0] for p in prompts],
            "repetition_penalty": 1.3,
            "batched_penalty": greedy(model, prompts, eos, repetition_penalty=1.3),
        }
        cases.append(case)
        print(name, case["batched"])
    return cases


ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")


def llama4_template():
    # The template transformers ships for Llama 4 (trim, slicing, namespaces of tools, tojson).
    from transformers.models.llama4 import processing_llama4
    return processing_llama4.chat_template


def chat_cases():
    convs = [
        [{"role": "user", "content": "What is 2 + 2?"}],
        [{"role": "system", "content": "  Answer briefly.  "}, {"role": "user", "content": "Name a prime."},
         {"role": "assistant", "content": "7"}, {"role": "user", "content": "另一个？ \"quoted\" <tag>"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye\n"}],
    ]
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    templates = {"zephyr": ZEPHYR, "qwen2": QWEN2, "llama3": LLAMA3, "mistral": MISTRAL, "llama4": llama4_template()}
    cases = []
    for name, tpl in templates.items():
        for conv in convs:
            for gen in (True, False):
                try:
                    rendered = render_jinja_template([conv], chat_template=tpl, add_generation_prompt=gen, **special)[0][0]
                    error = None
                except Exception as e:  # noqa: BLE001  the template refused the conversation
                    rendered, error = None, str(e)
                cases.append({"template": name, "messages": conv, "add_generation_prompt": gen,
                              "rendered": rendered, "error": error})
    return {"special": special, "templates": templates, "cases": cases}


def text_model():
    d = os.path.join(OUT, "text-llama")
    os.makedirs(d, exist_ok=True)
    src = os.path.join(ROOT, "tests", "fixtures", "eval", "tiny-llama")
    shutil.copy(os.path.join(src, "tokenizer.json"), d)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "model_max_length": 512, "chat_template": ZEPHYR}, f, indent=1)
    cfg = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=0, eos_token_id=1, tie_word_embeddings=True, attn_implementation="eager")
    torch.manual_seed(11)
    model = LlamaForCausalLM(cfg).float().eval()
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if name.endswith("norm.weight")
                    else 0.3 * torch.randn(p.shape, generator=g))
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(d)
    prompts = ["The cat sat on the", "Question: what is two plus two?\nAnswer:", "x"]
    rows = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    out = greedy(model, rows, [1])
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in out]
    with open(os.path.join(d, "text.json"), "w") as f:
        json.dump({"prompts": prompts, "prompt_ids": rows, "max_new_tokens": MAX_NEW, "eos": [1],
                   "tokens": out, "texts": texts}, f, indent=1, ensure_ascii=False)
    print("text-llama", texts)


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "greedy.json"), "w") as f:
        json.dump(model_cases(), f, indent=1)
    text_model()
    with open(os.path.join(OUT, "chat.json"), "w") as f:
        json.dump(chat_cases(), f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
