//! `pairs` on both carriers and mosquitto, alternating in one sitting: what the TCP
//! carrier (QUIC in TLS over TCP, for networks that block UDP) costs against QUIC over
//! UDP, with a broker beside them as the yardstick.

use crate::table::{delivery, median};
use crate::workload::{self, Bench, Report};
use std::path::Path;
use std::sync::Arc;

/// `runs` rounds of: Quiver over UDP, Quiver over TCP (each on a fresh node), mosquitto.
pub async fn carriers(
    server_bin: &Path,
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
    runs: usize,
) -> anyhow::Result<Report> {
    let mut lines = Vec::new();
    let mut rounds = Vec::new();
    let (mut udp_rates, mut tcp_rates, mut mqtt_rates) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let mut results = Vec::new();
        for tcp_only in [false, true] {
            let mut bench = Bench::start(server_bin)?;
            bench.tcp_only = tcp_only;
            results.push(workload::pairs(Arc::new(bench), pairs, messages, size, window).await?);
        }
        results.push(crate::mqtt::pairs(pairs, messages, size, window).await?);
        let [udp, tcp, mqtt] = [0, 1, 2].map(|i| results[i].json.clone());
        let rate = |json: &serde_json::Value| json["messages_per_sec"].as_f64().unwrap_or(f64::NAN);
        udp_rates.push(rate(&udp));
        tcp_rates.push(rate(&tcp));
        mqtt_rates.push(rate(&mqtt));
        lines.push(format!(
            "run {run}: QUIC/UDP {} | QUIC/TCP {} | mosquitto {}",
            delivery(&udp),
            delivery(&tcp),
            delivery(&mqtt)
        ));
        rounds.push(serde_json::json!({ "udp": udp, "tcp": tcp, "mosquitto": mqtt }));
    }
    let medians = [&mut udp_rates, &mut tcp_rates, &mut mqtt_rates].map(|rates| {
        rates.sort_by(f64::total_cmp);
        median(rates)
    });
    lines.push(format!(
        "median msg/s over {runs} runs: QUIC/UDP {:.0}, QUIC/TCP {:.0}, mosquitto {:.0}; \
         TCP/UDP {:.2}, TCP/mosquitto {:.2}",
        medians[0],
        medians[1],
        medians[2],
        medians[1] / medians[0],
        medians[1] / medians[2],
    ));
    let json = serde_json::json!({
        "mode": "carriers",
        "params": { "pairs": pairs, "messages": messages, "size": size, "window": window },
        "runs": rounds,
        "median_msg_per_sec": { "udp": medians[0], "tcp": medians[1], "mosquitto": medians[2] },
    });
    Ok(Report {
        json,
        summary: lines.join("\n"),
    })
}
