//! `cpt train` with a `lora:` section: only adapters (and saved modules) train, checkpoints
//! are PEFT adapters, resume is bit-exact with dropout, fused kernels and recomputation train
//! the same, `lora.init_from` continues an adapter, `freeze` keeps old vocabulary rows, and
//! `cpt score --adapter` scores with the adapter as the merged model does, and `cpt generate
//! --adapter` writes what the merged model writes.
mod train_common;

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use train_common::{make_model, sigkill_after_checkpoint, step_losses, train, write_config, CPT};

const LORA: &str = "lora: {rank: 4, alpha: 8, dropout: 0.1, target_modules: all-linear, modules_to_save: [embed_tokens]}";

fn adapter_bytes(run: &Path, step: u64) -> Vec<u8> {
    std::fs::read(run.join(format!("checkpoints/step-{step:08}/adapter_model.safetensors"))).unwrap()
}

fn adapter_tensors(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn lora_run_saves_peft_adapters_and_resumes_bit_identically_with_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let steps = 8;
    let straight = write_config(tmp.path(), &model, "straight", steps, LORA);
    let out = train(&straight, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("LoRA r 4 alpha 8"), "{log}");
    let run = tmp.path().join("straight");
    let losses = step_losses(&run);
    assert_eq!(losses.len(), steps as usize);
    assert!(losses[steps as usize - 1] < losses[0], "loss should fall: {losses:?}");

    // A checkpoint is a PEFT adapter plus the trainer state; the base is not copied.
    let ckpt = run.join(format!("checkpoints/step-{steps:08}"));
    for f in ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "trainer_state/optimizer.safetensors"] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    assert!(!ckpt.join("model.safetensors").exists(), "a LoRA checkpoint holds no base weights");
    let tensors = adapter_tensors(&ckpt);
    assert_eq!(tensors.len(), 2 * 7 * 2 + 1, "{:?}", tensors.keys());
    assert!(tensors.keys().all(|k| k.starts_with("base_model.model.")));
    // Only trainable tensors reach the optimiser: its state has their moments and no others.
    let opt = candle_core::safetensors::load(ckpt.join("trainer_state/optimizer.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(opt.len(), 2 * tensors.len(), "{:?}", opt.keys());
    assert!(opt.keys().all(|k| k.contains(".lora_") || k.starts_with("model.embed_tokens.weight")));

    // SIGKILL after step 4, then --resume: the same adapter bits, moments and losses.
    let killed = write_config(tmp.path(), &model, "killed", steps, LORA);
    let killed_dir = tmp.path().join("killed");
    sigkill_after_checkpoint(&killed, &killed_dir, 4);
    let out = train(&killed, &["--resume"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(adapter_bytes(&run, steps) == adapter_bytes(&killed_dir, steps), "resumed adapter differs");
    let state = |r: &Path| std::fs::read(r.join(format!("checkpoints/step-{steps:08}/trainer_state/optimizer.safetensors"))).unwrap();
    assert!(state(&run) == state(&killed_dir), "optimiser moments differ");
    assert_eq!(step_losses(&run), step_losses(&killed_dir));

    // Fused kernels with recomputation draw the same dropout masks and train the same.
    let fused = write_config(tmp.path(), &model, "fused", steps, &format!("{LORA}\nkernels: {{mode: fused, attention: flash, recompute: true}}"));
    let out = train(&fused, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fused_losses = step_losses(&tmp.path().join("fused"));
    let worst = losses.iter().zip(&fused_losses).map(|(a, b)| ((a - b) / a).abs()).fold(0.0, f64::max);
    eprintln!("LoRA with dropout: fused + recompute vs composed, largest relative loss difference {worst:.1e}");
    assert!(worst < 1e-5, "{losses:?} vs {fused_losses:?}");

    // The checkpoint continues as `lora.init_from` (rank, targets and saved modules come
    // from the adapter); a section that contradicts it is an error naming the field.
    let cont = write_config(tmp.path(), &model, "continued", 2, &format!("lora: {{init_from: {}}}", ckpt.display()));
    let out = train(&cont, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = write_config(tmp.path(), &model, "bad", 2, &format!("lora: {{rank: 8, init_from: {}}}", ckpt.display()));
    let out = train(&bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("lora.rank: 8, but the adapter has r 4"), "{stderr}");

    // cpt score --adapter scores as the merged model does.
    let corpus = tmp.path().join("docs.jsonl");
    std::fs::write(&corpus, "{\"text\": \"The river runs to the sea, and the sea returns the rain.\"}\n{\"text\": \"Water boils at one hundred degrees.\"}\n").unwrap();
    let merged = tmp.path().join("merged");
    let status = Command::new(CPT).args(["lora", "merge", "--base"]).arg(&model).arg("--adapter").arg(&ckpt).arg("--out").arg(&merged).status().unwrap();
    assert!(status.success());
    let score = |extra: &[&Path], out: &str| -> Vec<f64> {
        let mut cmd = Command::new(CPT);
        cmd.args(["score", "--model"]).arg(if extra.is_empty() { &merged } else { &model });
        if let Some(a) = extra.first() {
            cmd.arg("--adapter").arg(a);
        }
        let o = cmd.arg("--input").arg(&corpus).arg("--out").arg(tmp.path().join(out)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(tmp.path().join(out).join("docs.jsonl.scored.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["score"].as_f64().unwrap())
            .collect()
    };
    let with_adapter = score(&[&ckpt], "scored-adapter");
    let with_merged = score(&[], "scored-merged");
    assert_eq!(with_adapter.len(), 2);
    for (a, b) in with_adapter.iter().zip(&with_merged) {
        assert!((a - b).abs() < 1e-4 * a, "--adapter {with_adapter:?} vs merged {with_merged:?}");
    }

    // cpt generate --adapter writes what the merged model writes, and not what the base
    // writes (seeded sampling: a tiny model's greedy output is one repeated token).
    let generate = |model: &Path, adapter: Option<&Path>| -> String {
        let mut cmd = Command::new(CPT);
        cmd.args(["generate", "--model"]).arg(model).args(["--prompt", "The river", "--max-new-tokens", "24", "--ignore-eos", "--temperature", "1", "--seed", "3"]);
        if let Some(a) = adapter {
            cmd.arg("--adapter").arg(a);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let with_adapter = generate(&model, Some(&ckpt));
    assert_eq!(with_adapter, generate(&merged, None), "generate --adapter against the merged model");
    assert_ne!(with_adapter, generate(&model, None), "the adapter changes what the model writes");
}

#[test]
fn freeze_with_lora_trains_only_the_new_rows_of_saved_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let extra = "lora: {rank: 2, target_modules: [q_proj, v_proj], modules_to_save: [embed_tokens]}\nfreeze: {train_only: new_vocab_rows, steps: 100, old_vocab_size: 500}";
    let cfg = write_config(tmp.path(), &model, "frozen", 4, extra);
    let out = train(&cfg, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ckpt = tmp.path().join("frozen/checkpoints/step-00000004");
    let trained = adapter_tensors(&ckpt);
    let base = cpt::model::io::load_safetensors_dir(&model).unwrap();
    let embed = &trained["base_model.model.model.embed_tokens.weight"];
    let base_embed = base["model.embed_tokens.weight"].to_dtype(DType::F32).unwrap();
    let rows = embed.dim(0).unwrap();
    assert_eq!(max_abs_diff(&embed.narrow(0, 0, 500).unwrap(), &base_embed.narrow(0, 0, 500).unwrap()), 0.0, "old rows must not change");
    assert!(max_abs_diff(&embed.narrow(0, 500, rows - 500).unwrap(), &base_embed.narrow(0, 500, rows - 500).unwrap()) > 0.0 || rows == 500);
    // The adapters train meanwhile.
    let b = &trained["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
    assert!(b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "adapters should train");
}
