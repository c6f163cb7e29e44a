//! The org's instance URL (also its login URL): OAuth 2.0, userinfo, a minimal sObject REST API
//! and the simulator's load generator.
//!
//! Contract:
//! * `POST /services/oauth2/token` (form): `client_credentials` and `password` grants; success
//!   and error bodies shaped as Salesforce's (`invalid_client`, `invalid_grant`,
//!   `unsupported_grant_type`, HTTP 400).
//! * `GET /services/oauth2/userinfo` with `Authorization: Bearer` (401 otherwise).
//! * `POST /services/data/v{ver}/sobjects/{Object}` (201), `GET|PATCH|DELETE …/{Object}/{Id}`
//!   (200/204/204), bearer auth, Salesforce error arrays. Field values use the same JSON shape
//!   as the Rust API (compound fields nested, dates as epoch ms). `Sforce-Call-Options:
//!   client=<tag>` sets the emitted event's `changeOrigin` to
//!   `com/salesforce/api/rest/{ver};client=<tag>`.
//! * `POST /sim/generate` `{"object": "Account", "count": 1000}` (simulator only, no auth).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::org::Op;
use super::{Session, Shared, SimError, lock, now_ms, rest_origin};

/// Serves the HTTP side on `listener` until the org shuts down.
pub(super) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.clone();
    let app = router(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "simulated org HTTP server failed");
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/oauth2/userinfo", get(userinfo).post(userinfo))
        .route(
            "/services/data/{version}/sobjects/{object}",
            post(create_record),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/{id}",
            get(get_record).patch(update_record).delete(delete_record),
        )
        .route("/sim/generate", post(generate))
        .with_state(shared)
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(s): State<Arc<Shared>>, Form(p): Form<HashMap<String, String>>) -> Response {
    let cfg = &s.config;
    let param = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let client_ok =
        param("client_id") == cfg.client_id && param("client_secret") == cfg.client_secret;
    match param("grant_type") {
        "client_credentials" | "password" if !client_ok => {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        "client_credentials" => {}
        "password" => {
            let expected = format!("{}{}", cfg.password, cfg.security_token);
            if param("username") != cfg.username || param("password") != expected {
                return oauth_error("invalid_grant", "authentication failure");
            }
        }
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    }
    let access_token = s.issue_token();
    let signature: [u8; 32] = rand::random();
    Json(json!({
        "access_token": access_token,
        "signature": base64::engine::general_purpose::STANDARD.encode(signature),
        "scope": "api",
        "instance_url": s.instance_url,
        "id": format!("{}/id/{}/{}", s.instance_url, cfg.org_id, cfg.user_id),
        "token_type": "Bearer",
        "issued_at": now_ms().to_string(),
    }))
    .into_response()
}

fn bearer(s: &Shared, headers: &HeaderMap) -> Option<Session> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("OAuth "))?
        .trim();
    s.session(token)
}

async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(session) = bearer(&s, &headers) else {
        return (StatusCode::UNAUTHORIZED, "Bad_OAuth_Token").into_response();
    };
    let cfg = &s.config;
    Json(json!({
        "sub": format!("{}/id/{}/{}", s.instance_url, cfg.org_id, session.user_id),
        "user_id": session.user_id,
        "organization_id": cfg.org_id,
        "preferred_username": cfg.username,
        "nickname": "demo",
        "name": "Forcebridge Demo",
        "email": cfg.username,
        "email_verified": true,
        "given_name": "Forcebridge",
        "family_name": "Demo",
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

fn rest_error(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Response {
    (
        status,
        Json(json!([{ "message": message, "errorCode": code, "fields": fields }])),
    )
        .into_response()
}

fn not_found() -> Response {
    rest_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
        &[],
    )
}

fn sim_error(e: &SimError) -> Response {
    match e {
        SimError::UnknownField { object, field } => rest_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("No such column '{field}' on sobject of type {object}"),
            &[field],
        ),
        SimError::ReadOnlyField { field, .. } => rest_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            &format!(
                "Unable to create/update fields: {field}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
            ),
            &[field],
        ),
        SimError::InvalidValue { field, reason, .. } => rest_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            &format!("Cannot deserialize value for field {field}: {reason}"),
            &[field],
        ),
        SimError::EntityIsDeleted(_) => rest_error(
            StatusCode::NOT_FOUND,
            "ENTITY_IS_DELETED",
            "entity is deleted",
            &[],
        ),
        SimError::UnknownObject(_) | SimError::RecordNotFound { .. } => not_found(),
        other => rest_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            &other.to_string(),
            &[],
        ),
    }
}

/// Authenticated REST context: the session, the API version and the change origin.
struct Rest {
    session: Session,
    version: String,
    origin: String,
}

fn rest_context(
    s: &Shared,
    headers: &HeaderMap,
    version: &str,
    object: &str,
) -> Result<Rest, Box<Response>> {
    let session = bearer(s, headers)
        .ok_or_else(|| {
            rest_error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
                &[],
            )
        })
        .map_err(Box::new)?;
    let version = version
        .strip_prefix('v')
        .filter(|v| v.parse::<f64>().is_ok())
        .ok_or_else(|| Box::new(not_found()))?
        .to_owned();
    if !lock(&s.org).has_object(object) {
        return Err(Box::new(not_found()));
    }
    let tag = headers
        .get("sforce-call-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|opt| opt.trim().strip_prefix("client="))
                .map(str::trim)
                .find(|t| !t.is_empty())
        });
    let origin = rest_origin(&version, tag);
    Ok(Rest {
        session,
        version,
        origin,
    })
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Box<Response>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Box::new(rest_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
            &[],
        ))),
        Err(e) => Err(Box::new(rest_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            &e.to_string(),
            &[],
        ))),
    }
}

async fn create_record(
    State(s): State<Arc<Shared>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match rest_context(&s, &headers, &version, &object) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let fields = match parse_body(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let id = {
        let mut org = lock(&s.org);
        if let Err(e) = org.validate_fields(&object, &fields) {
            return sim_error(&e);
        }
        match org.reserve_id(&object) {
            Ok(id) => id,
            Err(e) => return sim_error(&e),
        }
    };
    let op = Op::Create {
        object,
        id: id.clone(),
        fields,
    };
    match s.apply(&[op], ctx.origin, &ctx.session.user_id) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": []})),
        )
            .into_response(),
        Err(e) => sim_error(&e),
    }
}

async fn get_record(
    State(s): State<Arc<Shared>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let ctx = match rest_context(&s, &headers, &version, &object) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(mut record) = lock(&s.org).record(&object, &id) else {
        return not_found();
    };
    if record.get("IsDeleted") == Some(&Value::Bool(true)) {
        return not_found();
    }
    let record_id = record.get("Id").cloned().unwrap_or(Value::Null);
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({
            "type": object,
            "url": format!("/services/data/v{}/sobjects/{object}/{}", ctx.version, record_id.as_str().unwrap_or_default()),
        }),
    );
    out.append(&mut record);
    Json(Value::Object(out)).into_response()
}

async fn update_record(
    State(s): State<Arc<Shared>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctx = match rest_context(&s, &headers, &version, &object) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let fields = match parse_body(&body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let op = Op::Update { object, id, fields };
    match s.apply(&[op], ctx.origin, &ctx.session.user_id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(&e),
    }
}

async fn delete_record(
    State(s): State<Arc<Shared>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let ctx = match rest_context(&s, &headers, &version, &object) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match s.apply(
        &[Op::Delete { object, id }],
        ctx.origin,
        &ctx.session.user_id,
    ) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => sim_error(&e),
    }
}

#[derive(serde::Deserialize)]
struct GenerateRequest {
    object: String,
    count: usize,
}

async fn generate(State(s): State<Arc<Shared>>, Json(req): Json<GenerateRequest>) -> Response {
    let origin = rest_origin(super::API_VERSION, Some("forcebridge-sim"));
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
        Ok(Err(e)) => sim_error(&e),
        Err(e) => rest_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            &e.to_string(),
            &[],
        ),
    }
}
