//! The options of `forcebridge bench snapshot` ([`SnapshotBenchArgs`]) and the forcebridge config
//! a run renders from them, as a user would write it.
//!
//! Contract: [`snapshot_config`] has the one Account channel with `snapshot: initial` (from
//! `latest`, so only the snapshot's rows precede the handoff) into `salesforce.{object}`, with
//! `source.snapshot.rest_below`/`page_records` from the options (range checked by the config).

/// The channel the bench snapshots.
pub(super) const CHANNEL: &str = "/data/AccountChangeEvent";
/// The topic its records go to.
pub(super) const TOPIC: &str = "salesforce.Account";

/// Options of `forcebridge bench snapshot`.
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotBenchArgs {
    /// Accounts seeded in the simulated org (records with no change events), all read by the
    /// snapshot.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) records: u64,
    /// `source.snapshot.rest_below`: objects with fewer records are read with REST query pages,
    /// others with a Bulk API 2.0 query job (0: always Bulk).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) rest_below: u64,
    /// `source.snapshot.page_records`: rows per Bulk API 2.0 results page (`maxRecords`).
    #[arg(long, default_value_t = 50_000)]
    pub(crate) page_records: u32,
    /// Partitions of `salesforce.Account` (the mock cluster keeps the last 5 MB of each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub(crate) partitions: i32,
    /// Give up when the org is not seeded, or the snapshot has not handed off, after this many
    /// seconds (each).
    #[arg(long = "timeout", default_value_t = 900)]
    pub(crate) timeout_secs: u64,
    /// Also read the topic back while the snapshot runs and check it holds exactly `--records`
    /// READ records with distinct Ids (the set of Ids adds to the peak RSS). The mock cluster
    /// keeps the last 5 MB of a partition (about 3,500 of these Accounts, 2026-12-05), so a
    /// reader falling behind loses records and fails the run: give partitions × 3,500 ≥ records.
    #[arg(long)]
    pub(crate) read_back: bool,
}

/// The config of a run: the org's `salesforce` section (as the org printed it), the Account
/// channel with `snapshot: initial`, Kafka at `bootstrap`.
pub(super) fn snapshot_config(
    salesforce: &str,
    bootstrap: &str,
    args: &SnapshotBenchArgs,
) -> String {
    format!(
        r#"name: forcebridge-bench
{salesforce}source:
  channels:
    - name: {CHANNEL}
      initial_replay: latest
      snapshot: initial
  topic_template: "salesforce.{{object}}"
  snapshot:
    rest_below: {rest_below}
    page_records: {page_records}
kafka:
  bootstrap_servers: {bootstrap}
"#,
        rest_below = args.rest_below,
        page_records = args.page_records,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_carries_the_options_and_is_accepted() {
        let args = SnapshotBenchArgs {
            records: 10,
            rest_below: 0,
            page_records: 2_000,
            partitions: 1,
            timeout_secs: 1,
            read_back: false,
        };
        let salesforce = "salesforce:\n  login_url: http://127.0.0.1:1\n  pubsub_endpoint: http://127.0.0.1:2\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: a\n    client_secret: b\n";
        let text = snapshot_config(salesforce, "127.0.0.1:9092", &args);
        let config = crate::config::Config::from_yaml(&text, |_| None).expect(&text);
        assert_eq!(config.source.as_ref().unwrap().snapshot.rest_below, 0);
        assert_eq!(config.source.as_ref().unwrap().snapshot.page_records, 2_000);
        let bad = SnapshotBenchArgs {
            page_records: 10,
            ..args
        };
        let err =
            crate::config::Config::from_yaml(&snapshot_config(salesforce, "k:1", &bad), |_| None)
                .unwrap_err()
                .to_string();
        assert!(err.contains("source.snapshot.page_records"), "{err}");
    }
}
