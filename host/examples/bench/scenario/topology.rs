//! The distributed topology of `deploy/compose.yaml` on this machine: every
//! `mdp` service (each replica) its own process with the service's command
//! and environment, hosts pointed at the bench's RabbitMQ and Redis, plus an
//! `mdp simulate` process as the market. Isolated from other scenarios: its
//! queues carry a fresh `MDP_QUEUE_PREFIX`, its caches are Redis databases
//! 12 (MDC) and 13 (WDC), flushed first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_yaml_ng::Value;

use super::pipeline::{SIM_AT, get_text, log_path, metric_sum, quiet_env, wait_http};
use super::{Ctx, Kill, free_port};

/// The shared key widget clients authenticate with (compose's `AUTH_API_KEY`).
pub const WIDGET_KEY: &str = "bench-widget-key";

/// Redis databases of the MDC and the WDC.
const MDC_DB: u32 = 12;
const WDC_DB: u32 = 13;

/// One role process.
pub struct Role {
    /// Service name, with `-a`, `-b` for replicas.
    pub name: String,
    /// Port of its `/ready` + `/metrics` (the widget server: its own port).
    pub port: u16,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The process.
    pub child: Kill,
}

/// The running topology.
pub struct Topology {
    /// The market (`mdp simulate`).
    pub sim: Kill,
    /// Base URL of the simulator (`/admin/stats`).
    pub sim_url: String,
    /// Every role, in compose order.
    pub roles: Vec<Role>,
    /// Port of the widget server.
    pub widget_port: u16,
}

/// A service of the compose file.
struct Service {
    name: String,
    command: Vec<String>,
    replicas: usize,
    env: BTreeMap<String, String>,
}

/// The `mdp` services of `deploy/compose.yaml` (merge keys applied).
fn compose_services() -> anyhow::Result<Vec<Service>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/compose.yaml");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut doc: Value = serde_yaml_ng::from_str(&text)?;
    doc.apply_merge()?;
    let services = doc["services"].as_mapping().context("no services")?;
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    Ok(services
        .iter()
        .filter(|(_, s)| s["image"].as_str() == Some("mdp:latest"))
        .map(|(name, s)| Service {
            name: name.as_str().unwrap_or_default().to_string(),
            command: s["command"]
                .as_sequence()
                .map(|c| c.iter().map(scalar).collect())
                .unwrap_or_default(),
            replicas: s["deploy"]["replicas"].as_u64().unwrap_or(1) as usize,
            env: s["environment"]
                .as_mapping()
                .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
                .unwrap_or_default(),
        })
        .collect())
}

/// `redis://host:port/` with database `db`.
fn redis_db(base: &str, db: u32) -> String {
    let trimmed = base.trim_end_matches('/');
    let root = match trimmed.rsplit_once('/') {
        Some((root, last)) if last.parse::<u32>().is_ok() => root,
        _ => trimmed,
    };
    format!("{root}/{db}")
}

/// Empty a Redis database.
async fn flush(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHDB").query_async::<()>(&mut con).await?;
    Ok(())
}

/// Settings of this machine that replace the compose file's hosts.
struct Local {
    amqp: String,
    redis: String,
    prefix: String,
    plugins: String,
    sim_port: u16,
    finlight_port: u16,
}

impl Local {
    /// The environment of one role, bound to `addr`.
    fn env(&self, service: &Service, addr: &str) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &service.env {
            let v = match k.as_str() {
                "RABBITMQ_URL" => self.amqp.clone(),
                "MDC_REDIS_URL" => redis_db(&self.redis, MDC_DB),
                "WDC_REDIS_URL" => redis_db(&self.redis, WDC_DB),
                "MDP_HEALTH_LISTEN" => addr.to_string(),
                "AUTH_API_KEY" => WIDGET_KEY.to_string(),
                _ if v.starts_with("${") => continue,
                _ => v.clone(),
            };
            env.insert(k.clone(), v);
        }
        let sim = format!("127.0.0.1:{}", self.sim_port);
        for (k, v) in [
            ("MDP_PLUGIN_DIR", self.plugins.clone()),
            ("MDP_QUEUE_PREFIX", self.prefix.clone()),
            ("MASSIVE_FEED_URL", format!("ws://{sim}")),
            ("MASSIVE_REST_URL", format!("http://{sim}")),
            (
                "FINLIGHT_WS_URL",
                format!("ws://127.0.0.1:{}", self.finlight_port),
            ),
            ("FINLIGHT_API_KEY", "simulated".into()),
        ] {
            env.insert(k.into(), v);
        }
        env.into_iter().collect()
    }

    /// A service's command on this machine: prefixed queues, the widget server on `addr`.
    fn args(&self, service: &Service, addr: &str) -> Vec<String> {
        let mut args = service.command.clone();
        for i in 1..args.len() {
            if args[i - 1] == "--queue" {
                args[i] = format!("{}{}", self.prefix, args[i]);
            }
            if args[0] == "serve" && args[i - 1] == "--listen" {
                args[i] = addr.to_string();
            }
        }
        args
    }
}

impl Topology {
    /// Start the simulator (`profile`) and every role; wait until all are ready.
    pub async fn start(ctx: &Ctx, profile: &str) -> anyhow::Result<Topology> {
        let local = Local {
            amqp: ctx.amqp()?.to_string(),
            redis: ctx.redis()?.to_string(),
            prefix: format!("bench-{}-{}-", std::process::id(), free_port()?),
            plugins: ctx.plugin_dir().display().to_string(),
            sim_port: free_port()?,
            finlight_port: free_port()?,
        };
        for db in [MDC_DB, WDC_DB] {
            flush(&redis_db(&local.redis, db))
                .await
                .context("flushing the bench's Redis db")?;
        }
        let sim = start_sim(ctx, &local, profile)?;
        let sim_url = format!("http://127.0.0.1:{}", local.sim_port);
        let http = reqwest::Client::new();
        let sim_log = log_path(&format!("sim-{profile}"));
        wait_http(
            &http,
            &format!("{sim_url}/admin/stats"),
            Duration::from_secs(30),
            &sim_log,
        )
        .await?;
        let mut roles = Vec::new();
        let mut widget_port = 0;
        for service in compose_services()? {
            for replica in 0..service.replicas {
                let name = match service.replicas {
                    1 => service.name.clone(),
                    _ => format!("{}-{}", service.name, (b'a' + replica as u8) as char),
                };
                let port = free_port()?;
                let addr = format!("127.0.0.1:{port}");
                if service.command.first().is_some_and(|c| c == "serve") {
                    widget_port = port;
                }
                let log = log_path(&format!("{name}-{profile}"));
                let mut cmd = Command::new(ctx.mdp()?);
                cmd.args(local.args(&service, &addr));
                quiet_env(&mut cmd);
                cmd.envs(local.env(&service, &addr));
                cmd.stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?);
                roles.push(Role {
                    name,
                    port,
                    log,
                    child: Kill::spawn(&mut cmd)?,
                });
            }
        }
        anyhow::ensure!(widget_port != 0, "compose runs no widget server");
        for r in &roles {
            let path = if r.port == widget_port {
                "/health"
            } else {
                "/ready"
            };
            let url = format!("http://127.0.0.1:{}{path}", r.port);
            wait_http(&http, &url, Duration::from_secs(90), &r.log)
                .await
                .with_context(|| format!("role {}", r.name))?;
        }
        Ok(Topology {
            sim,
            sim_url,
            roles,
            widget_port,
        })
    }

    /// Events the Massive listener has queued so far (`mdp_mdq_messages_total`).
    pub async fn events(&self, http: &reqwest::Client) -> anyhow::Result<f64> {
        let listener = self
            .roles
            .iter()
            .find(|r| r.name == "listen-massive")
            .context("no listen-massive role")?;
        let url = format!("http://127.0.0.1:{}/metrics", listener.port);
        Ok(metric_sum(
            &get_text(http, &url).await?,
            "mdp_mdq_messages_total",
        ))
    }

    /// Every process with its name: the simulator, then the roles.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out = vec![("simulator".to_string(), self.sim.pid())];
        out.extend(self.roles.iter().map(|r| (r.name.clone(), r.child.pid())));
        out
    }
}

/// `mdp simulate` on the local ports, pinned to [`SIM_AT`].
fn start_sim(ctx: &Ctx, local: &Local, profile: &str) -> anyhow::Result<Kill> {
    let log = log_path(&format!("sim-{profile}"));
    let mut cmd = Command::new(ctx.mdp()?);
    cmd.args([
        "simulate",
        "--listen",
        &format!("127.0.0.1:{}", local.sim_port),
    ])
    .args([
        "--finlight-listen",
        &format!("127.0.0.1:{}", local.finlight_port),
    ])
    .args(["--profile", profile, "--at", SIM_AT]);
    quiet_env(&mut cmd);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    Kill::spawn(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_get_the_bench_database() {
        assert_eq!(
            redis_db("redis://127.0.0.1:6379/", 12),
            "redis://127.0.0.1:6379/12"
        );
        assert_eq!(
            redis_db("redis://127.0.0.1:6379/0", 13),
            "redis://127.0.0.1:6379/13"
        );
        assert_eq!(
            redis_db("redis://127.0.0.1:6379", 12),
            "redis://127.0.0.1:6379/12"
        );
    }
}
