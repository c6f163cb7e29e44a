//! What the benches print: the results of a `bench source` run ([`print_source`]) and of a
//! `bench sink` run ([`print_sink`]), and the figures both use (the machine's CPUs over the
//! window, nearest-rank quantiles).
//!
//! Contract: takes the figures a run measured and prints them to stdout, one figure a line,
//! labels padded to one column (44 characters for the source, 48 for the sink), `n/a` where a
//! figure could not be read; decides nothing (the runs verify their own counts).

use std::time::{Duration, Instant};

use super::machine::{Ends, MachineTicks, Marks, huge_pages_enabled};
use super::workload::LONG_RUN_QUEUE;
use crate::kafka::LatencySplit;
use crate::ops::telemetry::{DELIVERY_LATENCY_BUCKETS, SinkSnapshot, StatsSnapshot};

/// The `q` quantile (0..=1) of sorted samples (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Upper bound (ms) of the histogram bucket holding the `q` quantile; `None` past the last bound.
fn bucket_quantile(buckets: &[u64], q: f64) -> Option<Option<f64>> {
    crate::ops::telemetry::nearest_rank_bucket(buckets, q)
        .map(|i| DELIVERY_LATENCY_BUCKETS.get(i).map(|s| s * 1000.0))
}

/// Prints how busy, stolen and idle the machine's CPUs were between `start` and `end` (the
/// window), the label padded to `width`.
pub(super) fn print_machine(start: Option<MachineTicks>, end: Option<MachineTicks>, width: usize) {
    let Some(m) = start.zip(end).map(|(a, b)| b.since(&a)) else {
        return;
    };
    println!(
        "  {:<width$} busy {:.0}%, stolen {:.0}%, idle {:.0}%",
        "the machine's CPUs over the window",
        m.percent(m.busy),
        m.percent(m.steal),
        m.percent(m.idle),
    );
    println!(
        "    (/proc/stat, all CPUs; stolen: time the hypervisor gave to other guests; a run with much of it is not comparable)"
    );
}

/// The figures of a `bench source` run.
#[derive(Clone, Copy)]
pub(super) struct SourceFigures<'a> {
    /// Changes made in the org: every record the run waited for.
    pub(super) total: usize,
    /// Of them, made to warm up before the window (`--warmup`).
    pub(super) warmup: usize,
    /// Of them, the records the window measures.
    pub(super) measured: usize,
    /// Of them, creating the records a `--duration` run updates.
    pub(super) pool_events: usize,
    /// The changes made flat out or at the rate.
    pub(super) n: usize,
    /// The pipeline's counters after the run.
    pub(super) snapshot: &'a StatsSnapshot,
    /// The measured window, seconds.
    pub(super) secs: f64,
    /// How long committing the changes at the rate took (a rate run).
    pub(super) generation: Option<Duration>,
    /// Flat out: the changes were made before the window.
    pub(super) flat_out: bool,
    /// When a tenth and nine tenths of the measured records were acknowledged.
    pub(super) tenth: Option<Instant>,
    pub(super) nine_tenths: Option<Instant>,
    /// The readings at the window's opening and close.
    pub(super) marks: &'a Marks,
    pub(super) ends: &'a Ends,
    /// Change asked of the org → Kafka acknowledgement ([`crate::kafka::LatencyProbe`]).
    pub(super) latency: &'a LatencySplit,
    /// A `--duration` run's memory.
    pub(super) memory: Option<Memory<'a>>,
}

/// The memory of a `--duration` run.
#[derive(Clone, Copy)]
pub(super) struct Memory<'a> {
    /// VmRSS samples: (seconds into the window, bytes).
    pub(super) samples: &'a [(f64, u64)],
    /// The Kafka outage: its start and end, into the window.
    pub(super) outage: Option<(Duration, Duration)>,
}

/// Prints the results of a `bench source` run.
pub(super) fn print_source(f: &SourceFigures<'_>) {
    print_counts(f);
    print_cpu(f);
    print_machine(f.marks.machine, f.ends.machine, 44);
    print_faults(f);
    print_latency(f);
    print_memory_figures(f);
}

/// The events and records, the window, the throughput (and the steady state, flat out).
fn print_counts(f: &SourceFigures<'_>) {
    let SourceFigures {
        total,
        warmup,
        measured,
        pool_events,
        n,
        secs,
        ..
    } = *f;
    let produced = f.snapshot.records_produced();
    let received = f.snapshot.events_received();
    println!();
    println!("results");
    println!("  {:<44} {total}", "events made in the org");
    if warmup > 0 {
        println!(
            "    ({warmup} of them warming up, before the measured window; {measured} measured)"
        );
    }
    if pool_events > 0 {
        println!(
            "    ({pool_events} of them creating the records that the {n} updates at the rate change)"
        );
    }
    println!("  {:<44} {received}", "events received by forcebridge");
    println!("  {:<44} {produced}", "records acknowledged by Kafka");
    println!(
        "  {:<44} {}",
        "dead-lettered",
        f.snapshot.events_dead_lettered()
    );
    println!("  {:<44} {:.3} s", "measured window", secs);
    if let Some(g) = f.generation {
        println!(
            "  {:<44} {:.3} s",
            "  of which committing changes at the rate",
            g.as_secs_f64()
        );
    }
    println!(
        "  {:<44} {:.0}",
        "throughput, events/s (end to end)",
        measured as f64 / secs
    );
    if f.flat_out
        && let (Some(a), Some(b)) = (f.tenth, f.nine_tenths)
    {
        let between = b.duration_since(a).as_secs_f64();
        let label = "  steady state (10 % → 90 % acknowledged)";
        if between > 0.0 {
            println!(
                "  {label:<44} {:.0}  (the middle 80 % of the records in {between:.3} s)",
                0.8 * measured as f64 / between
            );
        } else {
            println!("  {label:<44} n/a  (acknowledged between two looks: too few records)");
        }
    }
}

/// CPU time per event, over the whole process and per part.
fn print_cpu(f: &SourceFigures<'_>) {
    match (f.marks.cpu, f.ends.cpu) {
        (Some(a), Some(b)) => {
            let cpu = b.saturating_sub(a);
            println!(
                "  {:<44} {:.1} µs  ({:.2} s CPU over the window, {:.0}% of one core)",
                "CPU time per event",
                cpu.as_secs_f64() * 1e6 / f.measured.max(1) as f64,
                cpu.as_secs_f64(),
                100.0 * cpu.as_secs_f64() / f.secs
            );
        }
        _ => println!("  {:<44} n/a (no /proc/self/stat)", "CPU time per event"),
    }
    if let (Some(a), Some(b)) = (f.marks.parts, f.ends.parts) {
        for (i, label) in [
            "  forcebridge (pipeline, Kafka client)",
            "  simulated org (serving, committing)",
            "  mock Kafka cluster",
        ]
        .into_iter()
        .enumerate()
        {
            let cpu = b[i].saturating_sub(a[i]);
            println!(
                "  {:<44} {:.1} µs  ({:.0}% of one core)",
                label,
                cpu.as_secs_f64() * 1e6 / f.measured.max(1) as f64,
                100.0 * cpu.as_secs_f64() / f.secs
            );
        }
    }
    println!(
        "    (process user+sys, 10 ms ticks; includes the in-process simulated org and mock Kafka{})",
        if f.flat_out {
            "; the changes were made before the window"
        } else {
            ", and committing the changes"
        }
    );
}

/// Minor page faults over the window.
fn print_faults(f: &SourceFigures<'_>) {
    if let (Some(a), Some(b)) = (f.marks.faults, f.ends.faults) {
        println!(
            "  {:<44} {}  ({:.0}/s)",
            "minor page faults over the window",
            b.saturating_sub(a),
            b.saturating_sub(a) as f64 / f.secs
        );
        println!(
            "    (memory the process touches for the first time; on a VM that hands freed memory back to its host, each costs a host fault too)"
        );
    }
}

/// Latency from the change asked of the org to the Kafka acknowledgement, and its two legs.
fn print_latency(f: &SourceFigures<'_>) {
    let ms = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| format!("{v} ms"));
    let quantiles = |label: &str, counts: &crate::kafka::LatencyCounts, samples: &str| {
        println!(
            "  {label:<44} p50 {}  p99 {}  max {}{samples}",
            ms(counts.quantile(0.50)),
            ms(counts.quantile(0.99)),
            ms((counts.total() > 0).then_some(counts.max_ms)),
        );
    };
    quantiles(
        "latency change → Kafka ack",
        &f.latency.total,
        &format!("  ({} samples)", f.latency.total.total()),
    );
    quantiles(
        "  change → producer enqueue",
        &f.latency.before_producer,
        "",
    );
    quantiles("  producer enqueue → Kafka ack", &f.latency.in_producer, "");
    println!(
        "  {:<44} {} ({:.2} %), on average {:.1} ms before the producer, {:.1} ms in it",
        format!(
            "  records of {} ms or more",
            crate::kafka::LatencyProbe::SLOW_MS
        ),
        f.latency.slow,
        100.0 * f.latency.slow as f64 / f.latency.total.total().max(1) as f64,
        f.latency.slow_before_ms,
        f.latency.slow_in_ms,
    );
    if f.flat_out {
        println!(
            "    (flat out: the changes were committed before the pipeline started, so this is mostly queueing)"
        );
    }
    println!(
        "    (from the moment the bench asked the org for the change, in whole ms; not from commitTimestamp, which has second precision)"
    );
}

/// The producer's histogram, the peak RSS, huge pages, and the memory of a `--duration` run.
fn print_memory_figures(f: &SourceFigures<'_>) {
    let bound = |v: Option<Option<f64>>| match v {
        None => "n/a".to_owned(),
        Some(Some(b)) => format!("<= {b} ms"),
        Some(None) => "> 10000 ms".to_owned(),
    };
    println!(
        "  {:<44} p50 {}  p99 {}  mean {:.2} ms  ({} reports)",
        "Kafka producer enqueue → ack (histogram)",
        bound(bucket_quantile(&f.snapshot.deliveries.buckets, 0.50)),
        bound(bucket_quantile(&f.snapshot.deliveries.buckets, 0.99)),
        f.snapshot.deliveries.sum_seconds * 1000.0 / f.snapshot.deliveries.count().max(1) as f64,
        f.snapshot.deliveries.count()
    );
    match f.ends.rss {
        Some(b) => println!(
            "  {:<44} {:.1} MiB  (whole process, incl. the org's stored events)",
            "peak RSS (VmHWM)",
            b as f64 / (1 << 20) as f64
        ),
        None => println!("  {:<44} n/a", "peak RSS (VmHWM)"),
    }
    println!(
        "  {:<44} {}",
        "transparent huge pages",
        match huge_pages_enabled() {
            Some(false) => "off for this process (MIMALLOC_ALLOW_THP=1 keeps them on)",
            Some(true) => "on (as the system's setting allows)",
            None => "n/a",
        }
    );
    if let Some(memory) = f.memory {
        print_memory(memory.samples, memory.outage);
    }
}

/// The memory of a `--duration` run: a sample per tenth of the run, then the steady state
/// (after the first tenth) and, with an outage, the peak during it and the last sample after.
fn print_memory(samples: &[(f64, u64)], outage: Option<(Duration, Duration)>) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let Some(&(end, _)) = samples.last() else {
        println!("  memory: no /proc/self/status samples");
        return;
    };
    println!(
        "  {:<44} (whole process, incl. the org and the mock cluster; librdkafka's queue bounded at {LONG_RUN_QUEUE} records)",
        "memory over the run (VmRSS, sampled each second and at the end)"
    );
    let mut next = 0.0;
    for (i, &(t, bytes)) in samples.iter().enumerate() {
        if t >= next || i + 1 == samples.len() {
            println!("    [{t:>6.0}s] {:>8.1} MiB", mib(bytes));
            next = t + end / 10.0;
        }
    }
    let steady: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= end / 10.0)
        .map(|(_, b)| *b)
        .collect();
    if let (Some(min), Some(max), Some(first), Some(last)) = (
        steady.iter().min(),
        steady.iter().max(),
        steady.first(),
        steady.last(),
    ) {
        println!(
            "  {:<44} min {:.1} MiB, max {:.1} MiB, last − first {:+.1} MiB",
            "after the first tenth of the run",
            mib(*min),
            mib(*max),
            mib(*last) - mib(*first)
        );
    }
    if let Some((down, up)) = outage {
        let (down, up) = (down.as_secs_f64(), up.as_secs_f64());
        let before = samples
            .iter()
            .filter(|(t, _)| *t < down)
            .map(|(_, b)| *b)
            .max();
        let during = samples
            .iter()
            .filter(|(t, _)| *t >= down && *t < up)
            .map(|(_, b)| *b)
            .max();
        let after = samples
            .iter()
            .filter(|(t, _)| *t >= up)
            .map(|(_, b)| *b)
            .next_back();
        let show = |v: Option<u64>| v.map_or("n/a".to_owned(), |b| format!("{:.1} MiB", mib(b)));
        println!(
            "  {:<44} max before {}, max during {}, last after {}",
            "Kafka outage",
            show(before),
            show(during),
            show(after)
        );
    }
}

/// The figures of a `bench sink` run.
#[derive(Clone, Copy)]
pub(super) struct SinkFigures<'a> {
    /// Write-back records produced.
    pub(super) n: usize,
    /// The sink's counters after the run.
    pub(super) snapshot: &'a SinkSnapshot,
    /// Records not holding their new value in the org.
    pub(super) wrong: usize,
    /// The measured window.
    pub(super) window: Duration,
    /// When the first records were seen written (into the window), and how many.
    pub(super) first_write: Option<(Duration, u64)>,
    /// API calls spent by the `/limits` drop, and the calls the batch plan needs.
    pub(super) spent: u64,
    pub(super) planned: u64,
    /// Composite call latencies as the sink's REST client saw them, µs, sorted.
    pub(super) latencies: &'a [u64],
    /// Process CPU time at the window's opening and close.
    pub(super) cpu: (Option<Duration>, Option<Duration>),
    /// The machine's CPU ticks at the window's opening and close.
    pub(super) machine: (Option<MachineTicks>, Option<MachineTicks>),
    /// Peak RSS (`VmHWM`), bytes.
    pub(super) rss: Option<u64>,
}

/// Prints the results of a `bench sink` run.
pub(super) fn print_sink(f: &SinkFigures<'_>) {
    print_sink_counts(f);
    print_sink_calls(f);
    print_sink_cpu(f);
}

/// The records and their outcomes, the window and the throughput.
fn print_sink_counts(f: &SinkFigures<'_>) {
    let SinkFigures { n, window, .. } = *f;
    let secs = window.as_secs_f64();
    println!();
    println!("results");
    println!("  {:<48} {n}", "write-back records produced");
    println!(
        "  {:<48} {}",
        "records written by the sink", f.snapshot.written
    );
    println!("  {:<48} {}", "conflicts", f.snapshot.conflicts);
    println!("  {:<48} {}", "dead-lettered", f.snapshot.dead_lettered);
    println!(
        "  {:<48} {}",
        "records holding their new value in the org",
        n - f.wrong
    );
    println!("  {:<48} {:.3} s", "measured window", secs);
    if let Some((first, _)) = f.first_write {
        println!(
            "  {:<48} {:.3} s",
            "  of which until the first records were written",
            first.as_secs_f64()
        );
    }
    println!(
        "  {:<48} {:.0}",
        "throughput, records/s (end to end)",
        n as f64 / secs
    );
    if let Some((first, written)) = f.first_write
        && written < n as u64
    {
        println!(
            "  {:<48} {:.0}  ({} records in {:.3} s)",
            "  after the first records were written",
            (n as u64 - written) as f64 / (window - first).as_secs_f64(),
            n as u64 - written,
            (window - first).as_secs_f64()
        );
    }
}

/// The API calls spent, counted, planned, and the Composite calls' latency.
fn print_sink_calls(f: &SinkFigures<'_>) {
    let SinkFigures {
        n, spent, planned, ..
    } = *f;
    let ms = |us: Option<u64>| us.map_or("n/a".to_owned(), |v| format!("{:.1} ms", v as f64 / 1e3));
    println!("  {:<48} {spent}", "Salesforce API calls spent (/limits)");
    println!(
        "  {:<48} {}  (Composite calls {}, describe calls {}, batches {})",
        "REST calls counted by the sink",
        f.snapshot.api_calls,
        f.snapshot.composite_calls,
        f.snapshot.describe_calls,
        f.snapshot.batches
    );
    println!("  {:<48} {planned}", "API calls planned with full batches");
    println!(
        "  {:<48} {:.1}",
        "records per API call",
        n as f64 / spent.max(1) as f64
    );
    println!(
        "  {:<48} p50 {}  p99 {}  max {}  ({} calls)",
        "Composite call latency (as the sink saw it)",
        ms(quantile(f.latencies, 0.50)),
        ms(quantile(f.latencies, 0.99)),
        ms(f.latencies.last().copied()),
        f.latencies.len()
    );
}

/// CPU time per record, the machine's CPUs and the peak RSS.
fn print_sink_cpu(f: &SinkFigures<'_>) {
    let secs = f.window.as_secs_f64();
    match f.cpu {
        (Some(a), Some(b)) => {
            let cpu = b.saturating_sub(a);
            println!(
                "  {:<48} {:.1} µs  ({:.2} s CPU over the window, {:.0}% of one core)",
                "CPU time per record",
                cpu.as_secs_f64() * 1e6 / f.n as f64,
                cpu.as_secs_f64(),
                100.0 * cpu.as_secs_f64() / secs
            );
        }
        _ => println!("  {:<48} n/a (no /proc/self/stat)", "CPU time per record"),
    }
    println!(
        "    (process user+sys, 10 ms ticks; includes the in-process simulated org and mock Kafka)"
    );
    print_machine(f.machine.0, f.machine.1, 48);
    match f.rss {
        Some(b) => println!(
            "  {:<48} {:.1} MiB  (whole process, incl. the org's records and events)",
            "peak RSS (VmHWM)",
            b as f64 / (1 << 20) as f64
        ),
        None => println!("  {:<48} n/a", "peak RSS (VmHWM)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[], 0.5), None);
        let mut buckets = [0u64; DELIVERY_LATENCY_BUCKETS.len() + 1];
        buckets[0] = 60;
        buckets[3] = 39;
        buckets[DELIVERY_LATENCY_BUCKETS.len()] = 1;
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(Some(1.0)));
        assert_eq!(bucket_quantile(&buckets, 0.99), Some(Some(10.0)));
        assert_eq!(bucket_quantile(&buckets, 1.0), Some(None));
    }
}
