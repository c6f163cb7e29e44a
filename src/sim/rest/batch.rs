//! Composite Batch: `POST /services/data/v{ver}/composite/batch` (REST API Developer Guide,
//! "Composite Batch", "Batch Request Body" and "Batch Response Body").
//!
//! Contract:
//! * Body `{"batchRequests": [{"method", "url", "richInput"?, "binaryPartName"?,
//!   "binaryPartNameAlias"?}], "haltOnError"?: bool (default false)}`. `url` is relative to
//!   `/services/data/` and starts with the version (`v62.0/sobjects/Account`; a leading `/` is
//!   accepted); query strings percent-encoded. A body not of that shape, a subrequest without a
//!   method or url, or a url without a version: 400 `JSON_PARSER_ERROR` / `INVALID_INPUT` for the
//!   whole call before any subrequest runs, as the guide says of deserialization errors. More
//!   than [`MAX_SUBREQUESTS`]: 400 `LIMIT_EXCEEDED`.
//! * Each subrequest runs on its own, in order, through the same dispatcher as `/composite`'s
//!   subrequests (its own transaction; no references between subrequests). Served: sObject
//!   resources, `query`/`queryAll`, sObject Collections and `limits` (the guide's list also has
//!   Search, Connect and Chatter, which the simulator does not serve); `composite…` and
//!   `tooling`, `jobs` answer that subrequest with 400 `INVALID_INPUT`. Binary parts
//!   (multipart requests) are not served: such a subrequest answers 400 `INVALID_INPUT`.
//! * HTTP 200 `{"hasErrors", "results": [{"statusCode", "result"}]}` in request order; `result`
//!   is the subrequest's body (null for 204); `hasErrors` is true when any subrequest answered
//!   400 or more.
//! * `haltOnError: true`: after the first subrequest answering 400 or more, every later one is
//!   not run and answers 412 `[{"errorCode": "BATCH_PROCESSING_HALTED", "message"}]`.
//! * `Sforce-Call-Options: client=<tag>` of the batch applies to every subrequest. Every
//!   subrequest counts against `DailyApiRequests` (the guide: each subrequest counts against
//!   rate limits).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::call::{Body, Call, Exec, flag, parse_version};
use super::reply::Reply;
use crate::sim::util::lock;

/// Most subrequests per batch.
pub const MAX_SUBREQUESTS: usize = 25;

const HALTED: &str = "Batch processing halted per request";

/// One subrequest, parsed.
struct Sub {
    method: Method,
    version: String,
    path: String,
    query: Option<String>,
    body: Option<Value>,
    binary: bool,
}

fn bad(code: &str, message: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, code, message, &[])
}

/// `(version, path after the version, query)` of a subrequest url.
fn split_url(url: &str) -> Option<(String, String, Option<String>)> {
    let rest = url.strip_prefix("/services/data/").unwrap_or(url);
    let rest = rest.trim_start_matches('/');
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (rest, None),
    };
    let (segment, path) = match path.find('/') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    Some((parse_version(segment)?.to_owned(), path.to_owned(), query))
}

fn parse_sub(i: usize, item: &Value) -> Result<Sub, Reply> {
    let text = |name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Reply::json_parser_error(&format!(
                    "batchRequests[{i}]: {name} is required and must be a string"
                ))
            })
    };
    let method = text("method")?;
    let url = text("url")?;
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad("INVALID_INPUT", &format!("Invalid method {method}")))?;
    let (version, path, query) = split_url(url).ok_or_else(|| {
        bad(
            "INVALID_INPUT",
            &format!("batchRequests[{i}]: the url {url} must start with the API version (v62.0/…)"),
        )
    })?;
    let binary = item
        .get("binaryPartName")
        .or_else(|| item.get("binaryPartNameAlias"))
        .is_some_and(|v| !v.is_null());
    Ok(Sub {
        method,
        version,
        path,
        query,
        body: item.get("richInput").filter(|b| !b.is_null()).cloned(),
        binary,
    })
}

fn parse(call: &Call) -> Result<(bool, Vec<Sub>), Reply> {
    let body = call.body.object()?;
    let halt = flag(&body, "haltOnError")?;
    let Some(Value::Array(items)) = body.get("batchRequests") else {
        return Err(Reply::json_parser_error(
            "Cannot deserialize the request body: batchRequests is required and must be an array",
        ));
    };
    if items.len() > MAX_SUBREQUESTS {
        return Err(bad(
            "LIMIT_EXCEEDED",
            &format!(
                "A batch request can contain at most {MAX_SUBREQUESTS} subrequests; this one has {}.",
                items.len()
            ),
        ));
    }
    let subs = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_sub(i, item))
        .collect::<Result<_, _>>()?;
    Ok((halt, subs))
}

fn run_sub(exec: &mut Exec, sub: &Sub, tag: Option<&str>) -> Reply {
    if sub.binary {
        return bad(
            "INVALID_INPUT",
            "Binary parts (multipart batch requests) are not served by the simulated org",
        );
    }
    let is_limits = sub.path.trim_matches('/') == "limits";
    let call = Call {
        method: &sub.method,
        path: &sub.path,
        query: sub.query.as_deref(),
        body: Body::Json(sub.body.as_ref()),
        version: &sub.version,
        tag,
        // Limits is a resource Composite Batch serves (the dispatcher refuses it in `composite`).
        top: is_limits,
    };
    exec.dispatch(&call)
}

/// Runs a Composite Batch request.
pub(super) fn run(exec: &mut Exec, call: &Call) -> Reply {
    let (halt, subs) = match parse(call) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if subs.len() > 1 {
        let mut api = lock(&exec.shared.api);
        api.used = api.used.saturating_add(subs.len() as u64 - 1);
    }
    let mut halted = false;
    let mut has_errors = false;
    let mut results = Vec::with_capacity(subs.len());
    for sub in &subs {
        if halted {
            results.push(json!({
                "statusCode": StatusCode::PRECONDITION_FAILED.as_u16(),
                "result": [{"errorCode": "BATCH_PROCESSING_HALTED", "message": HALTED}],
            }));
            continue;
        }
        let reply = run_sub(exec, sub, call.tag);
        let failed = reply.status.as_u16() >= 400;
        has_errors |= failed;
        halted = halt && failed;
        results.push(json!({
            "statusCode": reply.status.as_u16(),
            "result": reply.body.unwrap_or(Value::Null),
        }));
    }
    Reply::json(
        StatusCode::OK,
        json!({"hasErrors": has_errors, "results": results}),
    )
}
