//! `table`: the standard runs, one after another, each on a fresh node (and a fresh
//! mosquitto where there is a baseline), printed as one Markdown table — the
//! performance table of `docs/PERFORMANCE.md`, made by one command.
//!
//! Rows: the chat workload of the performance targets against mosquitto; how throughput
//! goes with the number of connections and with message size (against mosquitto too);
//! one message in flight (latency); many senders to one receiver; an offline backlog;
//! memory per idle connection.

use crate::workload::{self, Bench, Report};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// A `pairs` run of the table, with its mosquitto baseline.
struct PairsRow {
    label: &'static str,
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
    /// The node's configuration file for the row (TOML), if it needs one.
    node_toml: &'static str,
}

/// A node that takes 64 KiB bodies, sealed (the default limit is 32 KiB).
const LARGE_BODIES: &str = "[limits]\nmax_body_bytes = 66560\nmax_frame_bytes = 131072\n";

const PAIRS_ROWS: [PairsRow; 7] = [
    PairsRow {
        label: "chat load (the target)",
        pairs: 50,
        messages: 4000,
        size: 100,
        window: 64,
        node_toml: "",
    },
    PairsRow {
        label: "fewer connections",
        pairs: 10,
        messages: 20_000,
        size: 100,
        window: 64,
        node_toml: "",
    },
    PairsRow {
        label: "more connections",
        pairs: 200,
        messages: 1000,
        size: 100,
        window: 64,
        node_toml: "",
    },
    PairsRow {
        label: "larger messages",
        pairs: 50,
        messages: 1000,
        size: 1000,
        window: 64,
        node_toml: "",
    },
    PairsRow {
        label: "much larger messages",
        pairs: 50,
        messages: 500,
        size: 10_000,
        window: 64,
        node_toml: "",
    },
    PairsRow {
        label: "64 KiB messages",
        pairs: 50,
        messages: 200,
        size: 65_536,
        window: 64,
        node_toml: LARGE_BODIES,
    },
    PairsRow {
        label: "one message in flight (latency)",
        pairs: 1,
        messages: 3000,
        size: 100,
        window: 1,
        node_toml: "",
    },
];

/// Runs every row and returns the table (Markdown) and all reports (JSON).
pub async fn table(server_bin: &Path) -> anyhow::Result<Report> {
    let mut lines = vec![
        format!("Machine: {}.", machine()),
        String::new(),
        "| run | parameters | Quiver | mosquitto 2 QoS 1 | raw QUIC relay (stores nothing) | Quiver / mosquitto | Quiver / relay |".to_string(),
        "| --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    let mut all = Vec::new();
    for row in &PAIRS_ROWS {
        let load = (row.pairs, row.messages, row.size, row.window);
        let fresh = Arc::new(Bench::start_with_config(server_bin, row.node_toml)?);
        let quiver = workload::pairs(fresh, row.pairs, row.messages, row.size, row.window).await?;
        let broker = Baseline::Mqtt.pairs(load).await?;
        let relay = Baseline::Relay.pairs(load).await?;
        eprintln!("{}\n{}\n{}", quiver.summary, broker.summary, relay.summary);
        let ceiling = number(&relay.json["messages_per_sec"]);
        let relay_cell = delivery(&relay.json);
        let report = workload::compared(quiver, broker);
        let json = &report.json;
        lines.push(format!(
            "| {} | `pairs --pairs {} --messages {} --size {} --window {}` | {} | {} | {} | {:.2} | {:.2} |",
            row.label,
            row.pairs,
            row.messages,
            row.size,
            row.window,
            delivery(&json["quiver"]),
            delivery(&json["baseline"]),
            relay_cell,
            number(&json["ratio"]["throughput"]),
            number(&json["quiver"]["messages_per_sec"]) / ceiling,
        ));
        all.push(json!({ "compared": report.json, "relay": relay.json }));
    }

    let fresh = Arc::new(Bench::start(server_bin)?);
    let fanin = workload::fanin(fresh, 50, 400, 100, 64).await?;
    eprintln!("{}", fanin.summary);
    lines.push(format!(
        "| many senders, one receiver | `fanin --senders 50 --messages 400` | {} | | | | |",
        delivery(&fanin.json)
    ));
    all.push(fanin.json);

    let fresh = Arc::new(Bench::start(server_bin)?);
    let offline = crate::held::offline(fresh, 100_000, 100, 256, false).await?;
    eprintln!("{}", offline.summary);
    lines.push(format!(
        "| offline backlog drained | `offline --messages 100000` | {} | | | | |",
        delivery(&offline.json)
    ));
    all.push(offline.json);

    for connections in [1000, 4000] {
        let fresh = Arc::new(Bench::start(server_bin)?);
        let idle = crate::held::idle(fresh, connections, true, 0).await?;
        eprintln!("{}", idle.summary);
        lines.push(format!(
            "| idle connections | `idle --connections {connections} --one-socket` | {:.1} KiB per connection | | | | |",
            number(&idle.json["bytes_per_connection"]) / 1024.0
        ));
        all.push(idle.json);
    }
    lines.push(String::new());
    lines.push(
        "Every Quiver message is durable on the node (fdatasync) before its SENT. Every run \
         counts lost, duplicated and reordered messages; a cell says so if there were any."
            .to_string(),
    );
    Ok(Report {
        json: Value::Array(all),
        summary: lines.join("\n"),
    })
}

/// What a Quiver run is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// mosquitto 2, QoS 1, through rumqttc.
    Mqtt,
    /// The raw QUIC relay that stores nothing ([`crate::relay`]).
    Relay,
}

impl Baseline {
    /// The same `pairs` workload (pairs, messages, size, window) against the baseline.
    pub async fn pairs(self, (p, m, s, w): (usize, u64, usize, usize)) -> anyhow::Result<Report> {
        match self {
            Baseline::Mqtt => crate::mqtt::pairs(p, m, s, w).await,
            Baseline::Relay => crate::relay::pairs(p, m, s, w).await,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Baseline::Mqtt => "mosquitto",
            Baseline::Relay => "raw relay",
        }
    }
}

/// `pairs --compare mqtt|relay --runs N`: the same workload (pairs, messages, size,
/// window) against Quiver (a fresh node each time) and the baseline, alternately, N
/// times; every ratio and their median. On a noisy shared machine one run says little;
/// the median of runs taken side by side says more.
pub async fn pairs_runs(
    server_bin: &Path,
    load: (usize, u64, usize, usize),
    baseline: Baseline,
    runs: usize,
) -> anyhow::Result<Report> {
    let (pairs, messages, size, window) = load;
    let mut reports = Vec::new();
    let mut lines = Vec::new();
    for run in 1..=runs {
        let fresh = Arc::new(Bench::start(server_bin)?);
        let quiver = workload::pairs(fresh, pairs, messages, size, window).await?;
        let other = baseline.pairs(load).await?;
        let report = workload::compared(quiver, other);
        let json = &report.json;
        lines.push(format!(
            "run {run}: Quiver {}, {} | {} {}, {} | ratio {:.2}",
            delivery(&json["quiver"]),
            pauses(&json["quiver"]),
            baseline.name(),
            delivery(&json["baseline"]),
            pauses(&json["baseline"]),
            number(&json["ratio"]["throughput"]),
        ));
        reports.push(report.json);
    }
    let mut ratios: Vec<f64> = reports
        .iter()
        .map(|r| number(&r["ratio"]["throughput"]))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = median(&ratios);
    lines.push(format!(
        "quiver/baseline throughput ratio over {runs} alternating runs: median {median:.2}, \
         min {:.2}, max {:.2}",
        ratios.first().copied().unwrap_or(f64::NAN),
        ratios.last().copied().unwrap_or(f64::NAN),
    ));
    let json = serde_json::json!({
        "mode": "compare-runs",
        "params": { "pairs": pairs, "messages": messages, "size": size, "window": window },
        "runs": reports,
        "ratios_sorted": ratios,
        "median_ratio": median,
    });
    Ok(Report {
        json,
        summary: lines.join("\n"),
    })
}

/// The median of sorted numbers (the mean of the middle two for an even count).
pub(crate) fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A run's maximum latency and its longest time without an arrival — whether its tail
/// is a pause of everything — and how much of that silence the host took from this
/// machine ([`crate::steal`]).
fn pauses(json: &Value) -> String {
    let mut pauses = format!(
        "max {}, silence {}",
        millis(number(&json["latency_ms"]["max"])),
        millis(number(&json["longest_silence_ms"])),
    );
    match json["cpus"]["stolen_in_longest_silence_ms"].as_f64() {
        Some(stolen) if stolen >= 1.0 => {
            pauses += &format!(" ({} of it stolen by the host)", millis(stolen));
        }
        Some(_) => pauses += " (none of it stolen by the host)",
        None => {}
    }
    pauses
}

/// "65,051 msg/s; p50 31 ms, p99 135 ms" from a delivery report; fails the table (by
/// saying so in the cell) if anything was lost, duplicated or reordered.
pub(crate) fn delivery(json: &Value) -> String {
    let faults = ["lost", "duplicated", "reordered"]
        .iter()
        .map(|k| json[*k].as_u64().unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add);
    let rate = number(&json["messages_per_sec"]);
    let cell = format!(
        "{} msg/s; p50 {}, p99 {}",
        thousands(rate),
        millis(number(&json["latency_ms"]["p50"])),
        millis(number(&json["latency_ms"]["p99"])),
    );
    match faults {
        0 => cell,
        _ => format!("{cell}; **lost/duplicated/reordered: {faults}**"),
    }
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// 65051.3 → "65,051".
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Cores and CPU model, from the OS.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compare_line_says_how_much_of_a_silence_the_host_took() {
        let run = |cpus: Value| json!({ "latency_ms": { "max": 150.0 }, "longest_silence_ms": 104.6, "cpus": cpus });
        let stolen = run(json!({ "stolen_in_longest_silence_ms": 100.0 }));
        assert_eq!(
            pauses(&stolen),
            "max 150 ms, silence 105 ms (100 ms of it stolen by the host)"
        );
        let none = run(json!({ "stolen_in_longest_silence_ms": 0.0 }));
        assert!(pauses(&none).ends_with("(none of it stolen by the host)"));
        assert_eq!(pauses(&run(Value::Null)), "max 150 ms, silence 105 ms");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 9.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
    use serde_json::json;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(65051.3), "65,051");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(millis(0.764), "0.76 ms");
        assert_eq!(millis(135.2), "135 ms");
    }

    #[test]
    fn a_run_that_lost_anything_says_so_in_its_cell() {
        let clean = json!({"messages_per_sec": 1000.0, "latency_ms": {"p50": 1.0, "p99": 2.0},
            "lost": 0, "duplicated": 0, "reordered": 0});
        assert_eq!(delivery(&clean), "1,000 msg/s; p50 1.00 ms, p99 2.00 ms");
        let mut lossy = clean.clone();
        lossy["lost"] = json!(3);
        assert!(delivery(&lossy).ends_with("**lost/duplicated/reordered: 3**"));
    }
}
