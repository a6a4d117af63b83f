//! `fsync`: what one small durable append costs on this machine's disk right now.
//!
//! Every Quiver message waits for an fdatasync before its SENT, so latency at one message
//! in flight follows the disk's sync latency, which on shared machines drifts from hour to
//! hour. Measured next to the other runs, it tells a slow disk from a slow build.

use crate::stats::percentile;
use crate::workload::Report;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Appends `count` records of `size` bytes to a fresh file in `dir`, each followed by
/// `sync_data` (fdatasync), and reports the syncs' latency.
pub fn fsync(dir: &Path, count: usize, size: usize) -> anyhow::Result<Report> {
    let mut file = tempfile::tempfile_in(dir)?;
    let record = vec![0x5a; size];
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        file.write_all(&record)?;
        let start = Instant::now();
        file.sync_data()?;
        micros.push(start.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    let (p50, p99) = (percentile(&micros, 50.0), percentile(&micros, 99.0));
    let max = micros.last().copied().unwrap_or(0);
    let json = json!({
        "mode": "fsync", "params": { "count": count, "size": size, "dir": dir },
        "p50_us": p50, "p99_us": p99, "max_us": max,
    });
    let summary = format!(
        "fsync {count} appends of {size} B in {}: fdatasync p50 {p50} µs, p99 {p99} µs, max {max} µs",
        dir.display()
    );
    Ok(Report { json, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_append_is_synced_and_timed() {
        let dir = tempfile::tempdir().unwrap();
        let report = fsync(dir.path(), 20, 100).unwrap();
        let p50 = report.json["p50_us"].as_u64().unwrap();
        let max = report.json["max_us"].as_u64().unwrap();
        assert!(p50 <= max);
        assert!(report.summary.starts_with("fsync 20 appends of 100 B"));
    }
}
