//! Gap and overflow events (facts §11.5): the source re-reads what the event could not carry.
//!
//! Contract (see `ARCHITECTURE.md`, "Gap and overflow events"):
//! * A gap event (`GAP_CREATE`, `GAP_UPDATE`, `GAP_UNDELETE`) carries the header only. For each
//!   of its `recordIds` (in order) the source produces one Kafka record keyed by the Id into the
//!   object's topic, with operation = the gap change type, the full record re-read over REST
//!   (`SELECT Id, <fields> FROM <Object> WHERE Id IN (…)`, 200 Ids per query) and
//!   `"reread": {"mode": "gap", "state": "present", "read_at": <ms>}`. A record the query does not
//!   return (deleted since, or not visible to the integration user) is produced with
//!   `"record": null` and state `absent` — never skipped.
//! * `GAP_DELETE` cannot be re-read: one record per Id with `"record": null` and state `deleted`,
//!   followed by a tombstone when `source.tombstones` is on (as a `DELETE` is).
//! * `GAP_OVERFLOW` (an entity's changes beyond 100,000 in one transaction) re-syncs what the
//!   transaction (or anything since) changed, from its commit timestamp minus
//!   `source.snapshot.resync_margin` at a whole minute: the records deleted since (the
//!   replication API: `record: null`, state `deleted`, a tombstone when asked), then the rows
//!   changed since through `queryAll` (REST pages, or a Bulk API 2.0 job when `SELECT COUNT()`
//!   reaches `source.snapshot.rest_below`; one page in memory at a time): live ones with state
//!   `present`, deleted ones `deleted`; mode `resync`. Compound fields are read through their
//!   components (`snapshot::columns`), as Bulk API 2.0 requires.
//! * Every produced record carries the gap event's headers plus `forcebridge.reread`
//!   (`gap` | `resync`), and the envelope of the gap event (commit fields, `source`) with `id`,
//!   `record` and `reread` filled in. Records go out with tokens of the event's own
//!   [`EventHandle`], so the event's replay id becomes durable only after Kafka acknowledged every
//!   re-read record; a crash half-way repeats the whole re-read, nothing is lost.
//! * Field list: the event's own writer schema — every top-level body field (not
//!   `ChangeEventHeader`), no describe call. The REST answer is brought into the event's shape:
//!   `long` fields given as Salesforce date/datetime text become epoch milliseconds; compound
//!   fields (nested records) become objects with the schema's child names (REST keys matched
//!   case-insensitively, so a real org's `{"city": …}` fills `City`), every child present, `null`
//!   when unset; every schema field is present in `record`, `null` when unset. A compound that a
//!   real org returns as text (Contact `Name`) stays text.
//! * REST failures: the client retries what is retryable (transport, 5xx, 429, re-login, daily
//!   limit) with backoff until shutdown; anything else is a [`GapError`], which the pipeline
//!   sends to the dead-letter topic with stage `gap` and the reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use std::borrow::Cow;

use crate::config::{Config, SnapshotSettings};
use crate::kafka::ack::EventHandle;
use crate::kafka::{KafkaError, OutgoingRecord, Producer, headers};
use crate::ops::telemetry::ChannelStats;
use crate::retry::{Directive, classify_query_job};
use crate::salesforce::auth::{Authenticator, SessionHandle};
use crate::salesforce::rest::{BulkOperation, ObjectFields};
use crate::salesforce::rest::{LimitGuard, Reserve, RestClient, RestError};
use crate::source::cdc::OutRecord;
use crate::source::cdc::schema::EventSchema;
pub(crate) use crate::source::shape::{Field, Shape, select};
use crate::source::shape::{ShapeError, fields_of, normalize};
use crate::source::snapshot::columns::{Columns, reorder, resync_start};
use crate::source::snapshot::deletes::deleted_since;

/// `forcebridge.reread` / `reread.mode` of records produced for gap events.
pub const MODE_GAP: &str = "gap";
/// `forcebridge.reread` / `reread.mode` of records produced by an overflow re-sync.
pub const MODE_RESYNC: &str = "resync";
/// The change type of an overflow event.
pub const GAP_OVERFLOW: &str = "GAP_OVERFLOW";
/// The change type of a gap event for deleted records.
pub const GAP_DELETE: &str = "GAP_DELETE";
/// Ids per re-read query.
pub const IDS_PER_QUERY: usize = 200;

/// Why a gap or overflow event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum GapError {
    /// Salesforce refused a re-read query (or answered it unreadably) in a way retrying cannot fix.
    #[error("re-reading {object} over REST failed: {source}")]
    Rest {
        object: String,
        #[source]
        source: RestError,
    },
    /// The event names something that cannot go into a query, or a re-read value does not fit
    /// the event's schema.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A record could not be handed to Kafka.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A re-read record could not be written in Debezium's envelope.
    #[error(transparent)]
    Debezium(#[from] crate::source::cdc::DebeziumError),
    /// Shutdown interrupted the re-read.
    #[error("cancelled")]
    Cancelled,
}

/// True when `records` (one decoded event's) come from a gap or overflow event.
pub fn is_gap(records: &[OutRecord]) -> bool {
    records
        .first()
        .is_some_and(|r| r.operation.starts_with("GAP_"))
}

/// Where one event's records go.
pub struct Target<'a> {
    pub producer: &'a Producer,
    /// The object's topic.
    pub topic: &'a str,
    /// The gap event's window entry: every produced record holds one of its tokens.
    pub handle: &'a EventHandle,
    /// The topic's produced-records counter.
    pub produced: &'a AtomicU64,
    pub stats: &'a ChannelStats,
    /// `source.tombstones`.
    pub tombstones: bool,
    /// `Some` when the channel's format is `debezium` (records are written in its envelope).
    pub debezium: Option<&'a crate::source::cdc::Debezium>,
}

/// Handles gap and overflow events through a REST client of the source's org.
#[derive(Debug, Clone)]
pub struct Rereader {
    rest: RestClient,
    /// `source.snapshot`: an overflow re-sync reads as a snapshot does.
    settings: SnapshotSettings,
}

impl Rereader {
    pub fn new(rest: RestClient) -> Self {
        Rereader {
            rest,
            settings: SnapshotSettings::default(),
        }
    }

    /// The source's REST client (also the snapshot's).
    pub(crate) fn rest(&self) -> &RestClient {
        &self.rest
    }

    /// The source's re-reader: a REST client on the source's session (re-logins replace it for
    /// the stream too), tagged with the client tag, keeping the sink's `api_reserve` when a sink
    /// is configured (else none).
    pub fn for_source(config: &Config, http: reqwest::Client, session: SessionHandle) -> Self {
        let (reserve, poll) = config
            .sink
            .as_ref()
            .map_or((Reserve::Calls(0), Duration::from_secs(60)), |sink| {
                (sink.api_reserve, sink.limits_poll_interval)
            });
        let mut rereader = Rereader::new(RestClient::new(
            http.clone(),
            Authenticator::new(&config.salesforce, http),
            session,
            config.salesforce.api_version.clone(),
            config.client_tag().to_owned(),
            LimitGuard::new(reserve, poll),
        ));
        if let Some(source) = &config.source {
            rereader.settings = source.snapshot.clone();
        }
        rereader
    }

    /// Produces the records of one gap or overflow event (`records`: its decoded records, one per
    /// record Id; `schema`: its writer schema) — see the module docs. Returns once every record
    /// is handed to the producer; the caller seals the handle.
    pub async fn handle(
        &self,
        records: &[OutRecord],
        schema: &EventSchema,
        target: &Target<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), GapError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let change_type = first.operation.as_str();
        let object = first.object.as_str();
        target.stats.gap_events.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("gap", change_type, object, ids = records.len());
        async {
            info!("gap event: re-reading over REST");
            let template = Template::new(first);
            if change_type == GAP_OVERFLOW {
                target.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                self.resync(object, schema, &template, target, cancel).await
            } else if change_type == GAP_DELETE {
                for record in records {
                    template
                        .produce(target, &record.key, None, "deleted", MODE_GAP)
                        .await?;
                    if target.tombstones {
                        template.tombstone(target, &record.key).await?;
                    }
                }
                Ok(())
            } else {
                self.reread(records, object, schema, &template, target, cancel)
                    .await
            }
        }
        .instrument(span)
        .await
    }

    /// Re-reads the records of a `GAP_CREATE/UPDATE/UNDELETE` event, in the event's Id order.
    async fn reread(
        &self,
        records: &[OutRecord],
        object: &str,
        schema: &EventSchema,
        template: &Template,
        target: &Target<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), GapError> {
        let fields = fields_of(&schema.schema);
        for chunk in records.chunks(IDS_PER_QUERY) {
            let ids: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
            let soql = select(object, &fields, Some(&ids))?;
            let mut found: Vec<(String, Map<String, Value>)> = Vec::with_capacity(ids.len());
            let mut pages = self.pages(object, &fields, &soql, cancel);
            while let Some(rows) = pages.next().await? {
                for row in rows {
                    found.push(row?);
                }
            }
            for id in ids {
                let hit = found.iter().position(|(f, _)| {
                    crate::salesforce::sfid::id15(f) == crate::salesforce::sfid::id15(id)
                });
                match hit {
                    Some(i) => {
                        let (_, record) = found.swap_remove(i);
                        template
                            .produce(target, id, Some(record), "present", MODE_GAP)
                            .await?;
                        target.stats.records_reread.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        warn!(
                            id,
                            "record named by a gap event not found on re-read; produced as absent"
                        );
                        template
                            .produce(target, id, None, "absent", MODE_GAP)
                            .await?;
                        target.stats.records_absent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-syncs an object after an overflow (see the module docs): the records deleted since the
    /// overflowing transaction, then its rows changed since (REST pages, or a Bulk API 2.0 job
    /// for a large object), one page in memory at a time.
    async fn resync(
        &self,
        object: &str,
        schema: &EventSchema,
        template: &Template,
        target: &Target<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), GapError> {
        let failed = |e| rest_error(object, e);
        let describe = self.rest.describe(object, cancel).await.map_err(failed)?;
        let fields = fields_of(&schema.schema);
        let columns = Columns::new(object, &fields, &ObjectFields::new(describe));
        let now = crate::ops::telemetry::unix_millis() as i64;
        let margin = i64::try_from(self.settings.resync_margin.as_millis()).unwrap_or(0);
        let since = template
            .commit_timestamp()
            .map(|at| resync_start(at - margin, now));
        let mut total = 0u64;
        if let Some(since) = since {
            let deleted = deleted_since(&self.rest, object, since, now, cancel).await;
            for (id, _) in deleted.map_err(failed)? {
                template.deleted(target, &id, MODE_RESYNC).await?;
                total += 1;
            }
        }
        let count = self.rest.count(&columns.count_soql(since), cancel).await;
        let bulk = count.map_err(failed)? >= self.settings.rest_below;
        let soql = columns.soql(since);
        let all = since.is_some();
        let emit = Emit {
            object,
            columns: &columns,
            template,
            target,
        };
        if bulk {
            let job = self.run_job(object, &soql, all, cancel).await?;
            let max = self.settings.page_records;
            let mut locator: Option<String> = None;
            loop {
                let page = self
                    .rest
                    .query_job_results(&job, locator.as_deref(), max, cancel);
                let page = page.await.map_err(failed)?;
                let order = columns.order_of(page.columns()).map_err(failed)?;
                for row in page.rows() {
                    total += emit.row(&reorder(row.map_err(failed)?, &order)).await?;
                }
                locator = page.locator;
                if locator.is_none() {
                    break;
                }
            }
            let _ = self.rest.delete_query_job(&job, cancel).await;
        } else {
            let first = match all {
                true => self.rest.query_all(&soql, cancel).await,
                false => self.rest.query(&soql, cancel).await,
            };
            let mut page = Some(first.map_err(failed)?);
            while let Some(current) = page.take() {
                for record in current.records {
                    let row = columns.rest_row(record);
                    let row: Vec<Option<Cow<'_, str>>> = row
                        .iter()
                        .map(|v| v.as_deref().map(Cow::Borrowed))
                        .collect();
                    total += emit.row(&row).await?;
                }
                if let Some(next) = current.next {
                    page = Some(self.rest.query_more(&next, cancel).await.map_err(failed)?);
                }
            }
        }
        info!(records = total, bulk, "overflow re-sync produced");
        Ok(())
    }

    /// Runs a Bulk API 2.0 query job of `soql` to completion (`queryAll` when `all`), a job the
    /// org failed for a reason retrying can fix replaced up to three times; its id.
    async fn run_job(
        &self,
        object: &str,
        soql: &str,
        all: bool,
        cancel: &CancellationToken,
    ) -> Result<String, GapError> {
        let operation = if all {
            BulkOperation::QueryAll
        } else {
            BulkOperation::Query
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let job = self.rest.create_query_job(soql, operation, cancel).await;
            let job = job.map_err(|e| rest_error(object, e))?;
            match self.rest.wait_for_query_job(&job.id, cancel).await {
                Ok(done) => return Ok(done.id),
                Err(RestError::JobFailed { state, message, .. })
                    if attempt < 3
                        && classify_query_job(&state, message.as_deref()) == Directive::Restart =>
                {
                    warn!(
                        job = job.id,
                        state,
                        ?message,
                        "the org failed the re-sync's query job; starting a new one"
                    );
                }
                Err(err) => return Err(rest_error(object, err)),
            }
        }
    }

    /// The result pages of `soql`, followed through `nextRecordsUrl` (one page in memory).
    pub(crate) fn pages<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
        soql: &'a str,
        cancel: &'a CancellationToken,
    ) -> Pages<'a> {
        Pages {
            rest: &self.rest,
            object,
            fields,
            cancel,
            next: Some(Next::Query(soql)),
        }
    }
}

/// The pages of one query ([`Rereader::pages`]).
pub(crate) struct Pages<'a> {
    rest: &'a RestClient,
    object: &'a str,
    fields: &'a [Field],
    cancel: &'a CancellationToken,
    /// What fetches the next page; `None` when done.
    next: Option<Next<'a>>,
}

enum Next<'a> {
    Query(&'a str),
    More(String),
}

impl<'a> Pages<'a> {
    /// The next page's rows in the event's shape (converted as they are taken); `None` when
    /// done.
    pub(crate) async fn next(
        &mut self,
    ) -> Result<
        Option<impl Iterator<Item = Result<(String, Map<String, Value>), GapError>> + use<'a>>,
        GapError,
    > {
        let page = match self.next.take() {
            None => return Ok(None),
            Some(Next::Query(soql)) => self.rest.query(soql, self.cancel).await,
            Some(Next::More(url)) => self.rest.query_more(&url, self.cancel).await,
        }
        .map_err(|e| rest_error(self.object, e))?;
        self.next = page.next.map(Next::More);
        let (object, fields) = (self.object, self.fields);
        Ok(Some(page.records.into_iter().map(move |row| {
            normalize(object, fields, row).map_err(GapError::from)
        })))
    }
}

fn rest_error(object: &str, error: RestError) -> GapError {
    match error {
        RestError::Cancelled => GapError::Cancelled,
        source => GapError::Rest {
            object: object.to_owned(),
            source,
        },
    }
}

/// Produces an overflow re-sync's rows.
struct Emit<'a> {
    object: &'a str,
    columns: &'a Columns,
    template: &'a Template,
    target: &'a Target<'a>,
}

impl Emit<'_> {
    /// One row (values in select order): a live record as `present`, a deleted one (read by
    /// `queryAll`) as `deleted` with its tombstone; returns the records it counts.
    async fn row(&self, row: &[Option<Cow<'_, str>>]) -> Result<u64, GapError> {
        let id = self.columns.id(row).unwrap_or_default();
        if self.columns.is_deleted(row) {
            self.template.deleted(self.target, id, MODE_RESYNC).await?;
            return Ok(1);
        }
        let record = self
            .columns
            .record(row)
            .map_err(|reason| ShapeError::Value {
                object: self.object.to_owned(),
                field: id.to_owned(),
                reason,
            })?;
        self.template
            .produce(self.target, id, Some(record), "present", MODE_RESYNC)
            .await?;
        self.target
            .stats
            .records_reread
            .fetch_add(1, Ordering::Relaxed);
        Ok(1)
    }
}

/// The gap event's envelope and headers, reused for every produced record.
struct Template {
    envelope: Map<String, Value>,
    headers: Vec<(&'static str, String)>,
    object: String,
    operation: String,
}

impl Template {
    fn new(first: &OutRecord) -> Self {
        let envelope = first
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default();
        Template {
            envelope,
            headers: first.headers.clone(),
            object: first.object.clone(),
            operation: first.operation.clone(),
        }
    }

    /// Produces one record: `record` = the re-read state (`None`: null), `state`: `present`,
    /// `absent` or `deleted`.
    async fn produce(
        &self,
        target: &Target<'_>,
        id: &str,
        record: Option<Map<String, Value>>,
        state: &str,
        mode: &'static str,
    ) -> Result<(), GapError> {
        let mut envelope = self.envelope.clone();
        envelope.insert("operation".into(), Value::String(self.operation.clone()));
        envelope.insert("object".into(), Value::String(self.object.clone()));
        envelope.insert("id".into(), Value::String(id.to_owned()));
        envelope.insert("record".into(), record.map_or(Value::Null, Value::Object));
        envelope.insert(
            "reread".into(),
            json!({"mode": mode, "state": state, "read_at": crate::ops::telemetry::unix_millis()}),
        );
        let value = match target.debezium {
            Some(d) => d.convert_map(id, &envelope, crate::ops::telemetry::unix_millis())?,
            None => serde_json::to_vec(&envelope).expect("serializing JSON values cannot fail"),
        };
        self.send(target, id, Some(&value), mode).await
    }

    /// The gap event's `commit_timestamp`.
    fn commit_timestamp(&self) -> Option<i64> {
        self.envelope
            .get("commit_timestamp")
            .and_then(Value::as_i64)
    }

    /// A deleted record (`record: null`, state `deleted`), then its tombstone when asked.
    async fn deleted(
        &self,
        target: &Target<'_>,
        id: &str,
        mode: &'static str,
    ) -> Result<(), GapError> {
        self.produce(target, id, None, "deleted", mode).await?;
        if target.tombstones {
            self.tombstone(target, id).await?;
        }
        Ok(())
    }

    /// A tombstone (same key, null value) after a deleted record.
    async fn tombstone(&self, target: &Target<'_>, id: &str) -> Result<(), GapError> {
        self.send(target, id, None, MODE_GAP).await
    }

    async fn send(
        &self,
        target: &Target<'_>,
        id: &str,
        value: Option<&[u8]>,
        mode: &'static str,
    ) -> Result<(), GapError> {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_bytes()))
            .chain([(headers::REREAD, mode.as_bytes())])
            .collect();
        let record = OutgoingRecord {
            topic: target.topic,
            key: Some(id.as_bytes()),
            value,
            headers: &headers,
        };
        target.producer.send(record, target.handle.token()).await?;
        target.produced.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
