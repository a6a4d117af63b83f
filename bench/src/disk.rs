//! `fsync`: what one small durable append costs on this machine's disk right now.
//!
//! Every Quiver message waits for an fdatasync before its SENT, so latency at one message
//! in flight follows the disk's sync latency, which on shared machines drifts from hour to
//! hour. Measured next to the other runs, it tells a slow disk from a slow build.

use crate::stats::percentile;
use crate::workload::Report;
use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// Appends `count` records of `size` bytes to a fresh file in `dir`, each followed by
/// `sync_data` (fdatasync), and reports the syncs' latency: once growing the file, as a
/// log without zeroes ahead does, and once over zeroes written (and synced) before, as
/// the node's inbox log does (`server/src/log/prefill.rs`).
pub fn fsync(dir: &Path, count: usize, size: usize) -> anyhow::Result<Report> {
    let growing = appends(&tempfile::tempfile_in(dir)?, count, size)?;
    let zeroed = tempfile::tempfile_in(dir)?;
    zeroed.write_all_at(&vec![0; count * size], 0)?;
    zeroed.sync_all()?;
    let over_zeroes = appends(&zeroed, count, size)?;
    let json = json!({
        "mode": "fsync", "params": { "count": count, "size": size, "dir": dir },
        "growing": growing, "over_zeroes": over_zeroes,
    });
    let line = |v: &Value| {
        format!(
            "p50 {} µs, p99 {} µs, max {} µs",
            v["p50_us"], v["p99_us"], v["max_us"]
        )
    };
    let summary = format!(
        "fsync {count} appends of {size} B in {}: fdatasync growing the file {}; over zeroes {}",
        dir.display(),
        line(&growing),
        line(&over_zeroes),
    );
    Ok(Report { json, summary })
}

/// `count` writes of `size` bytes from the start of `file`, each followed by fdatasync;
/// the syncs' latency percentiles.
fn appends(file: &File, count: usize, size: usize) -> anyhow::Result<Value> {
    let record = vec![0x5a; size];
    let mut micros = Vec::with_capacity(count);
    for at in 0..count {
        file.write_all_at(&record, (at * size) as u64)?;
        let start = Instant::now();
        file.sync_data()?;
        micros.push(start.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    let max = micros.last().copied().unwrap_or(0);
    Ok(json!({
        "p50_us": percentile(&micros, 50.0), "p99_us": percentile(&micros, 99.0), "max_us": max,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_append_is_synced_and_timed() {
        let dir = tempfile::tempdir().unwrap();
        let report = fsync(dir.path(), 20, 100).unwrap();
        for way in ["growing", "over_zeroes"] {
            let p50 = report.json[way]["p50_us"].as_u64().unwrap();
            let max = report.json[way]["max_us"].as_u64().unwrap();
            assert!(p50 <= max);
        }
        assert!(report.summary.starts_with("fsync 20 appends of 100 B"));
    }
}
