//! What `bench source` makes happen in the simulated org: the org itself (on a runtime of its
//! own, with the bench's fields), the changes, the record pool of a `--duration` run and its
//! bounds, and the generator that commits changes at `--rate`.
//!
//! Contract: change `i` is made on object `i % channels` (Account, then Contact, the objects of
//! [`OBJECTS`]) and sets exactly `--width` fields: `Name` plus `Bench_Field_<k>__c` text fields of
//! 16 characters, which [`start_org`] adds to the objects' schemas; the last of them
//! ([`timing_field`]) holds the moment the bench asks the org for the change (epoch ms), which
//! the latency is measured from (the change event's `commitTimestamp` has second precision in
//! Salesforce, as the simulated org gives it). A `--duration` run updates a
//! fixed [`POOL`] of records per object instead of creating records, so that the org's own memory
//! stays flat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::error::BenchError;
use crate::sim::{SimConfig, SimOrg};

/// The objects changed and the channels streamed, in the order `--channels` takes them.
pub(super) const OBJECTS: [(&str, &str); 2] = [
    ("Account", "/data/AccountChangeEvent"),
    ("Contact", "/data/ContactChangeEvent"),
];

/// Records per object updated round-robin in a `--duration` run.
const POOL: usize = 2_000;
/// How long the org keeps events in a `--duration` run (its memory stays bounded).
const LONG_RUN_RETENTION: Duration = Duration::from_secs(60);
/// librdkafka's queue bound in a `--duration` run: memory during a Kafka outage.
pub(super) const LONG_RUN_QUEUE: usize = 20_000;

/// Starts the org on `runtime` (its threads count as the org's CPU), keeping events for
/// [`LONG_RUN_RETENTION`] in a `long_run`, with the `rtt` (ms) and the bench's fields for `width`
/// on the first `channels` objects.
pub(super) async fn start_org(
    runtime: &tokio::runtime::Runtime,
    long_run: bool,
    rtt: u64,
    channels: usize,
    width: u16,
) -> Result<SimOrg, BenchError> {
    let sim = runtime
        .spawn(SimOrg::start(SimConfig {
            retention: if long_run {
                LONG_RUN_RETENTION
            } else {
                SimConfig::default().retention
            },
            ..SimConfig::default()
        }))
        .await
        .map_err(|e| BenchError::Sim(e.to_string()))?
        .map_err(|e| BenchError::Sim(e.to_string()))?;
    sim.set_stream_rtt(Duration::from_millis(rtt));
    for (object, _) in &OBJECTS[..channels] {
        for k in 1..width {
            sim.add_field(object, &format!("Bench_Field_{k}__c"), json!("string"))
                .map_err(|e| BenchError::Sim(e.to_string()))?;
        }
    }
    Ok(sim)
}

/// The records a `long_run` (`--duration`) updates, per object of the first `channels`
/// ([`POOL`] each, created now); empty otherwise.
pub(super) fn pool(
    sim: &SimOrg,
    long_run: bool,
    channels: usize,
    width: u16,
) -> Result<Vec<Vec<String>>, BenchError> {
    if !long_run {
        return Ok(Vec::new());
    }
    OBJECTS[..channels]
        .iter()
        .map(|(object, _)| {
            (0..POOL)
                .map(|i| sim.create(object, change(object, i, width)))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::Sim(e.to_string()))
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The field of a change that holds when the bench asked for it: the last added one (`width` is
/// at least 2).
pub(crate) fn timing_field(width: u16) -> String {
    format!("Bench_Field_{}__c", width.saturating_sub(1).max(1))
}

/// The fields of change `i` on `object`: exactly `width` of them, the last added one
/// ([`timing_field`]) the time now in epoch ms (16 digits, as long as the others): call it
/// right before asking the org for the change.
fn change(object: &str, i: usize, width: u16) -> Map<String, Value> {
    let mut f = if object == "Contact" {
        fields(json!({ "Name": { "LastName": format!("Bench {i}") } }))
    } else {
        fields(json!({ "Name": format!("Bench {i}") }))
    };
    for k in 1..width {
        f.insert(
            format!("Bench_Field_{k}__c"),
            Value::String(format!("{:016}", i as u64 * 1000 + u64::from(k))),
        );
    }
    f.insert(
        timing_field(width),
        Value::String(format!("{:016}", crate::ops::telemetry::unix_millis())),
    );
    f
}

/// Makes change `i` (on object `i % channels`).
pub(super) fn make_change(
    sim: &SimOrg,
    i: usize,
    channels: usize,
    width: u16,
) -> Result<(), BenchError> {
    let (object, _) = OBJECTS[i % channels];
    sim.create(object, change(object, i, width))
        .map(|_| ())
        .map_err(|e| BenchError::Sim(e.to_string()))
}

/// `count` records of each streamed object seeded in the org (no change events); their Ids, per
/// object, for [`make_update`].
pub(super) fn seed_targets(
    sim: &SimOrg,
    channels: usize,
    count: usize,
) -> Result<Vec<Vec<String>>, BenchError> {
    OBJECTS[..channels]
        .iter()
        .map(|(object, _)| {
            sim.seed(object, count, 1)
                .map_err(|e| BenchError::Sim(e.to_string()))?;
            Ok(sim
                .records(object)
                .iter()
                .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_owned))
                .collect())
        })
        .collect()
}

/// Makes change `i` as an update of a seeded record of object `i % channels` (each record once).
pub(super) fn make_update(
    sim: &SimOrg,
    targets: &[Vec<String>],
    i: usize,
    channels: usize,
    width: u16,
) -> Result<(), BenchError> {
    let (object, _) = OBJECTS[i % channels];
    let id = targets[i % channels]
        .get(i / channels)
        .ok_or_else(|| BenchError::Sim(format!("no seeded {object} record for change {i}")))?;
    sim.update(object, id, change(object, i, width))
        .map_err(|e| BenchError::Sim(e.to_string()))
}

/// Commits `n` changes at `rate` events/s from `start`: creates, or updates of the `pool` when
/// it has records.
pub(super) struct Generator {
    pub(super) sim: SimOrg,
    pub(super) pool: Arc<Vec<Vec<String>>>,
    pub(super) n: usize,
    pub(super) channels: usize,
    pub(super) width: u16,
    pub(super) rate: f64,
    pub(super) start: Instant,
    /// Stops it early (the run failed or was interrupted).
    pub(super) stop: CancellationToken,
}

impl Generator {
    /// Runs to the last change (or `stop`); how long committing the changes took.
    pub(super) async fn run(self) -> Result<Duration, BenchError> {
        let Generator {
            sim,
            pool,
            n,
            channels,
            width,
            rate,
            start,
            stop,
        } = self;
        for i in 0..n {
            if stop.is_cancelled() {
                break;
            }
            let due = start + Duration::from_secs_f64(i as f64 / rate.max(0.001));
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            if pool.is_empty() {
                make_change(&sim, i, channels, width)?;
            } else {
                let (object, _) = OBJECTS[i % channels];
                let id = &pool[i % channels][(i / channels) % POOL];
                sim.update(object, id, change(object, i, width))
                    .map_err(|e| BenchError::Sim(e.to_string()))?;
            }
        }
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_sets_exactly_width_fields() {
        assert_eq!(change("Account", 3, 2).len(), 2);
        assert_eq!(change("Contact", 3, 20).len(), 20);
    }

    /// The last added field carries the moment of the change, in epoch ms, 16 digits.
    #[test]
    fn a_change_carries_when_it_was_asked() {
        let before = crate::ops::telemetry::unix_millis();
        let c = change("Account", 3, 20);
        let after = crate::ops::telemetry::unix_millis();
        assert_eq!(timing_field(20), "Bench_Field_19__c");
        let text = c["Bench_Field_19__c"].as_str().expect("text");
        assert_eq!(text.len(), 16);
        let asked: u64 = text.parse().expect("digits");
        assert!((before..=after).contains(&asked), "{asked}");
    }
}
