//! `forcebridge bench snapshot`: rows/s, API calls and memory of a channel's initial snapshot
//! (`snapshot: initial`), from the first row read to the handoff to the stream.
//!
//! Contract: the simulated org runs as a child process (`forcebridge sim --seed Account=N`,
//! keepalives every second so the position is fixed at once), so its memory is not this
//! process's; forcebridge's source and the embedded Kafka (librdkafka's mock cluster) run here.
//! The run logs in as the integration user to read `GET /limits` before and after; then starts
//! the source and waits for the channel's `snapshots_completed` (the handoff). It prints rows/s
//! from the first row to the handoff and from the start to the handoff, the API calls spent
//! (the drop of `DailyApiRequests.Remaining`, less the second read), the method (REST below
//! `--rest-below`, else one Bulk API 2.0 query job), the peak RSS (`VmHWM`) and the RSS sampled
//! every second. Records are counted by the source's counters and Kafka's delivery reports
//! (the mock cluster keeps only the last 5 MB of each partition, so they are read back only with
//! `--read-back`, which checks the topic holds exactly N READ records with distinct Ids).
//! It fails with a [`BenchError`] when the rows read or the records acknowledged on the topic
//! are not exactly `--records`, when a delivery failed, or when `--timeout` passes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::BenchError;
use super::limits::Limits;
use super::machine::{peak_rss, rss};
use super::readback::ReadBack;
use super::snapshot_args::{CHANNEL, SnapshotBenchArgs, TOPIC, snapshot_config};
use crate::config::Config;
use crate::kafka::EmbeddedKafka;
use crate::ops::telemetry::{PipelineStats, StatsSnapshot};

/// `forcebridge sim` as a child process, and the `salesforce:` section of the config it printed.
struct SimProcess {
    child: Child,
    salesforce: String,
}

impl SimProcess {
    /// Starts the org seeded with `records` Accounts and waits (at most `timeout`) for its banner.
    fn start(records: u64, timeout: Duration) -> Result<SimProcess, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Sim(e.to_string()))?;
        let seed = format!("Account={records}");
        let mut child = Command::new(exe)
            .args(["sim", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--keepalive-interval", "1s", "--seed", &seed])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Sim(format!("spawning `forcebridge sim`: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the banner, then keeps draining so that the org never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut sim = SimProcess {
            child,
            salesforce: String::new(),
        };
        sim.salesforce = read_salesforce_section(&rx, Instant::now() + timeout)?;
        Ok(sim)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The banner's `salesforce:` block, up to the blank line after it.
fn read_salesforce_section(rx: &Receiver<String>, deadline: Instant) -> Result<String, BenchError> {
    let mut section = String::new();
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(BenchError::Sim("no config printed before --timeout".into()));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(BenchError::Sim(
                    "it exited before printing its config".into(),
                ));
            }
        };
        if line == "salesforce:" {
            section.push_str("salesforce:\n");
        } else if !section.is_empty() {
            if line.trim().is_empty() {
                return Ok(section);
            }
            section.push_str(&line);
            section.push('\n');
        }
    }
}

/// What the run saw while the snapshot ran.
struct Timeline {
    first_row: Option<Instant>,
    handoff: Instant,
    /// (seconds from the start, rows read, RSS bytes), once a second.
    rss: Vec<(f64, u64, u64)>,
    last: StatsSnapshot,
}

/// Polls the counters until the handoff, sampling RSS each second.
async fn watch(
    stats: &PipelineStats,
    start: Instant,
    timeout: Duration,
    pipeline: &tokio::task::JoinHandle<Result<(), crate::source::PipelineError>>,
    cancel: &CancellationToken,
) -> Result<Timeline, BenchError> {
    let mut first_row = None;
    let mut samples = Vec::new();
    let mut next_sample = start;
    loop {
        let now = Instant::now();
        let snap = stats.snapshot();
        let channel = snap.channels.get(CHANNEL).cloned().unwrap_or_default();
        if first_row.is_none() && channel.snapshot_rows > 0 {
            first_row = Some(now);
        }
        if now >= next_sample {
            let secs = now.duration_since(start).as_secs_f64();
            samples.push((secs, channel.snapshot_rows, rss().unwrap_or(0)));
            next_sample += Duration::from_secs(1);
        }
        if channel.snapshots_completed > 0 {
            return Ok(Timeline {
                first_row,
                handoff: now,
                rss: samples,
                last: snap,
            });
        }
        if pipeline.is_finished() {
            return Err(BenchError::Failed(format!(
                "the source stopped before the handoff, after {} rows",
                channel.snapshot_rows
            )));
        }
        if now.duration_since(start) > timeout {
            return Err(BenchError::Failed(format!(
                "no handoff after --timeout {}s: {} rows read",
                timeout.as_secs(),
                channel.snapshot_rows
            )));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BenchError::Failed("interrupted".into())),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Exactly `n` rows read and `n` records acknowledged on the topic, no delivery failed.
fn verify(last: &StatsSnapshot, n: u64) -> Result<String, BenchError> {
    let rows = last.channels.get(CHANNEL).map_or(0, |c| c.snapshot_rows);
    let acked = last.records_by_topic.get(TOPIC).copied().unwrap_or(0);
    let failed = last.deliveries.failed;
    if rows != n || acked != n || failed != 0 {
        return Err(BenchError::Failed(format!(
            "verification failed: {rows} READ rows read and {acked} records acknowledged on \
             {TOPIC} ({failed} deliveries failed), expected {n}"
        )));
    }
    Ok(format!(
        "verified: {n} READ rows read, {n} records acknowledged on {TOPIC}, 0 deliveries failed"
    ))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `forcebridge bench snapshot`.
pub(super) async fn run(
    args: SnapshotBenchArgs,
    cancel: CancellationToken,
) -> Result<(), BenchError> {
    let n = args.records;
    let timeout = Duration::from_secs(args.timeout_secs);
    let method = if n < args.rest_below {
        "REST query pages (records < --rest-below)".to_owned()
    } else {
        format!(
            "one Bulk API 2.0 query job, pages of {} rows",
            args.page_records
        )
    };
    println!(
        "bench snapshot: {n} Accounts in a simulated org (child process), read by {method}, \
         into {TOPIC} ({} partitions of the mock cluster, which keeps the last 5 MB of each)",
        args.partitions
    );
    let seeding = Instant::now();
    let sim = SimProcess::start(n, timeout)?;
    println!(
        "  org seeded and up in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let kafka = EmbeddedKafka::start(3).map_err(|e| BenchError::Kafka(e.to_string()))?;
    for (topic, partitions) in [
        ("forcebridge.checkpoints", 1),
        ("forcebridge.dlq", 1),
        (TOPIC, args.partitions),
    ] {
        kafka
            .create_topic(topic, partitions)
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    let text = snapshot_config(&sim.salesforce, &kafka.bootstrap_servers(), &args);
    let config = Arc::new(Config::from_yaml(&text, |_| None)?);
    let limits = login_limits(&config).await?;
    let remaining_before = limits.remaining().await?;
    let rss_before = rss().unwrap_or(0);
    let read_back = match args.read_back {
        true => Some(ReadBack::start(
            &kafka.bootstrap_servers(),
            TOPIC,
            args.partitions,
        )?),
        false => None,
    };

    let stats = Arc::new(PipelineStats::default());
    let pipeline_cancel = cancel.child_token();
    let start = Instant::now();
    let pipeline = tokio::spawn(crate::source::run(
        config.clone(),
        stats.clone(),
        pipeline_cancel.clone(),
    ));
    let watched = watch(&stats, start, timeout, &pipeline, &cancel).await;
    pipeline_cancel.cancel();
    let ended = pipeline.await;
    let timeline = watched?;
    if let Ok(Err(e)) = ended {
        return Err(e.into());
    }
    let remaining_after = limits.remaining().await?;
    let verified = verify(&timeline.last, n)?;
    // The second read is itself counted.
    let calls = remaining_before
        .saturating_sub(remaining_after)
        .saturating_sub(1);
    report(&args, &timeline, start, calls, rss_before);
    println!("{verified}");
    if let Some(reader) = read_back {
        let read = reader.finish(n)?;
        if read.records != n || read.reads != n || read.distinct_ids != n {
            return Err(BenchError::Failed(format!(
                "read back {} records from {TOPIC}: {} READ with {} distinct Ids, expected {n} \
                 (the mock cluster keeps the last 5 MB of a partition: more --partitions keep more)",
                read.records, read.reads, read.distinct_ids
            )));
        }
        println!("read back: {n} READ records in {TOPIC}, {n} distinct Ids");
    }
    drop(kafka);
    drop(sim);
    Ok(())
}

/// Logs in as the config's integration user, for `GET /limits`.
async fn login_limits(config: &Config) -> Result<Limits, BenchError> {
    let tls = crate::salesforce::tls::ClientTls::from_config(&config.salesforce)
        .map_err(|e| BenchError::Failed(format!("TLS settings: {e}")))?;
    let http = crate::salesforce::auth::http_client(&tls, config.salesforce.http_timeout)
        .map_err(|e| BenchError::Failed(format!("HTTP client: {e}")))?;
    let session = crate::salesforce::auth::Authenticator::new(&config.salesforce, http)
        .login()
        .await
        .map_err(|e| BenchError::Sim(format!("login: {e}")))?;
    use secrecy::ExposeSecret;
    let token = session.access_token.expose_secret().to_owned();
    Limits::new(config, &session.instance_url, token)
}

/// The figures.
fn report(args: &SnapshotBenchArgs, t: &Timeline, start: Instant, calls: u64, rss_before: u64) {
    let n = args.records as f64;
    let total = t.handoff.duration_since(start).as_secs_f64();
    let first = t.first_row.unwrap_or(t.handoff);
    let reading = t.handoff.duration_since(first).as_secs_f64();
    println!(
        "  start → first row            {:.2} s (login, position fixed, count, job)",
        first.duration_since(start).as_secs_f64()
    );
    println!(
        "  first row → handoff          {reading:.2} s   {:.0} rows/s",
        n / reading.max(1e-9)
    );
    println!(
        "  start → handoff              {total:.2} s   {:.0} rows/s",
        n / total.max(1e-9)
    );
    println!(
        "  API calls spent              {calls} (DailyApiRequests.Remaining drop, less the read)"
    );
    println!(
        "  RSS before the source        {:.1} MB; peak (VmHWM) {:.1} MB",
        mb(rss_before),
        mb(peak_rss().unwrap_or(0))
    );
    let max = t.rss.iter().map(|s| s.2).max().unwrap_or(0);
    let step = (t.rss.len() / 8).max(1);
    let points: Vec<String> = t
        .rss
        .iter()
        .step_by(step)
        .map(|(secs, rows, bytes)| format!("{secs:.0}s/{rows}r:{:.0}MB", mb(*bytes)))
        .collect();
    println!(
        "  RSS sampled each second      max {:.1} MB; {}",
        mb(max),
        points.join(" ")
    );
}
