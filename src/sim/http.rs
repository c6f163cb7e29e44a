//! The org's instance URL (also its login URL): OAuth 2.0, userinfo, the REST API (`rest`) and
//! the simulator's own endpoints.
//!
//! Contract:
//! * `POST /services/oauth2/token` (form): `client_credentials` (the token acts as the
//!   integration user, the connected app's "Run As" user), `password` (acts as the org's
//!   user) and `urn:ietf:params:oauth:grant-type:jwt-bearer` (acts as the assertion's `sub`;
//!   checks in [`super::jwt`]) grants; success and error bodies shaped as Salesforce's
//!   (`invalid_client`, `invalid_grant`, `invalid_client_id`, `unsupported_grant_type`,
//!   HTTP 400). Not counted as API requests.
//! * `GET /services/oauth2/userinfo` with `Authorization: Bearer` (401 otherwise): the token's
//!   user.
//! * `GET /id/{orgId}/{userId}`: the Identity URL the token response's `id` names
//!   (`rest::identity`).
//! * `POST /services/Soap/{u|c}/{version}`: the SOAP API's login() and logout() (`soap`).
//! * `/services/data` (version list) and `/services/data/v{ver}/…`: see `rest`.
//! * Simulator only, no auth: `POST /sim/generate` `{"object": "Account", "count": 1000}`;
//!   `GET /sim/faults` (knob state) and `POST /sim/faults` with any of `{"latency_ms": 250,
//!   "fail_next": {"count": 3, "fault": "service_unavailable" | "too_many_requests" |
//!   "request_limit_exceeded" | "proxy_html_bad_request" | "payload_too_large"}, "lock_rows": 2, "api_usage": 0, "api_limit": 1000,
//!   "validation_rule": {"object", "field", "value", "message"}, "gap": {"object", "ids": […],
//!   "kind": "update"}, "overflow": "Account", "gap_records": […], "fail_next_logins": {"count":
//!   3, "fault": "maintenance" | "unknown_error" | "html_200"}}` (the `SimOrg` knobs over
//!   HTTP; `gap`/`overflow`/`gap_records` are `emit_gap`, `emit_overflow`, `emit_gaps_for`).
//! * Any other path: 404 with the REST API's `NOT_FOUND` array; a known path with another
//!   method: 405 `METHOD_NOT_ALLOWED`. Both read the request's body first, so that a keep-alive
//!   connection stays usable (a body over 2 MB: 413 with `Connection: close`).

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::error::SimError;
use super::org::ValidationRule;
use super::rest;
use super::rest::limits::RestFault;
use super::rest::{Reply, bearer};
use super::shared::Shared;
use super::util::{API_VERSION, lock, now_ms, rest_origin};

/// Where the HTTP side's connections come from.
pub(super) enum Incoming {
    /// Plaintext TCP.
    Plain(TcpListener),
    /// TCP connections whose TLS handshake succeeded.
    Tls(super::tls::TlsListener),
}

/// Serves the HTTP side on `incoming` until the org shuts down.
pub(super) async fn serve(shared: Arc<Shared>, incoming: Incoming) {
    let shutdown = shared.shutdown.clone();
    let app = router(shared);
    let result = match incoming {
        Incoming::Plain(listener) => {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                // Small JSON responses go out at once (no Nagle delay), as from a real server.
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Incoming::Tls(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "simulated org HTTP server failed");
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/id/{org}/{user}", get(rest::identity))
        .route("/services/Soap/{api}/{version}", post(super::soap::call))
        .route("/services/data", get(rest::versions))
        .route("/services/data/", get(rest::versions))
        .route("/services/data/{*path}", any(rest::services_data))
        .route("/sim/generate", post(generate))
        .route("/sim/seed", post(seed))
        .route("/sim/faults", get(faults_state).post(set_faults))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// A known path with another method: 405 `METHOD_NOT_ALLOWED`, after reading the body (see
/// [`unknown_path`]).
async fn method_not_allowed(
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let reply = Reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "HTTP Method not allowed for this resource",
        &[],
    );
    drained(body, reply)
}

/// Any other path: 404 with the REST API's `NOT_FOUND` array, after reading the request's body.
/// Reading it keeps the connection usable: hyper closes an HTTP/1.1 connection whose request
/// body was left unread, without a `Connection: close` header, and a pooled client's next
/// request on it then fails with EPIPE (RFC 9112, section 9.6: a server that closes must say
/// `close`; issue 21). A body over the `Bytes` limit (2 MB) is refused with 413 and
/// `Connection: close`.
async fn unknown_path(
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    drained(body, Reply::not_found())
}

/// `reply` once the body was read, or the body's rejection with `Connection: close`.
fn drained(
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
    reply: Reply,
) -> Response {
    match body {
        Ok(_) => rest::into_response(reply, None),
        Err(rejection) => {
            let mut response = rejection.into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(s): State<Arc<Shared>>, Form(p): Form<HashMap<String, String>>) -> Response {
    if let Some(fault) = s.logins.next() {
        return fault.response();
    }
    let cfg = &s.config;
    let param = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let client_ok =
        param("client_id") == cfg.client_id && param("client_secret") == cfg.client_secret;
    let user_id = match param("grant_type") {
        "client_credentials" | "password" if !client_ok => {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        // The connected app's "Run As" user.
        "client_credentials" => &cfg.integration_user_id,
        "password" => {
            let expected = format!("{}{}", cfg.password, cfg.security_token);
            if param("username") != cfg.username || param("password") != expected {
                return oauth_error("invalid_grant", "authentication failure");
            }
            &cfg.user_id
        }
        crate::salesforce::auth::JWT_BEARER_GRANT => {
            let certificate = &s.jwt_certificate;
            match super::jwt::verify(cfg, certificate, &s.instance_url, param("assertion")) {
                Ok(user) => user,
                Err((error, description)) => return oauth_error(error, description),
            }
        }
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    };
    let access_token = s.issue_token(user_id);
    s.logins.served();
    let signature: [u8; 32] = rand::random();
    let instance_url = lock(&s.api)
        .token_instance_url
        .clone()
        .unwrap_or_else(|| s.instance_url.clone());
    Json(json!({
        "access_token": access_token,
        "signature": base64::engine::general_purpose::STANDARD.encode(signature),
        "scope": "api",
        "instance_url": instance_url,
        "id": format!("{}/id/{}/{}", instance_url, cfg.org_id, user_id),
        "token_type": "Bearer",
        "issued_at": now_ms().to_string(),
    }))
    .into_response()
}

async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(session) = bearer(&s, &headers) else {
        return (StatusCode::UNAUTHORIZED, "Bad_OAuth_Token").into_response();
    };
    let cfg = &s.config;
    let integration = session.user_id == cfg.integration_user_id;
    let username = if integration {
        super::jwt::integration_username(cfg)
    } else {
        cfg.username.clone()
    };
    let (given, family) = if integration {
        ("Integration", "User")
    } else {
        ("Forcebridge", "Demo")
    };
    Json(json!({
        "sub": format!("{}/id/{}/{}", s.instance_url, cfg.org_id, session.user_id),
        "user_id": session.user_id,
        "organization_id": cfg.org_id,
        "preferred_username": username,
        "nickname": if integration { "integration" } else { "demo" },
        "name": format!("{given} {family}"),
        "email": username,
        "email_verified": true,
        "given_name": given,
        "family_name": family,
        "zoneinfo": "Etc/UTC",
        "locale": "en_US",
        "language": "en_US",
        "active": true,
        "user_type": "STANDARD",
        "utcOffset": 0,
        "updated_at": "2024-01-01T00:00:00Z",
        "urls": {
            "rest": format!("{}/services/data/v{{version}}/", s.instance_url),
            "sobjects": format!("{}/services/data/v{{version}}/sobjects/", s.instance_url),
        },
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct GenerateRequest {
    object: String,
    count: usize,
}

async fn generate(State(s): State<Arc<Shared>>, Json(req): Json<GenerateRequest>) -> Response {
    let origin = rest_origin(API_VERSION, Some("forcebridge-sim"));
    let user = s.config.user_id.clone();
    let shared = s.clone();
    let object = req.object.clone();
    let result =
        tokio::task::spawn_blocking(move || shared.generate(&object, req.count, &origin, &user))
            .await;
    match result {
        Ok(Ok(ids)) => {
            Json(json!({"object": req.object, "count": ids.len(), "ids": ids})).into_response()
        }
        Ok(Err(SimError::UnknownObject(_))) => reply(Reply::not_found()),
        Ok(Err(e)) => reply(Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            &e.to_string(),
            &[],
        )),
        Err(e) => reply(Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            &e.to_string(),
            &[],
        )),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    object: String,
    count: usize,
    #[serde(default)]
    seed: u64,
}

/// `POST /sim/seed {"object", "count", "seed"?}`: existing records, no change events (see
/// `SimOrg::seed`); answers `{"object", "count", "first_id", "last_id"}`.
async fn seed(State(s): State<Arc<Shared>>, Json(req): Json<SeedRequest>) -> Response {
    let shared = s.clone();
    let object = req.object.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut org = lock(&shared.org);
        let object = org
            .canonical_object(&object)
            .ok_or_else(|| SimError::UnknownObject(object.clone()))?
            .to_owned();
        org.seed(&object, req.count, req.seed, &shared.config.user_id)
    })
    .await;
    match result {
        Ok(Ok(ids)) => {
            let (first, last) = ids.unzip();
            Json(json!({"object": req.object, "count": req.count, "first_id": first, "last_id": last}))
                .into_response()
        }
        Ok(Err(SimError::UnknownObject(_))) => reply(Reply::not_found()),
        Ok(Err(e)) => reply(Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            &e.to_string(),
            &[],
        )),
        Err(e) => reply(Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            &e.to_string(),
            &[],
        )),
    }
}

fn reply(r: Reply) -> Response {
    match r.body {
        Some(body) => (r.status, Json(body)).into_response(),
        None => r.status.into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    count: usize,
    fault: RestFault,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRequest {
    object: String,
    field: String,
    #[serde(default)]
    value: Value,
    message: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsRequest {
    latency_ms: Option<u64>,
    fail_next: Option<FailNext>,
    lock_rows: Option<usize>,
    api_usage: Option<u64>,
    api_limit: Option<u64>,
    validation_rule: Option<RuleRequest>,
    gap: Option<super::faults::GapRequest>,
    overflow: Option<String>,
    gap_records: Option<Vec<String>>,
    #[serde(default)]
    reset_streams: bool,
    #[serde(default)]
    revoke_tokens: bool,
    reset_stream_every: Option<u64>,
    refuse_subscriptions_ms: Option<u64>,
    #[serde(default)]
    silence_streams: bool,
    fail_next_logins: Option<FailNextLogins>,
    /// Bulk API 2.0 query jobs still to fail.
    fail_next_bulk_jobs: Option<usize>,
    /// How long a new Bulk API 2.0 query job stays `InProgress`.
    bulk_job_ms: Option<u64>,
    /// An administrator empties this object's recycle bin.
    purge_recycle_bin: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNextLogins {
    count: usize,
    fault: super::login_faults::LoginFault,
}

fn faults_body(s: &Shared) -> Value {
    let lock_rows = lock(&s.org).lock_faults();
    let api = lock(&s.api);
    json!({
        "api_usage": {"used": api.used, "max": api.max},
        "latency_ms": api.latency.as_millis() as u64,
        "pending_faults": api.pending_faults(),
        "lock_rows": lock_rows,
        "pending_login_faults": s.logins.pending(),
    })
}

async fn faults_state(State(s): State<Arc<Shared>>) -> Response {
    Json(faults_body(&s)).into_response()
}

async fn set_faults(State(s): State<Arc<Shared>>, Json(req): Json<FaultsRequest>) -> Response {
    if let Some(rule) = req.validation_rule {
        let added = lock(&s.org).add_validation_rule(
            &rule.object,
            ValidationRule {
                field: rule.field,
                value: rule.value,
                message: rule.message,
            },
        );
        if let Err(e) = added {
            return reply(Reply::error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                &e.to_string(),
                &[],
            ));
        }
    }
    if let Err(e) = super::faults::apply_http(&s, req.gap, req.overflow, req.gap_records) {
        return reply(Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            &e.to_string(),
            &[],
        ));
    }
    if let Some(n) = req.lock_rows {
        lock(&s.org).set_lock_faults(n);
    }
    if req.reset_streams {
        s.reset_streams();
    }
    if req.revoke_tokens {
        s.revoke_tokens();
    }
    if let Some(n) = req.reset_stream_every {
        s.reset_stream_every(n);
    }
    if let Some(ms) = req.refuse_subscriptions_ms {
        s.refuse_subscriptions_for(Duration::from_millis(ms));
    }
    if req.silence_streams {
        s.silence_streams();
    }
    if let Some(n) = req.fail_next_bulk_jobs {
        lock(&s.bulk).fail_next = n;
    }
    if let Some(ms) = req.bulk_job_ms {
        lock(&s.bulk).in_progress = Duration::from_millis(ms);
    }
    if let Some(object) = &req.purge_recycle_bin {
        lock(&s.org).purge_recycle_bin(object, i64::MAX);
    }
    if let Some(f) = req.fail_next_logins {
        s.logins.queue(f.count, f.fault);
    }
    {
        let mut api = lock(&s.api);
        if let Some(ms) = req.latency_ms {
            api.latency = Duration::from_millis(ms);
        }
        if let Some(f) = req.fail_next {
            api.queue_faults(f.count, f.fault);
        }
        if let Some(used) = req.api_usage {
            api.used = used;
        }
        if let Some(max) = req.api_limit {
            api.max = max;
        }
    }
    Json(faults_body(&s)).into_response()
}
