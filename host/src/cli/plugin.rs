//! `mdp plugin ...`: run a plugin over events, inspect it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use mdp_sdk::wire::GoldenReference;
use serde::Deserialize;

use super::author::Project;
use crate::event::massive;
use crate::plugin::golden::seed_writes;
use crate::plugin::{
    Capabilities, FixedClock, HostServices, Limits, LoadOptions, Plugin, Runtime, RuntimeConfig,
    StoreReference, WIT_VERSION, Worker, convert, effects,
};
use crate::store::{EmbeddedStore, Store};
use crate::time::parse_at;

/// Plugin author tools.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a plugin over events and print its effects as JSON lines, or run a
    /// project's (or `--golden`) golden file through the real runtime.
    Test(TestArgs),
    /// Print what a plugin says about itself and the WIT version it targets.
    Inspect(InspectArgs),
    /// Create a working analyzer project (source, manifest, golden test, WIT).
    New(NewArgs),
    /// Write the WIT package this host implements.
    Wit(WitArgs),
    /// Build a project's component with its language's toolchain.
    Build(BuildArgs),
    /// Copy a project's component and manifest into a plugin directory atomically.
    Publish(PublishArgs),
}

/// `mdp plugin wit`.
#[derive(Debug, clap::Args)]
pub struct WitArgs {
    /// Folder to write the `.wit` files into.
    #[arg(long, default_value = "wit")]
    pub out: PathBuf,
}

/// `mdp plugin build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Rust: cargo's dev profile instead of `--release` (faster to compile).
    #[arg(long)]
    pub debug: bool,
}

/// `mdp plugin publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The project folder (built with `mdp plugin build`).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The plugin directory of a running (or future) mdp.
    #[arg(long)]
    pub to: PathBuf,
}

/// `mdp plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Plugin name (lowercase, digits, `-`).
    pub name: String,
    /// Language.
    #[arg(long, value_enum, default_value_t = crate::plugin::scaffold::Lang::Rust)]
    pub lang: crate::plugin::scaffold::Lang,
    /// Parent folder of the new project.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Rust: depend on the mdp-sdk crate at this path instead of a copy
    /// vendored into the project.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

impl clap::ValueEnum for crate::plugin::scaffold::Lang {
    fn value_variants<'a>() -> &'a [Self] {
        use crate::plugin::scaffold::Lang;
        &[Lang::Rust, Lang::Python, Lang::Js]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use crate::plugin::scaffold::Lang;
        use clap::builder::PossibleValue;
        Some(match self {
            Lang::Rust => PossibleValue::new("rust").help("Rust, with the `mdp-sdk` crate"),
            Lang::Python => PossibleValue::new("python").help("Python, built with componentize-py"),
            Lang::Js => PossibleValue::new("js").help("JavaScript, built with componentize-js"),
        })
    }
}

/// `mdp plugin test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plugin component (`.wasm`), or a project folder: its built
    /// component runs its manifest's golden file.
    pub plugin: PathBuf,
    /// Events, one JSON object per line: Massive short-key JSON (`ev`) or the
    /// seed's queue JSON (`event_type`); a line may also be an array of them.
    #[arg(long, conflicts_with = "golden")]
    pub events: Option<PathBuf>,
    /// A golden file to run the component through (exit 1 with a diff on a mismatch).
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Config passed to `init`, `key=value` (repeatable).
    #[arg(long = "config", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// Host clock: RFC 3339 (`2026-03-09T09:30:00-04:00`) or Unix milliseconds.
    #[arg(long)]
    pub at: Option<String>,
    /// Fixture seeding the embedded store: `{"store": {key: json-text},
    /// "reference": {"avg_volumes": {...}, "free_floats": {...},
    /// "snapshots": {...}, "market": "open"}}`.
    #[arg(long)]
    pub fixture: Option<PathBuf>,
    /// Events per batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Memory limit, MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: usize,
    /// Per-call deadline base, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub deadline_ms: u64,
}

/// `mdp plugin inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The plugin component (`.wasm`).
    pub plugin: PathBuf,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default)]
    store: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    reference: GoldenReference,
}

/// Read an events file into queue-JSON texts, converting Massive short keys.
fn read_events(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let items = match value {
            serde_json::Value::Array(items) => items,
            v => vec![v],
        };
        for item in items {
            let serde_json::Value::Object(obj) = item else {
                bail!(
                    "{}:{}: an event must be a JSON object",
                    path.display(),
                    n + 1
                );
            };
            if obj.contains_key("ev") && !obj.contains_key("event_type") {
                out.push(serde_json::Value::Object(massive::to_queue_json(&obj)).to_string());
            } else {
                out.push(serde_json::Value::Object(obj).to_string());
            }
        }
    }
    Ok(out)
}

async fn load(path: &Path, limits: Limits, services: &HostServices) -> anyhow::Result<Arc<Plugin>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let options = LoadOptions {
        name: None,
        limits,
        capabilities: Capabilities::unrestricted(),
        ..LoadOptions::default()
    };
    Plugin::load(&runtime, bytes, options, services)
        .await
        .with_context(|| format!("{}", path.display()))
}

fn offline_services(now_us: u64) -> (Arc<dyn Store>, FixedClock, HostServices) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let clock = FixedClock::new(now_us);
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store.clone())),
        clock: Arc::new(clock.clone()),
    };
    (store, clock, services)
}

/// Run `golden` through `wasm` under `limits`: exit 0, or 1 with the reason
/// (a diff on a mismatch).
async fn test_golden(wasm: &Path, golden: &Path, limits: Limits) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(golden)
        .with_context(|| format!("cannot read {}", golden.display()))?;
    let file = mdp_sdk::wire::Golden::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", golden.display()))?;
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    match crate::plugin::golden::run(&runtime, bytes, &file, limits).await {
        Ok(()) => {
            println!(
                "ok: {} passes {} ({} steps)",
                wasm.display(),
                golden.display(),
                file.steps.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED: {} on {}: {e}", wasm.display(), golden.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    if args.plugin.is_dir() {
        let project = Project::open(&args.plugin)?;
        let Some(golden) = args.golden.clone().or(project.manifest.golden_path()) else {
            bail!(
                "{}: the manifest names no golden file (set `golden = ...` or pass --golden)",
                project.dir.display()
            );
        };
        let limits = project.manifest.load_options().limits;
        return test_golden(&project.built_component()?, &golden, limits).await;
    }
    if let Some(golden) = &args.golden {
        return test_golden(&args.plugin, golden, Limits::default()).await;
    }
    let Some(events) = &args.events else {
        bail!("pass --events FILE or --golden FILE (or a project folder instead of a .wasm)");
    };
    let now_us = match &args.at {
        Some(at) => parse_at(at)?,
        None => crate::plugin::Clock::now_us(&crate::plugin::SystemClock),
    };
    let (store, _clock, services) = offline_services(now_us);
    if let Some(path) = &args.fixture {
        seed_fixture(&store, path).await?;
    }
    let texts = read_events(events)?;
    let limits = Limits {
        memory_bytes: args.memory_mib << 20,
        deadline_base: std::time::Duration::from_millis(args.deadline_ms),
        ..Limits::default()
    };
    let plugin = load(&args.plugin, limits, &services).await?;
    let mut worker = Worker::new(plugin.clone(), services, args.config.clone());
    worker
        .start()
        .await
        .with_context(|| format!("{}: init", args.plugin.display()))?;
    let run = run_events(&mut worker, &store, &texts, args.batch.max(1)).await?;
    eprintln!(
        "{}: {} events, {} effects ({} rejects), counters {:?}",
        plugin.name,
        texts.len(),
        run.effects,
        run.rejects,
        worker.counters()
    );
    if run.faults.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &run.faults {
            eprintln!("mdp: {}: {f}", args.plugin.display());
        }
        Ok(ExitCode::from(2))
    }
}

/// Load a `--fixture` file's store and reference data into `store`.
async fn seed_fixture(store: &Arc<dyn Store>, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let fixture: Fixture =
        serde_json::from_str(&text).with_context(|| format!("fixture {}", path.display()))?;
    store
        .apply(&seed_writes(&fixture.store, &fixture.reference), false)
        .await?;
    Ok(())
}

/// What `mdp plugin test --events` saw: effects, rejects among them, faults.
struct EventsRun {
    effects: usize,
    rejects: usize,
    faults: Vec<crate::plugin::CallFault>,
}

/// Run `texts` through `worker` in batches of `batch`, apply the effects to
/// `store` and print each as a JSON line on stdout.
async fn run_events(
    worker: &mut Worker,
    store: &Arc<dyn Store>,
    texts: &[String],
    batch: usize,
) -> anyhow::Result<EventsRun> {
    use std::io::Write as _;
    let mut run = EventsRun {
        effects: 0,
        rejects: 0,
        faults: Vec::new(),
    };
    let stdout = std::io::stdout();
    for chunk in texts.chunks(batch) {
        let events = chunk
            .iter()
            .map(|t| convert::decode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let shared: Vec<Arc<str>> = chunk.iter().map(effects::InputText::shared).collect();
        let out = worker.analyze_texts(&events, &shared).await?;
        let resolved = effects::resolve(&out.effects, chunk, &Capabilities::unrestricted());
        store.apply(&resolved.writes, true).await?;
        let mut lock = stdout.lock();
        for e in &out.effects {
            let record = effects::record(e, chunk);
            run.effects += 1;
            if matches!(record, mdp_sdk::wire::EffectRecord::Reject { .. }) {
                run.rejects += 1;
            }
            writeln!(lock, "{}", serde_json::to_string(&record)?)?;
        }
        run.faults.extend(out.faults);
    }
    Ok(run)
}

async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.plugin)
        .with_context(|| format!("cannot read {}", args.plugin.display()))?;
    let (_store, _clock, services) = offline_services(0);
    let plugin = load(&args.plugin, Limits::default(), &services).await?;
    let report = serde_json::json!({
        "file": args.plugin.display().to_string(),
        "size_bytes": bytes.len(),
        "sha256": plugin.hash,
        "wit": WIT_VERSION,
        "describe": plugin.info,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Run a `mdp plugin` subcommand.
pub async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Test(args) => test(args).await,
        PluginCommand::Inspect(args) => inspect(args).await,
        PluginCommand::New(args) => {
            let sdk = match &args.sdk {
                Some(p) => Some(
                    std::fs::canonicalize(p)
                        .with_context(|| format!("SDK not found at {}", p.display()))?,
                ),
                None => None,
            };
            let root = crate::plugin::scaffold::scaffold(
                &args.name,
                args.lang,
                &args.dir,
                sdk.as_deref(),
            )?;
            println!("created {}", root.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Wit(args) => {
            crate::plugin::embedded::write_all(&args.out, crate::plugin::embedded::WIT)
                .with_context(|| format!("write {}", args.out.display()))?;
            println!("wrote {WIT_VERSION} to {}", args.out.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build(args) => {
            let project = Project::open(&args.dir)?;
            let wasm = project.build(!args.debug)?;
            println!("built {}", wasm.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Publish(args) => {
            let project = Project::open(&args.dir)?;
            let to = project.publish(&args.to)?;
            println!("published {}", to.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
