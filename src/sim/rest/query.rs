//! The SOQL query endpoints: `query?q=` and `queryAll?q=` (the subset of `soql`, run as the
//! enclosing Composite's transaction sees the org; `queryAll` also returns the deleted records
//! still in the recycle bin, REST API Developer Guide, "QueryAll") render the matching rows as
//! REST renders records and answer at most `query_batch_size` of them; the rest are served
//! through `nextRecordsUrl` = `query/{locator}-{offset}` (`queryAll/…` for `queryAll`) from an
//! open cursor (see `cursors`). `SELECT COUNT()` answers `{"totalSize": n, "done": true,
//! "records": []}` (SOQL and SOSL Reference, "COUNT()": the count is the result's size).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::call::{Call, Exec, query_param};
use super::render::render_record;
use super::reply::Reply;
use crate::sim::soql::Query;
use crate::sim::util::lock;

impl Exec<'_> {
    /// `query?q=` (`all_rows` false) or `queryAll?q=` (true).
    pub(super) fn query(&mut self, call: &Call, all_rows: bool) -> Reply {
        let Some(text) = query_param(call.query, "q").filter(|q| !q.trim().is_empty()) else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_QUERY",
                "A query string has to be specified",
                &[],
            );
        };
        let mut query = match Query::parse(&text, &self.org) {
            Ok(q) => q,
            Err(e) => {
                return Reply::json(
                    StatusCode::BAD_REQUEST,
                    json!([{ "message": e.to_string(), "errorCode": e.code() }]),
                );
            }
        };
        query.all_rows = all_rows;
        let Some(meta) = self.org.meta(&query.object) else {
            return Reply::not_found();
        };
        let matched = query.run(&self.org, self.outer.as_ref());
        if query.count {
            return Reply::json(
                StatusCode::OK,
                json!({"totalSize": matched.len(), "done": true, "records": []}),
            );
        }
        let rows: Vec<Value> = matched
            .iter()
            .map(|rec| {
                Value::Object(render_record(
                    &meta,
                    &query.object,
                    call.version,
                    rec,
                    Some(&query.fields),
                ))
            })
            .collect();
        let batch = self.shared.config.query_batch_size.max(1);
        let resource = if all_rows { "queryAll" } else { "query" };
        let page = lock(&self.shared.cursors).first_page(rows, batch, call.version, resource);
        Reply::json(StatusCode::OK, page)
    }

    /// `GET query/{locator}-{offset}`: the next page of an open cursor.
    pub(super) fn query_more(&mut self, call: &Call, locator: &str) -> Reply {
        let batch = self.shared.config.query_batch_size.max(1);
        match lock(&self.shared.cursors).page(locator, batch, call.version) {
            Some(page) => Reply::json(StatusCode::OK, page),
            None => Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
                &[],
            ),
        }
    }
}
