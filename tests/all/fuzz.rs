//! A short, seeded, deterministic run of every fuzz target's property
//! (`mdp::fuzz`): real sample inputs mutated a few thousand times each. The
//! cargo-fuzz targets in `host/fuzz` check the same properties for as long
//! as they are let run.

use mdp::fuzz::{TARGETS, Target};

/// Inputs generated per target.
const CASES: usize = 4000;

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// Run `name` seeded with `seed`; both outcomes must be exercised.
fn run(name: &str, seed: u64) {
    let (accepted, refused) = target(name).run(seed, CASES);
    assert!(
        accepted > 50 && refused > 50,
        "{name}: both paths exercised: accepted {accepted}, refused {refused}"
    );
}

#[test]
fn massive_frames() {
    run("massive_frame", 0x5EED);
    assert!(matches!(
        mdp::feed::massive::parse_frame(&format!("[{}]", "1,".repeat(600_000) + "1")),
        Err(mdp::feed::massive::FrameError::TooLarge(_))
    ));
}

#[test]
fn finlight_frames() {
    run("finlight_frame", 0xF1_1647);
}

#[test]
fn widget_requests() {
    run("widget_request", 0x3D6E7);
}

#[test]
fn plugin_manifests() {
    run("manifest", 0x3A41F);
}

#[test]
fn queue_bodies() {
    run("queue_body", 0xB0D7);
}

#[test]
fn every_target_is_run_here_and_by_cargo_fuzz() {
    let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let cargo = std::fs::read_to_string(fuzz_dir.join("Cargo.toml")).unwrap();
    let readme = std::fs::read_to_string(fuzz_dir.join("README.md")).unwrap();
    for t in &TARGETS {
        let file = fuzz_dir.join(format!("fuzz_targets/{}.rs", t.name));
        let source =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            source.contains(&format!("mdp::fuzz::{}(", t.name)),
            "{} runs mdp::fuzz::{}",
            file.display(),
            t.name
        );
        assert!(
            cargo.contains(&format!("name = \"{}\"", t.name)),
            "{}",
            t.name
        );
        assert!(readme.contains(&format!("`{}`", t.name)), "{}", t.name);
    }
}
