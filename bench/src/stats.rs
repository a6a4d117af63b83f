//! Latency percentiles, per-stream order accounting, and reading a value off `/metrics`.

use std::collections::HashSet;

/// Percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The value of the metric line that starts with `name ` (labels included in `name`) in a
/// Prometheus text exposition, such as a node's `/metrics`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// What one receiver saw of one sender's numbered messages.
#[derive(Debug, Default)]
pub struct StreamCheck {
    seen: HashSet<u64>,
    highest: Option<u64>,
    /// Messages that arrived a second time.
    pub duplicated: u64,
    /// Messages that arrived after a higher-numbered one.
    pub reordered: u64,
}

impl StreamCheck {
    /// Records message `index`; returns whether it is new.
    pub fn record(&mut self, index: u64) -> bool {
        if !self.seen.insert(index) {
            self.duplicated += 1;
            return false;
        }
        if self.highest.is_some_and(|h| index < h) {
            self.reordered += 1;
        }
        self.highest = self.highest.max(Some(index));
        true
    }

    /// Distinct messages seen.
    pub fn unique(&self) -> u64 {
        self.seen.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_by_name_and_labels() {
        let text = "# HELP a_total A.\na_total 3\nab_total 7\nc{k=\"v\"} 0.5\n";
        assert_eq!(metric(text, "a_total"), Some(3.0));
        assert_eq!(metric(text, "c{k=\"v\"}"), Some(0.5));
        assert_eq!(metric(text, "b_total"), None);
    }

    #[test]
    fn percentiles_and_order_checks() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), 51);
        assert_eq!(percentile(&samples, 99.0), 99);
        assert_eq!(percentile(&[], 99.0), 0);
        let mut check = StreamCheck::default();
        assert!(check.record(0) && check.record(2) && check.record(1));
        assert!(!check.record(2));
        assert_eq!(
            (check.unique(), check.duplicated, check.reordered),
            (3, 1, 1)
        );
    }
}
