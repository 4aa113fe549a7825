//! `pagoda-cost`: the cost model of simulated GPU time: what prefill, decode and KV
//! transfers cost on a given model and machine, from first principles.
//!
//! - **KV bytes per token** = 2 (K and V) × layers × KV heads × head dim ×
//!   bytes per element.
//! - **Prefill** of `n` new tokens after a cached prefix of `p` tokens is
//!   compute-bound: FLOPs = 2 × parameters × n (the dense matmuls, once per
//!   new token) + 4 × layers × hidden × n × (p + n/2) (attention scores and
//!   values: each new token attends to the prefix and, causally, to half the
//!   new tokens on average); time = FLOPs / (GPUs × peak FLOP/s × efficiency).
//!   A cached prefix removes its tokens from the first term and keeps only
//!   its attention cost: that is the saving the store buys.
//! - **Decode step** of a batch is memory-bound: it reads the weights once
//!   (2 bytes per parameter) and every sequence's KV; time = bytes /
//!   (GPUs × HBM bandwidth × efficiency).
//! - **Transfer** of `b` bytes = latency + b / link bandwidth.
//!
//! Used by the workers (simulated backend), the Conductor (its TTFT and
//! TBT estimates) and `pagoda replay`; it depends on no other Pagoda crate.
//!
//! Presets are in `cost/presets/presets.toml`, each constant with its
//! source: LLaMA2-70B on 8×A800 (the Mooncake paper's setup), Llama 3.1 8B on
//! one H100 over 100 GbE TCP, and a tiny model for tests.

use serde::Deserialize;

/// The presets shipped with Pagoda.
pub const PRESETS_TOML: &str = include_str!("../presets/presets.toml");

/// A model on a machine, with prices.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Preset name.
    pub name: String,
    /// Model parameters.
    pub parameters: f64,
    /// Transformer layers.
    pub layers: u32,
    /// Hidden size.
    pub hidden: u32,
    /// KV heads.
    pub kv_heads: u32,
    /// Head dimension.
    pub head_dim: u32,
    /// Bytes per KV element.
    pub kv_dtype_bytes: u32,
    /// GPUs per instance.
    pub gpus: u32,
    /// Peak dense FLOP/s per GPU.
    pub peak_flops_per_gpu: f64,
    /// HBM bytes/s per GPU.
    pub memory_bandwidth_per_gpu: f64,
    /// Share of peak FLOP/s prefill reaches.
    pub compute_efficiency: f64,
    /// Share of HBM bandwidth decode reaches.
    pub bandwidth_efficiency: f64,
    /// Bytes/s between instances (KV transfer).
    pub link_bytes_per_second: f64,
    /// Seconds of fixed cost per transfer.
    pub link_latency_seconds: f64,
    /// USD per GPU-hour.
    pub gpu_dollars_per_hour: f64,
    /// USD per GB-hour of DRAM.
    pub dram_dollars_per_gb_hour: f64,
    /// USD per GB-hour of SSD.
    pub ssd_dollars_per_gb_hour: f64,
}

#[derive(Deserialize)]
struct PresetFile {
    preset: Vec<Preset>,
}

/// Every shipped preset.
pub fn presets() -> Result<Vec<Preset>, String> {
    toml::from_str::<PresetFile>(PRESETS_TOML)
        .map(|file| file.preset)
        .map_err(|error| format!("presets.toml: {error}"))
}

/// The shipped preset `name`.
pub fn preset(name: &str) -> Result<Preset, String> {
    let all = presets()?;
    let names: Vec<String> = all.iter().map(|preset| preset.name.clone()).collect();
    all.into_iter()
        .find(|preset| preset.name == name)
        .ok_or_else(|| format!("no preset {name:?}; presets: {}", names.join(", ")))
}

impl Preset {
    /// KV bytes of one token.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * u64::from(self.layers)
            * u64::from(self.kv_heads)
            * u64::from(self.head_dim)
            * u64::from(self.kv_dtype_bytes)
    }

    fn flops_per_second(&self) -> f64 {
        f64::from(self.gpus) * self.peak_flops_per_gpu * self.compute_efficiency
    }

    /// Seconds to prefill `new` tokens after a cached prefix of `cached`.
    #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
    pub fn prefill_seconds(&self, cached: u64, new: u64) -> f64 {
        let (p, n) = (cached as f64, new as f64);
        let dense = 2.0 * self.parameters * n;
        let attention = 4.0 * f64::from(self.layers) * f64::from(self.hidden) * n * (p + n / 2.0);
        (dense + attention) / self.flops_per_second()
    }

    /// Seconds of one decode step for sequences whose contexts add up to
    /// `context_tokens`.
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    pub fn decode_step_seconds(&self, context_tokens: u64) -> f64 {
        let bytes = 2.0 * self.parameters + (context_tokens * self.kv_bytes_per_token()) as f64;
        bytes / (f64::from(self.gpus) * self.memory_bandwidth_per_gpu * self.bandwidth_efficiency)
    }

    /// Seconds to move `bytes` between instances.
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    pub fn transfer_seconds(&self, bytes: u64) -> f64 {
        self.link_latency_seconds + bytes as f64 / self.link_bytes_per_second
    }

    /// USD of `seconds` of one instance (all its GPUs).
    pub fn instance_dollars(&self, seconds: f64) -> f64 {
        f64::from(self.gpus) * self.gpu_dollars_per_hour * seconds / 3600.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_the_paper_setup_has_its_known_sizes() {
        let all = presets().unwrap();
        assert_eq!(all.len(), 3);
        let llama = preset("llama2-70b-a800").unwrap();
        // 320 KiB of KV per token (2 × 80 × 8 × 128 × 2 bytes).
        assert_eq!(llama.kv_bytes_per_token(), 327_680);
        // One 512-token block: 160 MiB, as the traces' README computes.
        assert_eq!(llama.kv_bytes_per_token() * 512, 160 << 20);
        assert!(preset("gpt-5").unwrap_err().contains("llama2-70b-a800"));
    }

    #[test]
    fn a_cached_prefix_saves_prefill_time_and_costs_transfer_time() {
        let llama = preset("llama2-70b-a800").unwrap();
        let cold = llama.prefill_seconds(0, 8192);
        let warm = llama.prefill_seconds(6144, 2048);
        assert!(warm < cold / 2.0, "cold {cold} warm {warm}");
        // An 8k-token prompt takes on the order of a second on 8 A800s.
        assert!((0.3..3.0).contains(&cold), "{cold}");
        let moved = llama.transfer_seconds(6144 * llama.kv_bytes_per_token());
        assert!(
            moved < cold - warm,
            "loading the prefix beats recomputing it"
        );
        // Decode: weights dominate a small batch (tens of ms per step).
        let step = llama.decode_step_seconds(8 * 4096);
        assert!((0.005..0.2).contains(&step), "{step}");
        assert!(llama.decode_step_seconds(64 * 4096) > step);
        assert!((llama.instance_dollars(3600.0) - 14.4).abs() < 1e-9);
    }
}
