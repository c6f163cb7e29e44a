//! `forcebridge bench source` as a user runs it: every figure is printed and the counts match.
//! No assertion on speed.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> String {
    bench_with(args, &[])
}

fn bench_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_bench(args, env);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// A run that must fail: its stdout and stderr together.
fn failing_bench(args: &[&str]) -> String {
    let output = run_bench(args, &[]);
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{all}");
    all
}

/// `forcebridge bench source ARGS`, with `env` and without the caller's `MIMALLOC_ALLOW_THP`.
fn run_bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["bench", "source"])
        .args(args)
        .env_remove("MIMALLOC_ALLOW_THP")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The value after a result label, e.g. `records acknowledged by Kafka   300`.
fn figure<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .trim()
}

fn check_figures(out: &str, events: u64) {
    for label in [
        "events made in the org",
        "events received by forcebridge",
        "records acknowledged by Kafka",
    ] {
        assert_eq!(figure(out, label), events.to_string(), "{label}\n{out}");
    }
    assert_eq!(figure(out, "dead-lettered"), "0", "{out}");
    let rate: f64 = figure(out, "throughput, events/s (end to end)")
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{out}");
    assert!(figure(out, "CPU time per event").contains(" µs"), "{out}");
    for part in [
        "forcebridge (pipeline, Kafka client)",
        "simulated org (serving, committing)",
        "mock Kafka cluster",
    ] {
        assert!(figure(out, part).contains(" µs"), "{part}: {out}");
    }
    let latency = figure(out, "latency change → Kafka ack");
    for part in ["p50 ", "p99 ", "max ", &format!("({events} samples)")] {
        assert!(latency.contains(part), "{part}: {out}");
    }
    assert!(!latency.contains("n/a"), "{out}");
    for leg in ["change → producer enqueue", "producer enqueue → Kafka ack"] {
        let leg = figure(out, leg);
        assert!(leg.contains("p99 ") && !leg.contains("n/a"), "{leg}: {out}");
    }
    assert!(
        figure(out, "records of 10 ms or more").contains(" ms before the producer, "),
        "{out}"
    );
    // `main` turns them off: their first touches were the latency's tail.
    assert!(
        figure(out, "transparent huge pages").starts_with("off for this process"),
        "{out}"
    );
    let delivery = figure(out, "Kafka producer enqueue → ack (histogram)");
    assert!(delivery.contains(&format!("({events} reports)")), "{out}");
    assert!(figure(out, "peak RSS (VmHWM)").contains(" MiB"), "{out}");
    let machine = figure(out, "the machine's CPUs over the window");
    for part in ["busy ", "stolen ", "idle "] {
        assert!(machine.contains(part), "{part}: {out}");
    }
}

#[test]
fn flat_out_prints_every_figure_with_matching_counts() {
    let out = bench(&["--events", "300"]);
    assert!(out.contains("flat out"), "{out}");
    check_figures(&out, 300);
    // A figure, or n/a when 300 records were acknowledged between two looks.
    let steady = figure(&out, "steady state (10 % → 90 % acknowledged)");
    assert!(
        steady.contains("the middle 80 % of the records") || steady.starts_with("n/a"),
        "{out}"
    );
}

#[test]
fn a_warm_up_is_drained_before_the_window_and_counted_apart() {
    let out = bench(&["--events", "300", "--warmup", "200"]);
    assert!(out.contains("made 200 + 300 changes"), "{out}");
    assert!(
        out.contains("warm-up: 200 records acknowledged; the measured window opens"),
        "{out}"
    );
    assert!(
        out.contains("(200 of them warming up, before the measured window; 300 measured)"),
        "{out}"
    );
    // Every record is still counted and checked, the warm-up's included.
    check_figures(&out, 500);
    // A count, then its rate.
    let faults = figure(&out, "minor page faults over the window");
    let count = faults.split_whitespace().next().unwrap();
    assert!(count.parse::<u64>().is_ok(), "{out}");
    assert!(faults.ends_with("/s)"), "{out}");
}

#[test]
fn at_a_rate_on_two_wide_channels_with_a_round_trip() {
    let out = bench(&[
        "--events",
        "200",
        "--rate",
        "400",
        "--channels",
        "2",
        "--width",
        "30",
        "--rtt",
        "5",
    ]);
    assert!(
        out.contains("at 400 events/s; 2 channel(s), 30 fields per event, rtt 5 ms"),
        "{out}"
    );
    check_figures(&out, 200);
}

#[test]
fn a_timed_run_through_a_kafka_outage_reports_memory_and_loses_nothing() {
    let out = bench(&["--rate", "300", "--duration", "4", "--kafka-outage", "1+2"]);
    // 1,200 updates at the rate plus the 2,000 creations of the records they update.
    check_figures(&out, 3200);
    assert!(out.contains("Kafka brokers down"), "{out}");
    assert!(out.contains("Kafka brokers back up"), "{out}");
    assert!(
        figure(
            &out,
            "memory over the run (VmRSS, sampled each second and at the end)"
        )
        .contains("bounded at 20000 records"),
        "{out}"
    );
    let outage = figure(&out, "Kafka outage");
    for part in ["max before ", "max during ", "last after "] {
        assert!(
            outage.contains(part) && !outage.contains("n/a"),
            "{part}: {out}"
        );
    }
}

#[test]
fn a_kafka_property_reaches_the_producer() {
    // Applied: a value librdkafka refuses stops the run with an error naming the property.
    let all = failing_bench(&[
        "--events",
        "10",
        "--kafka-property",
        "linger.ms=not-a-number",
    ]);
    assert!(all.contains("linger.ms"), "{all}");
    // And a valid one runs.
    let out = bench(&["--events", "50", "--kafka-property", "linger.ms=0"]);
    check_figures(&out, 50);
}

#[test]
fn a_property_the_config_refuses_stops_the_run_with_its_key_not_a_panic() {
    // Refused before the pipeline starts, while the org's runtime runs: the run stops with the
    // config's error (and its runtimes shut down without a panic).
    let all = failing_bench(&[
        "--events",
        "10",
        "--kafka-property",
        "enable.idempotence=false",
    ]);
    assert!(all.contains("kafka.properties.enable.idempotence"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn huge_pages_stay_on_when_mimalloc_is_told_to_allow_them() {
    let out = bench_with(&["--events", "20"], &[("MIMALLOC_ALLOW_THP", "1")]);
    assert!(
        figure(&out, "transparent huge pages").starts_with("on"),
        "{out}"
    );
}

#[test]
fn full_record_completes_every_update_and_prints_its_reads() {
    let out = bench(&["--events", "3000", "--full-record"]);
    check_figures(&out, 3000);
    let line = figure(&out, "full_record:");
    // `N retrieve calls for 3000 records completed (0 absent); the org counted M API calls`
    let words: Vec<&str> = line.split_whitespace().collect();
    let calls: u64 = words[0].parse().expect(line);
    assert_eq!(
        &words[1..6],
        ["retrieve", "calls", "for", "3000", "records"],
        "{line}"
    );
    assert!(line.contains("completed (0 absent)"), "{line}");
    // 2,000 Ids per call at most; one describe besides the retrieves.
    assert!(calls >= 2, "{line}");
    let api: u64 = words[words.len() - 3].parse().expect(line);
    assert_eq!(api, calls + 1, "{line}");
}

/// `forcebridge bench snapshot ARGS`: its stdout, the run having succeeded.
fn snapshot_bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["bench", "snapshot"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// The verification line, the figures' labels and the API calls a snapshot of `records` spent.
fn check_snapshot(out: &str, records: u64) -> u64 {
    let verified = format!(
        "verified: {records} READ rows read, {records} records acknowledged on salesforce.Account, 0 deliveries failed"
    );
    assert!(out.lines().any(|l| l == verified), "{out}");
    let read_back =
        format!("read back: {records} READ records in salesforce.Account, {records} distinct Ids");
    assert!(out.lines().any(|l| l == read_back), "{out}");
    for label in [
        "first row → handoff",
        "start → handoff",
        "RSS before the source",
        "RSS sampled each second",
    ] {
        assert!(figure(out, label).len() > 1, "{out}");
    }
    let calls = figure(out, "API calls spent");
    calls
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("API calls: {calls:?} in:\n{out}"))
}

#[test]
fn a_rest_snapshot_of_2000_records_verifies() {
    let out = snapshot_bench(&["--records", "2000", "--partitions", "2", "--read-back"]);
    assert!(out.contains("REST query pages"), "{out}");
    // At least the count and one query page (2,000 rows a page).
    assert!(check_snapshot(&out, 2000) >= 2, "{out}");
}

#[test]
fn a_bulk_snapshot_pages_its_results_and_verifies() {
    let args = [
        "--records",
        "2000",
        "--rest-below",
        "0",
        "--page-records",
        "1000",
        "--read-back",
    ];
    let out = snapshot_bench(&args);
    assert!(
        out.contains("Bulk API 2.0 query job, pages of 1000 rows"),
        "{out}"
    );
    // The job's create, status and two result pages at least.
    assert!(check_snapshot(&out, 2000) >= 4, "{out}");
}
