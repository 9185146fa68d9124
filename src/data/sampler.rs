//! The ratio-and-curriculum sampler: prepared shards -> fixed-length token windows.
//!
//! - Blending (Megatron-LM): window k of a blending segment comes from the source with the
//!   largest error `w_i * (k + 1) - n_i`, so which source comes next depends only on the
//!   weights and the position (prefix-exact), and every window comes from one source.
//! - Stages switch at token boundaries: a window belongs to the stage in which its first
//!   token falls, so with budgets that are multiples of `seq_len` the switch is exact.
//! - Inside a source, documents come from per-topic streams (one stream when the source is
//!   not topic-mixed), chosen by the same largest-error rule over topic token shares; each
//!   stream is read in a per-epoch order (shuffled, or curriculum buckets) that is a pure
//!   function of (seed, source, topic, epoch).
//! - Packing: a window holds `seq_len + 1` tokens; the next window of that source starts
//!   at the previous window's last token (the usual one-token overlap, so every token is a
//!   target once). `doc_starts` marks where documents begin, for the document mask.
//! - State: positions and counters only (orders are rebuilt from the seed), a plain serde
//!   value; restoring it continues the identical stream.
use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{DataConfig, RepeatPolicy};
use super::curriculum::Curriculum;
use super::mixing::{self, MixingMemory, MixingUpdate};
use super::prepare::PreparedData;
use crate::util::rng::{name_key, SplitMix64};
use super::shards::{ShardReader, NO_LABEL};

pub const STATE_VERSION: u32 = 1;

/// One training window: `seq_len + 1` tokens from one source (inputs are `tokens[..T]`,
/// targets `tokens[1..]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Index of the source in `data.sources`.
    pub source: usize,
    /// Index of the stage the window belongs to.
    pub stage: usize,
    pub tokens: Vec<u32>,
    /// Offsets where a document begins; the first is always 0 (a window that starts inside
    /// a document treats that point as its start).
    pub doc_starts: Vec<u32>,
    /// Topic of each document in `doc_starts` (an index into `Sampler::topic_names`).
    pub topics: Vec<Option<u16>>,
}

/// A stage as the sampler runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: String,
    /// Token position where the stage starts.
    pub start: u64,
    /// Its budget; `None` for an open-ended last stage.
    pub tokens: Option<u64>,
    /// Normalised weight per source, in `data.sources` order.
    pub weights: Vec<f64>,
}

impl StagePlan {
    pub fn end(&self) -> Option<u64> {
        self.tokens.map(|t| self.start + t)
    }
}

/// Everything needed to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    pub version: u32,
    pub seed: u64,
    pub seq_len: usize,
    /// Tokens emitted (`seq_len` per window).
    pub tokens: u64,
    pub windows: u64,
    pub stage: usize,
    /// The stage plan in effect when saved (for the change report on resume).
    pub stages: Vec<StageSnapshot>,
    /// Windows per source since the blending segment began (stage start or weight change).
    pub blend_counts: BTreeMap<String, u64>,
    pub sources: BTreeMap<String, SourceState>,
    pub mixing: MixingMemory,
    pub mixing_log: Vec<MixingUpdate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSnapshot {
    pub name: String,
    pub tokens: Option<u64>,
    pub weights: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// Identity of the shards the positions refer to.
    pub num_docs: u64,
    pub num_tokens: u64,
    /// Tokens of this source emitted so far (`seq_len` per window).
    pub consumed_tokens: u64,
    pub windows: u64,
    /// The document being read: stream, document, offset of the next window's first token.
    pub pending: Option<PendingState>,
    pub streams: Vec<StreamState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingState {
    pub stream: usize,
    pub doc: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub topic: Option<String>,
    pub epoch: u64,
    pub cursor: u64,
    /// Document tokens started from this stream since its share last changed.
    pub consumed_since_reweight: u64,
    pub weight: f64,
}

/// What `restore` found different between the saved state and the current config/data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub changes: Vec<String>,
}

impl RestoreReport {
    /// True when the continuation is exactly the saved stream's.
    pub fn is_exact(&self) -> bool {
        self.changes.is_empty()
    }
}

struct Stream {
    topic: Option<u16>,
    docs: Vec<u32>,
    curriculum: Option<Curriculum>,
    epoch: u64,
    cursor: usize,
    order: Vec<u32>,
    consumed_since_reweight: u64,
    weight: f64,
}

struct SourceRuntime {
    name: String,
    streams: Vec<Stream>,
    validation_docs: Vec<u32>,
    train_tokens: u64,
    mean_doc_len: f64,
    max_repeats: Option<f64>,
    /// Shard topic label -> global topic id.
    topic_map: Vec<u16>,
    mixable: bool,
    pending: Option<PendingState>,
    consumed_tokens: u64,
    windows: u64,
}

pub struct Sampler {
    config: DataConfig,
    data: PreparedData,
    seq_len: usize,
    seed: u64,
    topic_names: Vec<String>,
    sources: Vec<SourceRuntime>,
    stages: Vec<StagePlan>,
    tokens: u64,
    windows: u64,
    stage: usize,
    blend_counts: Vec<u64>,
    mixing: MixingMemory,
    mixing_log: Vec<MixingUpdate>,
    warnings: Vec<String>,
}

impl Sampler {
    /// A sampler over prepared shards. Fails when a weighted source has no training
    /// documents or (with `on_repeat_excess: error`) when a stage needs more epochs of a
    /// source than allowed.
    pub fn new(config: &DataConfig, data: PreparedData, seq_len: usize, seed: u64) -> Result<Self> {
        config.validate()?;
        if seq_len == 0 {
            bail!("seq_len must be positive");
        }
        if data.len() != config.sources.len() {
            bail!("the prepared data has {} sources, data.sources has {}", data.len(), config.sources.len());
        }
        let mut topic_names: Vec<String> = Vec::new();
        for i in 0..data.len() {
            topic_names.extend(data.source(i).meta().topics.iter().cloned());
        }
        topic_names.sort();
        topic_names.dedup();
        if topic_names.len() >= NO_LABEL as usize {
            bail!("more than {} topics across sources", NO_LABEL);
        }
        let mut sources = Vec::with_capacity(config.sources.len());
        for (i, sc) in config.sources.iter().enumerate() {
            sources.push(build_source(config, i, data.source(i), &topic_names).with_context(|| format!("source `{}`", sc.name))?);
        }
        let natural: Vec<u64> = sources.iter().map(|s| s.train_tokens).collect();
        let stages = build_stages(config, &natural)?;
        for st in &stages {
            for (i, w) in st.weights.iter().enumerate() {
                if *w > 0.0 && sources[i].train_tokens == 0 {
                    bail!(
                        "stage `{}` gives source `{}` weight {w:.4}, but it has no training documents (prepared: {}, held out for validation: {})",
                        st.name, sources[i].name, data.source(i).num_docs(), sources[i].validation_docs.len()
                    );
                }
            }
        }
        let n = sources.len();
        let mut sampler = Sampler {
            config: config.clone(),
            data,
            seq_len,
            seed,
            topic_names,
            sources,
            stages,
            tokens: 0,
            windows: 0,
            stage: 0,
            blend_counts: vec![0; n],
            mixing: MixingMemory::default(),
            mixing_log: Vec::new(),
            warnings: Vec::new(),
        };
        for i in 0..n {
            for s in 0..sampler.sources[i].streams.len() {
                sampler.reset_order(i, s);
            }
        }
        sampler.check_repeats()?;
        Ok(sampler)
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn config(&self) -> &DataConfig {
        &self.config
    }
    pub fn data(&self) -> &PreparedData {
        &self.data
    }
    /// Tokens emitted so far (`seq_len` per window).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
    pub fn windows(&self) -> u64 {
        self.windows
    }
    /// Index of the stage the next window belongs to.
    pub fn stage(&self) -> usize {
        self.stage_at(self.tokens)
    }
    pub fn stages(&self) -> &[StagePlan] {
        &self.stages
    }
    /// True once every stage's budget is spent (the last stage's weights continue).
    pub fn past_plan(&self) -> bool {
        self.stages.last().and_then(StagePlan::end).is_some_and(|end| self.tokens >= end)
    }
    pub fn source_names(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.name.as_str()).collect()
    }
    pub fn topic_names(&self) -> &[String] {
        &self.topic_names
    }
    /// Tokens emitted from source `i`.
    pub fn source_tokens(&self, i: usize) -> u64 {
        self.sources[i].consumed_tokens
    }
    /// Training tokens of source `i` (prepared minus held out).
    pub fn source_train_tokens(&self, i: usize) -> u64 {
        self.sources[i].train_tokens
    }
    /// Epochs of source `i` read so far (fractional).
    pub fn source_epochs(&self, i: usize) -> f64 {
        let s = &self.sources[i];
        if s.train_tokens == 0 {
            0.0
        } else {
            s.consumed_tokens as f64 / s.train_tokens as f64
        }
    }
    /// Warnings raised so far (repeat caps under `on_repeat_excess: warn`, curricula over
    /// unscored documents, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    pub fn mixing_log(&self) -> &[MixingUpdate] {
        &self.mixing_log
    }
    /// Shares of the topics inside source `i` (topic name or `None` for unlabelled).
    pub fn topic_weights(&self, i: usize) -> Vec<(Option<String>, f64)> {
        self.sources[i]
            .streams
            .iter()
            .map(|s| (s.topic.map(|t| self.topic_names[t as usize].clone()), s.weight))
            .collect()
    }
    pub fn topic_name(&self, id: u16) -> Option<&str> {
        self.topic_names.get(id as usize).map(String::as_str)
    }

    fn stage_at(&self, tokens: u64) -> usize {
        let mut s = 0;
        while s + 1 < self.stages.len() && tokens >= self.stages[s + 1].start {
            s += 1;
        }
        s
    }

    /// The next window.
    pub fn next_window(&mut self) -> Result<Window> {
        let mut w = Window::default();
        self.next_window_into(&mut w)?;
        Ok(w)
    }

    /// The next window, reusing `out`'s buffers.
    pub fn next_window_into(&mut self, out: &mut Window) -> Result<()> {
        self.advance(Some(out))
    }

    /// Moves past the next `n` windows without reading their tokens: the state afterwards
    /// is exactly the state after drawing them (how a rank passes over the windows of the
    /// global stream that other ranks train on).
    pub fn skip_windows(&mut self, n: u64) -> Result<()> {
        for _ in 0..n {
            self.advance(None)?;
        }
        Ok(())
    }

    /// Draws the next window into `out`, or only advances past it.
    fn advance(&mut self, mut out: Option<&mut Window>) -> Result<()> {
        let stage = self.stage_at(self.tokens);
        if stage != self.stage {
            self.stage = stage;
            self.blend_counts.iter_mut().for_each(|c| *c = 0);
        }
        let source = self.pick_source();
        self.check_cap(source)?;
        self.fill(source, out.as_deref_mut())?;
        if let Some(out) = out {
            out.source = source;
            out.stage = stage;
        }
        self.blend_counts[source] += 1;
        self.windows += 1;
        self.tokens += self.seq_len as u64;
        let s = &mut self.sources[source];
        s.windows += 1;
        s.consumed_tokens += self.seq_len as u64;
        Ok(())
    }

    /// Megatron's rule: the source furthest behind its share.
    fn pick_source(&self) -> usize {
        let weights = &self.stages[self.stage].weights;
        let k: u64 = self.blend_counts.iter().sum();
        let mut best = 0;
        let mut best_err = f64::NEG_INFINITY;
        for (i, &w) in weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            let err = w * (k + 1) as f64 - self.blend_counts[i] as f64;
            if err > best_err {
                best_err = err;
                best = i;
            }
        }
        best
    }

    fn cap(&self, i: usize) -> Option<f64> {
        self.sources[i].max_repeats.or(self.config.sampler.max_repeats)
    }

    fn check_cap(&mut self, i: usize) -> Result<()> {
        let Some(cap) = self.cap(i) else { return Ok(()) };
        let s = &self.sources[i];
        let after = (s.consumed_tokens + self.seq_len as u64) as f64;
        if after > cap * s.train_tokens as f64 + self.seq_len as f64 {
            let msg = format!(
                "source `{}` is past its repeat cap: {:.2} epochs read, max_repeats {cap}",
                s.name,
                after / s.train_tokens as f64
            );
            match self.config.sampler.on_repeat_excess {
                RepeatPolicy::Error => bail!("{msg} (raise max_repeats or set data.sampler.on_repeat_excess: warn)"),
                RepeatPolicy::Warn => {
                    // Once per source, not once per window.
                    let prefix = format!("source `{}` is past", s.name);
                    if !self.warnings.iter().any(|w| w.starts_with(&prefix)) {
                        eprintln!("warning: {msg}");
                        self.warnings.push(msg);
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks the documents of source `i` for one window, copying the tokens into `out`
    /// when there is one.
    fn fill(&mut self, i: usize, mut out: Option<&mut Window>) -> Result<()> {
        if let Some(out) = out.as_deref_mut() {
            out.tokens.clear();
            out.doc_starts.clear();
            out.topics.clear();
        }
        let full = self.seq_len + 1;
        let mut need = full;
        loop {
            let pending = match self.sources[i].pending.take() {
                Some(p) => p,
                None => self.next_doc(i)?,
            };
            let src = &self.sources[i];
            let shard = self.data.source(i);
            let doc = shard.doc(pending.doc as usize);
            let left = (doc.len - pending.offset) as usize;
            let take = need.min(left);
            if let Some(out) = out.as_deref_mut() {
                if need == full || pending.offset == 0 {
                    out.doc_starts.push((full - need) as u32);
                    out.topics.push(label(&src.topic_map, doc.topic));
                }
                shard.extend_tokens(doc.start + pending.offset as u64, take, &mut out.tokens);
            }
            need -= take;
            if need == 0 {
                // The window's last token opens the next window of this source.
                self.sources[i].pending =
                    Some(PendingState { stream: pending.stream, doc: pending.doc, offset: pending.offset + take as u32 - 1 });
                return Ok(());
            }
        }
    }

    /// Starts the next document of source `i`: picks the topic stream furthest behind its
    /// share, then the stream's next document in this epoch's order.
    fn next_doc(&mut self, i: usize) -> Result<PendingState> {
        let src = &self.sources[i];
        let stream = if src.streams.len() == 1 {
            0
        } else {
            let total: u64 = src.streams.iter().map(|s| s.consumed_since_reweight).sum();
            let target = total as f64 + src.mean_doc_len;
            let mut best = usize::MAX;
            let mut best_err = f64::NEG_INFINITY;
            for (k, s) in src.streams.iter().enumerate() {
                if s.weight <= 0.0 || s.docs.is_empty() {
                    continue;
                }
                let err = s.weight * target - s.consumed_since_reweight as f64;
                if err > best_err {
                    best_err = err;
                    best = k;
                }
            }
            if best == usize::MAX {
                bail!("source `{}`: no topic stream has weight", src.name);
            }
            best
        };
        if self.sources[i].streams[stream].cursor >= self.sources[i].streams[stream].order.len() {
            self.sources[i].streams[stream].epoch += 1;
            self.reset_order(i, stream);
        }
        let st = &mut self.sources[i].streams[stream];
        let Some(&doc) = st.order.get(st.cursor) else {
            bail!("source `{}`: a topic stream has no documents", self.sources[i].name);
        };
        st.cursor += 1;
        let len = self.data.source(i).doc(doc as usize).len;
        self.sources[i].streams[stream].consumed_since_reweight += len as u64;
        Ok(PendingState { stream, doc, offset: 0 })
    }

    /// Rebuilds stream `s` of source `i`'s order for its current epoch, cursor at 0.
    fn reset_order(&mut self, i: usize, s: usize) {
        let st = &self.sources[i].streams[s];
        let topic = st.topic.map(|t| self.topic_names[t as usize].clone());
        let order = self.epoch_order(i, &st.docs, st.curriculum.as_ref(), topic.as_deref(), st.epoch);
        let st = &mut self.sources[i].streams[s];
        st.order = order;
        st.cursor = 0;
    }

    /// The order of `docs` in `epoch`: curriculum buckets, a shuffle, or index order. A
    /// pure function of (seed, source, topic, epoch), which is what makes resume exact.
    fn epoch_order(&self, i: usize, docs: &[u32], curriculum: Option<&Curriculum>, topic: Option<&str>, epoch: u64) -> Vec<u32> {
        let topic_key = topic.map(name_key).unwrap_or(0);
        let mut rng = SplitMix64::keyed(&[self.seed, name_key(&self.sources[i].name), topic_key, epoch]);
        match curriculum {
            Some(c) => c.epoch_order(&mut rng),
            None => {
                let mut o = docs.to_vec();
                if self.config.sampler.shuffle {
                    rng.shuffle(&mut o);
                }
                o
            }
        }
    }

    /// Windows each source gets in each stage (largest-remainder apportionment, which the
    /// blending rule realises to within one window), from token position `from` on.
    pub fn planned_windows(&self, from: u64) -> Vec<Vec<u64>> {
        let t = self.seq_len as u64;
        self.stages
            .iter()
            .map(|st| match st.end() {
                None => vec![0; self.sources.len()],
                Some(end) => {
                    let first = st.start.max(from).div_ceil(t);
                    let last = end.div_ceil(t);
                    apportion(last.saturating_sub(first), &st.weights)
                }
            })
            .collect()
    }

    /// Raises an error (or warnings) when the remaining plan reads a source more often than
    /// its repeat cap allows.
    fn check_repeats(&mut self) -> Result<()> {
        let plan = self.planned_windows(self.tokens);
        let mut problems = Vec::new();
        for i in 0..self.sources.len() {
            let Some(cap) = self.cap(i) else { continue };
            let planned: u64 = plan.iter().map(|p| p[i]).sum::<u64>() * self.seq_len as u64;
            let total = self.sources[i].consumed_tokens + planned;
            let train = self.sources[i].train_tokens;
            if train == 0 || planned == 0 {
                continue;
            }
            let epochs = total as f64 / train as f64;
            if epochs > cap + 1e-9 {
                problems.push(format!(
                    "source `{}`: the stage plan reads {total} tokens = {epochs:.2} epochs of its {train} training tokens, more than max_repeats {cap}",
                    self.sources[i].name
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        match self.config.sampler.on_repeat_excess {
            RepeatPolicy::Error => bail!(
                "{}\n(add data, lower the stage budgets or weights, raise max_repeats, or set data.sampler.on_repeat_excess: warn)",
                problems.join("\n")
            ),
            // Kept for the caller to print or log (`warnings()`).
            RepeatPolicy::Warn => {
                self.warnings.extend(problems);
                Ok(())
            }
        }
    }

    // ----- validation split -----

    /// Held-out documents of source `i` (indices into its shard, ascending).
    pub fn validation_docs(&self, i: usize) -> &[u32] {
        &self.sources[i].validation_docs
    }

    /// Source `i`'s held-out documents packed back to back into windows of up to
    /// `seq_len + 1` tokens (one-token overlap, as in training; the last may be shorter).
    /// Every window's `topics` say which topic each token's document has.
    pub fn validation_windows(&self, i: usize) -> Vec<Window> {
        let shard = self.data.source(i);
        let src = &self.sources[i];
        let mut out = Vec::new();
        let mut w = Window { source: i, stage: self.stage(), ..Default::default() };
        let mut carry: Option<(u32, u32)> = None; // (doc, offset) of the overlap token
        let mut docs = src.validation_docs.iter().peekable();
        let need = self.seq_len + 1;
        loop {
            let (doc_id, offset) = match carry.take() {
                Some(c) => c,
                None => match docs.next() {
                    Some(&d) => (d, 0),
                    None => break,
                },
            };
            let doc = shard.doc(doc_id as usize);
            if w.tokens.is_empty() || offset == 0 {
                w.doc_starts.push(w.tokens.len() as u32);
                w.topics.push(label(&src.topic_map, doc.topic));
            }
            let take = (need - w.tokens.len()).min((doc.len - offset) as usize);
            shard.extend_tokens(doc.start + offset as u64, take, &mut w.tokens);
            if w.tokens.len() == need {
                carry = Some((doc_id, offset + take as u32 - 1));
                let next = Window { source: i, stage: w.stage, ..Default::default() };
                out.push(std::mem::replace(&mut w, next));
            }
        }
        if w.tokens.len() >= 2 {
            out.push(w);
        }
        // A carry left over from the last full window is its final token: already a target.
        out
    }

    // ----- topic mixing -----

    /// Feeds one round of per-topic validation losses (mean NLL per token, by topic name)
    /// to the configured rule and re-weights the topics of every topic-mixed source.
    /// Returns the change (also kept in the state's log), or `None` while the rule is
    /// still gathering its baseline or no mixing is configured.
    pub fn update_topic_mixing(&mut self, step: u64, topic_losses: &BTreeMap<String, f64>) -> Result<Option<MixingUpdate>> {
        let Some(cfg) = self.config.mixing.clone() else { return Ok(None) };
        for (t, l) in topic_losses {
            if !l.is_finite() {
                bail!("topic `{t}`: validation loss {l} is not finite");
            }
        }
        let Some(signals) = mixing::round_factors(&cfg, &mut self.mixing, topic_losses) else { return Ok(None) };
        let mut weights = BTreeMap::new();
        for i in 0..self.sources.len() {
            if !self.sources[i].mixable {
                continue;
            }
            let factors: Vec<f64> = self.sources[i]
                .streams
                .iter()
                .map(|s| {
                    s.topic
                        .and_then(|t| signals.get(&self.topic_names[t as usize]))
                        .map(|sig| sig.factor)
                        .unwrap_or(1.0)
                })
                .collect();
            let old: Vec<f64> = self.sources[i].streams.iter().map(|s| s.weight).collect();
            let new = mixing::reweight(&cfg, &old, &factors);
            weights.insert(self.sources[i].name.clone(), self.apply_topic_weights(i, &new));
        }
        let update = MixingUpdate { step, tokens: self.tokens, rule: cfg.rule, topics: signals, weights };
        self.mixing_log.push(update.clone());
        Ok(Some(update))
    }

    /// Sets the topic shares of source `name` directly (normalised; topics not named get 0,
    /// the unlabelled stream is named ""). Logged like a rule update.
    pub fn set_topic_weights(&mut self, step: u64, name: &str, weights: &BTreeMap<String, f64>) -> Result<MixingUpdate> {
        let i = self.sources.iter().position(|s| s.name == name).ok_or_else(|| anyhow!("no source named `{name}`"))?;
        let mut new = Vec::new();
        for s in &self.sources[i].streams {
            let key = s.topic.map(|t| self.topic_names[t as usize].as_str()).unwrap_or("");
            let w = weights.get(key).copied().unwrap_or(0.0);
            if !(w >= 0.0 && w.is_finite()) {
                bail!("topic `{key}`: weight {w} must be a non-negative number");
            }
            new.push(w);
        }
        for k in weights.keys() {
            let known = self.sources[i].streams.iter().any(|s| s.topic.map(|t| self.topic_names[t as usize].as_str()).unwrap_or("") == k);
            if !known {
                bail!("source `{name}` has no topic stream `{k}` (topic mixing enabled: {})", self.sources[i].mixable);
            }
        }
        let total: f64 = new.iter().sum();
        if total <= 0.0 {
            bail!("source `{name}`: topic weights must not all be 0");
        }
        new.iter_mut().for_each(|w| *w /= total);
        let mut changed = BTreeMap::new();
        changed.insert(name.to_string(), self.apply_topic_weights(i, &new));
        let rule = self.config.mixing.as_ref().map(|m| m.rule).unwrap_or(super::config::MixingRule::Syne);
        let update = MixingUpdate { step, tokens: self.tokens, rule, topics: BTreeMap::new(), weights: changed };
        self.mixing_log.push(update.clone());
        Ok(update)
    }

    /// Installs new stream shares for source `i` and restarts its topic blending counters.
    fn apply_topic_weights(&mut self, i: usize, new: &[f64]) -> BTreeMap<String, [f64; 2]> {
        let mut out = BTreeMap::new();
        for (k, s) in self.sources[i].streams.iter_mut().enumerate() {
            let name = s.topic.map(|t| self.topic_names[t as usize].clone()).unwrap_or_default();
            out.insert(name, [s.weight, new[k]]);
            s.weight = new[k];
            s.consumed_since_reweight = 0;
        }
        out
    }

    // ----- state -----

    pub fn state(&self) -> SamplerState {
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
        let by_name = |w: &[f64]| -> BTreeMap<String, f64> { names.iter().cloned().zip(w.iter().copied()).collect() };
        SamplerState {
            version: STATE_VERSION,
            seed: self.seed,
            seq_len: self.seq_len,
            tokens: self.tokens,
            windows: self.windows,
            stage: self.stage,
            stages: self
                .stages
                .iter()
                .map(|s| StageSnapshot { name: s.name.clone(), tokens: s.tokens, weights: by_name(&s.weights) })
                .collect(),
            blend_counts: names.iter().cloned().zip(self.blend_counts.iter().copied()).collect(),
            sources: self
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let shard = self.data.source(i);
                    let state = SourceState {
                        num_docs: shard.num_docs() as u64,
                        num_tokens: shard.num_tokens(),
                        consumed_tokens: s.consumed_tokens,
                        windows: s.windows,
                        pending: s.pending.clone(),
                        streams: s
                            .streams
                            .iter()
                            .map(|st| StreamState {
                                topic: st.topic.map(|t| self.topic_names[t as usize].clone()),
                                epoch: st.epoch,
                                cursor: st.cursor as u64,
                                consumed_since_reweight: st.consumed_since_reweight,
                                weight: st.weight,
                            })
                            .collect(),
                    };
                    (s.name.clone(), state)
                })
                .collect(),
            mixing: self.mixing.clone(),
            mixing_log: self.mixing_log.clone(),
        }
    }

    /// Continues from a saved state. With the same config and data the continuation is
    /// identical; otherwise it continues without re-reading consumed documents where it
    /// can, and the report lists every difference.
    pub fn restore(&mut self, state: &SamplerState) -> Result<RestoreReport> {
        if state.version != STATE_VERSION {
            bail!("sampler state version {} (this cpt reads {})", state.version, STATE_VERSION);
        }
        let mut changes = Vec::new();
        if state.seed != self.seed {
            changes.push(format!("seed {} -> {}: the saved stream's seed {} continues", state.seed, self.seed, state.seed));
            self.seed = state.seed;
        }
        if state.seq_len != self.seq_len {
            changes.push(format!("seq_len {} -> {}", state.seq_len, self.seq_len));
        }
        self.tokens = state.tokens;
        self.windows = state.windows;
        let stage = self.stage_at(self.tokens);
        let old_names: Vec<&String> = state.stages.iter().map(|s| &s.name).collect();
        let new_names: Vec<&String> = self.stages.iter().map(|s| &s.name).collect();
        if old_names != new_names {
            changes.push(format!("stages {old_names:?} -> {new_names:?}"));
        }
        for new in self.stages.iter() {
            if let Some(old) = state.stages.iter().find(|s| s.name == new.name) {
                if old.tokens != new.tokens {
                    changes.push(format!("stage `{}` budget {:?} -> {:?} tokens", new.name, old.tokens, new.tokens));
                }
                for (i, src) in self.sources.iter().enumerate() {
                    let was = old.weights.get(&src.name).copied().unwrap_or(0.0);
                    if (was - new.weights[i]).abs() > 1e-12 {
                        changes.push(format!("stage `{}` weight of `{}` {was:.6} -> {:.6}", new.name, src.name, new.weights[i]));
                    }
                }
            }
        }
        // The stage the saved position falls in under the saved plan; when that is past
        // the stage of the last saved window, the next window opens a new stage anyway.
        let mut old_start = 0u64;
        let mut old_index = 0;
        for (k, st) in state.stages.iter().enumerate() {
            if k > 0 && state.tokens >= old_start {
                old_index = k;
            }
            old_start = old_start.saturating_add(st.tokens.unwrap_or(u64::MAX));
            if state.tokens < old_start {
                break;
            }
        }
        let old_stage = state.stages.get(old_index);
        let same_weights = old_stage.is_some_and(|old| {
            old.name == self.stages[stage].name
                && self.sources.iter().enumerate().all(|(i, s)| {
                    (old.weights.get(&s.name).copied().unwrap_or(0.0) - self.stages[stage].weights[i]).abs() <= 1e-12
                })
        });
        let mid_stage = old_index == state.stage;
        self.stage = stage;
        self.blend_counts.iter_mut().for_each(|c| *c = 0);
        if same_weights && mid_stage {
            for (i, s) in self.sources.iter().enumerate() {
                self.blend_counts[i] = state.blend_counts.get(&s.name).copied().unwrap_or(0);
            }
        }
        // Otherwise blending restarts here with the current weights; nothing is re-read.
        if old_stage.map(|s| &s.name) != Some(&self.stages[stage].name) {
            changes.push(format!(
                "position {} tokens is in stage `{}` (under the saved plan: `{}`)",
                self.tokens,
                self.stages[stage].name,
                old_stage.map(|s| s.name.as_str()).unwrap_or("?")
            ));
        }
        for name in state.sources.keys() {
            if !self.sources.iter().any(|s| &s.name == name) {
                changes.push(format!("source `{name}` is no longer configured"));
            }
        }
        for i in 0..self.sources.len() {
            let name = self.sources[i].name.clone();
            let Some(saved) = state.sources.get(&name) else {
                changes.push(format!("source `{name}` is new: it starts from its beginning"));
                continue;
            };
            self.restore_source(i, saved, &mut changes).with_context(|| format!("restoring source `{name}`"))?;
        }
        self.mixing = state.mixing.clone();
        self.mixing_log = state.mixing_log.clone();
        self.check_repeats()?;
        Ok(RestoreReport { changes })
    }

    fn restore_source(&mut self, i: usize, saved: &SourceState, changes: &mut Vec<String>) -> Result<()> {
        let (num_docs, num_tokens) = (self.data.source(i).num_docs() as u64, self.data.source(i).num_tokens());
        let name = self.sources[i].name.clone();
        self.sources[i].consumed_tokens = saved.consumed_tokens;
        self.sources[i].windows = saved.windows;
        if saved.num_docs != num_docs || saved.num_tokens != num_tokens {
            changes.push(format!(
                "source `{name}`: data changed ({} docs/{} tokens -> {num_docs}/{num_tokens}); its document order restarts in a new epoch",
                saved.num_docs, saved.num_tokens
            ));
            let next_epoch = saved.streams.iter().map(|s| s.epoch).max().unwrap_or(0) + 1;
            for s in 0..self.sources[i].streams.len() {
                self.sources[i].streams[s].epoch = next_epoch;
                self.reset_order(i, s);
            }
            self.sources[i].pending = None;
            return Ok(());
        }
        let topic_of = |s: &Stream| s.topic.map(|t| self.topic_names[t as usize].clone());
        let current: Vec<Option<String>> = self.sources[i].streams.iter().map(topic_of).collect();
        let saved_topics: Vec<Option<String>> = saved.streams.iter().map(|s| s.topic.clone()).collect();
        if current == saved_topics {
            for (s, ss) in saved.streams.iter().enumerate() {
                let st = &mut self.sources[i].streams[s];
                st.epoch = ss.epoch;
                st.weight = ss.weight;
                st.consumed_since_reweight = ss.consumed_since_reweight;
                self.reset_order(i, s);
                let st = &mut self.sources[i].streams[s];
                if ss.cursor as usize > st.order.len() {
                    bail!("stream cursor {} is past its {} documents", ss.cursor, st.order.len());
                }
                st.cursor = ss.cursor as usize;
            }
            if let Some(p) = &saved.pending {
                if p.stream >= saved.streams.len() || (p.doc as u64) >= num_docs || p.offset >= self.data.source(i).doc(p.doc as usize).len {
                    bail!("the saved position (doc {}, offset {}) is outside the data", p.doc, p.offset);
                }
            }
            self.sources[i].pending = saved.pending.clone();
        } else {
            // Topic streams were split or merged (mixing switched on/off): each stream
            // continues in the saved epoch, skipping documents the saved streams consumed.
            changes.push(format!("source `{name}`: topic streams {saved_topics:?} -> {current:?}; already-read documents of this epoch are skipped"));
            let consumed: std::collections::HashSet<u32> = saved
                .streams
                .iter()
                .enumerate()
                .flat_map(|(k, ss)| self.saved_stream_order(i, &saved.streams, k).into_iter().take(ss.cursor as usize))
                .collect();
            let epoch = saved.streams.iter().map(|s| s.epoch).max().unwrap_or(0);
            for s in 0..self.sources[i].streams.len() {
                self.sources[i].streams[s].epoch = epoch;
                self.reset_order(i, s);
                let st = &mut self.sources[i].streams[s];
                st.order.retain(|d| !consumed.contains(d));
            }
            self.sources[i].pending = match &saved.pending {
                Some(p) if (p.doc as u64) < num_docs && p.offset < self.data.source(i).doc(p.doc as usize).len => {
                    let src = &self.sources[i];
                    let topic = label(&src.topic_map, self.data.source(i).doc(p.doc as usize).topic);
                    let stream = if src.streams.len() == 1 { 0 } else { src.streams.iter().position(|s| s.topic == topic).unwrap_or(0) };
                    Some(PendingState { stream, doc: p.doc, offset: p.offset })
                }
                _ => None,
            };
        }
        Ok(())
    }

    /// The order a saved stream had, rebuilt from its topic and epoch (used when the topic
    /// streams of a source changed between save and restore).
    fn saved_stream_order(&self, i: usize, saved: &[StreamState], k: usize) -> Vec<u32> {
        let src = &self.sources[i];
        let shard = self.data.source(i);
        let ss = &saved[k];
        let single = saved.len() == 1 && ss.topic.is_none();
        let topic_id = ss.topic.as_ref().and_then(|t| self.topic_names.iter().position(|n| n == t)).map(|t| t as u16);
        let mut docs: Vec<u32> = src
            .streams
            .iter()
            .flat_map(|s| s.docs.iter().copied())
            .filter(|&d| single || label(&src.topic_map, shard.doc(d as usize).topic) == topic_id)
            .collect();
        docs.sort_unstable();
        let curriculum = self.config.curriculum.as_ref().filter(|_| src.streams.iter().any(|s| s.curriculum.is_some()));
        let curriculum = curriculum.map(|c| Curriculum::new(&docs, |d| shard.doc(d as usize).score, c.order, c.buckets));
        self.epoch_order(i, &docs, curriculum.as_ref(), ss.topic.as_deref(), ss.epoch)
    }
}

fn label(topic_map: &[u16], topic: u16) -> Option<u16> {
    if topic == NO_LABEL {
        None
    } else {
        topic_map.get(topic as usize).copied()
    }
}

/// Integer shares of `total` proportional to `weights` (largest remainder; ties to the
/// lower index), as OLMo-core apportions token budgets.
pub fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if total == 0 || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut out: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut left = total - out.iter().sum::<u64>().min(total);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle().take(weights.len() * 2) {
        if left == 0 {
            break;
        }
        if weights[i] > 0.0 {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

/// Runs the blending rule alone for `windows` windows: how many each source gets.
pub fn simulate_blend(weights: &[f64], windows: u64) -> Vec<u64> {
    let mut counts = vec![0u64; weights.len()];
    for k in 0..windows {
        let mut best = 0;
        let mut best_err = f64::NEG_INFINITY;
        for (i, &w) in weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            let err = w * (k + 1) as f64 - counts[i] as f64;
            if err > best_err {
                best_err = err;
                best = i;
            }
        }
        counts[best] += 1;
    }
    counts
}

fn build_stages(config: &DataConfig, natural: &[u64]) -> Result<Vec<StagePlan>> {
    if config.stages.is_empty() {
        return Ok(vec![StagePlan {
            name: "main".into(),
            start: 0,
            tokens: None,
            weights: config.stage_weights_by_name(0, Some(natural))?,
        }]);
    }
    let mut start = 0u64;
    let mut out = Vec::new();
    for (i, st) in config.stages.iter().enumerate() {
        let weights = config.stage_weights_by_name(i, None).with_context(|| format!("data.stages[{i}]"))?;
        out.push(StagePlan { name: st.name.clone().unwrap_or_else(|| format!("stage{}", i + 1)), start, tokens: st.tokens, weights });
        start = start.saturating_add(st.tokens.unwrap_or(0));
    }
    let mut names: Vec<&String> = out.iter().map(|s| &s.name).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        bail!("data.stages: two stages share a name");
    }
    Ok(out)
}

/// Splits a source's documents into training streams and the held-out set.
fn build_source(config: &DataConfig, index: usize, shard: &ShardReader, topic_names: &[String]) -> Result<SourceRuntime> {
    let sc = &config.sources[index];
    let n = shard.num_docs();
    let topic_map: Vec<u16> = shard
        .meta()
        .topics
        .iter()
        .map(|t| topic_names.iter().position(|g| g == t).unwrap_or(0) as u16)
        .collect();
    // Validation: the documents with the smallest keys of a hash of their content.
    let v = &config.validation;
    let want = if v.fraction > 0.0 && n >= 2 { ((v.fraction * n as f64).ceil() as usize).min(v.max_docs).min(n - 1) } else { 0 };
    let mut is_val = vec![false; n];
    if want > 0 {
        let mut keys: Vec<(u64, u32)> =
            (0..n).map(|d| (xxhash_rust::xxh3::xxh3_64(&shard.doc(d).hash.to_le_bytes()), d as u32)).collect();
        keys.select_nth_unstable(want - 1);
        for &(_, d) in &keys[..want] {
            is_val[d as usize] = true;
        }
    }
    let validation_docs: Vec<u32> = (0..n as u32).filter(|&d| is_val[d as usize]).collect();

    let mixable = match &config.mixing {
        None => false,
        Some(m) => match &m.sources {
            Some(list) => {
                let listed = list.contains(&sc.name);
                if listed && shard.meta().topics.is_empty() {
                    bail!("data.mixing.sources lists `{}`, but its documents have no topic labels (field `{}`)", sc.name, sc.topic_field);
                }
                listed
            }
            None => shard.meta().topics.len() >= 2,
        },
    };
    let stream_of = |d: usize| -> Option<u16> {
        if mixable {
            label(&topic_map, shard.doc(d).topic)
        } else {
            None
        }
    };
    let mut by_topic: BTreeMap<Option<u16>, Vec<u32>> = BTreeMap::new();
    let mut train_tokens = 0u64;
    let mut train_docs = 0u64;
    for (d, &held_out) in is_val.iter().enumerate() {
        if held_out {
            continue;
        }
        by_topic.entry(stream_of(d)).or_default().push(d as u32);
        train_tokens += shard.doc(d).len as u64;
        train_docs += 1;
    }
    let curriculum_on = config.curriculum.as_ref().filter(|c| match &c.sources {
        Some(list) => list.contains(&sc.name),
        None => shard.meta().scored_docs > 0,
    });
    let mut streams = Vec::new();
    for (topic, docs) in by_topic {
        let tokens: u64 = docs.iter().map(|&d| shard.doc(d as usize).len as u64).sum();
        let curriculum = curriculum_on.map(|c| Curriculum::new(&docs, |d| shard.doc(d as usize).score, c.order, c.buckets));
        streams.push(Stream {
            topic,
            docs,
            curriculum,
            epoch: 0,
            cursor: 0,
            order: Vec::new(),
            consumed_since_reweight: 0,
            weight: tokens as f64 / train_tokens.max(1) as f64,
        });
    }
    Ok(SourceRuntime {
        name: sc.name.clone(),
        streams,
        validation_docs,
        train_tokens,
        mean_doc_len: if train_docs > 0 { train_tokens as f64 / train_docs as f64 } else { 0.0 },
        max_repeats: sc.max_repeats,
        topic_map,
        mixable,
        pending: None,
        consumed_tokens: 0,
        windows: 0,
    })
}
