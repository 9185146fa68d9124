//! TensorBoard event files written directly: TFRecord framing (length, masked CRC-32C of the
//! length, payload, masked CRC-32C of the payload) around hand-encoded `Event` protobufs
//! (`wall_time` = 1 double, `step` = 2 int64, `file_version` = 3 string, `summary` = 5;
//! `Summary.value` = 1; `Value.tag` = 1 string, `Value.simple_value` = 2 float). Text goes
//! as TensorBoard's text plugin writes it: `Value.metadata` = 9 (`SummaryMetadata.plugin_data`
//! = 1, `PluginData.plugin_name` = 1 "text") and `Value.tensor` = 8 (`TensorProto.dtype` = 1
//! DT_STRING (7), `tensor_shape` = 2 (empty: a scalar), `string_val` = 8).
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// CRC-32C masked as TFRecord does, so CRCs of CRCs stay well distributed.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, ((field << 3) | 2) as u64);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn encode_event(wall_time: f64, step: i64, body: EventBody<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    out.push((1 << 3) | 1); // wall_time: fixed64
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        out.push(2 << 3); // step: varint (int64, two's complement)
        put_varint(&mut out, step as u64);
    }
    match body {
        EventBody::FileVersion(v) => put_len_delimited(&mut out, 3, v.as_bytes()),
        EventBody::Text(tag, text) => {
            let mut plugin = Vec::new();
            put_len_delimited(&mut plugin, 1, b"text");
            let mut metadata = Vec::new();
            put_len_delimited(&mut metadata, 1, &plugin);
            let mut tensor = vec![1 << 3, 7]; // dtype: DT_STRING
            put_len_delimited(&mut tensor, 2, &[]);
            put_len_delimited(&mut tensor, 8, text.as_bytes());
            let mut v = Vec::new();
            put_len_delimited(&mut v, 1, tag.as_bytes());
            put_len_delimited(&mut v, 9, &metadata);
            put_len_delimited(&mut v, 8, &tensor);
            let mut summary = Vec::new();
            put_len_delimited(&mut summary, 1, &v);
            put_len_delimited(&mut out, 5, &summary);
        }
        EventBody::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut v = Vec::new();
                put_len_delimited(&mut v, 1, tag.as_bytes());
                v.push((2 << 3) | 5); // simple_value: fixed32
                v.extend_from_slice(&value.to_le_bytes());
                put_len_delimited(&mut summary, 1, &v);
            }
            put_len_delimited(&mut out, 5, &summary);
        }
    }
    out
}

enum EventBody<'a> {
    FileVersion(&'a str),
    Text(&'a str, &'a str),
    Scalars(&'a [(String, f32)]),
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Writes scalar summaries to `<dir>/events.out.tfevents.<unix time>.<host>`.
pub struct TensorBoardWriter {
    file: File,
    path: PathBuf,
}

impl TensorBoardWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let wall = now();
        let path = dir.join(format!("events.out.tfevents.{}.{}", wall as u64, host_name()));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = Self { file, path };
        writer.write_record(&encode_event(wall, 0, EventBody::FileVersion("brain.Event:2")))?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write several scalars of one step as one event (tags like `train/loss`).
    pub fn add_scalars(&mut self, step: u64, values: &[(String, f32)]) -> Result<()> {
        self.write_record(&encode_event(now(), step as i64, EventBody::Scalars(values)))
    }

    /// A text summary (TensorBoard's Text tab), e.g. a generated sample.
    pub fn add_text(&mut self, tag: &str, text: &str, step: u64) -> Result<()> {
        self.write_record(&encode_event(now(), step as i64, EventBody::Text(tag, text)))
    }

    pub fn add_scalar(&mut self, tag: &str, value: f32, step: u64) -> Result<()> {
        self.add_scalars(step, &[(tag.to_string(), value)])
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<()> {
        self.file.write_all(&frame(payload)).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("flushing {}", self.path.display()))
    }
}

/// One decoded event (only the fields this writer produces).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
    /// Text summaries: (tag, text).
    pub texts: Vec<(String, String)>,
}

/// Read an event file back, checking both CRCs of every record.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        ensure!(data.len() >= at + 12, "{}: truncated record header at byte {at}", path.display());
        let len_bytes = &data[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let len_crc = u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes"));
        ensure!(masked_crc(len_bytes) == len_crc, "{}: bad length CRC at byte {at}", path.display());
        let start = at + 12;
        ensure!(data.len() >= start + len + 4, "{}: truncated record at byte {at}", path.display());
        let payload = &data[start..start + len];
        let crc = u32::from_le_bytes(data[start + len..start + len + 4].try_into().expect("4 bytes"));
        ensure!(masked_crc(payload) == crc, "{}: bad payload CRC at byte {at}", path.display());
        events.push(decode_event(payload).with_context(|| format!("{}: record at byte {at}", path.display()))?);
        at = start + len + 4;
    }
    Ok(events)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).context("truncated varint")?;
            self.at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.at + n <= self.data.len(), "truncated field");
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    /// (field number, wire type)
    fn key(&mut self) -> Result<(u32, u8)> {
        let k = self.varint()?;
        Ok(((k >> 3) as u32, (k & 7) as u8))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()? as usize;
        self.take(n)
    }
    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => {
                self.take(8)?;
            }
            2 => {
                self.bytes()?;
            }
            5 => {
                self.take(4)?;
            }
            w => bail!("unsupported wire type {w}"),
        }
        Ok(())
    }
}

fn decode_event(payload: &[u8]) -> Result<Event> {
    let mut r = Reader { data: payload, at: 0 };
    let mut event = Event::default();
    while !r.done() {
        match r.key()? {
            (1, 1) => event.wall_time = f64::from_le_bytes(r.take(8)?.try_into()?),
            (2, 0) => event.step = r.varint()? as i64,
            (3, 2) => event.file_version = Some(String::from_utf8(r.bytes()?.to_vec())?),
            (5, 2) => {
                let mut s = Reader { data: r.bytes()?, at: 0 };
                while !s.done() {
                    match s.key()? {
                        (1, 2) => {
                            let mut v = Reader { data: s.bytes()?, at: 0 };
                            let (mut tag, mut value, mut text) = (String::new(), 0f32, None);
                            while !v.done() {
                                match v.key()? {
                                    (1, 2) => tag = String::from_utf8(v.bytes()?.to_vec())?,
                                    (2, 5) => value = f32::from_le_bytes(v.take(4)?.try_into()?),
                                    (8, 2) => text = Some(tensor_string(v.bytes()?)?),
                                    (_, w) => v.skip(w)?,
                                }
                            }
                            match text {
                                Some(text) => event.texts.push((tag, text)),
                                None => event.scalars.push((tag, value)),
                            }
                        }
                        (_, w) => s.skip(w)?,
                    }
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok(event)
}

/// The first `string_val` of a `TensorProto`.
fn tensor_string(bytes: &[u8]) -> Result<String> {
    let mut r = Reader { data: bytes, at: 0 };
    while !r.done() {
        match r.key()? {
            (8, 2) => return Ok(String::from_utf8(r.bytes()?.to_vec())?),
            (_, w) => r.skip(w)?,
        }
    }
    bail!("a tensor summary without a string value")
}
