//! The configuration model: file < environment < flags, unknown keys refused,
//! secrets redacted.

use std::process::Command;

fn mdp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mdp"));
    for var in [
        "RABBITMQ_URL",
        "WDC_REDIS_URL",
        "MDC_REDIS_URL",
        "MASSIVE_API_KEY",
        "PREFETCH_COUNT",
        "MDP_CONFIG",
    ] {
        c.env_remove(var);
    }
    c
}

fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mdp.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing in {out}"))
}

#[test]
fn flags_beat_environment_beats_file() {
    let (_d, path) = file(
        "[process]\nprefetch = 7\nqueue-url = \"amqp://file/\"\nstore-url = \"redis://file/\"\nmassive-api-key = \"from-file\"\n",
    );
    let out = mdp()
        .arg("--config-file")
        .arg(&path)
        .args([
            "config",
            "process",
            "--queue",
            "q",
            "--plugin",
            "p",
            "--queue-url",
            "amqp://flag/",
        ])
        .env("WDC_REDIS_URL", "redis://u:pw@env/1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
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
fn unknown_keys_and_sections_are_errors() {
    for (text, expected) in [
        (
            "[process]\nprefech = 7\n",
            "[process] has no setting `prefech`",
        ),
        ("[procss]\n", "unknown section [procss]"),
    ] {
        let (_d, path) = file(text);
        let out = mdp()
            .arg("--config-file")
            .arg(&path)
            .args(["config", "process"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("panicked"));
    }
}
