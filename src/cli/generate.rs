//! `cpt generate`: text from a model, streamed to the terminal for one prompt, or written to
//! a JSONL file for a file of prompts.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use super::generation_args::SamplingArgs;
use cpt::generate::chat::{ChatTemplate, Message};
use cpt::generate::{generate, GenerationConfig, GenerationStats, Request, StopStrings, TokenText};
use cpt::kernels::device_info;
use cpt::model::io::parse_dtype;
use cpt::model::{CausalLm, Tokenizer};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model directory in Hugging Face layout (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter directory to apply to the model (unmerged).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// One prompt; its output is streamed to standard output.
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    prompt: Option<String>,
    /// A JSONL file of prompts: `{"prompt": "..."}` or `{"messages": [{"role","content"}..]}`
    /// per line (other fields are copied to the output).
    #[arg(long, requires = "out")]
    prompts: Option<PathBuf>,
    /// Where `--prompts` outputs go: each input record plus `output`, `finish_reason`,
    /// `new_tokens`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Apply the model's chat template (tokenizer_config.json) to the prompt as a user turn.
    #[arg(long)]
    chat: bool,
    /// A system message before the prompt (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Stop when the output contains this text (repeatable); it is cut from the output.
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (for benchmarks of speed).
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// cpu, auto, cuda or cuda:<index>.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// One prompt of the input, with the record it came from.
struct Prompt {
    record: Map<String, Value>,
    messages: Option<Vec<Message>>,
    text: Option<String>,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = args.sampling.sampling()?;
    let prompts = match (&args.prompt, &args.prompts) {
        (Some(text), _) => vec![Prompt { record: Map::new(), messages: None, text: Some(text.clone()) }],
        (None, Some(path)) => read_prompts(path)?,
        (None, None) => bail!("give --prompt TEXT or --prompts FILE.jsonl"),
    };
    let device = device_info::select(&args.device).context("--device")?;
    let dtype = parse_dtype(&args.dtype).context("--dtype")?;
    let model = CausalLm::from_pretrained_with_adapter(&args.model, args.adapter.as_deref(), &device, dtype)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let tok = Tokenizer::from_dir(&args.model).with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    let template = if args.chat { Some(ChatTemplate::from_dir(&args.model)?) } else { None };

    let mut requests = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let ids = match &template {
            // The rendered template holds its own special tokens.
            Some(t) => tok.encode(&t.render(&conversation(p, args.system.as_deref()), true)?, false)?,
            None if p.messages.is_some() => bail!("prompt {}: `messages` need --chat", i + 1),
            None => TokenText::encode(&tok, p.text.as_deref().unwrap_or_default(), true)?,
        };
        requests.push(Request { ids, seed: args.sampling.seed.wrapping_add(i as u64) });
    }
    let mut eos_ids = if args.ignore_eos { Vec::new() } else { model.config().eos_token_ids.clone() };
    if !args.ignore_eos {
        eos_ids.extend(TokenText::eos_ids(&tok).into_iter().filter(|id| !model.config().eos_token_ids.contains(id)));
    }
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop: StopStrings::new(&args.stop),
        eos_ids,
        batch_size: args.batch_size.max(1),
    };

    if args.prompt.is_some() {
        let stdout = std::io::stdout();
        let (_, stats) = generate(&model, &tok, &requests, &cfg, &mut |_, text| {
            let mut out = stdout.lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        })?;
        println!();
        eprintln!("{}", describe_stats(&stats));
        return Ok(());
    }

    let bar = ProgressBar::new(requests.len() as u64);
    bar.set_style(ProgressStyle::with_template("generate {bar:30} {pos}/{len} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut outputs = Vec::with_capacity(requests.len());
    let mut stats = GenerationStats::default();
    for chunk in requests.chunks(cfg.batch_size) {
        let (out, s) = generate(&model, &tok, chunk, &cfg, &mut |_, _| {})?;
        bar.inc(chunk.len() as u64);
        outputs.extend(out);
        stats.add(&s);
    }
    bar.finish_and_clear();
    let mut text = String::new();
    for (p, g) in prompts.iter().zip(&outputs) {
        let mut record = p.record.clone();
        record.insert("output".into(), g.text.clone().into());
        record.insert("finish_reason".into(), serde_json::to_value(g.finish)?);
        record.insert("new_tokens".into(), g.tokens.len().into());
        text.push_str(&serde_json::to_string(&record)?);
        text.push('\n');
    }
    let out = args.out.as_ref().context("--out is required with --prompts")?;
    cpt::util::atomic::write_file_atomic(out, text.as_bytes())?;
    eprintln!("{}", describe_stats(&stats));
    eprintln!("wrote {} outputs to {}", outputs.len(), out.display());
    Ok(())
}

fn conversation(p: &Prompt, system: Option<&str>) -> Vec<Message> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message { role: "system".into(), content: s.into() });
    }
    match (&p.messages, &p.text) {
        (Some(m), _) => messages.extend(m.iter().cloned()),
        (None, Some(t)) => messages.push(Message { role: "user".into(), content: t.clone() }),
        (None, None) => {}
    }
    messages
}

/// Prefill and decode throughput, one line.
pub fn describe_stats(s: &GenerationStats) -> String {
    format!(
        "prefill: {} tokens in {:.2}s ({:.1} tokens/s); decode: {} tokens in {:.2}s ({:.1} tokens/s)",
        s.prefill_tokens,
        s.prefill_s,
        s.prefill_tokens_per_s(),
        s.decode_tokens,
        s.decode_s,
        s.decode_tokens_per_s()
    )
}

fn read_prompts(path: &PathBuf) -> Result<Vec<Prompt>> {
    let mut out = Vec::new();
    for (line, value) in cpt::util::jsonl::read_records(path)? {
        let at = || format!("{}: line {line}", path.display());
        let Value::Object(record) = value else { bail!("{}: not a JSON object", at()) };
        let text = match record.get("prompt") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => bail!("{}: field `prompt`: expected a string, got {other}", at()),
        };
        let messages = match record.get("messages") {
            None => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<Message>>(v.clone())
                    .with_context(|| format!("{}: field `messages`: expected a list of {{\"role\", \"content\"}}", at()))?,
            ),
        };
        if text.is_none() && messages.is_none() {
            bail!("{}: no `prompt` (string) or `messages` field", at());
        }
        out.push(Prompt { record, messages, text });
    }
    Ok(out)
}
