#!/usr/bin/env python3
"""Tiny copies of five model families' tokenizer setups, for tests/tokenizer_families.rs.

Each copy has the family's real special-token setup (the `tokenizer_config.json` fields,
`config.json`'s `bos_token_id`/`eos_token_id`/`pad_token_id`, `generation_config.json` where
the family ships one, and the added tokens in the family's order and id layout) on top of a
small vocabulary trained here with Hugging Face `tokenizers` (the real ones have 32k-152k
entries). The pre-tokenizer, normalizer and decoder follow each family's `tokenizer.json`.

  llama3           Meta-Llama-3.1-8B: byte-level BPE, 256 special tokens after the vocabulary
                   (here the first eleven, up to <|python_tag|>), EOS <|end_of_text|>
  llama3-instruct  Meta-Llama-3.1-8B-Instruct: the same tokenizer, EOS <|eot_id|> in
                   tokenizer_config.json, eos_token_id [<|end_of_text|>, <|eom_id|>, <|eot_id|>]
                   in config.json and generation_config.json
  qwen2            Qwen2-0.5B: byte-level BPE, <|endoftext|> <|im_start|> <|im_end|> after the
                   vocabulary, `bos_token: null`, PAD = EOS = <|endoftext|>
  mistral          Mistral-7B-v0.1: SentencePiece-style BPE with byte fallback, <unk> <s> </s>
                   as ids 0-2, then <0x00>..<0xFF>
  smollm           SmolLM-135M: GPT-2-style byte-level BPE, 17 special tokens as ids 0-16,
                   BOS = EOS = UNK = <|endoftext|>

Then it asks transformers what it makes of each copy: `AutoTokenizer` for BOS, EOS and PAD,
`GenerationConfig` for the ids that end generation, and writes them with the ids
`tokenizers` gives a few texts to tests/fixtures/tokenizers/expected.json.

  pip install -r scripts/requirements.txt
  python3 scripts/make_tokenizer_families.py    # writes tests/fixtures/tokenizers/
"""
import json
import os
import shutil

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizers")

TRAIN = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Continual pre-training adapts a base model to new languages and domains.",
    "The learning rate is warmed up, then decays with a cosine schedule.",
    "大语言模型的继续预训练需要合适的数据配比和学习率。",
    "def add(a, b):\n    return a + b\n",
]

# Texts whose ids the test compares (encoded without special tokens).
TEXTS = ["The lazy fox learns.", "继续预训练 data", "def f(x):\n    return x\n"]

# Llama-3.1's first eleven special tokens (ids 128000-128010 there); the other 245
# `<|reserved_special_token_N|>` entries are left out of the tiny copy.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SMOLLM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>",
    "<empty_output>",
]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def added_entry(content):
    """One `added_tokens_decoder` entry as transformers saves it for a special token."""
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


def byte_level_bpe(pattern, vocab_size, leading_specials=(), individual_digits=False, ignore_merges=False):
    """A byte-level BPE trained on TRAIN, with the family's pre-tokenizer (`pattern` for a
    regex split before the byte mapping, None for GPT-2's own regex)."""
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if pattern is None:
        steps = [pre_tokenizers.Digits(individual_digits=individual_digits)] if individual_digits else []
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            steps + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(leading_specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    return tok


def add_trailing_specials(tok, specials):
    """Special tokens after the vocabulary, as Llama-3 and Qwen2 have them."""
    base = tok.get_vocab_size(with_added_tokens=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    ids = {s: tok.token_to_id(s) for s in specials}
    assert list(ids.values()) == list(range(base, base + len(specials))), ids
    return ids


def llama3(instruct):
    tok = byte_level_bpe(LLAMA3_PATTERN, 320, ignore_merges=True)
    ids = add_trailing_specials(tok, LLAMA3_SPECIALS)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, ids[bos])]),
    ])
    first = ids[bos]
    tokenizer_config = {
        "added_tokens_decoder": {str(ids[s]): added_entry(s) for s in LLAMA3_SPECIALS},
        "bos_token": bos,
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>" if instruct else "<|end_of_text|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if instruct:
        tokenizer_config["chat_template"] = LLAMA3_CHAT_TEMPLATE
    eos = ([ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]] if instruct
           else ids["<|end_of_text|>"])
    config = llama_config("llama", first + 256, bos=first, eos=eos, tie=False)
    config["rope_scaling"] = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    config["rope_theta"] = 500000.0
    config["max_position_embeddings"] = 131072
    generation = {"bos_token_id": first, "eos_token_id": eos}
    if instruct:
        generation.update({"do_sample": True, "temperature": 0.6, "top_p": 0.9})
    return tok, tokenizer_config, config, generation


def qwen2():
    tok = byte_level_bpe(QWEN2_PATTERN, 320)
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    ids = add_trailing_specials(tok, QWEN2_SPECIALS)
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(ids[s]): added_entry(s) for s in QWEN2_SPECIALS},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    endoftext = ids["<|endoftext|>"]
    # Like Qwen2's 151936 rows for 151646 ids: the embedding is padded to a multiple of 64.
    rows = -(-tok.get_vocab_size(with_added_tokens=True) // 64) * 64
    config = llama_config("qwen2", rows, bos=endoftext, eos=endoftext, tie=True)
    config["architectures"] = ["Qwen2ForCausalLM"]
    config["use_sliding_window"] = False
    return tok, tokenizer_config, config, {"bos_token_id": endoftext, "eos_token_id": endoftext}


def mistral():
    """SentencePiece-style BPE: `▁` for spaces, byte fallback pieces <0x00>..<0xFF> as ids
    3-258 (ordinary vocabulary entries, not added tokens), as the Llama-2/Mistral converters
    write it."""
    specials = ["<unk>", "<s>", "</s>"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    # Trained word by word (pieces never span a space), then run as Mistral's tokenizer.json
    # does: a normalizer that marks spaces, no pre-tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials + byte_pieces, show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    spec = json.loads(tok.to_str())
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ]}
    spec["pre_tokenizer"] = None
    # The byte pieces are vocabulary, not added tokens.
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials]
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]}
    tok = Tokenizer.from_str(json.dumps(spec))
    assert [tok.token_to_id(s) for s in specials] == [0, 1, 2]
    assert tok.token_to_id("<0x00>") == 3 and tok.token_to_id("<0xFF>") == 258
    tokenizer_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): added_entry(s) for i, s in enumerate(specials)},
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    config = llama_config("mistral", tok.get_vocab_size(), bos=1, eos=2, tie=False)
    config["architectures"] = ["MistralForCausalLM"]
    config["sliding_window"] = 4096
    return tok, tokenizer_config, config, {"bos_token_id": 1, "eos_token_id": 2}


def smollm():
    tok = byte_level_bpe(None, 340, leading_specials=SMOLLM_SPECIALS, individual_digits=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert [tok.token_to_id(s) for s in SMOLLM_SPECIALS] == list(range(len(SMOLLM_SPECIALS)))
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): added_entry(s) for i, s in enumerate(SMOLLM_SPECIALS)},
        "additional_special_tokens": SMOLLM_SPECIALS,
        "bos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
        "vocab_size": tok.get_vocab_size(),
    }
    config = llama_config("llama", tok.get_vocab_size(), bos=0, eos=0, tie=True)
    return tok, tokenizer_config, config, {"bos_token_id": 0, "eos_token_id": 0}


def llama_config(model_type, vocab_size, bos, eos, tie):
    """A tiny decoder config with the family's special-token ids."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": tie,
        "torch_dtype": "bfloat16",
        "bos_token_id": bos,
        "eos_token_id": eos,
    }


FAMILIES = {
    "llama3": lambda: llama3(False),
    "llama3-instruct": lambda: llama3(True),
    "qwen2": qwen2,
    "mistral": mistral,
    "smollm": smollm,
}


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")


def reference(directory, tok):
    """What transformers and tokenizers make of one tiny copy."""
    from transformers import AutoTokenizer, GenerationConfig

    auto = AutoTokenizer.from_pretrained(directory)
    generation = GenerationConfig.from_pretrained(directory)
    stop = generation.eos_token_id
    return {
        "bos_token": auto.bos_token, "bos_token_id": auto.bos_token_id,
        "eos_token": auto.eos_token, "eos_token_id": auto.eos_token_id,
        "pad_token": auto.pad_token, "pad_token_id": auto.pad_token_id,
        "generation_eos_token_ids": stop if isinstance(stop, list) else [stop],
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "texts": {t: tok.encode(t, add_special_tokens=False).ids for t in TEXTS},
    }


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    expected = {}
    for name, make in FAMILIES.items():
        directory = os.path.join(OUT, name)
        os.makedirs(directory)
        tok, tokenizer_config, config, generation = make()
        tok.save(os.path.join(directory, "tokenizer.json"))
        write_json(os.path.join(directory, "tokenizer_config.json"), tokenizer_config)
        write_json(os.path.join(directory, "config.json"), config)
        write_json(os.path.join(directory, "generation_config.json"), generation)
        expected[name] = reference(directory, tok)
        print(name, {k: v for k, v in expected[name].items() if k != "texts"})
    # One family per line: the id lists stay readable.
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                                    for k, v in expected.items()) + "\n}\n")
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
