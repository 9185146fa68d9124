//! config.json reading: both forms, the supported families, and clear errors for the rest.
use candle_core::{DType, Device, Tensor};
use cpt::model::{Architecture, CausalLm, ModelConfig, RopeScaling};
use serde_json::{json, Value};

/// Llama-3.2-1B's published config.json (classic form, llama3 rope scaling, tied).
fn llama32_classic() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
        "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
        "use_cache": true, "vocab_size": 128256
    })
}

fn parse(v: &Value) -> anyhow::Result<ModelConfig> {
    ModelConfig::from_json_str(&v.to_string())
}

fn err_of(v: &Value) -> String {
    format!("{:#}", parse(v).expect_err("config should be rejected"))
}

#[test]
fn llama32_classic_form() {
    let c = parse(&llama32_classic()).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim
        ),
        (2048, 32, 8, 64)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        }
    );
    assert_eq!(c.bos_token_id, Some(128000));
    assert_eq!(c.eos_token_ids, vec![128001]);
    // Llama ignores a stray sliding_window, as transformers does.
    let mut v = llama32_classic();
    v["sliding_window"] = json!(16);
    assert_eq!(parse(&v).unwrap().sliding_window, None);
}

#[test]
fn rope_parameters_form_reads_the_same() {
    let mut v = llama32_classic();
    let m = v.as_object_mut().unwrap();
    let mut params = m.remove("rope_scaling").unwrap();
    params["rope_theta"] = m.remove("rope_theta").unwrap();
    m.insert("rope_parameters".into(), params);
    assert_eq!(parse(&v).unwrap(), parse(&llama32_classic()).unwrap());
}

#[test]
fn legacy_type_key_and_linear_scaling() {
    let mut v = llama32_classic();
    v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
    assert_eq!(
        parse(&v).unwrap().rope_scaling,
        RopeScaling::Linear { factor: 2.0 }
    );
    v["rope_scaling"] = Value::Null;
    assert_eq!(parse(&v).unwrap().rope_scaling, RopeScaling::None);
}

#[test]
fn qwen2_and_mistral_families() {
    // Qwen2.5-0.5B: sliding_window is set but unused (use_sliding_window false).
    let qwen = json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 896,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
        "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": true, "use_sliding_window": false,
        "vocab_size": 151936, "eos_token_id": [151643, 151645]
    });
    let c = parse(&qwen).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert!(c.architecture.qkv_bias());
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.eos_token_ids, vec![151643, 151645]);

    let mistral = json!({
        "architectures": ["MistralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 32000
    });
    let c = parse(&mistral).unwrap();
    assert_eq!(c.architecture, Architecture::Mistral);
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.sliding_window, Some(4096));
    assert!(c.check_seq_len(4096).is_ok());
    let e = format!("{:#}", c.check_seq_len(4097).unwrap_err());
    assert!(e.contains("sliding_window"), "{e}");
}

#[test]
fn model_type_alone_is_enough() {
    let mut v = llama32_classic();
    v.as_object_mut().unwrap().remove("architectures");
    assert_eq!(parse(&v).unwrap().architecture, Architecture::Llama);
}

#[test]
fn unsupported_options_name_their_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("architectures", json!(["GPT2LMHeadModel"]), "architectures"),
        ("hidden_act", json!("gelu"), "hidden_act"),
        ("attention_bias", json!(true), "attention_bias"),
        ("mlp_bias", json!(true), "mlp_bias"),
        ("attention_dropout", json!(0.1), "attention_dropout"),
        (
            "rope_scaling",
            json!({"rope_type": "yarn", "factor": 4.0}),
            "rope_type",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "dynamic", "factor": 4.0}),
            "rope_scaling",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0}),
            "low_freq_factor",
        ),
        ("num_key_value_heads", json!(5), "num_key_value_heads"),
        ("hidden_size", json!("big"), "hidden_size"),
        ("vocab_size", json!(-3), "vocab_size"),
    ];
    for (field, value, must_mention) in cases {
        let mut v = llama32_classic();
        v[field] = value.clone();
        let e = err_of(&v);
        assert!(
            e.contains(must_mention),
            "setting {field}={value}: error `{e}` does not name `{must_mention}`"
        );
    }
    let mut v = llama32_classic();
    v.as_object_mut().unwrap().remove("intermediate_size");
    assert!(err_of(&v).contains("intermediate_size"));
}

#[test]
fn head_dim_is_derived_when_absent() {
    let mut v = llama32_classic();
    v.as_object_mut().unwrap().remove("head_dim");
    assert_eq!(parse(&v).unwrap().head_dim, 64);
    v["num_attention_heads"] = json!(24);
    v["num_key_value_heads"] = json!(8);
    assert!(err_of(&v).contains("head_dim"));
}

#[test]
fn hf_json_round_trips() {
    let c = parse(&llama32_classic()).unwrap();
    assert_eq!(ModelConfig::from_json(&c.to_hf_json()).unwrap(), c);
    let mut q = parse(&llama32_classic()).unwrap();
    q.architecture = Architecture::Qwen2;
    q.rope_scaling = RopeScaling::Linear { factor: 4.0 };
    q.eos_token_ids = vec![3, 4];
    assert_eq!(ModelConfig::from_json(&q.to_hf_json()).unwrap(), q);
}

#[test]
fn from_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "{ not json").unwrap();
    let e = format!("{:#}", ModelConfig::from_file(&path).unwrap_err());
    assert!(e.contains("config.json"), "{e}");
}

/// A sliding-window model refuses sequences longer than the window at forward time.
#[test]
fn forward_rejects_sequences_beyond_sliding_window() {
    let v = json!({
        "architectures": ["MistralForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
        "num_attention_heads": 2, "num_hidden_layers": 1, "num_key_value_heads": 1,
        "sliding_window": 4, "vocab_size": 10
    });
    let model = CausalLm::new_random(parse(&v).unwrap(), 0, &Device::Cpu, DType::F32).unwrap();
    let ok = Tensor::zeros((1, 4), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(model.forward(&ok, None).unwrap().dims(), &[1, 4, 10]);
    let long = Tensor::zeros((1, 5), DType::U32, &Device::Cpu).unwrap();
    let e = format!("{:#}", model.forward(&long, None).unwrap_err());
    assert!(e.contains("sliding_window"), "{e}");
    let bad_id = Tensor::new(&[[3u32, 10]], &Device::Cpu).unwrap();
    let e = format!("{:#}", model.forward(&bad_id, None).unwrap_err());
    assert!(e.contains("token id 10"), "{e}");
}
