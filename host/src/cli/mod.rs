//! Command-line interface: one subcommand per role.

use std::process::ExitCode;

/// Parse arguments and run the chosen subcommand.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
