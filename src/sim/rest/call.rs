//! One REST (sub)request and the context it runs in: [`Call`] (method, path after the version,
//! query, [`Body`], version, client tag), the parsing of paths, query strings and
//! `Sforce-Call-Options`, the bearer token's session, and [`Exec`], which runs (sub)requests
//! against the locked org as one user and publishes the change events of what it commits.

use std::sync::MutexGuard;

use axum::http::{HeaderMap, Method, header};
use serde_json::{Map, Value};

use super::reply::Reply;
use crate::sim::error::SimError;
use crate::sim::org::{Applied, Op, Org, StageOptions, Tx};
use crate::sim::shared::{Session, Shared};
use crate::sim::util::{lock, org_now, rest_origin};

/// The request body of a (sub)request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Body<'b> {
    /// Bytes as received.
    Raw(&'b [u8]),
    /// A Composite subrequest's `body`.
    Json(Option<&'b Value>),
}

/// An optional boolean of a request body (`allOrNone`, `haltOnError`): false when absent or
/// null, `JSON_PARSER_ERROR` when not a boolean.
pub(super) fn flag(body: &Map<String, Value>, name: &str) -> Result<bool, Reply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Reply::json_parser_error(&format!(
            "Cannot deserialize value of type boolean for {name} from {other}"
        ))),
    }
}

impl Body<'_> {
    /// The body as a JSON object, `JSON_PARSER_ERROR` otherwise.
    pub(super) fn object(&self) -> Result<Map<String, Value>, Reply> {
        match self.json()? {
            Value::Object(body) => Ok(body),
            _ => Err(Reply::json_parser_error(
                "Cannot deserialize the request body: expected a JSON object",
            )),
        }
    }

    pub fn json(&self) -> Result<Value, Reply> {
        match self {
            Body::Raw(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Err(
                Reply::json_parser_error("No content to map due to end-of-input"),
            ),
            Body::Raw(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Reply::json_parser_error(&format!("Malformed JSON: {e}"))),
            Body::Json(Some(v)) => Ok((*v).clone()),
            Body::Json(None) => Err(Reply::json_parser_error(
                "No content to map due to end-of-input",
            )),
        }
    }

    /// The body as a record's fields (`attributes` dropped).
    pub(super) fn fields(&self) -> Result<Map<String, Value>, Reply> {
        match self.json()? {
            Value::Object(mut m) => {
                m.remove("attributes");
                Ok(m)
            }
            _ => Err(Reply::json_parser_error(
                "Cannot deserialize instance of sObject from a value that is not a JSON object",
            )),
        }
    }
}

/// One (sub)request, routed relative to `/services/data/v{version}`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call<'b> {
    pub method: &'b Method,
    /// Path after the version, e.g. `/sobjects/Account` (percent-encoded).
    pub path: &'b str,
    /// Query string (percent-encoded), if any.
    pub query: Option<&'b str>,
    pub body: Body<'b>,
    /// API version, e.g. `62.0`.
    pub version: &'b str,
    /// `Sforce-Call-Options` client tag.
    pub tag: Option<&'b str>,
    /// False inside `/composite`.
    pub top: bool,
}

impl Call<'_> {
    pub fn origin(&self) -> String {
        rest_origin(self.version, self.tag)
    }
}

/// The `vNN.N` path segment → `NN.N`.
pub(super) fn parse_version(segment: &str) -> Option<&str> {
    let v = segment.strip_prefix('v')?;
    let (major, minor) = v.split_once('.')?;
    (!major.is_empty()
        && !minor.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.bytes().all(|b| b.is_ascii_digit()))
    .then_some(v)
}

/// Percent-decoding (`+` as a space when `plus`), lossy on invalid UTF-8.
pub(super) fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        match b {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            b'+' if plus => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query-string parameter, decoded.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == name).then(|| percent_decode(v, true))
    })
}

/// The `client=` tag of a `Sforce-Call-Options` value.
pub(super) fn call_options_tag(value: &str) -> Option<String> {
    value
        .split([',', ';'])
        .filter_map(|opt| opt.trim().strip_prefix("client="))
        .map(str::trim)
        .find(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The session of a request's `Authorization: Bearer` (or `OAuth`) token.
pub(crate) fn bearer(s: &Shared, headers: &HeaderMap) -> Option<Session> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("OAuth "))?
        .trim();
    s.session(token)
}

/// Executes (sub)requests against the locked org as one user; inside an all-or-none Composite,
/// every write is staged into `outer` and committed (or dropped) at the end.
pub(super) struct Exec<'a> {
    pub shared: &'a Shared,
    pub org: MutexGuard<'a, Org>,
    pub user: String,
    pub outer: Option<Tx>,
}

impl<'a> Exec<'a> {
    pub fn new(shared: &'a Shared, user: &str) -> Self {
        Self {
            shared,
            org: lock(&shared.org),
            user: user.to_owned(),
            outer: None,
        }
    }

    /// Runs `ops` as one transaction (each op on its own; with `all_or_none`, any failure —
    /// or `rejected`: a record refused before it was tried — rolls back all), or stages them into
    /// the enclosing all-or-none Composite. Publishes the committed changes' events.
    pub fn write(
        &mut self,
        ops: &[Op],
        origin: &str,
        all_or_none: bool,
        rejected: bool,
    ) -> Vec<Result<Applied, SimError>> {
        let now = org_now();
        let opts = StageOptions {
            stop_on_error: false,
            rest_faults: true,
        };
        let org = &mut *self.org;
        if let Some(outer) = self.outer.as_mut() {
            return org.stage(outer, ops, &self.user, now, opts, Some(origin));
        }
        let mut tx = Tx::default();
        let results = org.stage(&mut tx, ops, &self.user, now, opts, Some(origin));
        if all_or_none && (rejected || results.iter().any(Result::is_err)) {
            return results;
        }
        let changes = org.finish(tx);
        lock(&self.shared.recent).note(&self.user, &changes);
        if let Err(error) = self
            .shared
            .publish(org, changes, origin.to_owned(), &self.user)
        {
            tracing::error!(%error, "simulated org could not publish change events");
        }
        results
    }

    /// Commits the enclosing all-or-none Composite's writes and publishes their events.
    pub fn commit_outer(&mut self, origin: String) {
        let Some(tx) = self.outer.take() else {
            return;
        };
        let org = &mut *self.org;
        let changes = org.finish(tx);
        lock(&self.shared.recent).note(&self.user, &changes);
        if let Err(error) = self.shared.publish(org, changes, origin, &self.user) {
            tracing::error!(%error, "simulated org could not publish change events");
        }
    }
}
