//! The deployment files as data: the services of `deploy/compose.yaml`, the
//! documents of `deploy/k8s/mdp.yaml` and the image's `ENV` and plugin
//! directory from `deploy/Dockerfile`, so tests run what they describe.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::repo_root;

/// Every YAML document of a file under the repository root, merge keys applied.
pub fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

/// A YAML list of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// A YAML mapping of scalars as strings (an `environment:` or a ConfigMap's `data`).
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    let Some(map) = v.as_mapping() else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => panic!("{k:?}: not a scalar: {other:?}"),
            };
            (k.as_str().expect("string key").to_string(), value)
        })
        .collect()
}

/// One `mdp` service of the compose file.
#[derive(Debug, Clone)]
pub struct Service {
    /// The service's name (`process-trades`).
    pub name: String,
    /// Its `command:` (the `mdp` arguments).
    pub command: Vec<String>,
    /// Its `deploy.replicas` (1 when not given).
    pub replicas: usize,
    /// Its `environment:` with compose's `${VAR:-default}` resolved to the
    /// default and `${VAR:?message}` (a value the operator must give) to `required`.
    pub env: BTreeMap<String, String>,
}

/// Resolve compose interpolation the way `docker compose` does with `VAR` unset.
fn interpolate(value: &str, required: &str) -> String {
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return value.to_string();
    };
    if let Some((_, default)) = inner.split_once(":-") {
        default.to_string()
    } else if inner.contains(":?") {
        required.to_string()
    } else {
        String::new()
    }
}

/// The `mdp` services of `deploy/compose.yaml` (those built from the mdp image).
pub fn compose_services(required: &str) -> Vec<Service> {
    let docs = yaml_docs("deploy/compose.yaml");
    let services = docs[0]["services"].as_mapping().expect("services");
    services
        .iter()
        .filter(|(_, s)| s["image"].as_str() == Some("mdp:latest"))
        .map(|(name, s)| Service {
            name: name.as_str().unwrap().to_string(),
            command: strings(&s["command"]),
            replicas: s["deploy"]["replicas"].as_u64().unwrap_or(1) as usize,
            env: string_map(&s["environment"])
                .into_iter()
                .map(|(k, v)| {
                    let v = interpolate(&v, required);
                    (k, v)
                })
                .collect(),
        })
        .collect()
}

/// The image's `ENV` settings and the directory its plugins are copied to.
pub struct Image {
    /// `ENV` of the final stage.
    pub env: BTreeMap<String, String>,
    /// Destination of the `COPY` of the built plugins.
    pub plugin_dir: String,
}

/// What `deploy/Dockerfile` puts into the image.
pub fn image() -> Image {
    let text = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let mut env = BTreeMap::new();
    let mut plugin_dir = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"ENV") => {
                for setting in &words[1..] {
                    let (k, v) = setting.split_once('=').expect("ENV KEY=VALUE");
                    env.insert(k.to_string(), v.to_string());
                }
            }
            Some(&"COPY") if words.iter().any(|w| w.ends_with("target/plugins")) => {
                plugin_dir = words.last().map(|s| s.to_string());
            }
            _ => {}
        }
    }
    Image {
        env,
        plugin_dir: plugin_dir.expect("the Dockerfile copies target/plugins into the image"),
    }
}
