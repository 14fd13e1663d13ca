//! The deployment files are valid: the compose file and the Kubernetes
//! manifests parse, name every role, and every command they run is one the
//! `mdp` binary accepts; `docker compose config` agrees where docker exists.

#[path = "support/mod.rs"]
mod support;

use clap::Parser;
use mdp::cli::Cli;
use serde_yaml_ng::Value;

fn load_all(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(support::repo_root().join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
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
    let docs = load_all("deploy/compose.yaml");
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
    let docs = load_all("deploy/k8s/mdp.yaml");
    let mut commands = Vec::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
    {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let spec = &doc["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
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
        if matches!(args[0].as_str(), "process" | "scan") {
            let mounts = container["volumeMounts"]
                .as_sequence()
                .expect("plugin volume mount");
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"].as_str() == Some("/plugins")),
                "{name} mounts no plugins"
            );
        }
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
        .current_dir(support::repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
