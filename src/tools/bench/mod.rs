//! `forcebridge bench …`: the benchmarks. Each runs a simulated Salesforce org, an embedded Kafka
//! (librdkafka's mock cluster) and one side of forcebridge in this process, and prints what it
//! measured.
//!
//! Contract: [`run`] runs the subcommand of [`BenchCommand`]: `bench source` (`source.rs`: its options
//! in `source_args.rs`, the changes it makes in the org in `workload.rs`, its measured window in
//! `window.rs`), `bench sink` ([`sink`]) or `bench snapshot` (`snapshot.rs`, its options in
//! `snapshot_args.rs`; the org a child process); `GET /limits` in `limits.rs`. Both read the
//! process and the machine from `/proc` (`machine.rs`), print their figures (`report.rs`), and
//! fail with a [`BenchError`] when a run does not verify or overruns its timeout.

mod error;
mod limits;
mod machine;
mod readback;
mod report;
pub mod sink;
mod snapshot;
mod snapshot_args;
mod source;
mod source_args;
mod window;
mod workload;

use tokio_util::sync::CancellationToken;

pub use error::BenchError;
pub use snapshot_args::SnapshotBenchArgs;
pub use source_args::SourceBenchArgs;

/// `forcebridge bench …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Salesforce (simulated) → forcebridge → Kafka (mock cluster), in this process.
    Source(SourceBenchArgs),
    /// Kafka (mock cluster) → forcebridge's sink → Salesforce (simulated), in this process.
    Sink(sink::SinkBenchArgs),
    /// Salesforce (simulated, a child process) → a channel's initial snapshot → Kafka (mock
    /// cluster): rows/s, API calls, peak RSS.
    Snapshot(SnapshotBenchArgs),
}

/// Runs `forcebridge bench …`.
pub async fn run(command: BenchCommand, cancel: CancellationToken) -> Result<(), BenchError> {
    match command {
        BenchCommand::Source(args) => source::run(args, cancel).await,
        BenchCommand::Sink(args) => sink::run(args, cancel).await,
        BenchCommand::Snapshot(args) => snapshot::run(args, cancel).await,
    }
}
