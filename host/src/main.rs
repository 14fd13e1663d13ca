//! The `mdp` binary: one subcommand per role.

/// mimalloc instead of glibc's allocator (`--features mimalloc`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mdp::cli::main()
}
