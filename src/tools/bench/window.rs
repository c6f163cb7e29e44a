//! The measured window of `bench source`: waiting for the warm-up or for the subscriptions
//! before it opens, then watching the pipeline until Kafka acknowledged every record.
//!
//! Contract: [`Watch::window`] polls the pipeline's counters every 2 ms and closes the window at
//! the first look that finds every record acknowledged ([`Counts::total`]), or when the pipeline
//! stops, the run is interrupted or overruns its deadline (`--timeout-secs`, after the
//! `--duration`); meanwhile it samples VmRSS each second (and once at the close), notes when a
//! tenth and nine tenths of the measured records were acknowledged, plays `--kafka-outage` once,
//! and prints progress. It reads no CPU figures: the caller takes [`Marks`] when the window
//! opens and [`Ends`](super::machine::Ends) when it closes.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::BenchError;
use super::machine::{Marks, rss};
use super::source_args::SourceBenchArgs;
use crate::kafka::EmbeddedKafka;
use crate::ops::telemetry::PipelineStats;
use crate::source::PipelineError;

/// The records of a run: every one it waits for, and the part the window measures.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counts {
    /// Changes made flat out or at the rate.
    pub(super) n: usize,
    /// Changes made first to warm up (flat out, `--warmup`).
    pub(super) warmup: usize,
    /// Changes creating the records a `--duration` run updates.
    pub(super) pool_events: usize,
    /// Every record the run waits for: `warmup + n + pool_events`.
    pub(super) total: usize,
    /// The records the window measures: `n + pool_events`.
    pub(super) measured: usize,
}

impl Counts {
    /// The counts of a run of `args` whose pool took `pool_events` changes to create.
    pub(super) fn new(args: &SourceBenchArgs, pool_events: usize) -> Counts {
        let n = match (args.rate, args.duration) {
            (Some(rate), Some(secs)) => (rate * secs as f64).round() as usize,
            _ => args.events,
        };
        let warmup = if args.rate.is_none() { args.warmup } else { 0 };
        // Every record the run waits for; the window measures `measured` of them.
        Counts {
            n,
            warmup,
            pool_events,
            total: warmup + n + pool_events,
            measured: n + pool_events,
        }
    }
}

/// What the steps after the pipeline's start watch: its counters, its task, the deadline.
pub(super) struct Watch<'a> {
    counts: Counts,
    /// `--channels`.
    channels: usize,
    /// `--kafka-outage`: (start, length), seconds into the window.
    kafka_outage: Option<(u64, u64)>,
    /// A `--duration` run (progress every 30 s instead of 2 s).
    long_run: bool,
    stats: &'a PipelineStats,
    pipeline: &'a JoinHandle<Result<(), PipelineError>>,
    cancel: &'a CancellationToken,
    deadline: Instant,
}

/// What the measured window saw.
pub(super) struct Window {
    /// `Ok` when every record was acknowledged; otherwise why the window closed.
    pub(super) outcome: Result<(), String>,
    /// From the window's opening to its close.
    pub(super) elapsed: Duration,
    /// VmRSS each second and at the close: (seconds into the window, bytes).
    pub(super) rss_samples: Vec<(f64, u64)>,
    /// When a tenth and nine tenths of the measured records were acknowledged.
    pub(super) tenth: Option<Instant>,
    pub(super) nine_tenths: Option<Instant>,
    /// `--kafka-outage`: when the brokers go down and come back, into the window.
    pub(super) outage: Option<(Duration, Duration)>,
}

/// `--kafka-outage`, played once: every mock broker down from `down_at` to `up_at`.
struct Outage {
    down_at: Duration,
    up_at: Duration,
    brokers_down: bool,
    played: bool,
}

impl Outage {
    /// Takes the brokers down or brings them back as `elapsed` (into the window) calls for.
    fn play(&mut self, kafka: &EmbeddedKafka, elapsed: Duration) -> Result<(), BenchError> {
        let want_down = elapsed >= self.down_at && elapsed < self.up_at;
        if want_down != self.brokers_down && !(self.played && want_down) {
            for broker in 1..=3 {
                let toggled = if want_down {
                    kafka.cluster().broker_down(broker)
                } else {
                    kafka.cluster().broker_up(broker)
                };
                toggled.map_err(|e| BenchError::Kafka(e.to_string()))?;
            }
            self.brokers_down = want_down;
            self.played |= want_down;
            println!(
                "  [{:>6.1}s] Kafka brokers {}",
                elapsed.as_secs_f64(),
                if want_down { "down" } else { "back up" }
            );
        }
        Ok(())
    }
}

impl<'a> Watch<'a> {
    /// Watches the `pipeline` just started; the deadline counts from now (after the
    /// `--duration`, in a timed run).
    pub(super) fn new(
        args: &SourceBenchArgs,
        counts: Counts,
        stats: &'a PipelineStats,
        pipeline: &'a JoinHandle<Result<(), PipelineError>>,
        cancel: &'a CancellationToken,
    ) -> Watch<'a> {
        // A timed run commits changes for its whole duration: the timeout counts after it.
        let deadline = Instant::now()
            + Duration::from_secs(args.timeout_secs)
            + Duration::from_secs(args.duration.unwrap_or(0));
        Watch {
            counts,
            channels: usize::from(args.channels),
            kafka_outage: args.kafka_outage,
            long_run: args.duration.is_some(),
            stats,
            pipeline,
            cancel,
            deadline,
        }
    }

    /// Flat out with `--warmup`: waits until Kafka acknowledged the warm-up's records (`opened`:
    /// the marks taken before the pipeline started); the marks of the measured window.
    pub(super) async fn warm_up(&self, opened: &Marks) -> Marks {
        let warmup = self.counts.warmup;
        // The window opens at the first look that finds the warm-up's records acknowledged.
        while self.stats.snapshot().records_produced() < warmup as u64 {
            if self.pipeline.is_finished()
                || self.cancel.is_cancelled()
                || Instant::now() > self.deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!(
            "  [{:>6.1}s] warm-up: {warmup} records acknowledged; the measured window opens",
            opened.at.elapsed().as_secs_f64()
        );
        Marks::now()
    }

    /// At a rate: waits until the pipeline is subscribed on every channel (before the first
    /// change).
    pub(super) async fn until_subscribed(&self) {
        let channels = self.channels;
        loop {
            let snap = self.stats.snapshot();
            let up = snap.channels.values().filter(|c| c.stream_up).count();
            if up >= channels || self.pipeline.is_finished() || Instant::now() > self.deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The measured window, from `window_start` until every record is acknowledged (or the
    /// pipeline stops, the run is interrupted or overruns): memory sampled every second, the
    /// outage played.
    pub(super) async fn window(
        &self,
        kafka: &EmbeddedKafka,
        window_start: Instant,
    ) -> Result<Window, BenchError> {
        let Counts {
            warmup,
            total,
            measured,
            ..
        } = self.counts;
        let mut last_report = Instant::now();
        let mut rss_samples: Vec<(f64, u64)> = Vec::new();
        let mut next_sample = Instant::now();
        let outage = self
            .kafka_outage
            .map(|(start, len)| (Duration::from_secs(start), Duration::from_secs(start + len)));
        let mut brokers = outage.map(|(down_at, up_at)| Outage {
            down_at,
            up_at,
            brokers_down: false,
            played: false,
        });
        // When a tenth and nine tenths of the records were acknowledged: the steady state between
        // them leaves out the startup and the tail.
        let mut tenth: Option<Instant> = None;
        let mut nine_tenths: Option<Instant> = None;
        let outcome = loop {
            let now = Instant::now();
            let elapsed = window_start.elapsed();
            if now >= next_sample {
                next_sample = now + Duration::from_secs(1);
                if let Some(bytes) = rss() {
                    rss_samples.push((elapsed.as_secs_f64(), bytes));
                }
            }
            if let Some(brokers) = &mut brokers {
                brokers.play(kafka, elapsed)?;
            }
            let produced = self.stats.snapshot().records_produced();
            let in_window = produced.saturating_sub(warmup as u64);
            if tenth.is_none() && in_window * 10 >= measured as u64 {
                tenth = Some(Instant::now());
            }
            if nine_tenths.is_none() && in_window * 10 >= measured as u64 * 9 {
                nine_tenths = Some(Instant::now());
            }
            if produced >= total as u64 {
                break Ok(());
            }
            if self.pipeline.is_finished() {
                break Err("the pipeline stopped early".to_owned());
            }
            if self.cancel.is_cancelled() {
                break Err("interrupted".to_owned());
            }
            if Instant::now() > self.deadline {
                break Err(format!(
                    "timed out with {produced}/{total} records acknowledged"
                ));
            }
            let every = if self.long_run { 30 } else { 2 };
            if last_report.elapsed() >= Duration::from_secs(every) {
                last_report = Instant::now();
                println!(
                    "  [{:>6.1}s] records acknowledged {produced:>8}/{total}",
                    window_start.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let elapsed = window_start.elapsed();
        // And once at the close, so that the memory after an outage is there however the last
        // second's samples fell (a run can end in the iteration that brought the brokers back).
        if let Some(bytes) = rss() {
            rss_samples.push((elapsed.as_secs_f64(), bytes));
        }
        Ok(Window {
            outcome,
            elapsed,
            rss_samples,
            tenth,
            nine_tenths,
            outage,
        })
    }
}
