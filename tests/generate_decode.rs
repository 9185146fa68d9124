//! The KV-cache decoder against transformers' `generate(do_sample=False)` (f32, CPU):
//! token-identical greedy outputs for Llama (GQA, tied), Qwen2 (biases), Llama-3 rope
//! scaling and Mistral, batched with left padding and one prompt at a time, with and without
//! a repetition penalty; text, stop strings and streaming on a model with a real tokenizer;
//! the cached forward against the full forward; chat templates against
//! `render_jinja_template`. Fixtures: scripts/make_generate_fixtures.py.
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cpt::generate::chat::{ChatTemplate, Message};
use cpt::generate::{generate, FinishReason, GenerationConfig, Request, Sampling, StopStrings, TokenText};
use cpt::model::kv_cache::{step_inputs, KvCache};
use cpt::model::{CausalLm, Tokenizer};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn id_lists(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

/// Text for models without a tokenizer: each id as a word.
struct IdText;

impl TokenText for IdText {
    fn encode(&self, _: &str, _: bool) -> anyhow::Result<Vec<u32>> {
        unreachable!("id prompts only")
    }
    fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        Ok(ids.iter().map(|i| format!("{i} ")).collect())
    }
    fn eos_ids(&self) -> Vec<u32> {
        Vec::new()
    }
}

fn requests(prompts: &[Vec<u32>]) -> Vec<Request> {
    prompts.iter().map(|p| Request { ids: p.clone(), seed: 0 }).collect()
}

fn greedy_config(case: &Value, batch_size: usize, sampling: Sampling) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        sampling,
        stop: StopStrings::default(),
        eos_ids: ids(&case["eos"]),
        batch_size,
    }
}

#[test]
fn greedy_matches_transformers_for_each_architecture() {
    let cases = read_json(&root().join("generate/greedy.json"));
    for case in cases.as_array().unwrap() {
        let name = case["model"].as_str().unwrap();
        let model = CausalLm::from_pretrained(&root().join("model").join(name), &Device::Cpu, DType::F32).unwrap();
        let prompts = id_lists(&case["prompts"]);
        let penalty = Sampling { repetition_penalty: case["repetition_penalty"].as_f64().unwrap() as f32, ..Sampling::greedy() };
        for (what, batch, sampling, expected) in [
            ("batched, left-padded", prompts.len(), Sampling::greedy(), &case["batched"]),
            ("one prompt at a time", 1, Sampling::greedy(), &case["single"]),
            ("repetition penalty", prompts.len(), penalty, &case["batched_penalty"]),
        ] {
            let cfg = greedy_config(case, batch, sampling);
            let (out, stats) = generate(&model, &IdText, &requests(&prompts), &cfg, &mut |_, _| {}).unwrap();
            let got: Vec<Vec<u32>> = out.iter().map(|g| g.tokens.clone()).collect();
            assert_eq!(got, id_lists(expected), "{name}: {what}");
            for g in &out {
                let ended_by_eos = g.tokens.last().is_some_and(|t| cfg.eos_ids.contains(t));
                assert_eq!(g.finish == FinishReason::Eos, ended_by_eos, "{name}: {what}");
            }
            assert_eq!(stats.prefill_tokens, prompts.iter().map(|p| p.len()).sum::<usize>());
        }
    }
}

#[test]
fn cached_steps_give_the_logits_of_the_full_forward() {
    let model = CausalLm::from_pretrained(&root().join("model/llama3_rope_scaled"), &Device::Cpu, DType::F32).unwrap();
    let tokens: Vec<u32> = vec![5, 9, 13, 2, 40, 41, 7, 8, 63, 1];
    let full = model.forward_no_grad(&Tensor::new(tokens.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(), None).unwrap();
    // Prefill 4 tokens, then 3, then one at a time.
    let mut cache = KvCache::new(model.config().num_hidden_layers, 4);
    let mut start = 0;
    for len in [4, 3, 1, 1, 1] {
        let input = Tensor::new(&tokens[start..start + len], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let (pos, mask) = step_inputs(&[0], start, len, &Device::Cpu).unwrap();
        let logits = model.forward_cached(&input, &pos, &mask, &mut cache).unwrap();
        let want = full.get(0).unwrap().get(start + len - 1).unwrap();
        let diff = (logits.get(0).unwrap() - want).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "after {} tokens: max |diff| {diff}", start + len);
        start += len;
    }
    assert_eq!(cache.len(), tokens.len());
}

fn text_model() -> (CausalLm, Tokenizer, Value) {
    let dir = root().join("generate/text-llama");
    let model = CausalLm::from_pretrained(&dir, &Device::Cpu, DType::F32).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    (model, tok, read_json(&dir.join("text.json")))
}

#[test]
fn text_output_matches_transformers_decode() {
    let (model, tok, fx) = text_model();
    let prompts: Vec<Vec<u32>> = fx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| TokenText::encode(&tok, p.as_str().unwrap(), true).unwrap())
        .collect();
    assert_eq!(prompts, id_lists(&fx["prompt_ids"]), "tokenization with BOS");
    let cfg = GenerationConfig { eos_ids: TokenText::eos_ids(&tok), ..greedy_config(&fx, 2, Sampling::greedy()) };
    let mut streamed = vec![String::new(); prompts.len()];
    let (out, _) = generate(&model, &tok, &requests(&prompts), &cfg, &mut |i, t| streamed[i].push_str(t)).unwrap();
    for (i, g) in out.iter().enumerate() {
        assert_eq!(g.tokens, ids(&fx["tokens"][i]), "prompt {i}");
        assert_eq!(g.text, fx["texts"][i].as_str().unwrap(), "prompt {i}");
        assert_eq!(streamed[i], g.text, "streamed text of prompt {i}");
    }
}

#[test]
fn stop_strings_cut_the_text_and_end_the_row() {
    let (model, tok, fx) = text_model();
    let prompt = TokenText::encode(&tok, fx["prompts"][1].as_str().unwrap(), true).unwrap();
    let full_text = fx["texts"][1].as_str().unwrap();
    // A stop string taken from the middle of the reference output.
    let chars: Vec<char> = full_text.chars().collect();
    let stop: String = chars[4..6].iter().collect();
    let cut = &full_text[..full_text.find(&stop).unwrap()];
    let cfg = GenerationConfig { stop: StopStrings::new(&[stop.clone()]), ..greedy_config(&fx, 1, Sampling::greedy()) };
    let mut streamed = String::new();
    let (out, _) = generate(&model, &tok, &requests(&[prompt]), &cfg, &mut |_, t| streamed.push_str(t)).unwrap();
    assert_eq!(out[0].finish, FinishReason::Stop);
    assert_eq!(out[0].text, cut);
    assert_eq!(streamed, cut, "the stop string is never streamed");
    assert!(out[0].tokens.len() < fx["tokens"][1].as_array().unwrap().len());
}

#[test]
fn seeded_sampling_repeats_and_max_new_tokens_holds() {
    let (model, tok, _) = text_model();
    let prompt = TokenText::encode(&tok, "The cat", true).unwrap();
    let sampling = Sampling { temperature: 0.8, top_k: 50, top_p: 0.95, repetition_penalty: 1.1 };
    let cfg = GenerationConfig { max_new_tokens: 12, sampling, batch_size: 3, ..Default::default() };
    let reqs: Vec<Request> = [1u64, 2, 1].iter().map(|&seed| Request { ids: prompt.clone(), seed }).collect();
    let (a, _) = generate(&model, &tok, &reqs, &cfg, &mut |_, _| {}).unwrap();
    let (b, _) = generate(&model, &tok, &reqs[..1], &GenerationConfig { batch_size: 1, ..cfg.clone() }, &mut |_, _| {}).unwrap();
    assert_eq!(a[0].tokens, a[2].tokens, "same seed, same sample");
    assert_eq!(a[0].tokens, b[0].tokens, "the batch around a row does not change its sample");
    assert_ne!(a[0].tokens, a[1].tokens, "another seed, another sample");
    for g in &a {
        assert_eq!(g.tokens.len(), 12);
        assert_eq!(g.finish, FinishReason::Length);
    }
}

#[test]
fn chat_templates_render_as_transformers_does() {
    let fx = read_json(&root().join("generate/chat.json"));
    let special: Vec<(String, String)> =
        fx["special"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    let special: Vec<(&str, &str)> = special.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut checked = 0;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let template = ChatTemplate::new(fx["templates"][name].as_str().unwrap(), &special).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(&messages, gen);
        match case["rendered"].as_str() {
            Some(want) => assert_eq!(got.unwrap(), want, "{name}, {messages:?}, generation prompt {gen}"),
            None => {
                let err = got.expect_err("transformers refused this conversation").to_string();
                let want = case["error"].as_str().unwrap();
                assert!(err.contains(want), "{name}: error {err:?} should carry {want:?}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn chat_template_is_read_from_tokenizer_config() {
    let dir = root().join("generate/text-llama");
    let template = ChatTemplate::from_dir(&dir).unwrap();
    let text = template.render(&[Message { role: "user".into(), content: "Hi".into() }], true).unwrap();
    assert_eq!(text, "<|user|>\nHi</s>\n<|assistant|>\n");
    let err = ChatTemplate::from_dir(&root().join("eval/tiny-llama")).err().unwrap().to_string();
    assert!(err.contains("no chat template"), "{err}");
}
