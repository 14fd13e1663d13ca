//! The deployment files are valid and run what they say: the compose file and
//! the Kubernetes manifests parse, name every role, every command they run is
//! one the `mdp` binary accepts, and each role's effective configuration (from
//! `mdp config <role>` with the environment the file gives it, on top of the
//! image's) names real backends, a plugin directory the image fills, and
//! health ports apart from the listeners' control API; `docker compose
//! config` agrees where docker exists.

use crate::support;

use std::collections::BTreeMap;

use clap::Parser;
use mdp::cli::Cli;
use serde_yaml_ng::Value;
use support::deploy::{compose_services, image, string_map, strings, yaml_docs};

/// Each Deployment of `docs`: the document, its name, its pod spec and its
/// (first) container.
fn deployments(docs: &[Value]) -> impl Iterator<Item = (&Value, &str, &Value, &Value)> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .map(|doc| {
            let spec = &doc["spec"]["template"]["spec"];
            let name = doc["metadata"]["name"].as_str().unwrap();
            (doc, name, spec, &spec["containers"][0])
        })
}

/// The command must parse as an `mdp` invocation.
fn assert_mdp_accepts(args: &[String], what: &str) {
    let argv = std::iter::once("mdp".to_string()).chain(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(argv) {
        panic!("{what}: `mdp {}` is rejected:\n{e}", args.join(" "));
    }
}

const ROLES: [&str; 8] = [
    "listen massive",
    "listen finlight",
    "process --queue aggregate",
    "process --queue trades",
    "process --queue quotes",
    "process --queue news",
    "scan --subscribe",
    "serve",
];

fn covers(commands: &[Vec<String>], role: &str) -> bool {
    commands.iter().any(|c| c.join(" ").starts_with(role))
}

#[test]
fn compose_file_runs_every_role_with_commands_mdp_accepts() {
    let docs = yaml_docs("deploy/compose.yaml");
    let services = docs[0]["services"].as_mapping().expect("services");
    for backend in ["rabbitmq", "redis"] {
        assert!(services.contains_key(backend), "compose has no {backend}");
    }
    let mut commands = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if service["image"].as_str() != Some("mdp:latest") {
            continue;
        }
        let command = strings(&service["command"]);
        assert_mdp_accepts(&command, name);
        let env = service["environment"].as_mapping().expect("environment");
        assert!(
            env.contains_key("RABBITMQ_URL") && env.contains_key("WDC_REDIS_URL"),
            "{name} lacks backend URLs"
        );
        commands.push(command);
    }
    for role in ROLES {
        assert!(covers(&commands, role), "compose runs no `{role}`");
    }
}

#[test]
fn kubernetes_manifests_have_a_probed_deployment_per_role() {
    let docs = yaml_docs("deploy/k8s/mdp.yaml");
    let mut commands = Vec::new();
    for (doc, name, _, container) in deployments(&docs) {
        let args = strings(&container["args"]);
        assert_mdp_accepts(&args, name);
        for probe in ["readinessProbe", "livenessProbe"] {
            let port = &container[probe]["httpGet"]["port"];
            assert!(!port.is_null(), "{name} has no HTTP {probe}");
            let ports = container["ports"].as_sequence().expect("ports");
            assert!(
                ports.iter().any(|p| &p["name"] == port),
                "{name}: {probe} port {port:?} is not declared"
            );
        }
        let requests = &container["resources"]["requests"];
        assert!(
            !requests["cpu"].is_null() && !requests["memory"].is_null(),
            "{name} lacks resource requests"
        );
        assert_eq!(
            doc["spec"]["selector"]["matchLabels"], doc["spec"]["template"]["metadata"]["labels"],
            "{name}: selector does not match its pods"
        );
        commands.push(args);
    }
    for role in ROLES {
        assert!(covers(&commands, role), "no Deployment runs `{role}`");
    }
}

#[test]
fn docker_compose_accepts_the_compose_file_where_docker_exists() {
    let probe = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("docker compose is not installed here; the parse tests above still ran");
        return;
    }
    let out = std::process::Command::new("docker")
        .args(["compose", "-f", "deploy/compose.yaml", "config", "--quiet"])
        .env("AUTH_API_KEY", "a-key")
        .current_dir(support::repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mdp config <args>` run with exactly `env`: each setting's effective value.
fn effective_config(args: &[String], env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mdp"))
        .arg("config")
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mdp config {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| {
            let value = v.split("  # ").next().unwrap_or("").trim();
            (k.trim().to_string(), value.to_string())
        })
        .filter(|(_, v)| !v.is_empty() && v != "-")
        .collect()
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

/// What a role must be configured with to run deployed: a real broker, a real
/// store, a plugin directory `plugin_dir_ok` accepts, health on `probe_port`,
/// the listeners' control API (if any) on loopback and another port.
fn assert_deployable(
    what: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    probe_port: Option<&str>,
    plugin_dir_ok: &dyn Fn(&str) -> bool,
) {
    let config = effective_config(args, env);
    let setting = |key: &str| config.get(key).map(String::as_str).unwrap_or("");
    let role = args[0].as_str();
    if matches!(role, "listen" | "process") {
        let url = setting("queue-url");
        assert!(
            url.starts_with("amqp://") || url.starts_with("amqps://"),
            "{what}: queue-url {url:?} is not a RabbitMQ URL"
        );
    }
    if matches!(role, "process" | "scan" | "serve") {
        let url = setting("store-url");
        assert!(
            url.starts_with("redis://") || url.starts_with("rediss://"),
            "{what}: store-url {url:?} is not a Redis URL"
        );
    }
    if matches!(role, "process" | "scan") {
        let dir = setting("plugin-dir");
        assert!(
            plugin_dir_ok(dir),
            "{what}: plugin-dir {dir:?} holds no plugins"
        );
    }
    if role == "serve" {
        assert_eq!(
            setting("auth-enabled"),
            "true",
            "{what}: widget auth is off"
        );
        assert!(!setting("auth-api-key").is_empty(), "{what}: no widget key");
    } else {
        let health = setting("health-listen");
        assert!(!health.is_empty(), "{what}: no health-listen");
        if let Some(port) = probe_port {
            assert_eq!(port_of(health), port, "{what}: probes hit another port");
        }
        let admin = setting("admin-listen");
        if !admin.is_empty() {
            assert!(
                admin.starts_with("127.0.0.1:") && port_of(admin) != port_of(health),
                "{what}: the control API {admin} is exposed or shares the health port {health}"
            );
        }
    }
}

#[test]
fn compose_roles_are_configured_for_real_backends_and_the_image_plugins() {
    let image = image();
    let services = compose_services("a-required-value");
    assert!(services.len() >= ROLES.len());
    for service in services {
        let mut env = image.env.clone();
        env.extend(service.env.clone());
        assert_deployable(&service.name, &service.command, &env, None, &|dir| {
            dir == image.plugin_dir
        });
    }
}

#[test]
fn kubernetes_roles_are_configured_for_real_backends_and_the_image_plugins() {
    let image = image();
    let docs = yaml_docs("deploy/k8s/mdp.yaml");
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("the manifests define no {kind} {name}"))
            .clone()
    };
    let mut checked = 0;
    for (_, name, spec, container) in deployments(&docs) {
        // The container's environment, in Kubernetes' order: envFrom, then env.
        let mut env = image.env.clone();
        for from in container["envFrom"].as_sequence().into_iter().flatten() {
            if let Some(map) = from["configMapRef"]["name"].as_str() {
                env.extend(string_map(&named("ConfigMap", map)["data"]));
            }
            if let Some(secret) = from["secretRef"]["name"].as_str() {
                env.extend(string_map(&named("Secret", secret)["stringData"]));
            }
        }
        for var in container["env"].as_sequence().into_iter().flatten() {
            let value = var["value"].as_str().unwrap_or_default().to_string();
            env.insert(var["name"].as_str().unwrap().to_string(), value);
        }
        let probe = container["readinessProbe"]["httpGet"]["port"]
            .as_str()
            .unwrap();
        let port = container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(probe))
            .map(|p| p["containerPort"].as_u64().unwrap().to_string())
            .unwrap();
        // A plugin directory is the image's, or a volume an init container
        // seeds from the image's before the role starts.
        let seeded = |dir: &str| {
            let mounted = container["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|m| m["mountPath"].as_str() == Some(dir));
            let Some(mount) = mounted else {
                return dir == image.plugin_dir;
            };
            spec["initContainers"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|init| {
                    let script = strings(&init["command"]).join(" ");
                    init["volumeMounts"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .any(|m| {
                            m["name"] == mount["name"]
                                && m["mountPath"].as_str().is_some_and(|p| script.contains(p))
                        })
                        && script.contains(&format!("{}/", image.plugin_dir))
                })
        };
        let args = strings(&container["args"]);
        assert_deployable(name, &args, &env, Some(&port), &seeded);
        checked += 1;
    }
    assert!(checked >= ROLES.len());
}
