//! Reading one object of a snapshot into its topic, page by page.
//!
//! Contract: [`ObjectReader::read`] finds the object's change event schema (`GetTopic` on the
//! object's own channel, then the schema cache), its describe and so its [`Columns`]; chooses how
//! to read it ([`super::bulk::choose`]); then reads its pages: REST `query` (`queryAll` for a
//! resync) through `nextRecordsUrl`, or a Bulk API 2.0 job's results through `Sforce-Locator`
//! (`maxRecords` = `source.snapshot.page_records`). Each page's rows are produced under one
//! handle ([`RowWriter`]), then the progress (rows, the next page's locator) is saved once Kafka
//! holds them; the next page is fetched while the current one is produced, so at most two pages
//! are in memory. A resync first asks the replication API for the records deleted since its
//! start (`DELETE` records, once: `deletes_done`; the window Salesforce keeps is 15 days: older
//! deletes are reported in the log, the rows read by `queryAll` still carry those in the recycle
//! bin), then reads the rows, so a record deleted and restored since comes back after its
//! delete. The object is `done` in the progress last, and its Bulk job deleted.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::SnapshotError;
use super::bulk::{JOB_ATTEMPTS, choose, rest_error, start_job, wait_for_job};
use super::columns::{Columns, reorder};
use super::commit::Committer;
use super::deletes::deleted_since;
use super::progress::{ObjectState, ReadMethod, SnapshotProgress};
use super::rows::{Row, RowWriter};
use crate::config::ChannelConfig;
use crate::ops::telemetry::ChannelStats;
use crate::salesforce::rest::{ObjectFields, RestClient};
use crate::source::routes::Routes;
use crate::source::setup::Shared;
use crate::source::shape::fields_of;

/// Reads the objects of one channel's snapshot.
pub(super) struct ObjectReader<'a> {
    shared: &'a Arc<Shared>,
    channel: &'a ChannelConfig,
    stats: &'a ChannelStats,
    position: &'a Bytes,
    position_hex: String,
    routes: Routes<'a>,
}

impl<'a> ObjectReader<'a> {
    pub(super) fn new(
        shared: &'a Arc<Shared>,
        channel: &'a ChannelConfig,
        stats: &'a Arc<ChannelStats>,
        position: &'a Bytes,
    ) -> Self {
        ObjectReader {
            shared,
            channel,
            stats,
            position,
            position_hex: hex::encode(position),
            routes: Routes::new(shared, channel, stats),
        }
    }

    fn rest(&self) -> &'a RestClient {
        self.shared.gaps.rest()
    }

    /// Reads object `i` of `progress` to its end (see the module contract).
    pub(super) async fn read(
        &mut self,
        committer: &mut Committer<'_>,
        progress: &mut SnapshotProgress,
        i: usize,
        cancel: &CancellationToken,
    ) -> Result<(), SnapshotError> {
        let object = progress.objects[i].object.clone();
        let schema = super::schema::object_schema(self.shared, &object, cancel).await?;
        let rest = self.rest();
        let describe = rest
            .describe(&object, cancel)
            .await
            .map_err(|e| rest_error(&object, e))?;
        let fields = fields_of(&schema.schema);
        let columns = Columns::new(&object, &fields, &ObjectFields::new(describe));
        if !columns.left_out().is_empty() {
            warn!(object, fields = ?columns.left_out(), "schema fields the integration user cannot read are left out of the snapshot");
        }
        let (topic, produced) = match self.routes.resolve_object(columns.object()).await? {
            Ok(route) => (route.topic.clone(), route.produced.clone()),
            Err(dead) => {
                return Err(SnapshotError::Schema {
                    object,
                    reason: dead.reason,
                });
            }
        };
        let since = progress.since;
        let settings = &self.shared.source().snapshot;
        progress.objects[i].state = ObjectState::Reading;
        let count = columns.count_soql(since);
        let method = choose(
            rest,
            &mut progress.objects[i],
            &count,
            settings.rest_below,
            cancel,
        )
        .await?;
        let writer = RowWriter {
            shared: self.shared,
            stats: self.stats,
            channel: &self.channel.name,
            position: self.position,
            position_hex: &self.position_hex,
            columns: &columns,
            topic: &topic,
            produced: &produced,
            schema: &schema,
            method,
            resync: since.is_some(),
            debezium: self.shared.debezium(&self.channel.name),
        };
        let pages = Pages {
            rest,
            writer: &writer,
            soql: columns.soql(since),
        };
        // A resync's deletes first: a record deleted and restored since comes back as a row
        // after its delete.
        if let Some(since) = since
            && !progress.objects[i].deletes_done
        {
            pages.deleted(committer, progress, i, since, cancel).await?;
        }
        match method {
            ReadMethod::Rest => pages.rest(committer, progress, i, cancel).await?,
            ReadMethod::Bulk => pages.bulk(committer, progress, i, cancel).await?,
        }
        let entry = &mut progress.objects[i];
        entry.state = ObjectState::Done;
        let job = entry.job_id.take();
        entry.locator = None;
        committer
            .save(self.position, progress.started_at, Some(progress))
            .await?;
        info!(object, rows = progress.objects[i].rows, "object read");
        if let Some(job) = job {
            // Its results are kept for 7 days otherwise; failing to delete costs nothing else.
            if let Err(err) = rest.delete_query_job(&job, cancel).await {
                warn!(job, error = %err, "deleting the finished query job failed");
            }
        }
        Ok(())
    }
}

/// The pages of one object.
struct Pages<'a> {
    rest: &'a RestClient,
    writer: &'a RowWriter<'a>,
    soql: String,
}

impl Pages<'_> {
    /// Saves the progress of object `i` after a page of `rows` whose next page is `next`.
    async fn saved(
        &self,
        committer: &mut Committer<'_>,
        progress: &mut SnapshotProgress,
        i: usize,
        (rows, next): (u64, Option<String>),
    ) -> Result<(), SnapshotError> {
        let entry = &mut progress.objects[i];
        entry.rows += rows;
        entry.locator = next;
        committer
            .save(self.writer.position, progress.started_at, Some(progress))
            .await
    }

    /// REST pages from the first (a cursor lives 15 minutes: a crash reads the object again).
    async fn rest(
        &self,
        committer: &mut Committer<'_>,
        progress: &mut SnapshotProgress,
        i: usize,
        cancel: &CancellationToken,
    ) -> Result<(), SnapshotError> {
        let object = self.writer.columns.object();
        progress.objects[i].rows = 0;
        let first = match self.writer.resync {
            true => self.rest.query_all(&self.soql, cancel).await,
            false => self.rest.query(&self.soql, cancel).await,
        };
        let mut page = Some(first.map_err(|e| rest_error(object, e))?);
        let mut buffer = Vec::with_capacity(4096);
        while let Some(current) = page.take() {
            let columns = self.writer.columns;
            let rows: Vec<_> = current
                .records
                .into_iter()
                .map(|r| columns.rest_row(r))
                .collect();
            let fetch = async {
                match &current.next {
                    Some(url) => self.rest.query_more(url, cancel).await.map(Some),
                    None => Ok(None),
                }
            };
            let produce = self.writer.produce(
                committer,
                rows.iter().map(|r| Ok(borrowed(r))),
                &mut buffer,
                cancel,
            );
            let (fetched, produced) = tokio::join!(fetch, produce);
            let produced = produced?;
            page = fetched.map_err(|e| rest_error(object, e))?;
            self.saved(committer, progress, i, (produced, None)).await?;
        }
        Ok(())
    }

    /// A Bulk API 2.0 job's result pages, from the saved locator (a new job when none).
    async fn bulk(
        &self,
        committer: &mut Committer<'_>,
        progress: &mut SnapshotProgress,
        i: usize,
        cancel: &CancellationToken,
    ) -> Result<(), SnapshotError> {
        let object = self.writer.columns.object().to_owned();
        let max = self.writer.shared.source().snapshot.page_records;
        let mut attempts = 0;
        loop {
            if progress.objects[i].job_id.is_none() {
                attempts += 1;
                let resync = self.writer.resync;
                start_job(
                    self.rest,
                    &mut progress.objects[i],
                    &self.soql,
                    resync,
                    cancel,
                )
                .await?;
                // The job is in the checkpoint before it is waited for: a crash finds it again.
                self.saved(committer, progress, i, (0, None)).await?;
            }
            if wait_for_job(self.rest, &progress.objects[i], cancel).await? {
                break;
            }
            if attempts >= JOB_ATTEMPTS {
                return Err(SnapshotError::Schema {
                    object,
                    reason: format!("{JOB_ATTEMPTS} query jobs failed in a row"),
                });
            }
            progress.objects[i].job_id = None;
        }
        let job = progress.objects[i].job_id.clone().unwrap_or_default();
        let fetch = |locator: Option<String>| {
            let (job, object) = (&job, &object);
            async move {
                let page = self
                    .rest
                    .query_job_results(job, locator.as_deref(), max, cancel);
                page.await.map_err(|e| rest_error(object, e))
            }
        };
        let mut page = Some(fetch(progress.objects[i].locator.clone()).await?);
        let mut buffer = Vec::with_capacity(4096);
        while let Some(current) = page.take() {
            let next = current.locator.clone();
            let order = self.writer.columns.order_of(current.columns());
            let order = order.map_err(|e| rest_error(&object, e))?;
            let rows = current.rows().map(|row| row.map(|r| reorder(r, &order)));
            let fetched = async {
                match &next {
                    Some(locator) => fetch(Some(locator.clone())).await.map(Some),
                    None => Ok(None),
                }
            };
            let produce = self.writer.produce(committer, rows, &mut buffer, cancel);
            let (fetched, produced) = tokio::join!(fetched, produce);
            let produced = produced?;
            page = fetched?;
            self.saved(committer, progress, i, (produced, next)).await?;
        }
        Ok(())
    }

    /// A resync's deleted records since `since` (the replication API), as `DELETE` records.
    async fn deleted(
        &self,
        committer: &mut Committer<'_>,
        progress: &mut SnapshotProgress,
        i: usize,
        since: i64,
        cancel: &CancellationToken,
    ) -> Result<(), SnapshotError> {
        let object = self.writer.columns.object();
        let now = crate::ops::telemetry::unix_millis() as i64;
        let deleted = deleted_since(self.rest, object, since, now, cancel)
            .await
            .map_err(|e| rest_error(object, e))?;
        let mut buffer = Vec::new();
        let produced = self
            .writer
            .deleted(committer, &deleted, &mut buffer)
            .await?;
        info!(
            object,
            deleted = produced,
            "deleted records since the resync's start"
        );
        let locator = progress.objects[i].locator.take();
        self.saved(committer, progress, i, (produced, locator))
            .await
    }
}

fn borrowed(row: &[Option<String>]) -> Row<'_> {
    row.iter()
        .map(|v| v.as_deref().map(Cow::Borrowed))
        .collect()
}
