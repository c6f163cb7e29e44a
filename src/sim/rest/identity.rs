//! The Identity URL: `GET /id/{orgId}/{userId}` on the instance URL (the `id` of the token
//! response points there), following the Mobile SDK Development Guide, "Using Identity URLs",
//! and Salesforce Help, "Identity URLs" (request parameters, response keys and errors).
//!
//! Contract:
//! * The access token comes in `Authorization: Bearer …` (or `OAuth …`) or in the
//!   `oauth_token` query parameter (jsforce's `identity()` sends both). None: 403
//!   `Missing_OAuth_Token`; unknown or expired: 403 `Bad_OAuth_Token` (a real org's answer to a
//!   stale token, captured in Drupal's salesforce module, issue #3191597: "403 Forbidden
//!   response: Bad_OAuth_Token"). Errors are plain text bodies with that code, as the identity
//!   service answers them.
//! * An org Id other than the org's: 403 `Wrong_Org`. A user Id that is malformed or not a user
//!   of the org: 404 `Bad_Id`. Ids match in their 15- or 18-character form. Any user of the org
//!   can be read with a token of the org (the simulator's tokens carry the `api` scope, and
//!   Help says such a token may read another user's identity when its user may view all data).
//! * Otherwise 200 JSON: `id`, `asserted_user` (true when the token's user is the one read),
//!   `user_id`, `organization_id`, `username`, `nick_name`, `display_name`, `email`,
//!   `email_verified`, `first_name`, `last_name`, `timezone`, `photos`, `active`, `user_type`,
//!   `language`, `locale`, `utcOffset`, `last_modified_date`, `is_app_installed`,
//!   `is_lightning_login_user`, and `urls` (`enterprise`, `metadata`, `partner`, `rest`,
//!   `sobjects`, `search`, `query`, `recent`, `tooling_soap`, `tooling_rest`, `profile`,
//!   `limits`, `custom_domain`). API URLs carry the literal `{version}` unless the `version`
//!   parameter names one (`latest`: the org's newest). `format` other than `json` is not
//!   served (the simulator answers JSON whatever it asks).
//! * Not an API call: not counted against `DailyApiRequests`, no `Sforce-Limit-Info`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::call::{bearer, query_param};
use crate::sim::config::SimConfig;
use crate::sim::ids;
use crate::sim::shared::Shared;
use crate::sim::util::API_VERSION;

/// A user of the org as the identity service describes them.
struct Person {
    username: String,
    nick_name: &'static str,
    first_name: &'static str,
    last_name: &'static str,
}

/// The org's user with Id `user_id` (any Id form), if any.
fn person(cfg: &SimConfig, user_id: &str) -> Option<(String, Person)> {
    let wanted = ids::normalize(user_id)?;
    if ids::normalize(&cfg.user_id).as_deref() == Some(wanted.as_str()) {
        return Some((
            cfg.user_id.clone(),
            Person {
                username: cfg.username.clone(),
                nick_name: "demo",
                first_name: "Forcebridge",
                last_name: "Demo",
            },
        ));
    }
    if ids::normalize(&cfg.integration_user_id).as_deref() == Some(wanted.as_str()) {
        return Some((
            cfg.integration_user_id.clone(),
            Person {
                username: crate::sim::jwt::integration_username(cfg),
                nick_name: "integration",
                first_name: "Integration",
                last_name: "User",
            },
        ));
    }
    None
}

/// A plain-text error of the identity service.
fn refused(status: StatusCode, code: &'static str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        code,
    )
        .into_response()
}

/// `GET /id/{orgId}/{userId}`.
pub(crate) async fn identity(
    State(s): State<Arc<Shared>>,
    Path((org_id, user_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let session = match query_param(uri.query(), "oauth_token") {
        Some(token) => s.session(&token),
        None if headers.contains_key(axum::http::header::AUTHORIZATION) => bearer(&s, &headers),
        None => return refused(StatusCode::FORBIDDEN, "Missing_OAuth_Token"),
    };
    let Some(session) = session else {
        return refused(StatusCode::FORBIDDEN, "Bad_OAuth_Token");
    };
    let cfg = &s.config;
    if ids::normalize(&org_id).is_none() || ids::normalize(&org_id) != ids::normalize(&cfg.org_id) {
        return refused(StatusCode::FORBIDDEN, "Wrong_Org");
    }
    let Some((user_id, person)) = person(cfg, &user_id) else {
        return refused(StatusCode::NOT_FOUND, "Bad_Id");
    };
    let version = match query_param(uri.query(), "version").as_deref() {
        None | Some("") => "{version}".to_owned(),
        Some("latest") => API_VERSION.to_owned(),
        Some(v) => v.to_owned(),
    };
    let body = identity_body(
        &s.instance_url,
        cfg,
        &user_id,
        &person,
        &version,
        session.user_id == user_id,
    );
    axum::Json(body).into_response()
}

/// The identity of `user_id` (18 characters) as the identity service answers it.
fn identity_body(
    instance: &str,
    cfg: &SimConfig,
    user_id: &str,
    person: &Person,
    version: &str,
    asserted: bool,
) -> Value {
    let org = &cfg.org_id;
    let data = format!("{instance}/services/data/v{version}");
    json!({
        "id": format!("{instance}/id/{org}/{user_id}"),
        "asserted_user": asserted,
        "user_id": user_id,
        "organization_id": org,
        "username": person.username,
        "nick_name": person.nick_name,
        "display_name": format!("{} {}", person.first_name, person.last_name),
        "email": person.username,
        "email_verified": true,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "timezone": "Etc/UTC",
        "photos": {
            "picture": format!("{instance}/profilephoto/005/F"),
            "thumbnail": format!("{instance}/profilephoto/005/T"),
        },
        "addr_street": null,
        "addr_city": null,
        "addr_state": null,
        "addr_country": null,
        "addr_zip": null,
        "mobile_phone": null,
        "mobile_phone_verified": false,
        "is_lightning_login_user": false,
        "status": {"created_date": null, "body": null},
        "urls": {
            "enterprise": format!("{instance}/services/Soap/c/{version}/{org}"),
            "metadata": format!("{instance}/services/Soap/m/{version}/{org}"),
            "partner": format!("{instance}/services/Soap/u/{version}/{org}"),
            "rest": format!("{data}/"),
            "sobjects": format!("{data}/sobjects/"),
            "search": format!("{data}/search/"),
            "query": format!("{data}/query/"),
            "recent": format!("{data}/recent/"),
            "tooling_soap": format!("{instance}/services/Soap/T/{version}/{org}"),
            "tooling_rest": format!("{data}/tooling/"),
            "profile": format!("{instance}/{user_id}"),
            "limits": format!("{data}/limits/"),
            "custom_domain": instance,
        },
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "last_modified_date": "2024-01-01T00:00:00.000+0000",
        "is_app_installed": true,
    })
}
