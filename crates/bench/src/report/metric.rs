//! One figure per target, summarized over runs, with its ratios to the best
//! peer (nginx or HAProxy) and to the direct connection.

use std::collections::BTreeMap;

use super::Table;
use crate::peers::Target;
use crate::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub values: BTreeMap<Target, Summary>,
}

impl Metric {
    pub fn new(name: &'static str, unit: &'static str, better: Better) -> Metric {
        Metric { name, unit, better, values: BTreeMap::new() }
    }

    pub fn insert(&mut self, target: Target, summary: Option<Summary>) {
        if let Some(summary) = summary {
            self.values.insert(target, summary);
        }
    }

    pub fn median(&self, target: Target) -> Option<f64> {
        self.values.get(&target).map(|summary| summary.median)
    }

    /// The peer with the best median.
    pub fn best_peer(&self) -> Option<(Target, f64)> {
        let peers = self.values.iter().filter(|(target, _)| target.is_peer()).map(|(target, summary)| (*target, summary.median));
        match self.better {
            Better::Lower => peers.min_by(|a, b| a.1.total_cmp(&b.1)),
            Better::Higher => peers.max_by(|a, b| a.1.total_cmp(&b.1)),
        }
    }

    /// Median of `target` divided by the best peer's median; `None` when
    /// either is missing or the best peer's is not positive.
    pub fn ratio_to_best_peer(&self, target: Target) -> Option<f64> {
        ratio(self.median(target)?, self.best_peer()?.1)
    }

    pub fn ratio_to_direct(&self, target: Target) -> Option<f64> {
        ratio(self.median(target)?, self.median(Target::Direct)?)
    }

    /// A table row per target: median, min, max and both ratios.
    pub fn table(&self) -> Table {
        let direction = match self.better {
            Better::Lower => "lower is better",
            Better::Higher => "higher is better",
        };
        let best = self.best_peer().map_or("-".to_string(), |(target, _)| target.name().to_string());
        let headers = vec![
            "target".to_string(),
            format!("median ({})", self.unit),
            "min".to_string(),
            "max".to_string(),
            format!("x best peer ({best})"),
            "x direct".to_string(),
        ];
        let rows = self
            .values
            .iter()
            .map(|(target, summary)| {
                vec![
                    target.name().to_string(),
                    format_value(summary.median),
                    format_value(summary.min),
                    format_value(summary.max),
                    format_ratio(self.ratio_to_best_peer(*target)),
                    format_ratio(self.ratio_to_direct(*target)),
                ]
            })
            .collect();
        Table { caption: format!("{} ({direction})", self.name), headers, rows }
    }
}

fn ratio(value: f64, reference: f64) -> Option<f64> {
    (reference > 0.0 && value.is_finite()).then(|| value / reference)
}

pub fn format_ratio(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_string(), |ratio| format!("{ratio:.2}x"))
}

/// Three significant figures, without scientific notation.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || magnitude == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(median: f64) -> Option<Summary> {
        Some(Summary { median, min: median, max: median })
    }

    #[test]
    fn best_peer_follows_direction() {
        let mut cpu = Metric::new("cpu", "us", Better::Lower);
        cpu.insert(Target::Legate, summary(9.0));
        cpu.insert(Target::Nginx, summary(10.0));
        cpu.insert(Target::Haproxy, summary(12.0));
        assert_eq!(cpu.best_peer(), Some((Target::Nginx, 10.0)));
        assert_eq!(cpu.ratio_to_best_peer(Target::Legate), Some(0.9));

        let mut throughput = Metric::new("throughput", "req/s", Better::Higher);
        throughput.insert(Target::Nginx, summary(10.0));
        throughput.insert(Target::Haproxy, summary(12.0));
        throughput.insert(Target::Direct, summary(24.0));
        assert_eq!(throughput.best_peer(), Some((Target::Haproxy, 12.0)));
        assert_eq!(throughput.ratio_to_direct(Target::Haproxy), Some(0.5));
        assert_eq!(throughput.ratio_to_direct(Target::Legate), None);
    }

    #[test]
    fn values_formatted_to_three_figures() {
        assert_eq!(format_value(12345.6), "12346");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(1.2345), "1.23");
        assert_eq!(format_value(0.12345), "0.123");
    }
}
