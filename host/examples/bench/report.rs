//! What a benchmark run measured: metrics with their samples over the runs,
//! the floor each is compared with (measured in the same run), the issue's
//! target, the table printed at the end and the JSON written for the README.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Whether a larger value of a unit is better (rates) or worse (costs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Rates: events/s, deliveries/s.
    Higher,
    /// Costs: latency, ns/event, memory, CPU.
    Lower,
}

/// A unit of measure and which way is better.
#[derive(Clone, Copy, Debug)]
pub struct Unit {
    pub label: &'static str,
    pub better: Better,
}

pub const EVENTS_S: Unit = Unit {
    label: "events/s",
    better: Better::Higher,
};
pub const MSG_S: Unit = Unit {
    label: "msg/s",
    better: Better::Higher,
};
pub const DELIVERIES_S: Unit = Unit {
    label: "deliveries/s",
    better: Better::Higher,
};
pub const MS: Unit = Unit {
    label: "ms",
    better: Better::Lower,
};
pub const NS_EVENT: Unit = Unit {
    label: "ns/event",
    better: Better::Lower,
};
pub const US_EVENT: Unit = Unit {
    label: "µs/event",
    better: Better::Lower,
};
pub const US_DELIVERY: Unit = Unit {
    label: "µs/delivery",
    better: Better::Lower,
};
pub const CPU_S_PER_1K: Unit = Unit {
    label: "CPU-s/1k events",
    better: Better::Lower,
};
pub const CORES: Unit = Unit {
    label: "cores",
    better: Better::Lower,
};
pub const MB: Unit = Unit {
    label: "MB",
    better: Better::Lower,
};
pub const PERCENT: Unit = Unit {
    label: "%",
    better: Better::Lower,
};
pub const COUNT: Unit = Unit {
    label: "count",
    better: Better::Lower,
};

/// The target for a metric.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// value / floor ≥ x.
    FloorAtLeast(f64),
    /// value / floor ≤ x.
    FloorAtMost(f64),
    /// value ≥ x.
    AtLeast(f64),
    /// value ≤ x.
    AtMost(f64),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::FloorAtLeast(x) => format!("≥ {x}× floor"),
            Target::FloorAtMost(x) => format!("≤ {x}× floor"),
            Target::AtLeast(x) => format!("≥ {x}"),
            Target::AtMost(x) => format!("≤ {x}"),
        }
    }

    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::FloorAtLeast(x) => ratio.map(|r| r >= x),
            Target::FloorAtMost(x) => ratio.map(|r| r <= x),
            Target::AtLeast(x) => Some(value >= x),
            Target::AtMost(x) => Some(value <= x),
        }
    }
}

/// One value a scenario measured in one run.
pub struct Sample {
    name: String,
    value: f64,
    unit: Unit,
    floor: Option<String>,
    target: Option<Target>,
    note: Option<String>,
}

impl Sample {
    /// `value` in `unit` for the metric `name`.
    pub fn new(name: impl Into<String>, value: f64, unit: Unit) -> Self {
        Sample {
            name: name.into(),
            value,
            unit,
            floor: None,
            target: None,
            note: None,
        }
    }

    /// Compare with the metric `floor` of the same scenario (ratio = value / floor).
    pub fn floor(mut self, floor: impl Into<String>) -> Self {
        self.floor = Some(floor.into());
        self
    }

    /// The target for this metric.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// A remark printed under the table (conditions of the measurement).
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// One metric over all runs, as written to JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    pub scenario: String,
    pub name: String,
    pub unit: String,
    pub better: Better,
    pub samples: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub floor: Option<String>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
    pub note: Option<String>,
}

/// Collects samples; one per scenario in flight (`scenario` is set by the runner).
#[derive(Default)]
pub struct Recorder {
    scenario: String,
    metrics: Vec<Metric>,
    index: BTreeMap<(String, String), usize>,
}

impl Recorder {
    /// Samples recorded from now on belong to `scenario`.
    pub fn scenario(&mut self, scenario: &str) {
        self.scenario = scenario.to_string();
    }

    /// Record one sample (and print it as it comes).
    pub fn add(&mut self, s: Sample) {
        println!(
            "  {:<48} {:>14} {}",
            s.name,
            fmt_value(s.value),
            s.unit.label
        );
        let key = (self.scenario.clone(), s.name.clone());
        let i = *self.index.entry(key).or_insert_with(|| {
            self.metrics.push(Metric {
                scenario: self.scenario.clone(),
                name: s.name.clone(),
                unit: s.unit.label.to_string(),
                better: s.unit.better,
                samples: vec![],
                median: 0.0,
                min: 0.0,
                max: 0.0,
                floor: None,
                ratio: None,
                target: None,
                met: None,
                note: None,
            });
            self.metrics.len() - 1
        });
        let m = &mut self.metrics[i];
        m.samples.push(s.value);
        m.floor = s.floor.or(m.floor.take());
        m.target = s.target.or(m.target);
        m.note = s.note.or(m.note.take());
    }

    /// Medians, ranges, ratios to the floors and targets.
    pub fn finish(mut self) -> Vec<Metric> {
        for m in &mut self.metrics {
            let mut v = m.samples.clone();
            v.sort_by(f64::total_cmp);
            m.min = v[0];
            m.max = v[v.len() - 1];
            m.median = if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            };
        }
        let medians: BTreeMap<(String, String), f64> = self
            .metrics
            .iter()
            .map(|m| ((m.scenario.clone(), m.name.clone()), m.median))
            .collect();
        for m in &mut self.metrics {
            m.ratio = m
                .floor
                .as_ref()
                .and_then(|f| medians.get(&(m.scenario.clone(), f.clone())))
                .filter(|f| **f != 0.0)
                .map(|f| m.median / f);
            m.met = m.target.and_then(|t| t.met(m.median, m.ratio));
        }
        self.metrics
    }
}

/// A whole run: where, when, under what load, and what it measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub git: String,
    pub runs: usize,
    pub smoke: bool,
    pub metrics: Vec<Metric>,
}

impl Report {
    /// Write `target/bench/bench-<date>.json` and `target/bench/latest.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        let stamp = self.date.replace(':', "");
        let kind = if self.smoke { "smoke" } else { "bench" };
        for name in [
            format!("{kind}-{stamp}.json"),
            format!("{kind}-latest.json"),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
        }
        println!(
            "wrote {}",
            dir.join(format!("{kind}-latest.json")).display()
        );
        Ok(())
    }

    /// Read a report written by [`Report::write`].
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The Markdown table (also what is printed at the end of a run).
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Run {} on {}; load average before {}, after {}; {} run(s) per scenario; commit {}.\n",
            self.date, self.machine, self.load_before, self.load_after, self.runs, self.git
        );
        t.push_str("| Scenario | Metric | Median | Range | Unit | vs floor | Target |\n");
        t.push_str("|---|---|---:|---|---|---:|---|\n");
        for m in &self.metrics {
            let ratio = m.ratio.map_or("".into(), |r| format!("{r:.2}×"));
            let target = match (m.target, m.met) {
                (Some(t), Some(true)) => format!("{} ✓", t.describe()),
                (Some(t), Some(false)) => format!("{} ✗", t.describe()),
                (Some(t), None) => t.describe(),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {}–{} | {} | {} | {} |",
                m.scenario,
                m.name,
                fmt_value(m.median),
                fmt_value(m.min),
                fmt_value(m.max),
                m.unit,
                ratio,
                target
            );
        }
        let notes: Vec<String> = self
            .metrics
            .iter()
            .filter_map(|m| {
                m.note
                    .as_ref()
                    .map(|n| format!("- {} / {}: {n}", m.scenario, m.name))
            })
            .collect();
        if !notes.is_empty() {
            t.push('\n');
            t.push_str(&notes.join("\n"));
            t.push('\n');
        }
        t
    }
}

/// Three significant digits (at least two decimals), thousands separated by commas.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.2}")
    } else {
        // Three significant digits below 1: 0.123, 0.0123.
        let decimals = (2 - a.log10().floor() as i32).clamp(3, 9) as usize;
        format!("{v:.decimals$}")
    }
}

/// Replace the README's measurement table (between the bench-table markers)
/// with the one generated from `report`.
pub fn update_readme(readme: &Path, report: &Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        !report.smoke,
        "a smoke run's numbers do not belong in the README"
    );
    const BEGIN: &str =
        "<!-- bench-table:begin (generated by scripts/bench --readme; do not edit) -->";
    const END: &str = "<!-- bench-table:end -->";
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("{} has no bench-table markers", readme.display());
    };
    let updated = format!("{}{BEGIN}\n{}{}", &text[..b], report.table(), &text[e..]);
    std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_target_use_the_floor_median() {
        let mut r = Recorder::default();
        r.scenario("s");
        for v in [100.0, 300.0, 200.0] {
            r.add(Sample::new("floor", v, EVENTS_S));
        }
        for v in [190.0, 170.0, 180.0] {
            r.add(
                Sample::new("x", v, EVENTS_S)
                    .floor("floor")
                    .target(Target::FloorAtLeast(0.9)),
            );
        }
        let m = r.finish();
        assert_eq!((m[0].median, m[0].min, m[0].max), (200.0, 100.0, 300.0));
        assert_eq!(m[1].ratio, Some(0.9));
        assert_eq!(m[1].met, Some(true));
    }

    #[test]
    fn values_are_formatted_readably() {
        assert_eq!(fmt_value(1234567.0), "1,234,567");
        assert_eq!(fmt_value(-4321.0), "-4,321");
        assert_eq!(fmt_value(12.345), "12.3");
        assert_eq!(fmt_value(0.123), "0.123");
        assert_eq!(fmt_value(0.0123), "0.0123");
        assert_eq!(fmt_value(0.0), "0.00");
    }
}
