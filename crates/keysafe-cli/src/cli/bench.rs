//! Arguments of `keysafe bench`, the load generator.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Fetch the current version of a deposit.
    Get,
    /// Store a new version of a deposit (durable before it is acknowledged).
    Put,
    /// `GET /?a=fingerprint`: the same TLS, HTTP and middleware path with no database and no
    /// crypto; the ceiling the other operations are compared with.
    Baseline,
    /// Store `--keys` deposits once each over `--connections` connections (only those not
    /// there yet: a second run resumes), then report the rate; no measured phase. Seeds large
    /// scale runs through the real server.
    Seed,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A registered client home to drive the load as.
    #[arg(long, env = "KEYSAFE_HOME")]
    pub home: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub op: BenchOp,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: std::time::Duration,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How many distinct deposit names to spread the load over.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
