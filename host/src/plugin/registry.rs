//! Hot reload: a watched plugin directory of `<name>.wasm` + `<name>.toml`,
//! one [`PluginSlot`] per plugin holding the generation consumers should run.
//!
//! Reload protocol: file events are debounced (250 ms) and coalesced per
//! plugin (only the newest state of the files is loaded); plugins load one at
//! a time off the hot path (compilation on a blocking thread, with the
//! runtime's artifact cache); unchanged bytes and manifest are skipped; a new
//! generation is validated (type check, `describe`, the manifest's golden
//! file) before it is published; consumers switch at a batch boundary (see
//! [`super::LiveWorker`]) and report a generation that keeps failing in its
//! first batches, which rolls the slot back to the last good generation.
//! Deleting the `.wasm` removes the plugin: its consumers stop cleanly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use notify_debouncer_full::notify::RecursiveMode;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::manifest::Manifest;
use super::{HostServices, Plugin, Runtime, golden};

/// One published version of a plugin.
#[derive(Debug)]
pub struct Generation {
    /// Increasing per slot.
    pub number: u64,
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    /// Its manifest.
    pub manifest: Manifest,
    /// Hash of the component bytes and the manifest text.
    pub fingerprint: String,
}

/// The generation consumers of one plugin should run.
pub struct PluginSlot {
    name: String,
    current: ArcSwapOption<Generation>,
    last_good: Mutex<Option<Arc<Generation>>>,
    bad: Mutex<HashSet<String>>,
    changed: watch::Sender<u64>,
    next_number: Mutex<u64>,
    rollbacks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PluginSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot")
            .field("name", &self.name)
            .finish()
    }
}

impl PluginSlot {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(PluginSlot {
            name: name.to_string(),
            current: ArcSwapOption::empty(),
            last_good: Mutex::new(None),
            bad: Mutex::new(HashSet::new()),
            changed: watch::channel(0).0,
            next_number: Mutex::new(1),
            rollbacks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A slot serving one fixed plugin (no directory, no reloads).
    pub fn fixed(plugin: Arc<Plugin>, manifest: Manifest) -> Arc<Self> {
        let slot = PluginSlot::new(&plugin.name);
        slot.publish(plugin, manifest, String::new());
        slot
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The generation to run now; `None` when the plugin was removed.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current.load_full()
    }

    /// A receiver that changes whenever the current generation does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn publish(&self, plugin: Arc<Plugin>, manifest: Manifest, fingerprint: String) -> u64 {
        let number = {
            let mut n = self.next_number.lock().unwrap_or_else(|p| p.into_inner());
            let v = *n;
            *n += 1;
            v
        };
        if let Some(old) = self.current.load_full() {
            *self.last_good.lock().unwrap_or_else(|p| p.into_inner()) = Some(old);
        }
        self.current.store(Some(Arc::new(Generation {
            number,
            plugin,
            manifest,
            fingerprint,
        })));
        self.changed.send_modify(|v| *v += 1);
        number
    }

    fn remove(&self) {
        self.current.store(None);
        self.changed.send_modify(|v| *v += 1);
    }

    /// A consumer found generation `number` broken: mark it bad and roll
    /// back to the last good generation (if `number` is still current).
    pub fn report_bad(&self, number: u64, reason: &str) {
        let Some(current) = self.current.load_full() else {
            return;
        };
        if current.number != number {
            return;
        }
        self.bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(current.fingerprint.clone());
        let previous = self
            .last_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        metrics::counter!("mdp_plugin_reloads_total", "plugin" => self.name.clone(), "outcome" => "rolled_back")
            .increment(1);
        match previous {
            Some(prev) => {
                self.rollbacks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(plugin = %self.name, generation = number, back_to = prev.number, %reason, "new generation keeps failing; rolled back");
                self.current.store(Some(prev));
            }
            None => {
                tracing::error!(plugin = %self.name, generation = number, %reason, "generation keeps failing and there is nothing to roll back to");
                return;
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// How many times a generation was rolled back.
    pub fn rollbacks(&self) -> u64 {
        self.rollbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn is_bad(&self, fingerprint: &str) -> bool {
        self.bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(fingerprint)
    }
}

/// The plugins of a directory, kept up to date by a watcher.
pub struct Registry {
    runtime: Runtime,
    services: HostServices,
    dir: PathBuf,
    slots: Mutex<HashMap<String, Arc<PluginSlot>>>,
    changed: watch::Sender<u64>,
}

/// Outcome of loading one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Published as this generation.
    Published(u64),
    /// Bytes and manifest unchanged.
    Unchanged,
    /// The plugin's files are gone; the slot was emptied.
    Removed,
    /// Refused; the running generation keeps serving.
    Rejected(String),
}

fn plugin_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') {
        return None;
    }
    let (stem, ext) = file.rsplit_once('.')?;
    matches!(ext, "wasm" | "toml").then(|| stem.to_string())
}

impl Registry {
    /// A registry over `dir`, loading every plugin found there now. A
    /// runtime whose artifact cache is inside `dir` is refused.
    pub async fn open(
        runtime: Runtime,
        services: HostServices,
        dir: &Path,
    ) -> std::io::Result<Arc<Registry>> {
        if let Some(cache) = runtime.artifact_cache() {
            super::artifact_cache::refuse_inside(cache.dir(), dir)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let registry = Arc::new(Registry {
            runtime,
            services,
            dir: dir.to_path_buf(),
            slots: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        });
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = plugin_name(&entry?.path()) {
                names.insert(name);
            }
        }
        for name in names {
            registry.load(&name).await;
        }
        Ok(registry)
    }

    /// The slot of plugin `name`, if it was ever loaded.
    pub fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A receiver that changes whenever a plugin is published or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Names of the plugins currently serving.
    pub fn names(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.current().is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// (Re)load plugin `name` from the directory, validating it first.
    pub async fn load(&self, name: &str) -> LoadOutcome {
        let started = Instant::now();
        let outcome = self.try_load(name).await;
        let label = match &outcome {
            LoadOutcome::Published(_) => "published",
            LoadOutcome::Unchanged => "unchanged",
            LoadOutcome::Removed => "removed",
            LoadOutcome::Rejected(_) => "rejected",
        };
        metrics::counter!("mdp_plugin_reloads_total", "plugin" => name.to_string(), "outcome" => label).increment(1);
        if matches!(outcome, LoadOutcome::Published(_) | LoadOutcome::Removed) {
            self.changed.send_modify(|v| *v += 1);
        }
        match &outcome {
            LoadOutcome::Published(n) => tracing::info!(
                plugin = name,
                generation = n,
                ms = started.elapsed().as_millis() as u64,
                "plugin generation published"
            ),
            LoadOutcome::Rejected(reason) => {
                tracing::error!(plugin = name, file = %self.dir.join(format!("{name}.wasm")).display(), %reason, "plugin rejected; the running generation keeps serving")
            }
            LoadOutcome::Removed => tracing::info!(plugin = name, "plugin removed"),
            LoadOutcome::Unchanged => tracing::debug!(plugin = name, "plugin unchanged"),
        }
        outcome
    }

    async fn try_load(&self, name: &str) -> LoadOutcome {
        let wasm = self.dir.join(format!("{name}.wasm"));
        let toml = self.dir.join(format!("{name}.toml"));
        let slot = self.slot_or_new(name);
        if !wasm.exists() {
            if slot.current().is_some() {
                slot.remove();
                return LoadOutcome::Removed;
            }
            return if toml.exists() {
                LoadOutcome::Rejected(format!("{} has no {}", toml.display(), wasm.display()))
            } else {
                LoadOutcome::Unchanged
            };
        }
        let (manifest, bytes, fingerprint) = match read_plugin(name, &wasm, &toml) {
            Ok(read) => read,
            Err(reason) => return LoadOutcome::Rejected(reason),
        };
        if slot.current().is_some_and(|g| g.fingerprint == fingerprint) {
            return LoadOutcome::Unchanged;
        }
        if slot.is_bad(&fingerprint) {
            return LoadOutcome::Rejected("this exact version was rolled back before".into());
        }
        if let Err(reason) = self.run_golden(&manifest, &bytes, &wasm).await {
            return LoadOutcome::Rejected(reason);
        }
        let plugin = match Plugin::load(
            &self.runtime,
            bytes,
            manifest.load_options(),
            &self.services,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => return LoadOutcome::Rejected(format!("{}: {e}", wasm.display())),
        };
        LoadOutcome::Published(slot.publish(plugin, manifest, fingerprint))
    }

    /// The slot of plugin `name`, created empty when new.
    fn slot_or_new(&self, name: &str) -> Arc<PluginSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(name.to_string())
            .or_insert_with(|| PluginSlot::new(name))
            .clone()
    }

    /// Run the golden file the manifest names (if any) through the
    /// component `bytes` at `wasm`; the reason when it fails.
    async fn run_golden(
        &self,
        manifest: &Manifest,
        bytes: &[u8],
        wasm: &Path,
    ) -> Result<(), String> {
        let Some(golden_path) = manifest.golden_path() else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&golden_path)
            .map_err(|e| format!("golden {}: {e}", golden_path.display()))?;
        let file = mdp_sdk::wire::Golden::parse(&text)
            .map_err(|e| format!("golden {}: {e}", golden_path.display()))?;
        golden::run(
            &self.runtime,
            bytes.to_vec(),
            &file,
            manifest.load_options().limits,
        )
        .await
        .map_err(|e| match e {
            // The component itself is bad: name it, not the golden file.
            golden::GoldenError::Load(e) => format!("{}: {e}", wasm.display()),
            e => format!("golden {}: {e}", golden_path.display()),
        })
    }

    /// Watch the directory and reload plugins as their files change, until
    /// the returned handle is dropped. Loads run one at a time; a plugin that
    /// changes again while loading is loaded once more afterwards, at its
    /// newest state.
    pub fn watch(self: &Arc<Self>) -> Result<WatchHandle, String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut debouncer = notify_debouncer_full::new_debouncer(
            Duration::from_millis(250),
            None,
            move |result: notify_debouncer_full::DebounceEventResult| {
                if let Ok(events) = result {
                    // Reads (our own loads open the files) are not changes.
                    for event in events
                        .iter()
                        .filter(|e| !e.kind.is_access() && !e.kind.is_other())
                    {
                        for path in &event.paths {
                            if let Some(name) = plugin_name(path) {
                                let _ = tx.send(name);
                            }
                        }
                    }
                }
            },
        )
        .map_err(|e| format!("cannot watch {}: {e}", self.dir.display()))?;
        debouncer
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", self.dir.display()))?;
        let registry = self.clone();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut pending = BTreeSet::from([first]);
                while let Ok(more) = rx.try_recv() {
                    pending.insert(more);
                }
                for name in pending {
                    registry.load(&name).await;
                }
            }
        });
        Ok(WatchHandle {
            _debouncer: Box::new(debouncer),
            task,
        })
    }
}

/// Keeps a directory watch alive; dropping it stops watching.
pub struct WatchHandle {
    _debouncer: Box<dyn std::any::Any + Send>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read plugin `name`'s manifest (which must name it) and component, and
/// fingerprint both; the reason when they cannot be read.
fn read_plugin(
    name: &str,
    wasm: &Path,
    toml: &Path,
) -> Result<(Manifest, Vec<u8>, String), String> {
    let manifest = match Manifest::load(toml) {
        Ok(m) if m.name == name => m,
        Ok(m) => return Err(format!("{} names plugin `{}`", toml.display(), m.name)),
        Err(e) => return Err(e.to_string()),
    };
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
    let manifest_text = std::fs::read(toml).unwrap_or_default();
    let fingerprint = hex::encode(
        Sha256::new()
            .chain_update(&bytes)
            .chain_update(&manifest_text)
            .finalize(),
    );
    Ok((manifest, bytes, fingerprint))
}
