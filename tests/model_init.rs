//! `cpt init`: presets, tokenizer training or reuse, HF layout that cpt and transformers load.
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use cpt::model::params::parameter_specs;
use cpt::model::init::{build_config, preset, SizeOverrides, PRESETS};
use cpt::model::{token_nll, Architecture, CausalLm, Tokenizer};

/// A small mixed English/Chinese corpus, generated so the test needs nothing from outside.
fn write_corpus(dir: &Path) -> PathBuf {
    let words = [
        "the",
        "model",
        "learns",
        "from",
        "data",
        "and",
        "text",
        "in",
        "many",
        "languages",
        "中文",
        "数据",
        "模型",
        "训练",
        "继续",
        "预训练",
        "large",
        "language",
        "models",
        "tokens",
    ];
    let mut state = 12345u64;
    let mut text = String::new();
    for _ in 0..1500 {
        for k in 0..10 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if k > 0 {
                text.push(' ');
            }
            text.push_str(words[(state >> 33) as usize % words.len()]);
        }
        text.push('\n');
    }
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn cpt(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn init_with_trained_tokenizer_loads_in_cpt_and_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let out = tmp.path().join("tiny-qwen2");
    let (ok, log) = cpt(&[
        "init",
        "--preset",
        "tiny",
        "--arch",
        "qwen2",
        "--train-tokenizer",
        corpus.to_str().unwrap(),
        "--vocab-size",
        "400",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    assert!(ok, "{log}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let tok = Tokenizer::from_dir(&out).unwrap();
    let model = CausalLm::from_pretrained(&out, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.config().architecture, Architecture::Qwen2);
    assert_eq!(model.config().vocab_size, tok.vocab_size());
    assert!(
        tok.vocab_size() > 300 && tok.vocab_size() <= 400,
        "vocab {}",
        tok.vocab_size()
    );
    assert_eq!(model.config().bos_token_id, tok.bos_id());
    assert_eq!(
        model.config().eos_token_ids,
        tok.eos_id().into_iter().collect::<Vec<_>>()
    );

    let text = "the model learns 中文 数据 from many tokens";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids[0], tok.bos_id().unwrap());
    assert_eq!(tok.decode(&ids[1..]).unwrap(), text);

    // A fresh model is close to uniform on the next token: loss ~ ln(V).
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward(&input, None).unwrap();
    let n = ids.len();
    let next = input.narrow(1, 1, n - 1).unwrap();
    let loss = token_nll(&logits.narrow(1, 0, n - 1).unwrap(), &next).unwrap();
    let loss = loss.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let uniform = (tok.vocab_size() as f32).ln();
    assert!(
        (loss - uniform).abs() < 0.1,
        "fresh loss {loss} vs ln V {uniform}"
    );

    if !Command::new("python3")
        .args(["-c", "import transformers"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        eprintln!("SKIP transformers half of init test: python3 with transformers not available");
        return;
    }
    let expected = tmp.path().join("expected.safetensors");
    let data = std::collections::HashMap::from([
        ("input_ids", input.to_dtype(DType::I64).unwrap()),
        ("logits", logits),
    ]);
    candle_core::safetensors::save(&data, &expected).unwrap();
    let text_file = tmp.path().join("text.txt");
    std::fs::write(&text_file, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_hf_roundtrip.py");
    let res = Command::new("python3")
        .arg(script)
        .arg("--text")
        .arg(&text_file)
        .arg(&out)
        .arg(&expected)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&res.stderr)
    );
    eprintln!("{stdout}");
}

#[test]
fn init_reuses_a_tokenizer_with_explicit_sizes_and_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let base = tmp.path().join("base");
    let (ok, log) = cpt(&[
        "init",
        "--train-tokenizer",
        corpus.to_str().unwrap(),
        "--vocab-size",
        "300",
        "--out",
        base.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");

    let run = |name: &str, seed: &str| -> PathBuf {
        let out = tmp.path().join(name);
        let (ok, log) = cpt(&[
            "init",
            "--arch",
            "mistral",
            "--tokenizer",
            base.to_str().unwrap(),
            "--vocab-size",
            "320",
            "--hidden-size",
            "32",
            "--num-heads",
            "2",
            "--num-kv-heads",
            "1",
            "--num-layers",
            "1",
            "--intermediate-size",
            "40",
            "--tie-embeddings",
            "false",
            "--dtype",
            "bf16",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{log}");
        out
    };
    let (a, b, c) = (run("a", "1"), run("b", "1"), run("c", "2"));
    let load = |p: &Path| CausalLm::from_pretrained(p, &Device::Cpu, DType::F32).unwrap();
    let (ma, mb, mc) = (load(&a), load(&b), load(&c));
    let cfg = ma.config();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim
        ),
        (32, 2, 1, 16)
    );
    assert_eq!(
        (cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size),
        (1, 40, 320)
    );
    assert!(!cfg.tie_word_embeddings);
    assert_eq!(
        Tokenizer::from_dir(&a).unwrap().content_hash(),
        Tokenizer::from_dir(&base).unwrap().content_hash()
    );
    for (((name, va), (_, vb)), (_, vc)) in ma
        .named_parameters()
        .iter()
        .zip(mb.named_parameters())
        .zip(mc.named_parameters())
    {
        assert_eq!(
            max_abs(&(va.as_tensor() - vb.as_tensor()).unwrap()),
            0.0,
            "{name}: same seed differs"
        );
        if name.ends_with("proj.weight") {
            assert!(
                max_abs(&(va.as_tensor() - vc.as_tensor()).unwrap()) > 0.0,
                "{name}: seeds agree"
            );
        }
    }
}

#[test]
fn init_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let c = corpus.to_str().unwrap();
    let occupied = tmp.path().to_str().unwrap(); // holds corpus.txt
    let fresh = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (x, y, z1, z2, z3) = (
        fresh("x"),
        fresh("y"),
        fresh("z1"),
        fresh("z2"),
        fresh("z3"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["init", "--train-tokenizer", c, "--out", occupied],
            "not empty",
        ),
        (
            vec![
                "init",
                "--preset",
                "huge",
                "--train-tokenizer",
                c,
                "--out",
                &x,
            ],
            "unknown preset `huge`",
        ),
        (
            vec![
                "init",
                "--arch",
                "gpt2",
                "--train-tokenizer",
                c,
                "--out",
                &x,
            ],
            "unsupported architecture `gpt2`",
        ),
        (
            vec!["init", "--train-tokenizer", "no/such/file.txt", "--out", &y],
            "no/such/file.txt",
        ),
        (
            vec![
                "init",
                "--num-heads",
                "4",
                "--num-kv-heads",
                "3",
                "--train-tokenizer",
                c,
                "--out",
                &z1,
            ],
            "--num-kv-heads",
        ),
        (vec!["init", "--out", &z2], "--tokenizer"),
        (
            vec!["init", "--tokenizer", "no/such/dir", "--out", &z3],
            "no/such/dir",
        ),
        (
            vec![
                "init",
                "--train-tokenizer",
                c,
                "--vocab-size",
                "100",
                "--out",
                &z3,
            ],
            "--vocab-size 100",
        ),
    ];
    for (args, must) in cases {
        let (ok, log) = cpt(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(log.contains(must), "{args:?}: `{log}` lacks `{must}`");
    }
    for d in [&x, &y, &z1, &z2, &z3] {
        assert!(!Path::new(d).exists(), "a failed init left {d} behind");
    }
}

/// Presets have the sizes their names promise, and every architecture's fresh tiny model
/// trains: every parameter gets a finite, non-zero gradient.
#[test]
fn presets_and_fresh_models_train() {
    let count = |name: &str, vocab: usize| -> usize {
        let cfg = build_config(
            Architecture::Llama,
            &preset(name).unwrap(),
            &SizeOverrides::default(),
            vocab,
            None,
            None,
        )
        .unwrap();
        parameter_specs(&cfg)
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum()
    };
    let big = count(
        "small-100m",
        preset("small-100m").unwrap().default_vocab_size,
    );
    assert!(
        (90_000_000..=110_000_000).contains(&big),
        "small-100m has {big} parameters"
    );
    assert!(count("tiny", 512) < 200_000);
    assert!(PRESETS.iter().any(|p| p.name == "tiny"));

    for arch in [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Mistral,
    ] {
        let cfg = build_config(
            arch,
            &preset("tiny").unwrap(),
            &SizeOverrides::default(),
            97,
            Some(0),
            Some(1),
        )
        .unwrap();
        let model = CausalLm::new_random(cfg, 9, &Device::Cpu, DType::F32).unwrap();
        let ids = Tensor::arange(0u32, 32, &Device::Cpu)
            .unwrap()
            .reshape((2, 16))
            .unwrap();
        let targets = ((&ids + 1.0).unwrap()).to_dtype(DType::U32).unwrap();
        let loss = token_nll(&model.forward(&ids, None).unwrap(), &targets)
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in model.named_parameters() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{arch:?}: no gradient for {name}"));
            let n = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                n.is_finite() && n > 0.0,
                "{arch:?}: gradient of {name} is {n}"
            );
        }
    }
}

#[test]
fn tokenizer_config_naming_an_unknown_token_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let out = tmp.path().join("m");
    let (ok, log) = cpt(&[
        "init",
        "--train-tokenizer",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    std::fs::write(
        out.join("tokenizer_config.json"),
        r#"{"bos_token": "<nope>"}"#,
    )
    .unwrap();
    let e = format!(
        "{:#}",
        Tokenizer::from_dir(&out)
            .err()
            .expect("unknown bos must fail")
    );
    assert!(
        e.contains("bos_token") && e.contains("<nope>") && e.contains("tokenizer_config.json"),
        "{e}"
    );
}
