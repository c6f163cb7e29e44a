//! The SOQL query endpoint: `query?q=` (the subset of `soql`, run as the enclosing Composite's
//! transaction sees the org) renders the matching rows as REST renders records and answers at
//! most `query_batch_size` of them; the rest are served through `nextRecordsUrl` =
//! `query/{locator}-{offset}` from an open cursor (see `cursors`).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::call::{Call, Exec, query_param};
use super::render::render_record;
use super::reply::Reply;
use crate::sim::soql::Query;
use crate::sim::util::lock;

impl Exec<'_> {
    pub(super) fn query(&mut self, call: &Call) -> Reply {
        let Some(text) = query_param(call.query, "q").filter(|q| !q.trim().is_empty()) else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "MALFORMED_QUERY",
                "A query string has to be specified",
                &[],
            );
        };
        let query = match Query::parse(&text, &self.org) {
            Ok(q) => q,
            Err(e) => {
                return Reply::json(
                    StatusCode::BAD_REQUEST,
                    json!([{ "message": e.to_string(), "errorCode": e.code() }]),
                );
            }
        };
        let Some(meta) = self.org.meta(&query.object) else {
            return Reply::not_found();
        };
        let rows: Vec<Value> = query
            .run(&self.org, self.outer.as_ref())
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
        let page = lock(&self.shared.cursors).first_page(rows, batch, call.version);
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
