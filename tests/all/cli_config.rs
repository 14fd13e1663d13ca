//! The configuration model: file < environment < flags, unknown keys refused,
//! secrets redacted.

use std::process::{Command, Output};

/// The variables the configuration reads that a test must not inherit.
const SETTINGS: [&str; 17] = [
    "RABBITMQ_URL",
    "WDC_REDIS_URL",
    "MDC_REDIS_URL",
    "MASSIVE_API_KEY",
    "POLYGON_API_KEY",
    "MASSIVE_SUBSCRIPTIONS",
    "MASSIVE_MARKET",
    "MASSIVE_FEED_URL",
    "MASSIVE_FEED",
    "MASSIVE_SECURE",
    "MDQ_PUBLISHER_CONFIRMS",
    "FINLIGHT_API_KEY",
    "PREFETCH_COUNT",
    "MDP_CONFIG",
    "DRA_CACHE_LIST_MAX",
    "NEWS_FEED_LIST_MAX",
    "NEWS_TICKER_CACHE_TTL",
];

/// The `mdp` binary with none of [`SETTINGS`] set.
fn mdp_without_settings() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mdp"));
    for var in SETTINGS {
        c.env_remove(var);
    }
    c
}

/// `mdp --config-file <a file holding text> config <args…>`, with none of
/// the variables the configuration reads set unless given in `env`.
fn show_config(text: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdp.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = mdp_without_settings();
    c.arg("--config-file")
        .arg(&path)
        .arg("config")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The output of a run that must succeed.
fn printed(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Check that each file is refused, naming what is wrong.
fn refused(args: &[&str], cases: &[(&str, &str)]) {
    for (text, expected) in cases {
        let out = show_config(text, args, &[]);
        assert!(!out.status.success(), "{text} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{text}: {err}");
        assert!(!err.contains("panicked"));
    }
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing in {out}"))
}

#[test]
fn flags_beat_environment_beats_file() {
    let out = printed(show_config(
        "[process]\nprefetch = 7\nqueue-url = \"amqp://file/\"\nstore-url = \"redis://file/\"\nmassive-api-key = \"from-file\"\n",
        &[
            "process",
            "--queue",
            "q",
            "--plugin",
            "p",
            "--queue-url",
            "amqp://flag/",
        ],
        &[("WDC_REDIS_URL", "redis://u:pw@env/1")],
    ));
    assert_eq!(line(&out, "prefetch"), "prefetch = 7  # file");
    assert_eq!(line(&out, "queue-url"), "queue-url = amqp://flag/  # flag");
    assert_eq!(
        line(&out, "store-url"),
        "store-url = redis://u:***@env/1  # environment"
    );
    assert_eq!(
        line(&out, "massive-api-key"),
        "massive-api-key = <redacted>  # file"
    );
}

#[test]
fn plugin_settings_take_the_seeds_environment_names_and_show_their_source() {
    let plugins = tempfile::tempdir().unwrap();
    for (dir, name) in [("daily-range", "daily-range"), ("news-feed", "news-feed")] {
        let manifest = format!(
            "{}/../plugins/{dir}/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::copy(manifest, plugins.path().join(format!("{name}.toml"))).unwrap();
    }
    let dir = plugins.path().to_str().unwrap();
    let out = printed(show_config(
        "",
        &[
            "scan",
            "--subscribe",
            "quote:*",
            "--plugin",
            "daily-range",
            "--plugin-dir",
            dir,
        ],
        &[
            ("DRA_CACHE_LIST_MAX", "10000"),
            ("NEWS_TICKER_CACHE_TTL", "86400"),
        ],
    ));
    let section = |name: &str| {
        let start = out
            .find(&format!("[plugins.{name}.config]"))
            .unwrap_or_else(|| panic!("{name} missing in {out}"));
        out[start..].split("\n\n").next().unwrap().to_string()
    };
    let dra = section("daily-range");
    assert_eq!(
        line(&dra, "dra_cache_list_max"),
        "dra_cache_list_max = \"10000\"  # environment DRA_CACHE_LIST_MAX"
    );
    let news = section("news-feed");
    assert_eq!(
        line(&news, "news_ticker_cache_ttl"),
        "news_ticker_cache_ttl = \"86400\"  # environment NEWS_TICKER_CACHE_TTL"
    );
    assert_eq!(
        line(&news, "news_feed_list_max"),
        "news_feed_list_max = \"10000\"  # default (NEWS_FEED_LIST_MAX unset)"
    );
}

#[test]
fn unknown_keys_and_sections_are_errors() {
    refused(
        &["process"],
        &[
            (
                "[process]\nprefech = 7\n",
                "[process] has no setting `prefech`",
            ),
            ("[procss]\n", "unknown section [procss]"),
        ],
    );
}

#[test]
fn nested_subcommands_are_configured_by_dotted_tables() {
    let out = printed(show_config(
        "[listen.massive]\nsubscriptions = \"T.*,Q.*\"\nbatch-frames = true\n[serve]\nlisten = \"127.0.0.1:9\"\n",
        &["listen", "massive", "--market", "crypto"],
        &[],
    ));
    assert!(out.starts_with("[listen.massive]\n"), "{out}");
    assert_eq!(
        line(&out, "subscriptions"),
        "subscriptions = T.*,Q.*  # file"
    );
    assert_eq!(line(&out, "batch-frames"), "batch-frames = true  # file");
    assert_eq!(line(&out, "market"), "market = crypto  # flag");
    refused(
        &["listen", "massive"],
        &[
            (
                "[listen.massive]\nsubscripton = \"T.*\"\n",
                "[listen.massive] has no setting `subscripton`",
            ),
            ("[listen.masive]\n", "unknown section [listen.masive]"),
            ("[listen]\nfoo = 1\n", "[listen] has no setting `foo`"),
        ],
    );
}

/// Run a role with none of the backend variables set; it must exit at once.
fn role_without_backends(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = mdp_without_settings();
    // A key file that does not exist, so a developer's own key is not found.
    c.env("MASSIVE_API_KEY_FILE", "/nonexistent/mdp-test-key");
    let out = c
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn roles_without_a_backend_url_refuse_to_start_naming_the_variable() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path().to_str().unwrap();
    for (args, env, variable) in [
        (
            vec![
                "process",
                "--queue",
                "quotes",
                "--plugin",
                "p",
                "--plugin-dir",
                dir,
            ],
            vec![("WDC_REDIS_URL", "memory://")],
            "RABBITMQ_URL",
        ),
        (
            vec![
                "process",
                "--queue",
                "quotes",
                "--plugin",
                "p",
                "--plugin-dir",
                dir,
            ],
            vec![("RABBITMQ_URL", "memory://")],
            "WDC_REDIS_URL",
        ),
        (
            vec![
                "scan",
                "--subscribe",
                "quote:*",
                "--plugin",
                "p",
                "--plugin-dir",
                dir,
            ],
            vec![],
            "WDC_REDIS_URL",
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:0"],
            vec![],
            "WDC_REDIS_URL",
        ),
        (
            vec!["listen", "massive", "--feed-url", "ws://127.0.0.1:9"],
            vec![],
            "RABBITMQ_URL",
        ),
        (
            vec!["listen", "finlight"],
            vec![("FINLIGHT_API_KEY", "k")],
            "RABBITMQ_URL",
        ),
        // No key and the real Massive endpoint: refused before dialing it.
        (
            vec!["listen", "massive"],
            vec![("RABBITMQ_URL", "memory://")],
            "MASSIVE_API_KEY",
        ),
        // The seed's MASSIVE_FEED names the host: a simulator's needs no key.
        (
            vec!["listen", "massive"],
            vec![("MASSIVE_FEED", "127.0.0.1:9"), ("MASSIVE_SECURE", "false")],
            "RABBITMQ_URL",
        ),
        // Publishing without confirms is a seed setting mdp does not honour.
        (
            vec!["listen", "finlight"],
            vec![
                ("FINLIGHT_API_KEY", "k"),
                ("RABBITMQ_URL", "memory://"),
                ("MDQ_PUBLISHER_CONFIRMS", "false"),
            ],
            "MDQ_PUBLISHER_CONFIRMS",
        ),
    ] {
        let (ok, err) = role_without_backends(&args, &env);
        assert!(!ok, "`mdp {}` started", args.join(" "));
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("mdp: ")).collect();
        assert_eq!(lines.len(), 1, "`mdp {}`: {err}", args.join(" "));
        assert!(
            lines[0].contains(variable),
            "`mdp {}` does not name {variable}: {err}",
            args.join(" ")
        );
    }
}
