//! `forcebridge bench sink` as a user runs it: every figure is printed, every record was written
//! and verified in the org, and the API calls match what the batch plan needs. No assertion on
//! speed.

use std::process::Command;

use forcebridge::tools::bench::sink::planned_calls;

fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
        .args(["bench", "sink"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// The value after a result label, e.g. `records written by the sink   3000`.
fn figure<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .trim()
}

fn number(out: &str, label: &str) -> f64 {
    let text = figure(out, label);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{label}: {text:?} is not a number\n{out}"))
}

/// Checks the figures every run prints; returns the API calls spent.
fn check_figures(out: &str, records: u64) -> u64 {
    assert_eq!(
        number(out, "write-back records produced"),
        records as f64,
        "{out}"
    );
    assert_eq!(
        number(out, "records written by the sink"),
        records as f64,
        "{out}"
    );
    assert_eq!(
        number(out, "records holding their new value in the org"),
        records as f64,
        "{out}"
    );
    assert_eq!(figure(out, "conflicts"), "0", "{out}");
    assert_eq!(figure(out, "dead-lettered"), "0", "{out}");
    assert!(
        number(out, "throughput, records/s (end to end)") > 0.0,
        "{out}"
    );
    let spent = number(out, "Salesforce API calls spent (/limits)") as u64;
    assert!(spent > 0, "{out}");
    assert_eq!(
        number(out, "REST calls counted by the sink") as u64,
        spent,
        "{out}"
    );
    let per_call = number(out, "records per API call");
    assert!(
        (per_call - records as f64 / spent as f64).abs() < 0.1,
        "{per_call}: {out}"
    );
    // The calls are the Composite calls and one describe per object (the describe cache).
    let counted = figure(out, "REST calls counted by the sink");
    let after = |label: &str| -> u64 {
        counted
            .split(label)
            .nth(1)
            .and_then(|rest| rest.split([',', ')']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in {counted:?}"))
    };
    let (composite, describes) = (after("Composite calls"), after("describe calls"));
    assert_eq!(composite + describes, spent, "{out}");
    assert!(
        (1..=2).contains(&describes),
        "one describe per object: {out}"
    );
    let latency = figure(out, "Composite call latency (as the sink saw it)");
    assert!(latency.contains(&format!("({composite} calls)")), "{out}");
    assert!(!latency.contains("n/a"), "{out}");
    assert!(figure(out, "CPU time per record").contains(" µs"), "{out}");
    assert!(figure(out, "peak RSS (VmHWM)").contains(" MiB"), "{out}");
    let machine = figure(out, "the machine's CPUs over the window");
    for part in ["busy ", "stolen ", "idle "] {
        assert!(machine.contains(part), "{part}: {out}");
    }
    spent
}

/// Full batches (a long linger, a record count that the batch size divides): the calls are
/// exactly the plan's — with last-write-wins, one read call per batch plus the write calls.
#[test]
fn full_batches_spend_the_planned_calls() {
    let (records, batch) = (3_000, 1_500);
    let out = bench(&[
        "--records",
        "3000",
        "--batch-records",
        "1500",
        "--linger-ms",
        "20000",
        "--rest-latency",
        "5",
    ]);
    assert!(out.contains("REST latency 5 ms"), "{out}");
    let spent = check_figures(&out, records);
    let planned = planned_calls(records as usize, 1, batch);
    assert_eq!(
        number(&out, "API calls planned with full batches") as u64,
        planned,
        "{out}"
    );
    assert_eq!(spent, planned, "{out}");
    // One describe of Account, then each batch: its reads fit one call (1,500 Ids ≤ 5
    // retrieves of 2,000), its writes take ⌈⌈1,500 / 200⌉ / 5⌉ calls.
    let per_batch = 1 + (batch as u64).div_ceil(200).div_ceil(5);
    assert_eq!(planned, 1 + (records / batch as u64) * per_batch, "{out}");
    let p50: f64 = figure(&out, "Composite call latency (as the sink saw it)")
        .strip_prefix("p50 ")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no p50: {out}"));
    assert!(p50 >= 5.0, "the org's latency is part of every call: {out}");
}

/// The defaults, two objects: at least the plan's calls (a batch cut short by the linger only
/// adds calls), and never more records per call than a batch's writes alone allow (five
/// collections of 200).
#[test]
fn defaults_on_two_objects_stay_within_the_plan() {
    let records = 3_000u64;
    let out = bench(&["--records", "3000", "--objects", "2"]);
    assert!(out.contains("over 2 object(s)"), "{out}");
    let spent = check_figures(&out, records);
    let planned = number(&out, "API calls planned with full batches") as u64;
    assert!(planned > 0, "{out}");
    assert!(spent >= planned, "{spent} < {planned}: {out}");
    assert!(
        number(&out, "records per API call") <= 1_000.0,
        "five collections of 200 per call at most: {out}"
    );
}
