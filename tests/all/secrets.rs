//! Secrets never leak: every role of `deploy/compose.yaml` runs as its
//! own `mdp` process, with the simulators, with every secret set to a
//! distinctive value — a RabbitMQ user and a Redis ACL user with passwords
//! of their own, the Massive and Finlight API keys (the simulators demand
//! them), the listeners' admin token, the widget key, JWT secret and
//! metrics token. Data flows; widget clients authenticate with the key,
//! with a signed token and with a wrong key; the admin API is called with
//! the right and a wrong token; roles are started with wrong passwords and
//! fail. Then every log line (stdout and stderr), every `/metrics`,
//! `/status`, `/health`, `/ready` body, `mdp config` of every role and the
//! `--help` of every subcommand (secrets in the environment and in a config
//! file) is searched for each secret value, and none is found.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const RABBIT_PASSWORD: &str = "rabbitPw-Zq8vK3";
const REDIS_PASSWORD: &str = "redisPw-Wm5tJ7";
const MASSIVE_KEY: &str = "massiveKey-Hx4pR9";
const FINLIGHT_KEY: &str = "finlightKey-Bn6yT2";
const ADMIN_TOKEN: &str = "adminToken-Qc3nV8";
const WIDGET_KEY: &str = "widgetKey-Lr7sD4";
const JWT_SECRET: &str = "jwtSecret-Pf2gX6";
const METRICS_TOKEN: &str = "metricsToken-Ya9eM1";
/// Passwords of the runs that must fail to connect.
const WRONG_RABBIT_PASSWORD: &str = "wrongRabbitPw-Ek5uC3";
const WRONG_REDIS_PASSWORD: &str = "wrongRedisPw-Tj8wN5";

/// Every secret, with the name a leak is reported under.
const SECRETS: [(&str, &str); 10] = [
    ("RabbitMQ password", RABBIT_PASSWORD),
    ("Redis password", REDIS_PASSWORD),
    ("MASSIVE_API_KEY / MDP_SIM_API_KEY", MASSIVE_KEY),
    ("FINLIGHT_API_KEY", FINLIGHT_KEY),
    ("MDP_ADMIN_TOKEN", ADMIN_TOKEN),
    ("AUTH_API_KEY", WIDGET_KEY),
    ("MDP_JWT_SECRET", JWT_SECRET),
    ("MDP_METRICS_TOKEN", METRICS_TOKEN),
    ("wrong RabbitMQ password", WRONG_RABBIT_PASSWORD),
    ("wrong Redis password", WRONG_REDIS_PASSWORD),
];

/// Variables the test servers' environment or the developer's may hold
/// that would change what `mdp` reads.
const CLEARED: [&str; 5] = [
    "MDP_CONFIG",
    "POLYGON_API_KEY",
    "MASSIVE_API_KEY_FILE",
    "RUST_LOG",
    "MDP_LOG_FORMAT",
];

/// A RabbitMQ user and vhost and a Redis ACL user of this test, with the
/// secret passwords; removed on drop.
struct Accounts {
    user: String,
    vhost: String,
    amqp_port: u16,
    redis_port: u16,
}

/// Run rabbitmqctl against the test server; whether it succeeded (with what it said).
fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let node = std::env::var("RABBITMQ_NODENAME").expect(
        "RABBITMQ_NODENAME is not set: run the tests with scripts/test (or source \
         scripts/test-servers.sh; start_test_servers)",
    );
    let ctl = Path::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
    let ctl = if ctl.exists() {
        ctl
    } else {
        Path::new("rabbitmqctl")
    };
    let out = Command::new(ctl)
        .args(["-n", &node])
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Run redis-cli against the test server; whether it answered `expected`.
fn redis_cli(port: u16, args: &[&str], expected: &str) -> Result<(), String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    let said = String::from_utf8_lossy(&out.stdout);
    match out.status.success() && said.trim() == expected {
        true => Ok(()),
        false => Err(format!("redis-cli {args:?}: {said}")),
    }
}

impl Accounts {
    fn create() -> Accounts {
        let user = support::unique("mdp-secrets");
        let accounts = Accounts {
            vhost: user.clone(),
            user,
            amqp_port: support::url_port(&support::amqp_url()),
            redis_port: support::url_port(&support::redis_url()),
        };
        let (user, vhost) = (&accounts.user, &accounts.vhost);
        let password = format!(">{REDIS_PASSWORD}");
        let created = rabbitmqctl(&["add_vhost", vhost])
            .and_then(|()| rabbitmqctl(&["add_user", user, RABBIT_PASSWORD]))
            .and_then(|()| rabbitmqctl(&["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]))
            .and_then(|()| {
                redis_cli(
                    accounts.redis_port,
                    &["ACL", "SETUSER", user, "on", &password, "~*", "&*", "+@all"],
                    "OK",
                )
            });
        created.unwrap_or_else(|e| panic!("{e}"));
        accounts
    }

    fn amqp_url(&self, password: &str) -> String {
        format!(
            "amqp://{}:{password}@127.0.0.1:{}/{}",
            self.user, self.amqp_port, self.vhost
        )
    }

    fn redis_url(&self, password: &str, db: u8) -> String {
        format!(
            "redis://{}:{password}@127.0.0.1:{}/{db}",
            self.user, self.redis_port
        )
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        // Best effort: a failed cleanup must not turn a test failure into an abort.
        let _ = rabbitmqctl(&["delete_user", &self.user]);
        let _ = rabbitmqctl(&["delete_vhost", &self.vhost]);
        let _ = redis_cli(self.redis_port, &["ACL", "DELUSER", &self.user], "1");
    }
}

/// An `mdp` process whose stdout and stderr go to one log file; killed on drop.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Its health (or, for the widget server, its own) port.
    port: u16,
    /// Its readiness route.
    ready_path: &'static str,
    /// Its admin API port (listeners).
    admin: Option<u16>,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, args: &[String], env: &[(String, String)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = mdp(args, env)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            port: 0,
            ready_path: "/ready",
            admin: None,
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// SIGTERM, then wait up to `limit` for a clean exit (SIGKILL after).
    fn stop(&mut self, limit: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().unwrap().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mdp <args>` with `env` (and none of [`CLEARED`]).
fn mdp(args: &[String], env: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mdp"));
    for var in CLEARED {
        c.env_remove(var);
    }
    c.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null());
    c
}

/// Everything the run showed, as `(where, text)`.
#[derive(Default)]
struct Shown(Vec<(String, String)>);

impl Shown {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    fn output(&mut self, place: &str, out: &Output) {
        self.add(
            format!("{place} (stdout)"),
            String::from_utf8_lossy(&out.stdout),
        );
        self.add(
            format!("{place} (stderr)"),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    /// `(where, which secret, the line)` of every secret shown.
    fn leaks(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (place, text) in &self.0 {
            for (name, value) in SECRETS {
                for line in text.lines().filter(|l| l.contains(value)) {
                    let line: String = line.chars().take(300).collect();
                    found.push(format!("{place}: {name} in `{line}`"));
                }
            }
        }
        found
    }
}

/// Every subcommand path of the CLI (`[]`, `["listen"]`, `["listen", "massive"]`, ...).
fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &<mdp::cli::Cli as clap::CommandFactory>::command(),
        Vec::new(),
        &mut out,
    );
    out
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn get(url: &str, bearer: Option<&str>) -> Option<String> {
    let mut req = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(3));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.ok()?;
    let code = resp.status().as_u16();
    Some(format!("{code} {}", resp.text().await.ok()?))
}

/// Authenticate a widget client with `auth`; the status it is answered.
async fn widget_auth(port: u16, auth: serde_json::Value) -> String {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("widget server accepts WebSocket clients");
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    let sub = serde_json::json!({"action": "subscribe", "feed": "quote:*"});
    let _ = ws.send(Message::Text(sub.to_string().into())).await;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    match first {
        Ok(Some(Ok(Message::Text(t)))) => {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
            v["status"].as_str().unwrap_or_default().to_string()
        }
        other => panic!("no answer to auth: {other:?}"),
    }
}

/// The sum of `name` over every role named `prefix*`.
async fn metric(roles: &[Proc], prefix: &str, name: &str) -> f64 {
    let mut sum = 0.0;
    for r in roles.iter().filter(|r| r.name.starts_with(prefix)) {
        let text = get(&format!("http://127.0.0.1:{}/metrics", r.port), None)
            .await
            .unwrap_or_default();
        sum += support::metric_sum(&text, name, &[]);
    }
    sum
}

/// Panic if any of `procs` exited, with its log's tail.
fn all_alive(procs: &mut [Proc]) {
    for p in procs {
        if let Some(status) = p.exited() {
            panic!("{} exited ({status}):\n{}", p.name, p.tail());
        }
    }
}

/// Panic: `what` did not happen in time (every log's tail shown).
fn timed_out(procs: &[Proc], what: &str) -> ! {
    let tails: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {}\n{}", p.name, p.tail()))
        .collect();
    panic!("{what}: not in time\n{}", tails.join("\n"))
}

/// Whether every role answers its readiness route with 200.
async fn all_ready(roles: &[Proc]) -> bool {
    for r in roles {
        let url = format!("http://127.0.0.1:{}{}", r.port, r.ready_path);
        if !get(&url, None).await.is_some_and(|s| s.starts_with("200")) {
            return false;
        }
    }
    true
}

/// Whether market data was confirmed and processed and news was published.
async fn flowing(roles: &[Proc]) -> bool {
    metric(roles, "listen-massive", "mdp_mdq_messages_total").await > 0.0
        && metric(roles, "listen-finlight", "mdp_fdq_messages_total").await > 0.0
        && metric(roles, "process", "mdp_processed_total").await > 0.0
}

/// A config file holding every secret, for `--help` and `mdp config`.
fn config_file(dir: &Path, accounts: &Accounts) -> PathBuf {
    let (amqp, mdc, wdc) = (
        accounts.amqp_url(RABBIT_PASSWORD),
        accounts.redis_url(REDIS_PASSWORD, 2),
        accounts.redis_url(REDIS_PASSWORD, 3),
    );
    let host = format!(
        "queue-url = \"{amqp}\"\nstore-url = \"{wdc}\"\nmdc-url = \"{mdc}\"\nmassive-api-key = \"{MASSIVE_KEY}\"\n"
    );
    let widgets = format!(
        "auth-api-key = \"{WIDGET_KEY}\"\njwt-secret = \"{JWT_SECRET}\"\nmetrics-token = \"{METRICS_TOKEN}\"\n"
    );
    let listener = |key: &str| {
        format!("queue-url = \"{amqp}\"\napi-key = \"{key}\"\nadmin-token = \"{ADMIN_TOKEN}\"\n")
    };
    let text = format!(
        "[process]\n{host}\n[scan]\n{host}\n[serve]\nstore-url = \"{wdc}\"\n{widgets}\n[up]\n{widgets}\n\
         [simulate]\napi-key = \"{MASSIVE_KEY}\"\n[widget-token]\njwt-secret = \"{JWT_SECRET}\"\n\
         [listen.massive]\n{}\n[listen.finlight]\n{}",
        listener(MASSIVE_KEY),
        listener(FINLIGHT_KEY)
    );
    let path = dir.join("mdp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_shown() {
    let plugins = support::plugin_wasm("leaderboard")
        .parent()
        .unwrap()
        .to_path_buf();
    let accounts = Accounts::create();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut shown = Shown::default();

    // The markets: one simulator per upstream, each demanding its key.
    let (massive_port, finlight_port) = (support::free_port(), support::free_port());
    let mut sims = Vec::new();
    for (name, key, massive, finlight) in [
        (
            "simulate-massive",
            MASSIVE_KEY,
            massive_port,
            support::free_port(),
        ),
        (
            "simulate-finlight",
            FINLIGHT_KEY,
            support::free_port(),
            finlight_port,
        ),
    ] {
        let args = strings(&[
            "simulate",
            "--listen",
            &format!("127.0.0.1:{massive}"),
            "--finlight-listen",
            &format!("127.0.0.1:{finlight}"),
            "--symbols",
            "20",
            "--rate",
            "100",
            "--news-per-min",
            "60",
            "--at",
            "2026-03-09T10:00:00-04:00",
        ]);
        let env = vec![
            ("MDP_SIM_API_KEY".to_string(), key.to_string()),
            ("RUST_LOG".to_string(), "info,mdp=debug".to_string()),
        ];
        sims.push(Proc::spawn(dir, name, &args, &env));
    }

    // Every secret in every role's environment.
    let env: Vec<(String, String)> = [
        ("RABBITMQ_URL", accounts.amqp_url(RABBIT_PASSWORD)),
        ("MDC_REDIS_URL", accounts.redis_url(REDIS_PASSWORD, 2)),
        ("WDC_REDIS_URL", accounts.redis_url(REDIS_PASSWORD, 3)),
        ("MASSIVE_API_KEY", MASSIVE_KEY.into()),
        ("FINLIGHT_API_KEY", FINLIGHT_KEY.into()),
        ("MDP_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("AUTH_ENABLED", "true".into()),
        ("AUTH_API_KEY", WIDGET_KEY.into()),
        ("MDP_JWT_SECRET", JWT_SECRET.into()),
        ("MDP_METRICS_TOKEN", METRICS_TOKEN.into()),
        ("MDP_SIM_API_KEY", MASSIVE_KEY.into()),
        ("MASSIVE_FEED_URL", format!("ws://127.0.0.1:{massive_port}")),
        (
            "MASSIVE_REST_URL",
            format!("http://127.0.0.1:{massive_port}"),
        ),
        ("FINLIGHT_WS_URL", format!("ws://127.0.0.1:{finlight_port}")),
        ("MDP_PLUGIN_DIR", plugins.display().to_string()),
        ("MDP_PLUGIN_CACHE", dir.join("cache").display().to_string()),
        ("MARKET_DATA_MESSAGE_TTL", "600000".into()),
        ("MDP_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info,mdp=debug".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // One process per service of the compose file.
    let mut roles = Vec::new();
    let mut role_commands = Vec::new();
    for service in support::deploy::compose_services(WIDGET_KEY) {
        let port = support::free_port();
        let serve = service.command[0] == "serve";
        let listener = service.command[0] == "listen";
        let admin = listener.then(support::free_port);
        let mut role_env = env.clone();
        role_env.push(("MDP_HEALTH_LISTEN".into(), format!("127.0.0.1:{port}")));
        if let Some(a) = admin {
            role_env.push(("MDP_LISTENER_ADMIN".into(), format!("127.0.0.1:{a}")));
        }
        let args: Vec<String> = service
            .command
            .iter()
            .map(|a| match serve && a.contains(":8080") {
                true => format!("127.0.0.1:{port}"),
                false => a.clone(),
            })
            .collect();
        let mut role = Proc::spawn(dir, &service.name, &args, &role_env);
        role.port = port;
        role.admin = admin;
        if serve {
            role.ready_path = "/health";
        }
        role_commands.push(service.command.clone());
        roles.push(role);
    }
    let port_of = |name: &str| roles.iter().find(|r| r.name == name).unwrap().port;
    let serve_port = port_of("serve");

    let deadline = Instant::now() + Duration::from_secs(180);
    while !all_ready(&roles).await {
        all_alive(&mut roles);
        all_alive(&mut sims);
        if Instant::now() > deadline {
            timed_out(&roles, "every role ready");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Widget clients: the key, a signed token, a wrong key.
    let token_args = strings(&["widget-token", "--feed", "quote:*"]);
    let token = mdp(&token_args, &env).output().unwrap();
    shown.output("mdp widget-token", &token);
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    for (auth, expected) in [
        (
            serde_json::json!({"action": "auth", "api_key": WIDGET_KEY}),
            "authorized",
        ),
        (
            serde_json::json!({"action": "auth", "token": token}),
            "authorized",
        ),
        (
            serde_json::json!({"action": "auth", "api_key": "not-the-key"}),
            "invalid key",
        ),
    ] {
        assert_eq!(widget_auth(serve_port, auth).await, expected);
    }

    // The listeners' admin API, with a wrong token and the right one.
    let http = reqwest::Client::new();
    for r in roles.iter().filter(|r| r.admin.is_some()) {
        let base = format!("http://127.0.0.1:{}", r.admin.unwrap());
        for token in ["not-the-token", ADMIN_TOKEN] {
            let resp = http
                .post(format!("{base}/filter"))
                .bearer_auth(token)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let code = resp.status().as_u16();
            shown.add(
                format!("{} POST /filter", r.name),
                format!("{code} {}", resp.text().await.unwrap_or_default()),
            );
        }
    }

    // Data flows end to end.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !flowing(&roles).await {
        all_alive(&mut roles);
        if Instant::now() > deadline {
            timed_out(&roles, "market data and news processed");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every endpoint of every role.
    for r in &roles {
        let ports = std::iter::once(r.port).chain(r.admin);
        for port in ports {
            for path in ["/metrics", "/status", "/health", "/ready", "/", "/filter"] {
                let url = format!("http://127.0.0.1:{port}{path}");
                let bearer = (r.name == "serve").then_some(METRICS_TOKEN);
                if let Some(body) = get(&url, bearer).await {
                    shown.add(format!("{} GET {path} (port {port})", r.name), body);
                }
            }
        }
    }
    let metrics = get(
        &format!("http://127.0.0.1:{serve_port}/metrics"),
        Some(METRICS_TOKEN),
    )
    .await
    .unwrap();
    assert!(
        metrics.starts_with("200"),
        "the metrics token opens /metrics"
    );
    for r in roles.iter_mut().chain(sims.iter_mut()) {
        r.stop(Duration::from_secs(15));
    }

    // Wrong passwords: the roles refuse to start, saying why.
    let wrong_rabbit = accounts.amqp_url(WRONG_RABBIT_PASSWORD);
    let wrong_redis = accounts.redis_url(WRONG_REDIS_PASSWORD, 3);
    let mut failing = Vec::new();
    for (name, args, var, url) in [
        (
            "process-wrong-rabbit",
            strings(&["process", "--queue", "trades", "--plugin", "top-trades"]),
            "RABBITMQ_URL",
            &wrong_rabbit,
        ),
        (
            "process-wrong-redis",
            strings(&["process", "--queue", "trades", "--plugin", "top-trades"]),
            "WDC_REDIS_URL",
            &wrong_redis,
        ),
        (
            "listen-wrong-rabbit",
            strings(&["listen", "massive"]),
            "RABBITMQ_URL",
            &wrong_rabbit,
        ),
        (
            "serve-wrong-redis",
            strings(&["serve", "--listen", "127.0.0.1:0"]),
            "WDC_REDIS_URL",
            &wrong_redis,
        ),
    ] {
        let mut role_env = env.clone();
        role_env.push((var.to_string(), url.clone()));
        failing.push(Proc::spawn(dir, name, &args, &role_env));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && failing.iter_mut().any(|p| p.exited().is_none()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for p in &mut failing {
        match p.exited() {
            Some(status) => assert!(!status.success(), "{} started:\n{}", p.name, p.tail()),
            None => panic!("{} still running:\n{}", p.name, p.tail()),
        }
    }

    // Every log.
    for p in roles.iter().chain(&sims).chain(&failing) {
        let log = std::fs::read_to_string(&p.log).unwrap();
        assert!(!log.trim().is_empty(), "{} logged nothing", p.name);
        shown.add(format!("{} log", p.name), log);
    }

    // `mdp config` of every role and `--help` of every subcommand, with the
    // secrets in the environment, and then in a config file alone.
    let file = config_file(dir, &accounts);
    let with_file = |args: &[String]| {
        let mut a = strings(&["--config-file", &file.display().to_string()]);
        a.extend_from_slice(args);
        a
    };
    role_commands.push(strings(&["simulate"]));
    role_commands.push(strings(&["widget-token"]));
    for command in &role_commands {
        let mut args = strings(&["config"]);
        args.extend_from_slice(command);
        for (args, env) in [(args.clone(), &env[..]), (with_file(&args), &[][..])] {
            let out = mdp(&args, env).output().unwrap();
            assert!(
                out.status.success(),
                "mdp {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            shown.output(&format!("mdp {}", args.join(" ")), &out);
        }
    }
    for path in subcommand_paths() {
        let mut args = path.clone();
        args.push("--help".into());
        for (args, env) in [(args.clone(), &env[..]), (with_file(&args), &[][..])] {
            let out = mdp(&args, env).output().unwrap();
            assert!(out.status.success(), "mdp {args:?}");
            shown.output(&format!("mdp {}", args.join(" ")), &out);
        }
    }

    let leaks = shown.leaks();
    assert!(
        leaks.is_empty(),
        "{} secret(s) shown:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    drop(accounts);
}
