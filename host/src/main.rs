//! The `mdp` binary: one subcommand per role.

fn main() -> std::process::ExitCode {
    mdp::cli::main()
}
