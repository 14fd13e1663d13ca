//! One configuration model for every role: a TOML file, environment
//! variables (the seed's names), and flags — flags win over the environment,
//! which wins over the file, which wins over built-in defaults.
//!
//! The file has one table per subcommand whose keys are the long flag names;
//! a nested subcommand is a dotted table:
//!
//! ```toml
//! [process]
//! queue-url = "amqp://guest:guest@rabbit:5672/%2f"
//! store-url = "redis://redis:6379/1"
//! [serve]
//! listen = "0.0.0.0:8080"
//! [listen.massive]
//! subscriptions = "T.*,Q.*"
//! ```
//!
//! Unknown tables and keys are errors. `mdp config <subcommand> [flags]`
//! prints the effective configuration, where each value came from, with
//! secrets redacted.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use crate::secret::redact_url;

/// Arguments whose values are secrets (by name; an argument whose
/// environment value clap hides is one too).
fn is_secret(id: &str) -> bool {
    let id = id.to_ascii_lowercase();
    ["key", "secret", "password", "token"]
        .iter()
        .any(|s| id.contains(s))
}

/// The file's values, as `(subcommand path, flag) → value`; the path of a
/// nested subcommand is dotted (`listen.massive`).
pub type FileValues = BTreeMap<(String, String), String>;

/// Read a configuration file, checking tables and keys against `command`.
pub fn load_file(path: &Path, command: &Command) -> anyhow::Result<FileValues> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    let mut values = FileValues::new();
    for (sub, body) in table {
        let Some(subcommand) = command.find_subcommand(&sub) else {
            bail!("config file {}: unknown section [{sub}]", path.display());
        };
        let toml::Value::Table(body) = body else {
            bail!("config file {}: [{sub}] must be a table", path.display());
        };
        load_section(path, &sub, subcommand, body, &mut values)?;
    }
    Ok(values)
}

/// Check and collect the settings of the section `[name]` for `subcommand`;
/// a table inside it is a nested subcommand's section.
fn load_section(
    path: &Path,
    name: &str,
    subcommand: &Command,
    body: toml::Table,
    values: &mut FileValues,
) -> anyhow::Result<()> {
    for (key, value) in body {
        let text = match value {
            toml::Value::Table(nested) => {
                let Some(inner) = subcommand.find_subcommand(&key) else {
                    bail!(
                        "config file {}: unknown section [{name}.{key}]",
                        path.display()
                    );
                };
                load_section(path, &format!("{name}.{key}"), inner, nested, values)?;
                continue;
            }
            _ if !subcommand
                .get_arguments()
                .any(|a| a.get_long() == Some(key.as_str())) =>
            {
                let help = name.replace('.', " ");
                bail!(
                    "config file {}: [{name}] has no setting `{key}` (see `mdp {help} --help`)",
                    path.display()
                );
            }
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "config file {}: [{name}] `{key}` must be a string, number or boolean, not {other}",
                path.display()
            ),
        };
        values.insert((name.to_string(), key), text);
    }
    Ok(())
}

/// Make the file's values the defaults of `command`'s arguments, so that the
/// environment and flags still override them.
pub fn apply_file(mut command: Command, values: &FileValues) -> Command {
    for ((sub, key), value) in values {
        let value: &'static str = Box::leak(value.clone().into_boxed_str());
        let path: Vec<&str> = sub.split('.').collect();
        command = set_default(command, &path, key, value);
    }
    command
}

/// Give the argument `--key` of the subcommand at `path` the default `value`.
fn set_default(command: Command, path: &[&str], key: &str, value: &'static str) -> Command {
    let Some((first, rest)) = path.split_first() else {
        let id = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key))
            .map(|a| a.get_id().to_string());
        return match id {
            // A secret from the file must not show as `[default: …]` in `--help`.
            Some(id) => command.mut_arg(id, |a| {
                let hide = a.is_hide_env_values_set()
                    || a.is_hide_default_value_set()
                    || is_secret(a.get_id().as_str());
                a.default_value(value)
                    .required(false)
                    .hide_default_value(hide)
            }),
            None => command,
        };
    };
    command.mut_subcommand(*first, |s| set_default(s, rest, key, value))
}

/// The effective configuration of a parsed subcommand, one line per setting:
/// `name = value  # source`, secrets redacted.
pub fn describe(
    matches: &ArgMatches,
    command: &Command,
    file_values: &FileValues,
    sub: &str,
) -> String {
    let mut out = String::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(id, "help" | "version") {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue)
                if file_values.contains_key(&(sub.to_string(), long.to_string())) =>
            {
                "file"
            }
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let shown = if values.is_empty() {
            "-".to_string()
        } else if is_secret(id) {
            "<redacted>".to_string()
        } else {
            values
                .iter()
                .map(|v| redact_url(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!("{long} = {shown}  # {source}\n"));
    }
    out
}

/// The `[config]` of every plugin manifest in `dir`, as each plugin will see
/// it, one `[plugins.<name>.config]` table per plugin with where each value
/// came from (`manifest`, `environment NAME`, `default (NAME unset)`).
pub fn plugin_configs(dir: &Path) -> String {
    let mut manifests: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    manifests.sort();
    let mut out = String::new();
    for path in manifests {
        match crate::plugin::manifest::Manifest::load(&path) {
            Ok(m) => {
                out.push_str(&format!("\n[plugins.{}.config]\n", m.name));
                for (key, value, source) in m.config_sources() {
                    out.push_str(&format!("{key} = {value:?}  # {source}\n"));
                }
            }
            Err(e) => out.push_str(&format!("\n# {e}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_secrets_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:p@ss@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert!(is_secret("massive_api_key"));
        assert!(!is_secret("queue_url"));
    }

    /// Whether an environment variable holds a secret or a URL that may
    /// carry a password.
    fn secret_env(name: &str) -> bool {
        let url = name == "RABBITMQ_URL" || name.ends_with("_REDIS_URL");
        let secret = ["KEY", "TOKEN", "SECRET", "PASSWORD"]
            .iter()
            .any(|s| name.contains(s));
        url || (secret && !name.ends_with("PUBLIC_KEY"))
    }

    #[test]
    fn help_never_shows_a_secret_from_the_environment() {
        fn walk(cmd: &Command, path: &str, bare: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str())
                    && secret_env(env)
                    && !arg.is_hide_env_values_set()
                {
                    bare.push(format!("{path} --{}: {env}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bare);
            }
        }
        let mut bare = Vec::new();
        walk(
            &<crate::cli::Cli as clap::CommandFactory>::command(),
            "mdp",
            &mut bare,
        );
        assert!(bare.is_empty(), "need hide_env_values: {bare:?}");
    }

    #[test]
    fn help_never_shows_a_secret_from_the_file() {
        let values: FileValues = [
            (
                ("serve".to_string(), "jwt-secret".to_string()),
                "from-file-secret".to_string(),
            ),
            (
                ("process".to_string(), "mdc-url".to_string()),
                "redis://u:pw@h/2".to_string(),
            ),
            (
                ("process".to_string(), "prefetch".to_string()),
                "7".to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let mut command = apply_file(
            <crate::cli::Cli as clap::CommandFactory>::command(),
            &values,
        );
        let help = |command: &mut Command, sub: &str| {
            command
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string()
        };
        let serve = help(&mut command, "serve");
        let process = help(&mut command, "process");
        assert!(!serve.contains("from-file-secret"), "{serve}");
        assert!(!process.contains("u:pw@"), "{process}");
        assert!(process.contains("[default: 7]"), "{process}");
    }
}
