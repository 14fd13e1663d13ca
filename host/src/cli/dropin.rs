//! `mdp up`'s drop-in plugins: a plugin in the plugin directory that no
//! built-in role runs, and whose manifest consumes store channels or patterns
//! (`quote:*`), runs as a scanner on them — whether it was there at start or
//! published later (hot reload). Queue consumers are chosen at start only.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::plugin::{HostServices, LiveWorker, Registry};
use crate::scan::{Scanner, ScannerConfig};
use crate::store::{Store, Topic};

/// Is a manifest `consumes` entry a store channel or pattern (not a queue)?
pub fn is_channel(consumes: &str) -> bool {
    consumes.contains(':') || consumes.contains('*')
}

/// Run drop-in plugins until `shutdown`; `assigned` are the plugins the
/// built-in roles already run.
pub fn spawn(
    registry: Arc<Registry>,
    services: HostServices,
    store: Arc<dyn Store>,
    assigned: BTreeSet<String>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut changes = registry.subscribe();
        let mut running = BTreeSet::new();
        let mut scanners = JoinSet::new();
        loop {
            changes.borrow_and_update();
            let serving = registry.names();
            running.retain(|n| serving.contains(n));
            for name in serving {
                if assigned.contains(&name) || running.contains(&name) {
                    continue;
                }
                let Some(slot) = registry.slot(&name) else {
                    continue;
                };
                let Some(generation) = slot.current() else {
                    continue;
                };
                let consumes = &generation.manifest.consumes;
                if !consumes.iter().all(|c| is_channel(c)) {
                    tracing::info!(plugin = %name, ?consumes, "drop-in plugin consumes queues: not run (queue consumers are chosen at start)");
                    running.insert(name);
                    continue;
                }
                let mut worker = LiveWorker::new(slot, services.clone())?;
                if let Err(e) = worker.start().await {
                    tracing::error!(plugin = %name, error = %e, "drop-in plugin failed to start");
                    continue;
                }
                let config = ScannerConfig {
                    topics: consumes.iter().map(|t| Topic::parse(t)).collect(),
                    ..ScannerConfig::default()
                };
                tracing::info!(plugin = %name, ?consumes, "running drop-in plugin as a scanner");
                let mut scanner = Scanner::new(config, store.clone(), worker);
                let stop = shutdown.clone();
                scanners.spawn(async move { scanner.run(stop).await.map(|_| ()) });
                running.insert(name);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        while let Some(done) = scanners.join_next().await {
            done.context("drop-in scanner task")??;
        }
        Ok(())
    })
}
