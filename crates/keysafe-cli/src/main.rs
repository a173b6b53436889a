//! `keysafe`: the one binary. All the work is in the library so tests and the test kit can reuse
//! it; main only runs it and turns the outcome into an exit code.

fn main() -> std::process::ExitCode {
    keysafe_cli::main()
}
