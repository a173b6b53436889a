//! `keysafe`: the one binary. All the work is in the library so tests and the test kit can reuse
//! it; main only runs it and turns the outcome into an exit code.

/// mimalloc rather than glibc's malloc: the request path allocates and frees many small buffers
/// on two runtime threads and the database threads, where glibc's arenas cost about a tenth of
/// the server's time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keysafe_cli::main()
}
