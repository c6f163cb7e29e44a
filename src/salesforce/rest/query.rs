//! SOQL over REST: [`RestClient::query`], [`RestClient::query_all`] and
//! [`RestClient::query_more`] read a query one page at a time (the source's gap re-reads and
//! small snapshots stream large results through them), [`RestClient::count`] reads a
//! `SELECT COUNT()`, and [`query_page`] reads a page for them and for the Composite call's query
//! subrequests.
//!
//! Contract: a page's records come without `attributes`, at every level (relationships,
//! subqueries); a page that is not `done` carries its `nextRecordsUrl` path, else it is
//! unreadable. SOQL is percent-encoded (all but RFC 3986 unreserved characters). `queryAll`
//! (`GET …/queryAll?q=`) also returns records deleted by a delete or a merge (their `IsDeleted`
//! true), and its `nextRecordsUrl` pages through [`RestClient::query_more`] alike (REST API
//! Developer Guide, "QueryAll"). `count` sends `SELECT COUNT() FROM …` (refused before the call
//! when the SELECT list is anything else) and answers `totalSize`: "For COUNT(), the size field
//! of the QueryResult object returns the number of rows" (SOQL and SOSL Reference, "COUNT() and
//! COUNT(fieldName)"). Queries are held by the guard and retried like every call; a refused
//! query is [`RestError::Rejected`].

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::client::RestClient;
use super::errors::{RestError, truncate};

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Removes `attributes` objects from query records, at every level (relationships, subqueries).
pub(super) fn strip_attributes(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("attributes").is_some_and(Value::is_object) {
                object.remove("attributes");
            }
            object.values_mut().for_each(strip_attributes);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_attributes),
        _ => {}
    }
}

/// One page of a query result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The page's records, `attributes` removed at every level.
    pub records: Vec<Map<String, Value>>,
    /// The next page's path (`nextRecordsUrl`), when not done.
    pub next: Option<String>,
}

pub(super) fn query_page(mut body: Value) -> Result<QueryPage, String> {
    strip_attributes(&mut body);
    let done = body["done"].as_bool().unwrap_or(true);
    let next = (!done)
        .then(|| body["nextRecordsUrl"].as_str().map(str::to_owned))
        .flatten();
    if !done && next.as_deref().is_none_or(|n| !n.starts_with('/')) {
        return Err("query not done but no usable nextRecordsUrl".to_owned());
    }
    let Value::Array(records) = body["records"].take() else {
        return Err("query result has no records array".to_owned());
    };
    let records = records
        .into_iter()
        .map(|record| match record {
            Value::Object(object) => Ok(object),
            other => Err(format!(
                "query record is not an object: {}",
                truncate(&other.to_string())
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(QueryPage { records, next })
}

impl RestClient {
    /// `GET …/query?q=<soql>`: the first page only, so a caller can stream a large result; follow
    /// [`QueryPage::next`] with [`RestClient::query_more`]. Held by the guard and retried like
    /// every call; a refused query is [`RestError::Rejected`].
    pub(crate) async fn query(
        &self,
        soql: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        self.query_resource("query", soql, cancel).await
    }

    /// `GET …/queryAll?q=<soql>`: as [`RestClient::query`], with deleted records still in the
    /// recycle bin (`IsDeleted = true`) and archived ones (REST API Developer Guide,
    /// "QueryAll"); follow [`QueryPage::next`] with [`RestClient::query_more`].
    pub(crate) async fn query_all(
        &self,
        soql: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        self.query_resource("queryAll", soql, cancel).await
    }

    /// The first page of `soql` from `resource` (`query` or `queryAll`).
    async fn query_resource(
        &self,
        resource: &str,
        soql: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        if soql.trim().is_empty() {
            return Err(RestError::Invalid("empty SOQL".to_owned()));
        }
        let path = format!("{}/{resource}?q={}", self.data_path(), percent_encode(soql));
        self.query_at(&path, cancel).await
    }

    /// `SELECT COUNT() FROM …` → `totalSize`, the records matching it.
    pub async fn count(&self, soql: &str, cancel: &CancellationToken) -> Result<u64, RestError> {
        self.check_tag()?;
        let words: Vec<String> = soql
            .split_whitespace()
            .take(3)
            .map(str::to_ascii_uppercase)
            .collect();
        if words != ["SELECT", "COUNT()", "FROM"] {
            return Err(RestError::Invalid(format!(
                "count: `{soql}` is not `SELECT COUNT() FROM …`"
            )));
        }
        let path = format!("{}/query?q={}", self.data_path(), percent_encode(soql));
        let answer = self.execute(Method::GET, &path, None, true, cancel).await?;
        let body: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| RestError::Protocol(format!("count answer is not JSON: {e}")))?;
        body["totalSize"].as_u64().ok_or_else(|| {
            RestError::Protocol(format!(
                "count answer has no totalSize: {}",
                truncate(&body.to_string())
            ))
        })
    }

    /// The page at `next` (a [`QueryPage::next`] path of this org).
    pub(crate) async fn query_more(
        &self,
        next: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        if !next.starts_with('/') {
            return Err(RestError::Invalid(format!(
                "`{next}` is not a nextRecordsUrl path"
            )));
        }
        self.query_at(next, cancel).await
    }

    async fn query_at(
        &self,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<QueryPage, RestError> {
        self.check_tag()?;
        let answer = self.execute(Method::GET, path, None, true, cancel).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| format!("query page is not JSON: {e}"))
            .and_then(query_page)
            .map_err(RestError::Protocol)
    }
}
