//! Golden tests through the real runtime: the same files the SDK's native
//! harness runs (`mdp_sdk::wire::Golden`), executed by a Wasm plugin against
//! an embedded store, a fixed clock and store-backed reference data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mdp_sdk::wire::{EffectRecord, Golden, GoldenReference, GoldenRestart, GoldenStep};

use super::{
    Capabilities, Clock, FixedClock, HostServices, Limits, LoadOptions, Plugin, Runtime,
    StoreReference, Worker, convert, effects,
};
use crate::store::{EmbeddedStore, Store, Write};

/// Why a golden run failed.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// The golden file or plugin could not be read, or the store seeded.
    #[error("{0}")]
    Setup(String),
    /// The component itself is unusable (not Wasm, wrong world, `describe` failed…).
    #[error(transparent)]
    Load(#[from] super::PluginError),
    /// A batch failed outright.
    #[error("step {step}: batch failed: {reason}")]
    Batch {
        /// Step index.
        step: usize,
        /// Why.
        reason: String,
    },
    /// A batch produced other effects than expected.
    #[error("step {step}: effects differ (- expected, + got)\n{}", line_diff(.expected, .got))]
    Mismatch {
        /// Step index.
        step: usize,
        /// Expected effects, JSON lines.
        expected: String,
        /// Actual effects, JSON lines.
        got: String,
    },
}

/// The store writes that seed a store with a golden file's starting state
/// (strings, and reference data under the MDC keys [`StoreReference`] reads).
pub fn seed_writes(
    store: &std::collections::BTreeMap<String, String>,
    reference: &GoldenReference,
) -> Vec<Write> {
    let set = |key: String, value: String| Write::Set {
        key,
        value: value.into(),
        ttl: None,
    };
    let mut writes: Vec<Write> = store
        .iter()
        .map(|(k, v)| set(k.clone(), v.clone()))
        .collect();
    writes.extend(
        reference
            .snapshots
            .iter()
            .map(|(s, v)| set(format!("mdc:snapshots:{s}"), v.to_string())),
    );
    writes.extend(
        reference
            .avg_volumes
            .iter()
            .map(|(s, v)| set(format!("mdc:avg_volume:{s}"), v.to_string())),
    );
    writes.extend(
        reference
            .free_floats
            .iter()
            .map(|(s, v)| set(format!("mdc:free_float:{s}"), v.to_string())),
    );
    if let Some(m) = &reference.market {
        writes.push(set("mdc:market_status".into(), m.clone()));
    }
    writes
}

fn lines(records: &[EffectRecord]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line diff of `expected` and `got`: common lines indented, lines only
/// expected prefixed `- `, lines only got prefixed `+ ` (longest common
/// subsequence, in order).
pub fn line_diff(expected: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    // lcs[i][j]: common lines of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j == b.len() || (i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out.join("\n")
}

/// Run the golden file at `golden` through the component at `wasm`.
pub async fn check(runtime: &Runtime, wasm: &Path, golden: &Path) -> Result<(), GoldenError> {
    let text = std::fs::read_to_string(golden)
        .map_err(|e| GoldenError::Setup(format!("cannot read {}: {e}", golden.display())))?;
    let golden_file = Golden::parse(&text)
        .map_err(|e| GoldenError::Setup(format!("{}: {e}", golden.display())))?;
    let bytes = std::fs::read(wasm)
        .map_err(|e| GoldenError::Setup(format!("cannot read {}: {e}", wasm.display())))?;
    run(runtime, bytes, &golden_file, Limits::default()).await
}

/// Run a parsed golden file through component `bytes` under `limits`.
pub async fn run(
    runtime: &Runtime,
    bytes: Vec<u8>,
    golden: &Golden,
    limits: Limits,
) -> Result<(), GoldenError> {
    let mut run = GoldenRun::set_up(runtime, bytes, golden, limits).await?;
    for (step, s) in golden.steps.iter().enumerate() {
        run.step(step, s).await?;
    }
    Ok(())
}

/// A [`GoldenError::Batch`] of `step`, from any error.
fn batch_error<E: std::fmt::Display>(step: usize) -> impl FnOnce(E) -> GoldenError {
    move |e| GoldenError::Batch {
        step,
        reason: e.to_string(),
    }
}

/// One golden run: the fixed clock, the seeded store, the loaded plugin and
/// its replicas (by replica number).
struct GoldenRun<'a> {
    golden: &'a Golden,
    clock: FixedClock,
    store: Arc<dyn Store>,
    services: HostServices,
    plugin: Arc<Plugin>,
    config: Vec<(String, String)>,
    replicas: BTreeMap<u32, Worker>,
}

impl<'a> GoldenRun<'a> {
    /// Seed a store with the file's starting state, load the plugin and
    /// start replica 0 at the file's clock (others start when first used).
    async fn set_up(
        runtime: &Runtime,
        bytes: Vec<u8>,
        golden: &'a Golden,
        limits: Limits,
    ) -> Result<GoldenRun<'a>, GoldenError> {
        let clock = FixedClock::new(golden.now_us);
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::with_clock({
            let clock = clock.clone();
            move || clock.now_us()
        }));
        store
            .apply(&seed_writes(&golden.store, &golden.reference), false)
            .await
            .map_err(|e| GoldenError::Setup(e.to_string()))?;
        let services = HostServices {
            store: store.clone(),
            reference: Arc::new(StoreReference::new(store.clone())),
            clock: Arc::new(clock.clone()),
        };
        let options = LoadOptions {
            name: None,
            limits,
            capabilities: Capabilities::unrestricted(),
            ..LoadOptions::default()
        };
        let plugin = Plugin::load(runtime, bytes, options, &services).await?;
        let config = golden
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut run = GoldenRun {
            golden,
            clock,
            store,
            services,
            plugin,
            config,
            replicas: BTreeMap::new(),
        };
        let first = run.start(0, None).await?;
        run.replicas.insert(0, first);
        Ok(run)
    }

    /// A new replica, handed `state` (a snapshot) if any.
    async fn start(&mut self, step: usize, state: Option<Vec<u8>>) -> Result<Worker, GoldenError> {
        let mut worker = Worker::new(
            self.plugin.clone(),
            self.services.clone(),
            self.config.clone(),
        );
        if let Some(state) = state {
            worker.hand_over(state);
        }
        worker.start().await.map_err(batch_error(step))?;
        Ok(worker)
    }

    /// Run one step: set its clock and market status, (re)start its replica
    /// as asked, analyze its events, apply the effects and compare them.
    async fn step(&mut self, step: usize, s: &GoldenStep) -> Result<(), GoldenError> {
        self.clock.set(s.now_us.unwrap_or(self.golden.now_us));
        // The step's market status, served by StoreReference from here on.
        if let Some(m) = &s.market {
            let write = Write::Set {
                key: "mdc:market_status".into(),
                value: m.as_str().into(),
                ttl: None,
            };
            self.store
                .apply(&[write], false)
                .await
                .map_err(batch_error(step))?;
        }
        let worker = self.replica(step, s).await?;
        let texts: Vec<String> = s.events.iter().map(|e| e.to_string()).collect();
        let events = s
            .events
            .iter()
            .zip(&texts)
            .map(|(v, t)| convert::decode_value(v, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(batch_error(step))?;
        let shared: Vec<Arc<str>> = texts.iter().map(effects::InputText::shared).collect();
        let out = worker
            .analyze_texts(&events, &shared)
            .await
            .map_err(batch_error(step))?;
        let got: Vec<EffectRecord> = out
            .effects
            .iter()
            .map(|e| effects::record(e, &texts))
            .collect();
        let resolved = effects::resolve(&out.effects, &texts, &Capabilities::unrestricted());
        self.store
            .apply(&resolved.writes, true)
            .await
            .map_err(batch_error(step))?;
        if got != s.effects {
            return Err(GoldenError::Mismatch {
                step,
                expected: lines(&s.effects),
                got: lines(&got),
            });
        }
        Ok(())
    }

    /// The step's replica: the running one, or one restarted (from its
    /// snapshot or cold) or started for the first time.
    async fn replica(&mut self, step: usize, s: &GoldenStep) -> Result<&mut Worker, GoldenError> {
        let state = match (s.restart, self.replicas.remove(&s.replica)) {
            (Some(GoldenRestart::Snapshot), Some(mut old)) => Some(old.snapshot().await),
            (None, Some(old)) => {
                self.replicas.insert(s.replica, old);
                None
            }
            _ => None,
        };
        if !self.replicas.contains_key(&s.replica) {
            let worker = self.start(step, state).await?;
            self.replicas.insert(s.replica, worker);
        }
        Ok(self.replicas.get_mut(&s.replica).expect("present"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_diff_marks_missing_and_extra_lines() {
        assert_eq!(
            super::line_diff("a\nb\nc", "a\nx\nc\nd"),
            "  a\n- b\n+ x\n  c\n+ d"
        );
        assert_eq!(super::line_diff("", "a"), "+ a");
    }
}
