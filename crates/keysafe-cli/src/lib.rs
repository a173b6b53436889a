//! The `keysafe` command line: argument parsing, one module per subcommand, output formatting
//! and exit codes. Errors are printed as one line (the whole cause chain) on stderr.

pub mod cli;
pub mod cmd;
pub mod exit;
pub mod logging;
pub mod memory;
pub mod output;
pub mod progress;
pub mod systemd;

use clap::Parser;
use std::process::ExitCode;

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Before the runtime's threads and any `dlopen`: what the loader mapped (memory.rs).
    if matches!(cli.command, cli::Command::Serve(_) | cli::Command::Kms(_)) {
        memory::remember_start_up_mappings();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keysafe: cannot start the async runtime: {e}");
            return ExitCode::from(exit::GENERAL);
        }
    };
    match runtime.block_on(cmd::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keysafe: {}", exit::render(&e));
            ExitCode::from(exit::code_for(&e))
        }
    }
}
