//! The `forcebridge` command: orchestration only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use forcebridge::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use forcebridge::ops::telemetry::{self, LogFormat};

/// Streams Salesforce changes into Kafka and writes Kafka changes back into Salesforce.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FORCEBRIDGE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the source and/or the sink of a config file.
    Run {
        /// The YAML config file.
        #[arg(long, short, env = "FORCEBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file: keys, values and environment variables, then (unless `--offline`)
    /// the Salesforce login, every channel (GetTopic) and Kafka. Exits non-zero when unsafe to run.
    Check {
        /// The YAML config file.
        #[arg(long, short, env = "FORCEBRIDGE_CONFIG")]
        config: PathBuf,
        /// Validate the file only; connect to nothing.
        #[arg(long)]
        offline: bool,
    },
    /// Demo: a simulated Salesforce org and an embedded Kafka, a stream of changes, the pipeline,
    /// progress and a summary.
    Demo(forcebridge::tools::demo::DemoArgs),
    /// Benchmarks: a simulated org, an embedded Kafka and the pipeline in this process; prints
    /// events/s, CPU time per event, commit→Kafka latency and peak RSS.
    #[command(subcommand)]
    Bench(forcebridge::tools::bench::BenchCommand),
    /// Record a real org's Pub/Sub traffic (read-only) into a directory `sim --replay` serves.
    Capture(forcebridge::tools::capture::command::CaptureArgs),
    /// Run the simulated Salesforce org (Pub/Sub gRPC, OAuth, REST) until interrupted.
    Sim(forcebridge::sim::SimArgs),
}

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (mimalloc
/// then applied that choice before `main`; `MIMALLOC_ALLOW_THP=1` keeps them). The first touch of
/// a huge page zeroes 2 MiB at once, about 6 ms on a VM that hands freed memory back to its host,
/// and the records behind it wait: at 5,000 events/s they made p99 7–12 ms (commit → Kafka ack)
/// where 4 KiB pages gave 2–3 ms (BENCHMARKS.md). Redis and MongoDB advise the same for latency.
fn transparent_huge_pages_off() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and sets a flag of this
        // process's memory map; it touches no memory of ours. A failure (an old kernel) leaves
        // huge pages on, which is only slower.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() -> ExitCode {
    transparent_huge_pages_off();
    let cli = Cli::parse();
    // The demo prints its own progress; its logs default to warnings only.
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) => "warn",
        _ => "info",
    };
    telemetry::init_logging(cli.log_format, default_level);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    // Config errors surface before any runtime or connection exists.
    let config = match &command {
        Command::Run { config }
        | Command::Check { config, .. }
        | Command::Capture(forcebridge::tools::capture::command::CaptureArgs { config, .. }) => {
            Some(
                Config::load(config)
                    .with_context(|| format!("invalid config {}", config.display()))?,
            )
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _guard = runtime.enter();
    let result = dispatch(command, config, &runtime);
    drop(_guard);
    // Never wait on a blocking call stuck on an unreachable peer (e.g. a Kafka flush).
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn dispatch(
    command: Command,
    config: Option<Config>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    match command {
        Command::Check {
            config: path,
            offline,
        } => Ok(runtime.block_on(forcebridge::tools::check::command(
            &path,
            &config.expect("loaded above"),
            offline,
        ))?),
        Command::Run { .. } => {
            let config = Arc::new(config.expect("loaded above"));
            runtime.block_on(async {
                let cancel = shutdown_on_signals(Some(config.drain_timeout));
                forcebridge::tools::daemon::run(config, cancel).await
            })?;
            Ok(())
        }
        Command::Demo(args) => {
            runtime.block_on(forcebridge::tools::demo::run(
                args,
                shutdown_on_signals(None),
            ))?;
            Ok(())
        }
        Command::Bench(command) => {
            runtime.block_on(forcebridge::tools::bench::run(
                command,
                shutdown_on_signals(None),
            ))?;
            Ok(())
        }
        Command::Capture(args) => {
            runtime.block_on(forcebridge::tools::capture::command::run(
                args,
                &config.expect("loaded above"),
                shutdown_on_signals(None),
            ))?;
            Ok(())
        }
        Command::Sim(args) => {
            runtime.block_on(forcebridge::sim::run_cli(args, shutdown_on_signals(None)))?;
            Ok(())
        }
    }
}

/// How long past `drain_timeout` the process may take before it exits regardless.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// One cancellation token for the process, fired by SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
/// After the first signal, a second one exits at once, and so does overrunning `drain` (plus
/// [`EXIT_GRACE`]): the drain is bounded even when a peer hangs.
fn shutdown_on_signals(drain: Option<Duration>) -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received; draining"),
            _ = terminate => info!("SIGTERM received; draining"),
        }
        token.cancel();
        let overrun = async {
            match drain {
                Some(drain) => tokio::time::sleep(drain + EXIT_GRACE).await,
                None => std::future::pending().await,
            }
        };
        let again = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => tokio::select! {
                    _ = s.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                },
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            _ = overrun => {
                error!(deadline = ?drain, "the drain did not finish within drain_timeout; exiting");
                eprintln!("error: the drain did not finish within drain_timeout; exiting");
            }
            _ = again => eprintln!("second signal: exiting without draining"),
        }
        std::process::exit(1);
    });
    cancel
}
