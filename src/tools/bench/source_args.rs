//! The options of `forcebridge bench source` ([`SourceBenchArgs`]) and the forcebridge config
//! a run renders from them, as a user would write it.
//!
//! Contract: `--kafka-property KEY=VALUE` and `--kafka-outage START+LEN` are refused with a message
//! naming the mistake; [`bench_config`] streams the first `--channels` channels of
//! [`OBJECTS`] from `earliest` into `salesforce.{object}` (with `full_record: true` under
//! `--full-record`), and bounds librdkafka's queue at
//! [`LONG_RUN_QUEUE`] in a `--duration` run unless a `--kafka-property` sets it.

use super::workload::{LONG_RUN_QUEUE, OBJECTS};
use crate::sim::SimOrg;

/// Options of `forcebridge bench source`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceBenchArgs {
    /// Change events to make (one record per event).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) events: usize,
    /// Commit changes at this many events/s while the pipeline runs; flat out when absent.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// CDC channels to stream (1: Account; 2: Account and Contact, the objects the simulated org
    /// has change events for).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub(crate) channels: u8,
    /// Fields set per event: `Name` plus `width - 1` added text fields (16 characters each; the
    /// last holds when the bench asked for the change, which the latency is measured from).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=500))]
    pub(crate) width: u16,
    /// Simulated client↔org network round trip, milliseconds (delays the flow-control credits).
    #[arg(long, default_value_t = 0)]
    pub(crate) rtt: u64,
    /// With `--rate`: run this many seconds (events = rate × duration), updating a fixed pool of
    /// records, with the org keeping events for a minute and librdkafka's queue bounded, and
    /// print the process's memory (VmRSS) through the run.
    #[arg(long, requires = "rate")]
    pub(crate) duration: Option<u64>,
    /// Take every mock Kafka broker down `START` seconds into the measured window for `LEN`
    /// seconds (`START+LEN`, e.g. `120+60`).
    #[arg(long, value_parser = parse_outage)]
    pub(crate) kafka_outage: Option<(u64, u64)>,
    /// Partitions of each object topic (records are spread over them by record Id).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub(crate) partitions: i32,
    /// Flow-control credits per subscription (`source.batch_size`, 1..=100).
    #[arg(long, default_value_t = 100)]
    pub(crate) batch_size: u32,
    /// Give up when the records have not all been acknowledged after this many seconds (after
    /// the `--duration`, in a timed run).
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout_secs: u64,
    /// A producer property (`kafka.properties`) for the run, `KEY=VALUE`, e.g. `linger.ms=0`;
    /// repeatable.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    pub(crate) kafka_properties: Vec<(String, String)>,
    /// Flat out: make this many more changes first and open the measured window only once
    /// Kafka has acknowledged their records, so that the window sees the process warm (its
    /// working set of memory touched, producer connected, schemas cached) instead of its start.
    #[arg(long, default_value_t = 0, conflicts_with = "rate")]
    pub(crate) warmup: usize,
    /// The records' envelope (`source.format`): `forcebridge` or `debezium`.
    #[arg(long, default_value = "forcebridge", value_parser = ["forcebridge", "debezium"])]
    pub(crate) format: String,
    /// Flat out: each change updates a record seeded in the org beforehand (which made no event)
    /// instead of creating one, so every event is one UPDATE record.
    #[arg(long, conflicts_with = "rate")]
    pub(crate) updates: bool,
    /// `full_record: true` on every channel (implies `--updates`): each UPDATE record is
    /// completed with the record's current values, read in batches through sObject Collections
    /// retrieve; the run prints the reads and the org's API calls.
    #[arg(long, conflicts_with = "rate")]
    pub(crate) full_record: bool,
}

/// `KEY=VALUE`.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("`{text}`: expected KEY=VALUE, e.g. linger.ms=0")),
    }
}

/// `START+LEN` seconds.
fn parse_outage(text: &str) -> Result<(u64, u64), String> {
    let (start, len) = text
        .split_once('+')
        .ok_or_else(|| format!("`{text}`: expected START+LEN in seconds, e.g. 120+60"))?;
    let secs = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|e| format!("`{text}`: `{v}` is not a number of seconds: {e}"))
    };
    Ok((secs(start)?, secs(len)?))
}

/// The config of a run: the org's `salesforce` section, the channels from `earliest`, Kafka at
/// `bootstrap` with the run's producer properties.
pub(super) fn bench_config(sim: &SimOrg, bootstrap: &str, args: &SourceBenchArgs) -> String {
    let channels: String = OBJECTS[..usize::from(args.channels)]
        .iter()
        .map(|(_, ch)| {
            let full = if args.full_record {
                "      full_record: true\n"
            } else {
                ""
            };
            format!("    - name: {ch}\n      initial_replay: earliest\n{full}")
        })
        .collect();
    format!(
        r#"name: forcebridge-bench
{salesforce}source:
  channels:
{channels}  topic_template: "salesforce.{{object}}"
  batch_size: {batch}
  format: {format}
kafka:
  bootstrap_servers: {bootstrap}
{properties}"#,
        salesforce = sim.salesforce_yaml(),
        batch = args.batch_size,
        format = args.format,
        properties = bench_properties(args),
    )
}

/// The `kafka.properties` section of the bench config: librdkafka's queue bounded in a long run,
/// then `--kafka-property` (which may override it).
fn bench_properties(args: &SourceBenchArgs) -> String {
    let mut properties: Vec<(String, String)> = Vec::new();
    if args.duration.is_some() {
        properties.push((
            "queue.buffering.max.messages".to_owned(),
            LONG_RUN_QUEUE.to_string(),
        ));
    }
    for (key, value) in &args.kafka_properties {
        properties.retain(|(k, _)| k != key);
        properties.push((key.clone(), value.clone()));
    }
    if properties.is_empty() {
        return String::new();
    }
    let quote = |v: &str| serde_json::Value::String(v.to_owned()).to_string();
    let mut text = "  properties:\n".to_owned();
    for (key, value) in &properties {
        text.push_str(&format!("    {}: {}\n", quote(key), quote(value)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_parse_and_name_the_mistake() {
        assert_eq!(parse_outage("120+60"), Ok((120, 60)));
        let err = parse_outage("120").unwrap_err();
        assert!(err.contains("expected START+LEN"), "{err}");
        let err = parse_outage("1+x").unwrap_err();
        assert!(err.contains("`x` is not a number of seconds"), "{err}");
    }

    #[test]
    fn kafka_properties_parse_and_override_the_long_run_queue() {
        assert_eq!(
            parse_property("linger.ms=0"),
            Ok(("linger.ms".to_owned(), "0".to_owned()))
        );
        assert!(
            parse_property("linger.ms")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert!(parse_property("=1").is_err());
        let args = |extra: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                args: SourceBenchArgs,
            }
            let argv = ["bench", "--rate", "10", "--duration", "1"]
                .iter()
                .chain(extra);
            <Cli as clap::Parser>::parse_from(argv).args
        };
        let text = bench_properties(&args(&[
            "--kafka-property",
            "queue.buffering.max.messages=5",
            "--kafka-property",
            "linger.ms=0",
        ]));
        assert_eq!(
            text,
            "  properties:\n    \"queue.buffering.max.messages\": \"5\"\n    \"linger.ms\": \"0\"\n"
        );
        assert!(bench_properties(&args(&[])).contains("\"20000\""));
    }
}
