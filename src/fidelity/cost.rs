//! What a method costs: bytes on the wire and compute time, priced.

/// Prices. The transfer and GPU rates are the Gen-T paper's (§4.2: Cribl's
/// $0.32 per GB, GCP's $0.25 per GPU-hour); the CPU rate is ours, an
/// on-demand cloud vCPU-hour (about $0.03), since gent trains on CPUs here.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Prices {
    pub per_gb: f64,
    pub per_cpu_hour: f64,
    pub per_gpu_hour: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices { per_gb: 0.32, per_cpu_hour: 0.03, per_gpu_hour: 0.25 }
    }
}

impl Prices {
    /// Dollars for `bytes` sent and `cpu_seconds` of CPU (every core counted)
    /// plus `gpu_seconds` of GPU.
    pub fn cost(&self, bytes: u64, cpu_seconds: f64, gpu_seconds: f64) -> f64 {
        bytes as f64 / 1e9 * self.per_gb + cpu_seconds / 3600.0 * self.per_cpu_hour + gpu_seconds / 3600.0 * self.per_gpu_hour
    }
}

/// Sizes of traces as one OTLP protobuf export request: raw, gzip (default
/// level, as the Collector's exporters send) and zstd (level 3).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WireSizes {
    pub raw: u64,
    pub gzip: u64,
    pub zstd: u64,
}

pub fn wire_sizes(traces: &[crate::trace::Trace]) -> std::io::Result<WireSizes> {
    use std::io::Write;
    let mut raw = Vec::new();
    crate::io::write_traces(traces, crate::io::OutputFormat::OtlpProto, &mut raw)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)?;
    let gzip = gz.finish()?.len() as u64;
    let zstd = zstd::bulk::compress(&raw, 3)?.len() as u64;
    Ok(WireSizes { raw: raw.len() as u64, gzip, zstd })
}

#[cfg(test)]
mod tests {
    use super::Prices;

    #[test]
    fn a_gigabyte_and_an_hour_cost_their_rates() {
        let p = Prices::default();
        assert!((p.cost(1_000_000_000, 0.0, 0.0) - 0.32).abs() < 1e-12);
        assert!((p.cost(0, 3600.0, 3600.0) - 0.28).abs() < 1e-12);
    }
}
