//! Peak memory per logging window and over a run, for the metrics records and the summary:
//! the GPU memory pool's high-water mark, or on CPU the process's peak resident set
//! (`kernels::device_info::peak_memory_bytes`).
use candle_core::Device;

use crate::kernels::device_info;

pub const GIB: f64 = (1u64 << 30) as f64;

/// Tracks the peak of the current window and of the whole run.
pub struct PeakMemory {
    device: Device,
    overall: Option<u64>,
}

impl PeakMemory {
    pub fn start(device: &Device) -> Self {
        // Measurement is best effort: a failure leaves the record without the field.
        let _ = device_info::reset_peak_memory(device);
        Self { device: device.clone(), overall: None }
    }

    /// The peak since the previous call (or the start), then restarts the window.
    pub fn window_peak(&mut self) -> Option<u64> {
        let _ = self.device.synchronize();
        let peak = device_info::peak_memory_bytes(&self.device).ok().flatten();
        let _ = device_info::reset_peak_memory(&self.device);
        if let Some(p) = peak {
            self.overall = Some(self.overall.map_or(p, |o| o.max(p)));
        }
        peak
    }

    /// The peak over the whole run, including steps since the last record.
    pub fn run_peak(&mut self) -> Option<u64> {
        self.window_peak();
        self.overall
    }

    pub fn what(&self) -> &'static str {
        if self.device.is_cpu() {
            "peak resident set of the process"
        } else {
            "peak of the GPU memory pool"
        }
    }
}

