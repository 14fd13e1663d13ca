//! Copies the plugin directory the build script assembled (every shipped
//! Rust plugin with its manifest and golden files) into the directory given
//! as the only argument: how `scripts/build-plugins` fills `target/plugins/`.

use std::path::Path;

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn main() {
    let Some(dest) = std::env::args_os().nth(1) else {
        eprintln!("usage: install-plugins <plugin-dir>");
        std::process::exit(2);
    };
    let from = Path::new(mdp_test_artifacts::PLUGIN_DIR);
    if let Err(e) = copy_dir(from, Path::new(&dest)) {
        eprintln!(
            "install-plugins: copying {} to {dest:?}: {e}",
            from.display()
        );
        std::process::exit(1);
    }
}
