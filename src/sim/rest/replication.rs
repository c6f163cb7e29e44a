//! The replication resources: `sobjects/{Object}/deleted/?start=&end=` and
//! `sobjects/{Object}/updated/?start=&end=`.
//!
//! Contract (REST API Developer Guide, "sObject Get Deleted" and "sObject Get Updated"; their
//! rules are those of SOAP API Developer Guide, "getDeleted()" and "getUpdated()"):
//! * `start` and `end` are ISO 8601 datetimes with a zone (`2024-01-31T12:05:00+00:00`,
//!   `…Z`; a `+` left unencoded in the URL reads as a space and is taken back as `+`); the
//!   seconds are ignored ("the API ignores the seconds portion"): both are truncated to the
//!   minute. A window is `[start, end)` over `SystemModstamp`.
//! * Refused with 400 `INVALID_REPLICATION_DATE`: a missing or unreadable `start`/`end` (the
//!   code chosen, the docs are silent), `start` not before `end` by at least a minute ("must
//!   chronologically precede … by more than one minute"), a window longer than 30 days, and for
//!   `deleted` a `start` before `earliestDateAvailable` (the recycle bin holds deleted records
//!   15 days, "Results are returned for no more than 15 days previous to the day the call is
//!   executed"; older deletes are purged when this resource is called, and an administrator's
//!   purge moves it too: `SimOrg::purge_recycle_bin`). More than 600,000 Ids: 400
//!   `EXCEEDED_ID_LIMIT`.
//! * `deleted`: `{"deletedRecords": [{"id", "deletedDate"}], "earliestDateAvailable",
//!   "latestDateCovered"}`; `updated`: `{"ids": [...], "latestDateCovered"}`. Datetimes as REST
//!   renders them (`2024-01-31T12:05:00.000+0000`). The answer holds what happened in the window
//!   up to now; `latestDateCovered` is `end`, or the start of the current minute when `end` is
//!   later, always on a whole minute, so a client that starts its next window there ("for
//!   safety, you must use this value for the startDate of your next call") may see the last
//!   minute's records twice, never miss one. `earliestDateAvailable` is the deletion time of the newest record purged, or 15
//!   days ago (to the minute) when nothing older was purged.

use axum::http::StatusCode;
use serde_json::json;

use super::call::{Call, Exec, query_param};
use super::reply::Reply;
use crate::salesforce::sftime;
use crate::sim::util::org_now;

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 3600 * 1000;
/// How long the recycle bin keeps deleted records.
pub(crate) const RECYCLE_BIN_MS: i64 = 15 * DAY;
/// The longest window.
const MAX_WINDOW_MS: i64 = 30 * DAY;
/// Ids answered at most.
const MAX_IDS: usize = 600_000;

fn invalid(message: &str) -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "INVALID_REPLICATION_DATE",
        message,
        &[],
    )
}

/// A `start`/`end` parameter, truncated to the minute.
fn instant(call: &Call, name: &str) -> Result<i64, Reply> {
    let Some(raw) = query_param(call.query, name).filter(|v| !v.trim().is_empty()) else {
        return Err(invalid(&format!(
            "Missing parameter '{name}': a datetime such as 2024-01-31T12:05:00+00:00"
        )));
    };
    let text = raw.trim().replace(' ', "+");
    let has_zone = text.len() > 10 && (text.ends_with('Z') || text[10..].contains(['+', '-']));
    match sftime::parse_datetime(&text) {
        Ok(ms) if has_zone => Ok(ms.div_euclid(MINUTE) * MINUTE),
        _ => Err(invalid(&format!(
            "Invalid {name} '{raw}': expected a datetime with a zone, such as 2024-01-31T12:05:00+00:00"
        ))),
    }
}

impl Exec<'_> {
    /// `sobjects/{object}/deleted` (`deleted` true) or `…/updated`.
    pub(super) fn replication(&mut self, call: &Call, object: &str, deleted: bool) -> Reply {
        let (start, end) = match (instant(call, "start"), instant(call, "end")) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        if end - start < MINUTE {
            return invalid("start must precede end by at least one minute");
        }
        if end - start > MAX_WINDOW_MS {
            return invalid("The replication window can't be longer than 30 days");
        }
        let now = org_now();
        // What happened up to now is answered; the covered date is the last whole minute.
        let upto = end.min(now + 1);
        let latest = end.min(now.div_euclid(MINUTE) * MINUTE);
        let covered = sftime::format_datetime(latest);
        if !deleted {
            let ids = self.org.updated_between(object, start, upto);
            if ids.len() > MAX_IDS {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    "EXCEEDED_ID_LIMIT",
                    "More than 600,000 Ids: choose start and end dates closer together",
                    &[],
                );
            }
            return Reply::json(
                StatusCode::OK,
                json!({"ids": ids, "latestDateCovered": covered}),
            );
        }
        self.org.purge_recycle_bin(object, now - RECYCLE_BIN_MS);
        let bin_start = (now - RECYCLE_BIN_MS).div_euclid(MINUTE) * MINUTE;
        let earliest = self
            .org
            .earliest_date_available(object)
            .map_or(bin_start, |p| p.max(bin_start));
        if start < earliest {
            return invalid(&format!(
                "start is before earliestDateAvailable {}: deleted records older than that are no longer available",
                sftime::format_datetime(earliest)
            ));
        }
        let records = self.org.deleted_between(object, start, upto);
        if records.len() > MAX_IDS {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "More than 600,000 Ids: choose start and end dates closer together",
                &[],
            );
        }
        let deleted_records: Vec<_> = records
            .into_iter()
            .map(|(id, at)| json!({"id": id, "deletedDate": sftime::format_datetime(at)}))
            .collect();
        Reply::json(
            StatusCode::OK,
            json!({
                "deletedRecords": deleted_records,
                "earliestDateAvailable": sftime::format_datetime(earliest),
                "latestDateCovered": covered,
            }),
        )
    }
}
