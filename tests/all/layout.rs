//! The layout rules the code review relies on, checked on every run: no
//! source file over 700 lines (tests included), and the domain free of the
//! command line (no module outside `host/src/cli/` uses `crate::cli`).

use std::path::{Path, PathBuf};

use crate::support;

/// Longest source file allowed, in lines.
const MAX_FILE_LINES: usize = 700;

/// Every `.rs` file under `dir`, build outputs and installed packages skipped.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || matches!(name.as_ref(), "target" | "node_modules") {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_700_lines() {
    let root = support::repo_root();
    let mut files = Vec::new();
    for dir in ["host", "sdk", "plugins", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files: {long:#?}");
}

#[test]
fn only_the_cli_imports_the_cli() {
    let src = support::repo_root().join("host/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let cli = src.join("cli");
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&cli) && !f.ends_with("main.rs"))
        .filter(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| {
                t.contains("crate::cli") || t.contains("super::cli") || t.contains("clap::")
            })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "domain modules using the CLI or clap: {offenders:#?}"
    );
}
