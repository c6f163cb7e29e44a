//! Composite: `POST /services/data/v{ver}/composite`.
//!
//! Contract:
//! * Body `{"allOrNone": bool (default false), "collateSubrequests": bool (accepted, ignored:
//!   subrequests always run in order), "compositeRequest": [{"method", "url", "referenceId",
//!   "body"?, "httpHeaders"?}]}`. `url` is a full path `/services/data/vXX.X/…` (query strings
//!   percent-encoded). Supported: sObject rows (`sobjects/{Object}` POST,
//!   `sobjects/{Object}/{Id}` GET/PATCH/DELETE, `sobjects/{Object}/{ExtIdField}/{value}`
//!   GET/PATCH), sObject Collections (retrieve by POST included), and `query`. Anything else answers that subrequest with an
//!   error, as its own resource would.
//! * At most 25 subrequests, at most 5 of them sObject Collections or queries; more, a malformed
//!   body, or a duplicate `referenceId` refuse the whole call with 400 (`LIMIT_EXCEEDED`,
//!   `JSON_PARSER_ERROR`, `INVALID_INPUT`). The whole call counts as one API request.
//! * Otherwise HTTP 200 `{"compositeResponse": [{"body", "httpHeaders", "httpStatusCode",
//!   "referenceId"}]}` in request order.
//! * `allOrNone: false`: every subrequest is its own transaction (a Collections subrequest follows
//!   its own `allOrNone`). `allOrNone: true`: all subrequests form one transaction (one
//!   `transactionKey`); processing stops at the first failure (HTTP ≥ 400, or a Collections
//!   result with a failed record): nothing is committed, no event is published, the failed
//!   subrequest keeps its response and every other one answers 400 `PROCESSING_HALTED` ("The
//!   transaction was rolled back since another operation in the same transaction failed.").
//! * `@{referenceId.path}` in a later `url` or `body` (path: `.field` and `[index]` steps, e.g.
//!   `@{newAccount.id}`, `@{found.records[0].Id}`) is replaced by that value of an earlier
//!   subrequest's response body (a whole-string reference keeps the JSON type). A reference that
//!   can't be resolved answers that subrequest with 400 (`PROCESSING_HALTED` when the referenced
//!   subrequest failed, `INVALID_INPUT` otherwise).
//! * `Sforce-Call-Options: client=<tag>` of the Composite request applies to every subrequest; a
//!   subrequest's own `httpHeaders` `Sforce-Call-Options` overrides it. (Whether real orgs carry
//!   the top-level tag into `changeOrigin` is an open question; the simulator assumes they do.)

use std::collections::{HashMap, HashSet};

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::call::{Body, Call, Exec, call_options_tag, flag, parse_version};
use super::reply::Reply;
use crate::sim::org::Tx;
use crate::sim::util::rest_origin;

/// Most subrequests per call.
pub const MAX_SUBREQUESTS: usize = 25;
/// Most sObject Collections or query subrequests per call.
pub const MAX_COLLECTIONS_OR_QUERIES: usize = 5;

const HALTED: &str =
    "The transaction was rolled back since another operation in the same transaction failed.";

struct Sub {
    method: String,
    url: String,
    reference_id: String,
    body: Option<Value>,
    tag: Option<String>,
}

fn halted(message: &str) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        json!([{ "errorCode": "PROCESSING_HALTED", "message": message }]),
    )
}

fn parse(call: &Call) -> Result<(bool, Vec<Sub>), Reply> {
    let body = call.body.object()?;
    let all_or_none = flag(&body, "allOrNone")?;
    flag(&body, "collateSubrequests")?;
    let Some(Value::Array(items)) = body.get("compositeRequest") else {
        return Err(Reply::json_parser_error(
            "Cannot deserialize the request body: compositeRequest is required and must be an array",
        ));
    };
    if items.len() > MAX_SUBREQUESTS {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            &format!(
                "A composite request can contain at most {MAX_SUBREQUESTS} subrequests; this one has {}.",
                items.len()
            ),
            &[],
        ));
    }
    let mut subs = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let text = |name: &str| {
            item.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Reply::json_parser_error(&format!(
                        "compositeRequest[{i}]: {name} is required and must be a string"
                    ))
                })
        };
        let method = text("method")?;
        let url = text("url")?;
        let reference_id = text("referenceId")?;
        if !reference_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                &format!(
                    "Invalid referenceId '{reference_id}': use only letters, digits and underscores"
                ),
                &[],
            ));
        }
        if !seen.insert(reference_id.clone()) {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                &format!("Duplicate ReferenceId provided in the request: {reference_id}"),
                &[],
            ));
        }
        let tag = match item.get("httpHeaders") {
            None | Some(Value::Null) => None,
            Some(Value::Object(h)) => h
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("sforce-call-options"))
                .and_then(|(_, v)| v.as_str())
                .and_then(call_options_tag),
            Some(_) => {
                return Err(Reply::json_parser_error(&format!(
                    "compositeRequest[{i}]: httpHeaders must be an object"
                )));
            }
        };
        subs.push(Sub {
            method,
            url,
            reference_id,
            body: item.get("body").filter(|b| !b.is_null()).cloned(),
            tag,
        });
    }
    let heavy = subs
        .iter()
        .filter(|s| is_collection_or_query(&s.url))
        .count();
    if heavy > MAX_COLLECTIONS_OR_QUERIES {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            &format!(
                "A composite request can contain at most {MAX_COLLECTIONS_OR_QUERIES} sObject Collections or query subrequests; this one has {heavy}."
            ),
            &[],
        ));
    }
    Ok((all_or_none, subs))
}

/// `(version, path after the version, query)` of a subrequest url.
fn split_url(url: &str) -> Option<(&str, &str, Option<&str>)> {
    let rest = url.strip_prefix("/services/data/")?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (segment, path) = match path.find('/') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    Some((parse_version(segment)?, path, query))
}

fn is_collection_or_query(url: &str) -> bool {
    let Some((_, path, _)) = split_url(url) else {
        return false;
    };
    let path = path.trim_start_matches('/');
    path.starts_with("composite/sobjects")
        || path == "query"
        || path.starts_with("query/")
        || path == "queryAll"
        || path.starts_with("queryAll/")
}

/// An earlier subrequest's outcome, for `@{…}` references.
struct Done {
    body: Value,
    failed: bool,
}

/// Why a reference can't be resolved.
struct Unresolved {
    expr: String,
    reference_id: String,
    failed: bool,
}

impl Unresolved {
    fn reply(&self) -> Reply {
        let message = format!(
            "Invalid reference specified. No value for {} found in {}.",
            self.expr, self.reference_id
        );
        if self.failed {
            halted(&message)
        } else {
            Reply::error(StatusCode::BAD_REQUEST, "INVALID_INPUT", &message, &[])
        }
    }
}

/// The value of `ref.path` (`.name` / `[n]` steps).
fn lookup(expr: &str, done: &HashMap<String, Done>) -> Result<Value, Unresolved> {
    let end = expr.find(['.', '[']).unwrap_or(expr.len());
    let reference_id = &expr[..end];
    let unresolved = |failed| Unresolved {
        expr: expr.to_owned(),
        reference_id: reference_id.to_owned(),
        failed,
    };
    let Some(d) = done.get(reference_id) else {
        return Err(unresolved(false));
    };
    if d.failed {
        return Err(unresolved(true));
    }
    let mut value = &d.body;
    let mut rest = &expr[end..];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let stop = r.find(['.', '[']).unwrap_or(r.len());
            value = value.get(&r[..stop]).ok_or_else(|| unresolved(false))?;
            rest = &r[stop..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| unresolved(false))?;
            let index: usize = r[..close].trim().parse().map_err(|_| unresolved(false))?;
            value = value.get(index).ok_or_else(|| unresolved(false))?;
            rest = &r[close + 1..];
        } else {
            return Err(unresolved(false));
        }
    }
    if value.is_null() {
        return Err(unresolved(false));
    }
    Ok(value.clone())
}

/// `s` with every `@{…}` replaced by its value's text.
fn interpolate(s: &str, done: &HashMap<String, Done>) -> Result<String, Unresolved> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("@{") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let value = lookup(&rest[start + 2..start + 2 + len], done)?;
        match value {
            Value::String(v) => out.push_str(&v),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `body` with references resolved; a string that is exactly one reference keeps its JSON type.
fn resolve_body(body: &Value, done: &HashMap<String, Done>) -> Result<Value, Unresolved> {
    Ok(match body {
        Value::String(s) => {
            let whole = s
                .strip_prefix("@{")
                .and_then(|r| r.strip_suffix('}'))
                .filter(|inner| !inner.contains('}'));
            match whole {
                Some(expr) => lookup(expr, done)?,
                None => Value::String(interpolate(s, done)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve_body(v, done))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), resolve_body(v, done)?)))
                .collect::<Result<Map<_, _>, Unresolved>>()?,
        ),
        other => other.clone(),
    })
}

fn run_sub(
    exec: &mut Exec,
    sub: &Sub,
    default_tag: Option<&str>,
    done: &HashMap<String, Done>,
) -> Reply {
    let url = match interpolate(&sub.url, done) {
        Ok(u) => u,
        Err(e) => return e.reply(),
    };
    let body = match sub.body.as_ref().map(|b| resolve_body(b, done)).transpose() {
        Ok(b) => b,
        Err(e) => return e.reply(),
    };
    let Some((version, path, query)) = split_url(&url) else {
        return Reply::not_found();
    };
    let Ok(method) = Method::from_bytes(sub.method.to_ascii_uppercase().as_bytes()) else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            &format!("Invalid method {}", sub.method),
            &[],
        );
    };
    let call = Call {
        method: &method,
        path,
        query,
        body: Body::Json(body.as_ref()),
        version,
        tag: sub.tag.as_deref().or(default_tag),
        top: false,
    };
    exec.dispatch(&call)
}

/// Runs a Composite request.
pub(super) fn run(exec: &mut Exec, call: &Call) -> Reply {
    let (all_or_none, subs) = match parse(call) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if all_or_none {
        exec.outer = Some(Tx::default());
    }
    let mut done: HashMap<String, Done> = HashMap::new();
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(subs.len());
    let mut failed_at = None;
    for (i, sub) in subs.iter().enumerate() {
        if failed_at.is_some() {
            replies.push(None);
            continue;
        }
        let reply = run_sub(exec, sub, call.tag, &done);
        let failed = reply.failed();
        if all_or_none && failed {
            failed_at = Some(i);
        }
        done.insert(
            sub.reference_id.clone(),
            Done {
                body: reply.body.clone().unwrap_or(Value::Null),
                failed: reply.status.as_u16() >= 400,
            },
        );
        replies.push(Some(reply));
    }
    if all_or_none {
        match failed_at {
            Some(_) => exec.outer = None,
            None => exec.commit_outer(rest_origin(call.version, call.tag)),
        }
    }
    let items: Vec<Value> = subs
        .iter()
        .zip(replies)
        .enumerate()
        .map(|(i, (sub, reply))| {
            let reply = match (failed_at, reply) {
                (Some(f), Some(r)) if f == i => r,
                (Some(_), _) | (None, None) => halted(HALTED),
                (None, Some(r)) => r,
            };
            let headers: Map<String, Value> = reply
                .headers
                .iter()
                .map(|(k, v)| (header_name(k), Value::String(v.clone())))
                .collect();
            json!({
                "body": reply.body.unwrap_or(Value::Null),
                "httpHeaders": headers,
                "httpStatusCode": reply.status.as_u16(),
                "referenceId": sub.reference_id,
            })
        })
        .collect();
    Reply::json(StatusCode::OK, json!({ "compositeResponse": items }))
}

/// `location` → `Location`.
fn header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}
