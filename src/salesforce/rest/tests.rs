//! Tests of the REST client against a scripted stub playing Salesforce (axum on `127.0.0.1:0`):
//! each test lists the answers the stub gives, in order, and checks what the client sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::composite::{SaveResult, validate};
use super::errors::{UNREADABLE_RESPONSE, errors_from_bytes};
use super::limits::parse_limit_info;
use super::query::percent_encode;
use super::*;
use crate::config::{AuthConfig, SalesforceConfig};
use crate::salesforce::auth::{Authenticator, Session, SessionHandle};

pub(super) const DATA: &str = "/services/data/v62.0";
const TAG: &str = "forcebridge-test";

/// A request the stub received.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) method: String,
    /// Path and query.
    pub(super) uri: String,
    bearer: Option<String>,
    call_options: Option<String>,
    pub(super) accept: Option<String>,
    pub(super) body: Value,
}

/// Lets a test act while the stub holds one answer.
#[derive(Clone, Default)]
struct Hold {
    reached: Arc<Notify>,
    release: Arc<Notify>,
}

impl Hold {
    /// Waits until the stub holds its answer, failing (not hanging) if `call` ends first.
    async fn reached<T: std::fmt::Debug>(&self, call: &mut tokio::task::JoinHandle<T>) {
        progress(async {
            tokio::select! {
                _ = self.reached.notified() => {}
                result = call => panic!("the call ended before reaching the held answer: {result:?}"),
            }
        })
        .await
    }
}

/// A safety net, not a timing assertion: a client that stops making progress (say, a pause that
/// never polls) fails the test after a generous deadline instead of hanging it.
pub(super) async fn progress<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("no progress for 30 s")
}

/// One scripted answer, for a request with this method and path (query excluded).
pub(super) struct Canned {
    method: &'static str,
    path: String,
    status: u16,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    limit_info: Option<&'static str>,
    hold: Option<Hold>,
}

impl Canned {
    pub(super) fn new(
        method: &'static str,
        path: impl Into<String>,
        status: u16,
        body: Value,
    ) -> Self {
        Canned {
            method,
            path: path.into(),
            status,
            body: body.to_string(),
            content_type: "application/json",
            headers: Vec::new(),
            limit_info: None,
            hold: None,
        }
    }

    pub(super) fn text(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    /// A CSV body (`text/csv`), as Bulk API 2.0 results are sent.
    pub(super) fn csv(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self.content_type = "text/csv";
        self
    }

    /// One more response header.
    pub(super) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn limit_info(mut self, value: &'static str) -> Self {
        self.limit_info = Some(value);
        self
    }

    fn hold(mut self, hold: &Hold) -> Self {
        self.hold = Some(hold.clone());
        self
    }
}

/// `POST /composite` answered with `(status, body)` per subrequest, `r0…` in order.
fn composite(items: Vec<(u16, Value)>) -> Canned {
    let answers: Vec<Value> = items
        .into_iter()
        .enumerate()
        .map(|(i, (status, body))| {
            json!({"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": format!("r{i}")})
        })
        .collect();
    Canned::new(
        "POST",
        format!("{DATA}/composite"),
        200,
        json!({ "compositeResponse": answers }),
    )
}

fn composite_status(status: u16, body: Value) -> Canned {
    Canned::new("POST", format!("{DATA}/composite"), status, body)
}

fn limits(max: u64, remaining: u64) -> Canned {
    Canned::new(
        "GET",
        format!("{DATA}/limits"),
        200,
        json!({
            "DailyApiRequests": {"Max": max, "Remaining": remaining},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        }),
    )
}

#[derive(Default)]
struct StubState {
    url: String,
    script: Mutex<VecDeque<Canned>>,
    seen: Mutex<Vec<Seen>>,
    logins: AtomicU64,
    /// Cancelled by the first unscripted request: a client that would otherwise retry or poll
    /// forever ends with `Cancelled`, so a broken client fails the test instead of hanging it.
    unexpected: CancellationToken,
}

pub(super) struct Stub {
    state: Arc<StubState>,
}

impl Stub {
    pub(super) async fn start(script: Vec<Canned>) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let state = Arc::new(StubState {
            url: format!("http://{}", listener.local_addr().expect("addr")),
            script: Mutex::new(script.into()),
            ..Default::default()
        });
        let app = Router::new()
            .route("/services/oauth2/token", post(token))
            .fallback(answer)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Stub { state }
    }

    fn url(&self) -> String {
        self.state.url.clone()
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// `METHOD path?query` of every request, in order.
    pub(super) fn requests(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect()
    }

    /// The cancel token to give the client.
    pub(super) fn cancel(&self) -> CancellationToken {
        self.state.unexpected.clone()
    }

    pub(super) fn left(&self) -> usize {
        self.state.script.lock().unwrap().len()
    }

    fn logins(&self) -> u64 {
        self.state.logins.load(Ordering::SeqCst)
    }
}

async fn token(State(state): State<Arc<StubState>>) -> Response {
    let n = state.logins.fetch_add(1, Ordering::SeqCst) + 2;
    axum::Json(json!({
        "access_token": format!("tok{n}"),
        "instance_url": state.url,
        "id": format!("{}/id/00D000000000001AAA/005000000000001AAA", state.url),
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn answer(
    State(state): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    state.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        bearer: header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned)),
        call_options: header("sforce-call-options"),
        accept: header("accept"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let next = {
        let mut script = state.script.lock().unwrap();
        match script.front() {
            Some(c) if c.method == method.as_str() && c.path == uri.path() => script.pop_front(),
            _ => None,
        }
    };
    // 418 is not retried: an unscripted request ends the call with an error naming it (or, in a
    // wait, with `Cancelled`).
    let Some(canned) = next else {
        state.unexpected.cancel();
        let error = json!([{"errorCode": "STUB_UNEXPECTED", "message": format!("{method} {uri}")}]);
        return (StatusCode::IM_A_TEAPOT, error.to_string()).into_response();
    };
    if let Some(hold) = &canned.hold {
        hold.reached.notify_one();
        hold.release.notified().await;
    }
    let mut response = (
        StatusCode::from_u16(canned.status).unwrap(),
        [("content-type", canned.content_type)],
        canned.body,
    )
        .into_response();
    for (name, value) in &canned.headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    if let Some(info) = canned.limit_info {
        response
            .headers_mut()
            .insert("sforce-limit-info", info.parse().unwrap());
    }
    response
}

fn http() -> reqwest::Client {
    crate::ops::telemetry::install_crypto_provider();
    reqwest::Client::new()
}

fn config(stub: &Stub, auth: AuthConfig) -> SalesforceConfig {
    SalesforceConfig {
        login_url: stub.url(),
        pubsub_endpoint: stub.url(),
        api_version: "62.0".into(),
        allow_plaintext: true,
        ca_file: None,
        http_timeout: Duration::from_secs(10),
        client_tag: None,
        auth,
    }
}

fn client_with(stub: &Stub, auth: AuthConfig, guard: LimitGuard) -> RestClient {
    let session = SessionHandle::new(Session {
        access_token: SecretString::from("tok1".to_owned()),
        instance_url: stub.url(),
        org_id: "00D000000000001AAA".into(),
        user_id: None,
    });
    let authenticator = Authenticator::new(&config(stub, auth), http());
    RestClient::new(
        http(),
        authenticator,
        session,
        "62.0".into(),
        TAG.into(),
        guard,
    )
    .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

pub(super) fn client(stub: &Stub, guard: LimitGuard) -> RestClient {
    let auth = AuthConfig::ClientCredentials {
        client_id: "id".into(),
        client_secret: SecretString::from("secret".to_owned()),
    };
    client_with(stub, auth, guard)
}

pub(super) fn no_guard() -> LimitGuard {
    LimitGuard::new(Reserve::Calls(0), Duration::from_millis(5))
}

fn record(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn account(name: &str) -> Map<String, Value> {
    record(json!({"attributes": {"type": "Account"}, "Name": name}))
}

fn delete(ids: &[&str]) -> SubRequest {
    SubRequest::Delete {
        ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

fn save_ok(id: &str) -> Value {
    json!({"id": id, "success": true, "errors": []})
}

#[allow(
    clippy::too_many_lines,
    reason = "one request checked field by field against the documented shape"
)]
#[tokio::test]
async fn composite_sends_the_documented_shape_and_reads_every_result() {
    let stub = Stub::start(vec![
        composite(vec![
            (
                200,
                json!([
                    save_ok("001000000000001AAA"),
                    {"id": null, "success": false, "errors": [
                        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]", "fields": ["Name"]}
                    ]},
                ]),
            ),
            (
                400,
                json!([{"errorCode": "INVALID_FIELD", "message": "No such column 'Nope'", "fields": ["Nope"]}]),
            ),
            (
                200,
                json!([
                    {"id": "001000000000003AAA", "success": true, "errors": [], "created": true},
                    {"id": "001000000000004AAA", "success": true, "errors": [], "created": false},
                ]),
            ),
            (200, json!([save_ok("001000000000005AAA")])),
            (
                200,
                json!({"totalSize": 1, "done": true, "records": [
                    {"attributes": {"type": "Account", "url": "/x"}, "Id": "001000000000001AAA", "Name": "Acme",
                     "Owner": {"attributes": {"type": "User"}, "Name": "Ann"}}
                ]}),
            ),
        ])
        .limit_info("api-usage=18/15000; api-bursts=2/750"),
    ])
    .await;
    let client = client(&stub, no_guard());
    let update =
        record(json!({"attributes": {"type": "Account"}, "Id": "001000000000002AAA", "Nope": 1}));
    let subrequests = vec![
        SubRequest::Create {
            records: vec![account("Acme"), account("")],
        },
        SubRequest::Update {
            records: vec![update.clone()],
        },
        SubRequest::Upsert {
            object: "Account".into(),
            external_id_field: "Ext_Id__c".into(),
            records: vec![
                record(json!({"attributes": {"type": "Account"}, "Ext_Id__c": "a"})),
                record(json!({"attributes": {"type": "Account"}, "Ext_Id__c": "b"})),
            ],
        },
        delete(&["001000000000005AAA"]),
        SubRequest::Query {
            soql: "SELECT Id, Name FROM Account WHERE Name = 'A&B'".into(),
        },
    ];

    let responses = client
        .composite(&subrequests, &stub.cancel())
        .await
        .expect("composite");

    // What was sent.
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, format!("{DATA}/composite"));
    assert_eq!(sent.bearer.as_deref(), Some("tok1"));
    assert_eq!(
        sent.call_options.as_deref(),
        Some("client=forcebridge-test")
    );
    assert_eq!(sent.body["allOrNone"], json!(false));
    assert_eq!(sent.body["collateSubrequests"], json!(false));
    let requests = sent.body["compositeRequest"].as_array().expect("array");
    let shape: Vec<(&str, &str, &str)> = requests
        .iter()
        .map(|r| {
            assert!(r.get("httpHeaders").is_none(), "no per-subrequest headers");
            (
                r["method"].as_str().unwrap(),
                r["url"].as_str().unwrap(),
                r["referenceId"].as_str().unwrap(),
            )
        })
        .collect();
    let expected_urls = [
        format!("{DATA}/composite/sobjects"),
        format!("{DATA}/composite/sobjects"),
        format!("{DATA}/composite/sobjects/Account/Ext_Id__c"),
        format!("{DATA}/composite/sobjects?ids=001000000000005AAA&allOrNone=false"),
        format!(
            "{DATA}/query?q=SELECT%20Id%2C%20Name%20FROM%20Account%20WHERE%20Name%20%3D%20%27A%26B%27"
        ),
    ];
    assert_eq!(
        shape,
        vec![
            ("POST", expected_urls[0].as_str(), "r0"),
            ("PATCH", expected_urls[1].as_str(), "r1"),
            ("PATCH", expected_urls[2].as_str(), "r2"),
            ("DELETE", expected_urls[3].as_str(), "r3"),
            ("GET", expected_urls[4].as_str(), "r4"),
        ]
    );
    assert_eq!(
        requests[0]["body"],
        json!({"allOrNone": false, "records": [account("Acme"), account("")]})
    );
    assert_eq!(
        requests[1]["body"],
        json!({"allOrNone": false, "records": [update]})
    );
    assert_eq!(requests[2]["body"]["records"][1]["Ext_Id__c"], json!("b"));
    assert!(requests[3].get("body").is_none());
    assert!(requests[4].get("body").is_none());

    // What came back.
    let ok = |id: &str, created| SaveResult {
        id: Some(id.into()),
        success: true,
        created,
        errors: vec![],
    };
    assert_eq!(
        responses,
        vec![
            SubResponse::Saved(vec![
                ok("001000000000001AAA", None),
                SaveResult {
                    id: None,
                    success: false,
                    created: None,
                    errors: vec![ApiError {
                        code: "REQUIRED_FIELD_MISSING".into(),
                        message: "Required fields are missing: [Name]".into(),
                        fields: vec!["Name".into()],
                    }],
                },
            ]),
            SubResponse::Failed {
                http_status: 400,
                errors: vec![ApiError {
                    code: "INVALID_FIELD".into(),
                    message: "No such column 'Nope'".into(),
                    fields: vec!["Nope".into()],
                }],
            },
            SubResponse::Saved(vec![
                ok("001000000000003AAA", Some(true)),
                ok("001000000000004AAA", Some(false)),
            ]),
            SubResponse::Saved(vec![ok("001000000000005AAA", None)]),
            SubResponse::Query {
                records: vec![record(json!({
                    "Id": "001000000000001AAA", "Name": "Acme", "Owner": {"Name": "Ann"}
                }))],
            },
        ]
    );
    assert_eq!(stub.left(), 0);
    assert_eq!(client.calls(), 1);
    assert_eq!(
        client.guard().usage(),
        Some(ApiUsage {
            used: 18,
            max: 15000
        })
    );
    assert_eq!(client.guard().remaining(), Some(14982));
    assert_eq!(
        client.guard().gauges().remaining.load(Ordering::Relaxed),
        14982
    );
}

#[tokio::test]
async fn subrequest_call_options_can_be_turned_on() {
    let stub = Stub::start(vec![composite(vec![(200, json!([save_ok("001")]))])]).await;
    let client = client(&stub, no_guard()).with_subrequest_call_options(true);
    client
        .composite(&[delete(&["001"])], &stub.cancel())
        .await
        .expect("composite");
    let seen = stub.seen();
    assert_eq!(
        seen[0].body["compositeRequest"][0]["httpHeaders"],
        json!({"Sforce-Call-Options": "client=forcebridge-test"})
    );
    assert_eq!(
        seen[0].call_options.as_deref(),
        Some("client=forcebridge-test")
    );
}

#[tokio::test]
async fn unreadable_subrequest_answers_fail_only_that_subrequest() {
    let stub = Stub::start(vec![composite(vec![
        // An object instead of an error array, with an error's fields: read as that error.
        (
            500,
            json!({"errorCode": "UNKNOWN_EXCEPTION", "message": "boom"}),
        ),
        // An object that is no error at all.
        (404, json!({"surprise": true})),
        // Fewer results than records.
        (200, json!([save_ok("001000000000001AAA")])),
        // Fine.
        (200, json!([save_ok("001000000000009AAA")])),
    ])])
    .await;
    let client = client(&stub, no_guard());
    let responses = client
        .composite(
            &[
                delete(&["001000000000007AAA"]),
                delete(&["001000000000008AAA"]),
                delete(&["001000000000001AAA", "001000000000002AAA"]),
                delete(&["001000000000009AAA"]),
            ],
            &stub.cancel(),
        )
        .await
        .expect("composite");
    let failed_code = |r: &SubResponse| match r {
        SubResponse::Failed {
            http_status,
            errors,
        } => (*http_status, errors[0].code.clone()),
        other => panic!("not failed: {other:?}"),
    };
    assert_eq!(
        failed_code(&responses[0]),
        (500, "UNKNOWN_EXCEPTION".into())
    );
    assert_eq!(
        failed_code(&responses[1]),
        (404, UNREADABLE_RESPONSE.into())
    );
    assert_eq!(
        failed_code(&responses[2]),
        (200, UNREADABLE_RESPONSE.into())
    );
    assert!(matches!(&responses[3], SubResponse::Saved(r) if r.len() == 1 && r[0].success));
}

#[tokio::test]
async fn an_unreadable_composite_answer_is_a_protocol_error() {
    let stub = Stub::start(vec![
        composite(vec![(200, json!([save_ok("001")]))]).text("<html>maintenance</html>"),
        // r1 missing: only one answer for two subrequests.
        composite(vec![(200, json!([save_ok("001")]))]),
    ])
    .await;
    let client = client(&stub, no_guard());
    let cancel = stub.cancel();
    let error = client.composite(&[delete(&["001"])], &cancel).await;
    assert!(matches!(error, Err(RestError::Protocol(_))), "{error:?}");
    let error = client
        .composite(&[delete(&["001"]), delete(&["002"])], &cancel)
        .await;
    assert!(
        matches!(&error, Err(RestError::Protocol(m)) if m.contains("r1")),
        "{error:?}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let stub = Stub::start(vec![
        composite_status(503, json!(null)).text("Service Unavailable"),
        composite_status(
            429,
            json!([{"errorCode": "TOO_MANY_REQUESTS", "message": "slow down"}]),
        ),
        composite_status(
            500,
            json!([{"errorCode": "UNKNOWN_EXCEPTION", "message": "oops"}]),
        ),
        composite(vec![(200, json!([save_ok("001000000000001AAA")]))]),
    ])
    .await;
    let client = client(&stub, no_guard());
    let responses = client
        .composite(&[delete(&["001000000000001AAA"])], &stub.cancel())
        .await
        .expect("composite");
    assert!(matches!(&responses[0], SubResponse::Saved(r) if r[0].success));
    assert_eq!(stub.requests().len(), 4);
    assert!(stub.seen().iter().all(|s| s.body == stub.seen()[0].body));
    assert_eq!(stub.left(), 0);
    assert_eq!(client.calls(), 4);
    assert_eq!(client.stats().retries.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_refused_call_returns_salesforce_errors_without_retrying() {
    let stub = Stub::start(vec![composite_status(
        400,
        json!([{"errorCode": "JSON_PARSER_ERROR", "message": "Unexpected character"}]),
    )])
    .await;
    let client = client(&stub, no_guard());
    let error = client
        .composite(&[delete(&["001"])], &stub.cancel())
        .await
        .expect_err("refused");
    let RestError::Rejected { status, errors } = error else {
        panic!("not rejected: {error:?}");
    };
    assert_eq!(status, 400);
    assert_eq!(errors[0].code, "JSON_PARSER_ERROR");
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(client.calls(), 1);
}

#[tokio::test]
async fn a_refused_session_logs_in_again_and_retries() {
    let stub = Stub::start(vec![
        composite_status(
            401,
            json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]),
        ),
        composite(vec![(200, json!([save_ok("001")]))]),
    ])
    .await;
    let client = client(&stub, no_guard());
    client
        .composite(&[delete(&["001"])], &stub.cancel())
        .await
        .expect("composite");
    let bearers: Vec<_> = stub.seen().into_iter().map(|s| s.bearer).collect();
    assert_eq!(bearers, vec![Some("tok1".into()), Some("tok2".into())]);
    assert_eq!(stub.logins(), 1);
    assert_eq!(stub.left(), 0);
    assert_eq!(client.stats().relogins.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_refused_given_access_token_ends_the_call() {
    let stub = Stub::start(vec![composite_status(
        401,
        json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]),
    )])
    .await;
    let auth = AuthConfig::AccessToken {
        access_token: SecretString::from("tok1".to_owned()),
        instance_url: stub.url(),
        org_id: Some("00D000000000001AAA".into()),
    };
    let client = client_with(&stub, auth, no_guard());
    let error = client.composite(&[delete(&["001"])], &stub.cancel()).await;
    assert!(
        matches!(&error, Err(RestError::Rejected { status: 401, errors }) if errors[0].code == "INVALID_SESSION_ID"),
        "{error:?}"
    );
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn request_limit_exceeded_pauses_until_limits_recover() {
    let hold = Hold::default();
    let stub = Stub::start(vec![
        composite_status(
            403,
            json!([{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]),
        ),
        // Still at the reserve: stay paused.
        limits(15000, 10).hold(&hold),
        limits(15000, 9000),
        composite(vec![(200, json!([save_ok("001")]))]),
    ])
    .await;
    let guard = LimitGuard::new(Reserve::Calls(10), Duration::from_millis(2));
    let client = client(&stub, guard.clone());
    let mut call = tokio::spawn({
        let (client, cancel) = (client.clone(), stub.cancel());
        async move { client.composite(&[delete(&["001"])], &cancel).await }
    });

    hold.reached(&mut call).await;
    assert!(guard.paused(), "paused while /limits says nothing is left");
    assert_eq!(guard.remaining(), Some(0));
    assert!(guard.gauges().paused.load(Ordering::Relaxed));
    hold.release.notify_one();

    progress(call).await.expect("join").expect("composite");
    assert!(!guard.paused());
    assert_eq!(guard.remaining(), Some(9000));
    assert_eq!(
        stub.requests(),
        vec![
            format!("POST {DATA}/composite"),
            format!("GET {DATA}/limits"),
            format!("GET {DATA}/limits"),
            format!("POST {DATA}/composite"),
        ]
    );
    let seen = stub.seen();
    assert!(seen.iter().all(|s| s.bearer.as_deref() == Some("tok1")
        && s.call_options.as_deref() == Some("client=forcebridge-test")));
    assert_eq!(client.calls(), 4);
    assert_eq!(stub.left(), 0);
}

#[tokio::test]
async fn usage_at_the_reserve_holds_the_next_call() {
    let hold = Hold::default();
    let stub = Stub::start(vec![
        composite(vec![(200, json!([save_ok("001")]))]).limit_info("api-usage=9000/10000"),
        limits(10000, 5000).hold(&hold),
        composite(vec![(200, json!([save_ok("002")]))]),
    ])
    .await;
    // 10 % of 10,000: 1,000 calls kept; 1,000 left means the next call would spend the reserve.
    let guard = LimitGuard::new(Reserve::Percent(10.0), Duration::from_millis(2));
    let client = client(&stub, guard.clone());
    let cancel = stub.cancel();
    client
        .composite(&[delete(&["001"])], &cancel)
        .await
        .expect("first");
    assert!(guard.must_wait());
    assert!(!guard.paused(), "nothing is waiting yet");

    let mut second = tokio::spawn({
        let client = client.clone();
        async move { client.composite(&[delete(&["002"])], &cancel).await }
    });
    hold.reached(&mut second).await;
    assert!(guard.paused());
    hold.release.notify_one();
    progress(second).await.expect("join").expect("second");

    assert!(!guard.paused());
    assert_eq!(
        stub.requests(),
        vec![
            format!("POST {DATA}/composite"),
            format!("GET {DATA}/limits"),
            format!("POST {DATA}/composite"),
        ]
    );
}

#[tokio::test]
async fn cancel_ends_a_pause() {
    let stub = Stub::start(vec![]).await;
    let guard = LimitGuard::new(Reserve::Calls(0), Duration::from_secs(3600));
    guard.observe(ApiUsage {
        used: 100,
        max: 100,
    });
    let client = client(&stub, guard.clone());
    let cancel = stub.cancel();
    let call = tokio::spawn({
        let (client, cancel) = (client.clone(), cancel.clone());
        async move { client.composite(&[delete(&["001"])], &cancel).await }
    });
    progress(async {
        while !guard.paused() && !call.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    cancel.cancel();
    let result = progress(call).await.expect("join");
    assert!(matches!(result, Err(RestError::Cancelled)), "{result:?}");
    assert!(stub.requests().is_empty());
    assert_eq!(client.calls(), 0);
}

#[tokio::test]
async fn query_follows_next_records_url() {
    let next = format!("{DATA}/query/01gD0000000001AAA-2000");
    let stub = Stub::start(vec![
        composite(vec![(
            200,
            json!({"totalSize": 3, "done": false, "nextRecordsUrl": next, "records": [
                {"attributes": {"type": "Account"}, "Id": "1"},
                {"attributes": {"type": "Account"}, "Id": "2"},
            ]}),
        )]),
        Canned::new(
            "GET",
            next.clone(),
            200,
            json!({"totalSize": 3, "done": true, "records": [
                {"attributes": {"type": "Account"}, "Id": "3",
                 "Contacts": {"totalSize": 1, "done": true, "records": [{"attributes": {"type": "Contact"}, "Id": "c"}]}}
            ]}),
        ),
    ])
    .await;
    let client = client(&stub, no_guard());
    let responses = client
        .composite(
            &[SubRequest::Query {
                soql: "SELECT Id FROM Account".into(),
            }],
            &stub.cancel(),
        )
        .await
        .expect("composite");
    assert_eq!(
        responses,
        vec![SubResponse::Query {
            records: vec![
                record(json!({"Id": "1"})),
                record(json!({"Id": "2"})),
                record(
                    json!({"Id": "3", "Contacts": {"totalSize": 1, "done": true, "records": [{"Id": "c"}]}})
                ),
            ]
        }]
    );
    let seen = stub.seen();
    assert_eq!(seen[1].uri, next);
    assert_eq!(seen[1].bearer.as_deref(), Some("tok1"));
    assert_eq!(
        seen[1].call_options.as_deref(),
        Some("client=forcebridge-test")
    );
    assert_eq!(client.calls(), 2);
    assert_eq!(stub.left(), 0);
}

#[tokio::test]
async fn a_refused_query_page_fails_that_subrequest() {
    let next = format!("{DATA}/query/01gD0000000001AAA-2000");
    let stub = Stub::start(vec![
        composite(vec![
            (
                200,
                json!({"done": false, "nextRecordsUrl": next, "records": [{"Id": "1"}]}),
            ),
            (200, json!([save_ok("001")])),
        ]),
        Canned::new(
            "GET",
            next,
            400,
            json!([{"errorCode": "INVALID_QUERY_LOCATOR", "message": "invalid query locator"}]),
        ),
    ])
    .await;
    let client = client(&stub, no_guard());
    let responses = client
        .composite(
            &[
                SubRequest::Query {
                    soql: "SELECT Id FROM Account".into(),
                },
                delete(&["001"]),
            ],
            &stub.cancel(),
        )
        .await
        .expect("composite");
    assert!(
        matches!(&responses[0], SubResponse::Failed { http_status: 400, errors } if errors[0].code == "INVALID_QUERY_LOCATOR"),
        "{responses:?}"
    );
    assert!(matches!(&responses[1], SubResponse::Saved(_)));
}

#[tokio::test]
async fn limits_reads_daily_api_requests() {
    let stub = Stub::start(vec![limits(15000, 14998)]).await;
    let client = client(&stub, no_guard());
    let usage = client.limits(&stub.cancel()).await.expect("limits");
    assert_eq!(
        usage,
        ApiUsage {
            used: 2,
            max: 15000
        }
    );
    assert_eq!(usage.remaining(), 14998);
    assert_eq!(client.guard().remaining(), Some(14998));
    let seen = stub.seen();
    assert_eq!(seen[0].uri, format!("{DATA}/limits"));
    assert_eq!(seen[0].bearer.as_deref(), Some("tok1"));
    assert_eq!(
        seen[0].call_options.as_deref(),
        Some("client=forcebridge-test")
    );
}

#[tokio::test]
async fn limits_are_checked_before_any_call() {
    let stub = Stub::start(vec![]).await;
    let client = client(&stub, no_guard());
    let cancel = stub.cancel();
    let many = |n: usize| -> Vec<Map<String, Value>> { (0..n).map(|_| account("x")).collect() };
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("001{i}")).collect() };
    let cases: Vec<(Vec<SubRequest>, &str)> = vec![
        (vec![delete(&["001"]); 26], "26 subrequests"),
        (vec![delete(&["001"]); 6], "6 collection or query"),
        (
            vec![SubRequest::Create { records: many(201) }],
            "201 records",
        ),
        (vec![SubRequest::Delete { ids: ids(201) }], "201 records"),
        (vec![SubRequest::Create { records: vec![] }], "no records"),
        (
            vec![SubRequest::Create {
                records: vec![record(json!({"Name": "untyped"}))],
            }],
            "attributes.type",
        ),
        (
            vec![SubRequest::Update {
                records: vec![account("no id")],
            }],
            "no Id",
        ),
        (
            vec![SubRequest::Upsert {
                object: "Account".into(),
                external_id_field: "Ext/Id".into(),
                records: vec![account("x")],
            }],
            "not an API name",
        ),
        (
            vec![SubRequest::Upsert {
                object: "Account".into(),
                external_id_field: "Ext_Id__c".into(),
                records: vec![account("x")],
            }],
            "no Ext_Id__c",
        ),
        (vec![delete(&["001&x=1"])], "not a record id"),
        (vec![SubRequest::Query { soql: " ".into() }], "empty SOQL"),
    ];
    for (subrequests, expected) in cases {
        let result = client.composite(&subrequests, &cancel).await;
        assert!(
            matches!(&result, Err(RestError::Invalid(m)) if m.contains(expected)),
            "{expected}: {result:?}"
        );
    }
    // The limits themselves pass.
    assert!(validate(&vec![SubRequest::Create { records: many(200) }; 5]).is_ok());
    assert!(stub.requests().is_empty());
    assert_eq!(client.calls(), 0);
}

#[tokio::test]
async fn a_bad_client_tag_fails_every_call() {
    let stub = Stub::start(vec![]).await;
    let guard = no_guard();
    let session = SessionHandle::new(Session {
        access_token: SecretString::from("tok1".to_owned()),
        instance_url: stub.url(),
        org_id: "00D".into(),
        user_id: None,
    });
    let auth = AuthConfig::ClientCredentials {
        client_id: "id".into(),
        client_secret: SecretString::from("s".to_owned()),
    };
    let authenticator = Authenticator::new(&config(&stub, auth), http());
    let client = RestClient::new(
        http(),
        authenticator,
        session,
        "v62.0".into(),
        "a;b".into(),
        guard,
    );
    let cancel = stub.cancel();
    let result = client.composite(&[delete(&["001"])], &cancel).await;
    assert!(matches!(result, Err(RestError::Invalid(_))), "{result:?}");
    assert!(matches!(
        client.limits(&cancel).await,
        Err(RestError::Invalid(_))
    ));
    assert!(stub.requests().is_empty());
}

#[test]
fn limit_info_header_is_parsed_robustly() {
    let usage = |used, max| Some(ApiUsage { used, max });
    assert_eq!(parse_limit_info("api-usage=18/15000"), usage(18, 15000));
    assert_eq!(
        parse_limit_info("api-usage=18/15000; api-bursts=2/750"),
        usage(18, 15000)
    );
    assert_eq!(
        parse_limit_info("api-bursts=2/750,API-Usage = 7 / 100 "),
        usage(7, 100)
    );
    assert_eq!(parse_limit_info("per-app-api-usage=1/2"), None);
    assert_eq!(parse_limit_info("api-usage=x/100"), None);
    assert_eq!(parse_limit_info("api-usage=5"), None);
    assert_eq!(parse_limit_info(""), None);
}

#[test]
fn guard_waits_at_the_reserve_and_only_limits_lift_exhaustion() {
    let guard = LimitGuard::new(Reserve::Calls(10), Duration::from_secs(1));
    assert!(!guard.must_wait(), "unknown allowance: go");
    assert_eq!(guard.remaining(), None);
    guard.observe(ApiUsage { used: 89, max: 100 });
    assert!(!guard.must_wait(), "11 left > 10");
    guard.observe(ApiUsage { used: 90, max: 100 });
    assert!(guard.must_wait(), "10 left: a call would spend the reserve");
    guard.observe(ApiUsage { used: 0, max: 100 });
    guard.mark_exhausted();
    assert!(guard.must_wait());
    assert_eq!(guard.remaining(), Some(0));
    assert_eq!(
        guard.usage(),
        Some(ApiUsage {
            used: 100,
            max: 100
        })
    );
    guard.observe(ApiUsage { used: 1, max: 100 });
    assert!(guard.must_wait(), "a header does not lift exhaustion");
    guard.observe_limits(ApiUsage { used: 1, max: 100 });
    assert!(!guard.must_wait());
    assert_eq!(guard.remaining(), Some(99));

    let unknown_max = LimitGuard::new(Reserve::Percent(5.0), Duration::from_secs(1));
    unknown_max.mark_exhausted();
    assert!(unknown_max.must_wait());
}

#[test]
fn errors_read_both_codes_and_odd_bodies() {
    let errors = errors_from_bytes(
        br#"[{"errorCode":"A","message":"m","fields":["F"]},{"statusCode":"B","message":"n"}]"#,
    );
    assert_eq!(
        errors,
        vec![
            ApiError {
                code: "A".into(),
                message: "m".into(),
                fields: vec!["F".into()]
            },
            ApiError {
                code: "B".into(),
                message: "n".into(),
                fields: vec![]
            },
        ]
    );
    let odd = errors_from_bytes(b"Service Unavailable");
    assert_eq!(odd[0].code, UNREADABLE_RESPONSE);
    assert_eq!(odd[0].message, "Service Unavailable");
    assert_eq!(errors_from_bytes(b"{}")[0].code, UNREADABLE_RESPONSE);
}

#[test]
fn soql_is_percent_encoded() {
    assert_eq!(
        percent_encode("SELECT Id FROM A WHERE N = 'é+%'"),
        "SELECT%20Id%20FROM%20A%20WHERE%20N%20%3D%20%27%C3%A9%2B%25%27"
    );
}

#[tokio::test]
async fn retrieve_posts_ids_and_fields_and_keeps_nulls_in_id_order() {
    let stub = Stub::start(vec![composite(vec![(
        200,
        json!([
            {"attributes": {"type": "Account", "url": "/x"}, "Id": "001A", "SystemModstamp": "2024-01-31T12:05:09.042+0000"},
            null,
        ]),
    )])])
    .await;
    let rest = client(&stub, no_guard());
    let request = SubRequest::Retrieve {
        object: "Account".into(),
        ids: vec!["001A".into(), "001B".into()],
        fields: vec!["Id".into(), "SystemModstamp".into()],
    };
    let responses = rest
        .composite(std::slice::from_ref(&request), &stub.cancel())
        .await
        .expect("composite");
    assert_eq!(
        responses,
        vec![SubResponse::Retrieved {
            records: vec![
                Some(record(
                    json!({"Id": "001A", "SystemModstamp": "2024-01-31T12:05:09.042+0000"})
                )),
                None,
            ]
        }]
    );
    let sub = &stub.seen()[0].body["compositeRequest"][0];
    assert_eq!(sub["method"], "POST");
    assert_eq!(sub["url"], format!("{DATA}/composite/sobjects/Account"));
    assert_eq!(
        sub["body"],
        json!({"ids": ["001A", "001B"], "fields": ["Id", "SystemModstamp"]})
    );

    // An answer with the wrong number of entries is unreadable, not a partial result.
    let stub = Stub::start(vec![composite(vec![(200, json!([null]))])]).await;
    let rest = client(&stub, no_guard());
    let responses = rest
        .composite(std::slice::from_ref(&request), &stub.cancel())
        .await
        .expect("composite");
    assert!(
        matches!(&responses[0], SubResponse::Failed { errors, .. } if errors[0].code == UNREADABLE_RESPONSE),
        "{responses:?}"
    );
    // Salesforce's limit: 2,000 ids per retrieve.
    let too_many = SubRequest::Retrieve {
        object: "Account".into(),
        ids: vec!["001A".into(); MAX_RETRIEVE_IDS + 1],
        fields: vec!["Id".into()],
    };
    let e = validate(&[too_many]).expect_err("over the limit");
    assert!(e.to_string().contains("2001 ids; at most 2000"), "{e}");
}

#[tokio::test]
async fn retrieve_alone_is_one_post_to_the_collection_in_id_order() {
    let stub = Stub::start(vec![Canned::new(
        "POST",
        format!("{DATA}/composite/sobjects/Account"),
        200,
        json!([null, {"attributes": {"type": "Account"}, "Id": "001B", "Name": "B"}]),
    )])
    .await;
    let rest = client(&stub, no_guard());
    let ids = vec!["001A".to_owned(), "001B".to_owned()];
    let fields = ["Id".to_owned(), "Name".to_owned()];
    let rows = rest
        .retrieve("Account", ids.clone(), &fields, &stub.cancel())
        .await
        .expect("retrieve");
    assert_eq!(
        rows,
        vec![None, Some(record(json!({"Id": "001B", "Name": "B"})))]
    );
    assert_eq!(
        stub.seen()[0].body,
        json!({"ids": ["001A", "001B"], "fields": ["Id", "Name"]})
    );
    // Refused before anything is sent: over 2,000 ids, or a name that is not an API name.
    let many = vec!["001A".to_owned(); MAX_RETRIEVE_IDS + 1];
    let e = rest
        .retrieve("Account", many, &fields, &stub.cancel())
        .await;
    assert!(
        matches!(e, Err(RestError::Invalid(ref m)) if m.contains("2001 ids")),
        "{e:?}"
    );
    let e = rest
        .retrieve("Acc ount", ids, &fields, &stub.cancel())
        .await;
    assert!(matches!(e, Err(RestError::Invalid(_))), "{e:?}");
    assert_eq!(stub.seen().len(), 1);
}

/// The describe fixture shaped as Salesforce documents it ("sObject Describe", REST API
/// Developer Guide; `Field`, SOAP API Developer Guide): `tests/fixtures/describe/`.
pub(crate) const ACCOUNT_DESCRIBE: &str =
    include_str!("../../../tests/fixtures/describe/Account.json");

#[tokio::test]
async fn describe_reads_the_keys_that_matter_and_ignores_the_rest() {
    let describe: Value = serde_json::from_str(ACCOUNT_DESCRIBE).unwrap();
    let stub = Stub::start(vec![
        Canned::new(
            "GET",
            format!("{DATA}/sobjects/Account/describe"),
            503,
            json!(null),
        )
        .text("Service Unavailable"),
        Canned::new(
            "GET",
            format!("{DATA}/sobjects/Account/describe"),
            200,
            describe,
        ),
    ])
    .await;
    let client = client(&stub, no_guard());
    let account = client
        .describe("Account", &stub.cancel())
        .await
        .expect("describe");
    assert_eq!(stub.left(), 0, "a 503 is retried like every call");
    assert_eq!(client.calls(), 2);
    assert_eq!(
        stub.seen()[1].call_options.as_deref(),
        Some("client=forcebridge-test")
    );
    assert_eq!(
        (
            account.name.as_str(),
            account.createable,
            account.updateable
        ),
        ("Account", true, true)
    );
    let field = |name: &str| account.fields.iter().find(|f| f.name == name).unwrap();
    let city = field("BillingCity");
    assert_eq!(city.compound_field_name.as_deref(), Some("BillingAddress"));
    assert_eq!((city.field_type.as_str(), city.length), ("string", 40));
    let address = field("BillingAddress");
    assert_eq!(address.field_type, "address");
    assert_eq!(address.soap_type, "urn:address");
    assert!(!address.createable && !address.updateable);
    let latitude = field("Loc__Latitude__s");
    assert_eq!(latitude.compound_field_name.as_deref(), Some("Loc__c"));
    assert!(field("Score__c").calculated);
    let ext = field("External_Id__c");
    assert!(ext.external_id && ext.id_lookup && ext.nillable);
}

#[tokio::test]
async fn describe_of_an_unknown_object_is_not_found_without_retrying() {
    // REST API Developer Guide, "Status Codes and Error Responses": 404 `NOT_FOUND`.
    let stub = Stub::start(vec![Canned::new(
        "GET",
        format!("{DATA}/sobjects/Nope__c/describe"),
        404,
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
    )])
    .await;
    let rest = client(&stub, no_guard());
    let error = rest
        .describe("Nope__c", &stub.cancel())
        .await
        .expect_err("unknown object");
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(rest.calls(), 1);
    let stub = Stub::start(vec![Canned::new(
        "GET",
        format!("{DATA}/sobjects/Account/describe"),
        200,
        json!({"name": "Account"}),
    )])
    .await;
    let error = client(&stub, no_guard())
        .describe("Account", &stub.cancel())
        .await;
    assert!(
        matches!(&error, Err(RestError::Protocol(m)) if m.contains("describe of Account")),
        "{error:?}"
    );
}
