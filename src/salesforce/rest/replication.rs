//! The replication API: which records of an object were deleted ([`RestClient::deleted_records`])
//! or created and updated ([`RestClient::updated_records`]) within a time window; the resync
//! reads deletes it cannot see in a query through it.
//!
//! Contract (REST API Developer Guide, "sObject Get Deleted", "sObject Get Updated", "Get a List
//! of Deleted Records Within a Given Timeframe", "Get a List of Updated Records Within a Given
//! Timeframe"; SOAP API Developer Guide, `getDeleted()`, `getUpdated()`, `GetDeletedResult`):
//! * `GET …/sobjects/{Object}/deleted/?start=&end=` and `…/updated/?start=&end=`; `start` and
//!   `end` are UTC datetimes in ISO 8601, `2013-05-05T00:00:15+00:00` (the docs' example form,
//!   percent-encoded), to the second; Salesforce ignores the seconds (12:30:15 is read as
//!   12:30:00). Times go in and come out as epoch milliseconds.
//! * Checked before the call, each refusal a [`RestError::Invalid`] naming the argument: `start`
//!   must precede `end` once both are cut to the minute (else Salesforce answers
//!   `INVALID_REPLICATION_DATE`); `start` may be no older than the day of the call minus 15 days
//!   for deletes, 30 days for updates ("Results are returned for no more than 15 (30) days
//!   previous to the day the call is executed"); the window spans at most 30 days (no document
//!   states that limit: with `start` at most 30 days back, a wider window ends in the future,
//!   which is a caller's mistake, refused here rather than sent).
//! * The answers: `{"deletedRecords": [{"id", "deletedDate"}], "earliestDateAvailable",
//!   "latestDateCovered"}` and `{"ids": [...], "latestDateCovered"}`, datetimes in Salesforce's
//!   form (`2013-05-07T22:07:19.000+0000`). `latestDateCovered` is where the next window must
//!   start (changes still in flight at `end` are not in this answer); `earliestDateAvailable`
//!   is the newest delete already purged from the log: deletes before it are lost to this API,
//!   so a caller whose `start` precedes it must re-read the whole object instead.
//! * More than 600,000 Ids is Salesforce's `EXCEEDED_ID_LIMIT` ([`RestError::Rejected`]): a
//!   narrower window. Held by the guard and retried like every call.

use reqwest::Method;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::client::RestClient;
use super::errors::RestError;
use super::query::percent_encode;
use crate::salesforce::sftime::{format_datetime, parse_datetime};

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: i64 = 86_400_000;
/// The widest window of one call (days).
const MAX_SPAN_DAYS: i64 = 30;

/// The records deleted within a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedRecords {
    /// `(Id, deletedDate)` of each deleted record.
    pub records: Vec<(String, i64)>,
    /// `earliestDateAvailable`: the newest delete already purged from the log, when Salesforce
    /// says.
    pub earliest_date_available_ms: Option<i64>,
    /// `latestDateCovered`: where the next window starts.
    pub latest_date_covered_ms: i64,
}

/// The records created or updated within a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatedRecords {
    pub ids: Vec<String>,
    /// `latestDateCovered`: where the next window starts.
    pub latest_date_covered_ms: i64,
}

/// The two resources and how far back each reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replication {
    Deleted,
    Updated,
}

impl Replication {
    fn path(self) -> &'static str {
        match self {
            Replication::Deleted => "deleted",
            Replication::Updated => "updated",
        }
    }

    /// Days before the day of the call that the resource still answers for.
    fn reach_days(self) -> i64 {
        match self {
            Replication::Deleted => 15,
            Replication::Updated => 30,
        }
    }
}

/// `2013-05-05T00:00:15+00:00`: the form of the docs' example, to the second.
pub(crate) fn replication_time(epoch_ms: i64) -> String {
    let text = format_datetime(epoch_ms);
    format!("{}+00:00", &text[..19])
}

/// The window rules of the module contract, against the time of the call `now_ms`.
pub(crate) fn check_window(
    resource: Replication,
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
) -> Result<(), RestError> {
    let (start, end) = (replication_time(start_ms), replication_time(end_ms));
    if start_ms.div_euclid(MS_PER_MINUTE) >= end_ms.div_euclid(MS_PER_MINUTE) {
        return Err(RestError::Invalid(format!(
            "`start` ({start}) must be before `end` ({end}) in a later minute: Salesforce ignores \
             the seconds and refuses a window that is not later (INVALID_REPLICATION_DATE)"
        )));
    }
    let reach_days = resource.reach_days();
    let earliest = (now_ms.div_euclid(MS_PER_DAY) - reach_days) * MS_PER_DAY;
    if start_ms < earliest {
        return Err(RestError::Invalid(format!(
            "`start` ({start}) is older than the {reach_days} days before today that `{}` \
             answers for (earliest {})",
            resource.path(),
            replication_time(earliest)
        )));
    }
    if end_ms - start_ms > MAX_SPAN_DAYS * MS_PER_DAY {
        return Err(RestError::Invalid(format!(
            "`end` ({end}) is more than {MAX_SPAN_DAYS} days after `start` ({start})"
        )));
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletedWire {
    deleted_records: Vec<DeletedRecordWire>,
    #[serde(default)]
    earliest_date_available: Option<String>,
    latest_date_covered: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletedRecordWire {
    id: String,
    deleted_date: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdatedWire {
    ids: Vec<String>,
    latest_date_covered: String,
}

fn datetime(object: &str, key: &str, text: &str) -> Result<i64, RestError> {
    parse_datetime(text)
        .map_err(|e| RestError::Protocol(format!("{object} replication answer, `{key}`: {e}")))
}

impl RestClient {
    async fn replication(
        &self,
        resource: Replication,
        object: &str,
        start_ms: i64,
        end_ms: i64,
        cancel: &CancellationToken,
    ) -> Result<bytes::Bytes, RestError> {
        self.check_tag()?;
        if object.is_empty()
            || !object
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(RestError::Invalid(format!(
                "`object` `{object}` is not an object's API name"
            )));
        }
        check_window(resource, start_ms, end_ms, now_ms())?;
        let path = format!(
            "{}/sobjects/{object}/{}/?start={}&end={}",
            self.data_path(),
            resource.path(),
            percent_encode(&replication_time(start_ms)),
            percent_encode(&replication_time(end_ms)),
        );
        self.execute(Method::GET, &path, None, true, cancel).await
    }

    /// `GET …/sobjects/{object}/deleted/?start=&end=` (see the module contract).
    pub async fn deleted_records(
        &self,
        object: &str,
        start_ms: i64,
        end_ms: i64,
        cancel: &CancellationToken,
    ) -> Result<DeletedRecords, RestError> {
        let body = self
            .replication(Replication::Deleted, object, start_ms, end_ms, cancel)
            .await?;
        let wire: DeletedWire = serde_json::from_slice(&body)
            .map_err(|e| RestError::Protocol(format!("{object} deleted records answer: {e}")))?;
        let records = wire
            .deleted_records
            .into_iter()
            .map(|r| Ok((r.id, datetime(object, "deletedDate", &r.deleted_date)?)))
            .collect::<Result<_, RestError>>()?;
        Ok(DeletedRecords {
            records,
            earliest_date_available_ms: wire
                .earliest_date_available
                .map(|t| datetime(object, "earliestDateAvailable", &t))
                .transpose()?,
            latest_date_covered_ms: datetime(
                object,
                "latestDateCovered",
                &wire.latest_date_covered,
            )?,
        })
    }

    /// `GET …/sobjects/{object}/updated/?start=&end=` (see the module contract).
    pub async fn updated_records(
        &self,
        object: &str,
        start_ms: i64,
        end_ms: i64,
        cancel: &CancellationToken,
    ) -> Result<UpdatedRecords, RestError> {
        let body = self
            .replication(Replication::Updated, object, start_ms, end_ms, cancel)
            .await?;
        let wire: UpdatedWire = serde_json::from_slice(&body)
            .map_err(|e| RestError::Protocol(format!("{object} updated records answer: {e}")))?;
        Ok(UpdatedRecords {
            ids: wire.ids,
            latest_date_covered_ms: datetime(
                object,
                "latestDateCovered",
                &wire.latest_date_covered,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::sftime::parse_datetime;

    fn ms(text: &str) -> i64 {
        parse_datetime(text).expect(text)
    }

    #[test]
    fn times_go_out_in_the_documented_form() {
        // "Get a List of Deleted Records Within a Given Timeframe": start=2013-05-05T00:00:00+00:00.
        assert_eq!(
            replication_time(ms("2013-05-05T00:00:00.000+0000")),
            "2013-05-05T00:00:00+00:00"
        );
        assert_eq!(
            replication_time(ms("2024-02-29T23:59:15.999Z")),
            "2024-02-29T23:59:15+00:00"
        );
    }

    #[test]
    fn windows_are_checked_as_salesforce_would() {
        let now = ms("2024-06-20T12:00:00Z");
        let ok = check_window(
            Replication::Deleted,
            ms("2024-06-10T00:00:00Z"),
            ms("2024-06-20T11:00:00Z"),
            now,
        );
        assert!(ok.is_ok(), "{ok:?}");

        // The same minute once the seconds are ignored.
        let same_minute = check_window(
            Replication::Updated,
            ms("2024-06-20T10:00:05Z"),
            ms("2024-06-20T10:00:55Z"),
            now,
        );
        assert!(
            matches!(&same_minute, Err(RestError::Invalid(m)) if m.contains("`start`") && m.contains("`end`")),
            "{same_minute:?}"
        );

        // Deletes reach 15 days back from the day of the call, updates 30.
        let old = ms("2024-06-04T23:59:00Z");
        let deleted = check_window(Replication::Deleted, old, now, now);
        assert!(
            matches!(&deleted, Err(RestError::Invalid(m)) if m.contains("`start`") && m.contains("15 days")),
            "{deleted:?}"
        );
        assert!(check_window(Replication::Deleted, ms("2024-06-05T00:00:00Z"), now, now).is_ok());
        assert!(check_window(Replication::Updated, old, now, now).is_ok());
        let updated = check_window(Replication::Updated, ms("2024-05-20T23:00:00Z"), now, now);
        assert!(
            matches!(&updated, Err(RestError::Invalid(m)) if m.contains("30 days")),
            "{updated:?}"
        );

        // At most 30 days in one window.
        let wide = check_window(
            Replication::Updated,
            ms("2024-05-22T00:00:00Z"),
            ms("2024-06-22T00:00:00Z"),
            now,
        );
        assert!(
            matches!(&wide, Err(RestError::Invalid(m)) if m.contains("`end`") && m.contains("30 days after")),
            "{wide:?}"
        );
    }
}
