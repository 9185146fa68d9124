//! Sampler throughput from memory-mapped shards, in tokens/s.
//!
//! Writes synthetic shards (random token documents, no tokenizer needed) into a temporary
//! directory, then times `next_window_into` for a few configurations. Run:
//!   cargo bench --bench data_sampler [-- --tokens 400M]
use std::time::Instant;

use anyhow::Result;
use cpt::data::config::DataConfig;
use cpt::data::manifest::{SourceManifest, TokenSettings, MANIFEST_VERSION};
use cpt::data::prepare::PreparedData;
use cpt::util::rng::SplitMix64;
use cpt::data::shards::{DocLabels, ShardWriter, SourceSummary};
use cpt::data::{Sampler, Window};

const SOURCES: usize = 4;
const TOKENS_PER_SOURCE: u64 = 8_000_000;
const TOPICS: [&str; 4] = ["math", "law", "code", "news"];

fn write_source(cache: &std::path::Path, name: &str, config: &DataConfig, index: usize, vocab: usize) -> Result<()> {
    let dir = cache.join(name);
    let mut w = ShardWriter::create(&dir, vocab)?;
    let mut rng = SplitMix64::keyed(&[index as u64]);
    let mut written = 0u64;
    let mut doc: Vec<u32> = Vec::new();
    let mut k = 0u64;
    while written < TOKENS_PER_SOURCE {
        let len = 100 + rng.below(3000) as usize; // documents of 100..3100 tokens
        doc.clear();
        doc.extend((0..len).map(|_| rng.below(vocab as u64 - 1) as u32));
        let topic = TOPICS[(k % 4) as usize];
        let labels = DocLabels { lang: Some("en"), topic: Some(topic), id: None, score: Some(rng.below(1000) as f64) };
        w.push(&doc, &labels, rng.next_u64())?;
        written += len as u64;
        k += 1;
    }
    w.finish(SourceSummary::default())?;
    let manifest = SourceManifest {
        version: MANIFEST_VERSION,
        source: name.to_string(),
        tokenizer_hash: "bench".into(),
        tokenizer_path: "bench".into(),
        settings: TokenSettings::new(&config.sources[index], false, true, None, None, true),
        inputs: Vec::new(),
    };
    manifest.write(&dir)
}

fn run(label: &str, config: &DataConfig, cache: &std::path::Path, seq_len: usize, tokens: u64) -> Result<f64> {
    let data = PreparedData::open(cache, config, None)?;
    let mut s = Sampler::new(config, data, seq_len, 1)?;
    let mut w = Window::default();
    // Warm the page cache and the orders.
    for _ in 0..(50_000_000 / seq_len as u64) {
        s.next_window_into(&mut w)?;
    }
    let start = Instant::now();
    let windows = tokens / seq_len as u64;
    let mut checksum = 0u64;
    for _ in 0..windows {
        s.next_window_into(&mut w)?;
        checksum = checksum.wrapping_add(w.tokens[seq_len / 2] as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (windows * seq_len as u64) as f64 / secs;
    println!("{label:<44} seq_len {seq_len:>5}: {:>8.1} M tokens/s ({windows} windows in {secs:.2} s, checksum {checksum})", rate / 1e6);
    Ok(rate)
}

fn main() -> Result<()> {
    let mut tokens: u64 = 200_000_000;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--tokens") {
        if let Some(v) = args.get(i + 1) {
            tokens = cpt::data::config::parse_token_count(v).map_err(anyhow::Error::msg)?;
        }
    }
    let tmp = tempfile::tempdir()?;
    let cache = tmp.path().join("cache");
    let yaml = |extra: &str| -> String {
        let mut s = String::from("sampler: {max_repeats: null}\nsources:\n");
        for i in 0..SOURCES {
            s.push_str(&format!("  - {{name: s{i}, paths: unused, group: g{}}}\n", i % 2));
        }
        s.push_str("stages:\n  - {tokens: 1B, weights: {s0: 0.4, s1: 0.3, s2: 0.2, s3: 0.1}}\n");
        s.push_str(extra);
        s
    };
    let plain: DataConfig = serde_yaml::from_str(&yaml(""))?;
    for (i, sc) in plain.sources.iter().enumerate() {
        write_source(&cache, &sc.name, &plain, i, 32_000)?;
    }
    println!("sampler throughput: {SOURCES} sources x {TOKENS_PER_SOURCE} tokens (u16 shards), {tokens} tokens timed per row");
    run("blend + shuffle", &plain, &cache, 2048, tokens)?;
    run("blend + shuffle", &plain, &cache, 8192, tokens)?;
    let mixed: DataConfig = serde_yaml::from_str(&yaml("mixing: {rule: syne}\ncurriculum: {buckets: 10}\n"))?;
    run("blend + topic streams + curriculum", &mixed, &cache, 2048, tokens)?;
    run("blend + topic streams + curriculum", &mixed, &cache, 8192, tokens)?;
    Ok(())
}
