//! In-process tests of the simulated org over its real network interfaces: OAuth and REST over
//! HTTP (reqwest), the Pub/Sub API over gRPC (the generated tonic client).

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use super::{SimConfig, SimOrg};
use crate::salesforce::proto::pub_sub_client::PubSubClient;
use crate::salesforce::proto::{
    FetchRequest, FetchResponse, ProducerEvent, PublishRequest, ReplayPreset, SchemaRequest,
    TopicRequest,
};

pub(super) const ACCOUNTS: &str = "/data/AccountChangeEvent";

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub(super) fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain http:// needs none, but building
    // the client still wants a process-level provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub(super) async fn login(org: &SimOrg) -> String {
    let cfg = org.config();
    let password = format!("{}{}", cfg.password, cfg.security_token);
    let resp = http_client()
        .post(format!("{}/services/oauth2/token", org.instance_url()))
        .form(&[
            ("grant_type", "password"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.as_str()),
            ("username", cfg.username.as_str()),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("token json");
    body["access_token"].as_str().expect("token").to_owned()
}

/// A Pub/Sub client and the auth metadata for one session.
pub(super) struct Client {
    grpc: PubSubClient<Channel>,
    token: String,
    instance_url: String,
    org_id: String,
}

impl Client {
    pub(super) async fn connect(org: &SimOrg, token: String) -> Self {
        Self {
            grpc: PubSubClient::connect(org.pubsub_endpoint())
                .await
                .expect("connect"),
            token,
            instance_url: org.instance_url(),
            org_id: org.config().org_id.clone(),
        }
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert("accesstoken", self.token.parse().expect("token md"));
        md.insert("instanceurl", self.instance_url.parse().expect("url md"));
        md.insert("tenantid", self.org_id.parse().expect("org md"));
        r
    }

    pub(super) async fn subscribe(&mut self, first: FetchRequest) -> Sub {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue first request");
        let req = self.req(ReceiverStream::new(rx));
        let stream = self
            .grpc
            .subscribe(req)
            .await
            .expect("subscribe")
            .into_inner();
        Sub { tx, stream }
    }

    async fn schema(&mut self, id: &str) -> apache_avro::Schema {
        let info = self
            .grpc
            .get_schema(self.req(SchemaRequest {
                schema_id: id.to_owned(),
            }))
            .await
            .expect("get schema")
            .into_inner();
        apache_avro::Schema::parse_str(&info.schema_json).expect("parse schema")
    }

    /// Decodes an event as a client of a real org must: with the schema its id names, or, for
    /// the blank id of a `/data/ChangeEvents` event, with the schema of the entity the payload
    /// names first (the schema id `GetTopic` gives for that entity's channel).
    pub(super) async fn decode(&mut self, event: &ProducerEvent) -> Value {
        let mut id = event.schema_id.clone();
        if id.is_empty() {
            let entity = apache_avro::from_avro_datum(
                &apache_avro::Schema::String,
                &mut &event.payload[..],
                None,
            )
            .expect("the payload starts with the entity name");
            let apache_avro::types::Value::String(entity) = entity else {
                panic!("not a string: {entity:?}");
            };
            id = self
                .grpc
                .get_topic(self.req(TopicRequest {
                    topic_name: format!("/data/{entity}ChangeEvent"),
                }))
                .await
                .expect("get topic")
                .into_inner()
                .schema_id;
        }
        let schema = self.schema(&id).await;
        let value =
            apache_avro::from_avro_datum(&schema, &mut &event.payload[..], None).expect("decode");
        super::org::avro_to_json(&value)
    }
}

pub(super) struct Sub {
    tx: mpsc::Sender<FetchRequest>,
    stream: Streaming<FetchResponse>,
}

impl Sub {
    async fn next(&mut self) -> FetchResponse {
        self.stream
            .message()
            .await
            .expect("stream ok")
            .expect("stream open")
    }

    async fn error(&mut self) -> Status {
        loop {
            match self.stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without an error"),
                Err(status) => return status,
            }
        }
    }

    async fn request(&self, n: i32) {
        self.tx
            .send(FetchRequest {
                num_requested: n,
                ..Default::default()
            })
            .await
            .expect("send request");
    }

    /// Receives until `n` events arrived; checks the flow-control invariants on the way.
    pub(super) async fn take(
        &mut self,
        n: usize,
        mut owed: i32,
    ) -> Vec<crate::salesforce::proto::ConsumerEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let r = self.next().await;
            assert!(r.events.len() as i32 <= owed, "more events than requested");
            owed -= r.events.len() as i32;
            assert_eq!(r.pending_num_requested, owed);
            assert!(!r.rpc_id.is_empty());
            if let Some(last) = r.events.last() {
                assert_eq!(r.latest_replay_id, last.replay_id);
            }
            out.extend(r.events);
        }
        out
    }
}

pub(super) fn fetch(topic: &str, preset: ReplayPreset, replay_id: Vec<u8>, n: i32) -> FetchRequest {
    FetchRequest {
        topic_name: topic.to_owned(),
        replay_preset: preset as i32,
        replay_id,
        num_requested: n,
        auth_refresh: String::new(),
    }
}

fn error_code(status: &Status) -> &str {
    status
        .metadata()
        .get("error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn quick_keepalive() -> SimConfig {
    SimConfig {
        keepalive_interval: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn oauth_token_userinfo_and_errors() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let cfg = org.config().clone();
    let http = http_client();
    let token_url = format!("{}/services/oauth2/token", org.instance_url());

    let resp = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    assert!(token.starts_with(&format!("{}!", cfg.org_id)));
    assert_eq!(body["instance_url"], org.instance_url());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["id"],
        format!(
            "{}/id/{}/{}",
            org.instance_url(),
            cfg.org_id,
            cfg.integration_user_id
        ),
        "client credentials act as the connected app's Run As user"
    );
    assert!(
        body["issued_at"]
            .as_str()
            .is_some_and(|s| s.parse::<i64>().is_ok())
    );
    assert!(body["signature"].is_string());

    let info: Value = http
        .get(format!("{}/services/oauth2/userinfo", org.instance_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(info["organization_id"], cfg.org_id);
    assert_eq!(info["user_id"], cfg.integration_user_id);
    let password_token = login(&org).await;
    let info: Value = http
        .get(format!("{}/services/oauth2/userinfo", org.instance_url()))
        .bearer_auth(&password_token)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(info["user_id"], cfg.user_id);
    assert_eq!(info["preferred_username"], cfg.username);
    let unauthorized = http
        .get(format!("{}/services/oauth2/userinfo", org.instance_url()))
        .bearer_auth("nope")
        .send()
        .await
        .expect("userinfo");
    assert_eq!(unauthorized.status(), 401);

    for (form, error, description) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", cfg.client_id.as_str()),
                ("client_secret", "wrong"),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", cfg.client_id.as_str()),
                ("client_secret", cfg.client_secret.as_str()),
                ("username", cfg.username.as_str()),
                ("password", cfg.password.as_str()), // security token missing
            ],
            "invalid_grant",
            "authentication failure",
        ),
        (
            vec![("grant_type", "authorization_code")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
    ] {
        let resp = http
            .post(&token_url)
            .form(&form)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body,
            json!({"error": error, "error_description": description})
        );
    }
    assert!(!login(&org).await.is_empty());
    org.shutdown().await;
}

#[tokio::test]
async fn rest_changes_emit_cdc_events_with_client_tag_origin() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let token = login(&org).await;
    let http = http_client();
    let base = format!("{}/services/data/v62.0/sobjects", org.instance_url());

    let resp = http
        .post(format!("{base}/Account"))
        .bearer_auth(&token)
        .header("Sforce-Call-Options", "client=forcebridge")
        .json(&json!({"Name": "Acme", "BillingCity": "Paris"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(created["success"], true);
    assert_eq!(created["errors"], json!([]));
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(super::ids::normalize(&id).as_deref(), Some(id.as_str()));

    let resp = http
        .patch(format!("{base}/Account/{id}"))
        .bearer_auth(&token)
        .json(&json!({"Phone": "+33 1 23 45 67 89"}))
        .send()
        .await
        .expect("update");
    assert_eq!(resp.status(), 204);
    let record: Value = http
        .get(format!("{base}/Account/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(record["attributes"]["type"], "Account");
    assert_eq!(record["Phone"], "+33 1 23 45 67 89");
    assert_eq!(record["BillingCity"], "Paris");
    assert_eq!(record["BillingAddress"]["city"], "Paris");

    // Errors as Salesforce shapes them.
    let bad = http
        .post(format!("{base}/Account"))
        .bearer_auth(&token)
        .json(&json!({"Nmae": "typo"}))
        .send()
        .await
        .expect("bad field");
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    let unauth = http
        .get(format!("{base}/Account/{id}"))
        .bearer_auth("expired")
        .send()
        .await
        .expect("unauth");
    assert_eq!(unauth.status(), 401);
    let body: Value = unauth.json().await.expect("json");
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
    let missing = http
        .get(format!("{base}/Account/001000000000000AAA"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);

    let resp = http
        .delete(format!("{base}/Account/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);

    let mut client = Client::connect(&org, token).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Earliest, Vec::new(), 10))
        .await;
    let events = sub.take(3, 10).await;
    let mut decoded = Vec::new();
    for e in &events {
        decoded.push(client.decode(e.event.as_ref().expect("event")).await);
    }
    let types: Vec<_> = decoded
        .iter()
        .map(|d| d["ChangeEventHeader"]["changeType"].clone())
        .collect();
    assert_eq!(types, vec!["CREATE", "UPDATE", "DELETE"]);
    assert_eq!(
        decoded[0]["ChangeEventHeader"]["changeOrigin"],
        "com/salesforce/api/rest/62.0;client=forcebridge"
    );
    assert_eq!(
        decoded[1]["ChangeEventHeader"]["changeOrigin"],
        "com/salesforce/api/rest/62.0"
    );
    assert_eq!(decoded[1]["ChangeEventHeader"]["recordIds"], json!([id]));
    // Phone (6) and LastModifiedDate (22).
    assert_eq!(
        decoded[1]["ChangeEventHeader"]["changedFields"],
        json!(["0x400040"])
    );
    assert!(events.windows(2).all(|w| w[0].replay_id < w[1].replay_id));
    let numbers: Vec<i64> = decoded
        .iter()
        .map(|d| d["ChangeEventHeader"]["commitNumber"].as_i64().expect("n"))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    org.shutdown().await;
}

#[tokio::test]
async fn flow_control_delivers_exactly_what_was_requested() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    org.generate("Account", 150).expect("generate");
    assert_eq!(org.event_count(ACCOUNTS), 150);
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Earliest, Vec::new(), 30))
        .await;
    let first = sub.take(30, 30).await;
    // Credits exhausted: the next response can only be a keepalive, never an event.
    let keepalive = sub.next().await;
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.pending_num_requested, 0);
    assert_eq!(keepalive.latest_replay_id, first[29].replay_id);

    // More than 100 outstanding is treated as 100.
    sub.request(200).await;
    let second = sub.take(100, 100).await;
    let keepalive = sub.next().await;
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.pending_num_requested, 0);
    assert!(first.last().map(|e| &e.replay_id) < second.first().map(|e| &e.replay_id));

    sub.request(50).await;
    let rest = sub.take(20, 50).await;
    assert_eq!(rest.len(), 20);
    // New events reach the waiting subscriber (30 credits still owed).
    org.create("Account", obj(json!({"Name": "Late"})))
        .expect("create");
    let late = sub.take(1, 30).await;
    assert_eq!(late.len(), 1);

    sub.request(0).await;
    let status = sub.error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.subscription.fetch.requested.events.invalid"
    );
    org.shutdown().await;
}

#[tokio::test]
async fn replay_presets_and_replay_id_errors() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            org.create("Account", obj(json!({"Name": format!("A{i}")})))
                .expect("create")
        })
        .collect();
    let mut client = Client::connect(&org, org.issue_access_token()).await;

    let mut earliest = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Earliest, Vec::new(), 10))
        .await;
    let all = earliest.take(3, 10).await;

    let mut custom = client
        .subscribe(fetch(
            ACCOUNTS,
            ReplayPreset::Custom,
            all[0].replay_id.to_vec(),
            10,
        ))
        .await;
    let after_first = custom.take(2, 10).await;
    assert_eq!(after_first[0].replay_id, all[1].replay_id);

    // LATEST: wait for a keepalive (the subscription is set up), then only new events arrive.
    let mut latest = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 10))
        .await;
    let keepalive = latest.next().await;
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.latest_replay_id, all[2].replay_id);
    org.update("Account", &ids[0], obj(json!({"Rating": "Hot"})))
        .expect("update");
    let new = latest.take(1, 10).await;
    let decoded = client.decode(new[0].event.as_ref().expect("event")).await;
    assert_eq!(decoded["ChangeEventHeader"]["changeType"], "UPDATE");

    // CUSTOM without a replay id.
    let status = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Custom, Vec::new(), 10))
        .await
        .error()
        .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
    );

    // A replay id sent as a decimal string instead of bytes.
    let status = client
        .subscribe(fetch(
            ACCOUNTS,
            ReplayPreset::Custom,
            b"18098167".to_vec(),
            10,
        ))
        .await
        .error()
        .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
    );
    assert!(
        status
            .message()
            .starts_with(super::grpc::subscribe::REPLAY_ID_CORRUPTED_MSG)
    );
    assert!(status.message().contains("rpcId: "));
    assert!(status.metadata().get("rpc-id").is_some());

    // Outside the retention window.
    org.purge_events_before(SystemTime::now() + Duration::from_secs(1));
    assert_eq!(org.event_count(ACCOUNTS), 0);
    let status = client
        .subscribe(fetch(
            ACCOUNTS,
            ReplayPreset::Custom,
            all[0].replay_id.to_vec(),
            10,
        ))
        .await
        .error()
        .await;
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
    );
    org.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keepalive_then_idle_close_with_paused_time() {
    // Paused time races ahead while loopback I/O is in flight (keepalive after keepalive): a
    // token that outlives the race keeps the stream from ending with an auth error.
    let org = SimOrg::start(SimConfig {
        token_ttl: Duration::from_secs(365 * 24 * 3600),
        ..SimConfig::default()
    })
    .await
    .expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 1))
        .await;
    // Nothing to deliver: an empty FetchResponse after the keepalive interval (270 s).
    let keepalive = sub.next().await;
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.pending_num_requested, 1);
    assert_eq!(keepalive.latest_replay_id.len(), 10); // as real orgs send them (bus.rs)
    org.create("Account", obj(json!({"Name": "Acme"})))
        .expect("create");
    let got = sub.take(1, 1).await;
    assert_eq!(got.len(), 1);
    // No credits pending and no FetchRequest: the server closes the stream (60 s).
    assert!(sub.stream.message().await.expect("clean close").is_none());
    org.shutdown().await;
}

#[tokio::test]
async fn auth_topic_and_schema_errors_carry_error_codes() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let token = org.issue_access_token();
    let mut client = Client::connect(&org, token.clone()).await;

    let status = client
        .grpc
        .get_topic(Request::new(TopicRequest {
            topic_name: ACCOUNTS.into(),
        }))
        .await
        .expect_err("no metadata");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.service.auth.headers.invalid"
    );
    for (tok, org_id) in [
        ("00Dbogus!token".to_owned(), org.config().org_id.clone()),
        (token.clone(), "00D000000000001AAA".to_owned()),
    ] {
        let mut other = Client::connect(&org, tok).await;
        other.org_id = org_id;
        let status = other
            .grpc
            .get_topic(other.req(TopicRequest {
                topic_name: ACCOUNTS.into(),
            }))
            .await
            .expect_err("bad auth");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            error_code(&status),
            "sfdc.platform.eventbus.grpc.service.auth.error"
        );
        assert!(status.metadata().get("rpc-id").is_some());
    }

    let info = client
        .grpc
        .get_topic(client.req(TopicRequest {
            topic_name: ACCOUNTS.into(),
        }))
        .await
        .expect("topic")
        .into_inner();
    assert_eq!(info.tenant_guid, org.config().org_id);
    assert!(info.can_subscribe && !info.can_publish);
    assert_eq!(info.schema_id.len(), 22);

    let status = client
        .grpc
        .get_topic(client.req(TopicRequest {
            topic_name: "/data/LeadChangeEvent".into(),
        }))
        .await
        .expect_err("unknown topic");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.topic.not.found"
    );

    let status = client
        .grpc
        .get_schema(client.req(SchemaRequest {
            schema_id: String::new(),
        }))
        .await
        .expect_err("blank schema");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.schema.validation.failed"
    );
    let status = client
        .grpc
        .get_schema(client.req(SchemaRequest {
            schema_id: "a01VpgrsZNJdn-7KStJcxQ".into(),
        }))
        .await
        .expect_err("unknown schema");
    assert_eq!(status.code(), Code::NotFound);

    // A later FetchRequest naming another topic.
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 1))
        .await;
    sub.tx
        .send(FetchRequest {
            topic_name: "/data/ContactChangeEvent".into(),
            num_requested: 1,
            ..Default::default()
        })
        .await
        .expect("send");
    let status = sub.error().await;
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.subscription.fetch.topic.mismatch"
    );
    org.shutdown().await;
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: publish, then a schema change and the events on both sides of it"
)]
#[tokio::test]
async fn publish_platform_events_and_schema_evolution() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let topic = "/event/Order_Event__e";
    let info = client
        .grpc
        .get_topic(client.req(TopicRequest {
            topic_name: topic.into(),
        }))
        .await
        .expect("topic")
        .into_inner();
    assert!(info.can_publish);
    let schema = client.schema(&info.schema_id).await;
    let payload = apache_avro::to_avro_datum(
        &schema,
        apache_avro::types::Value::Record(vec![
            (
                "CreatedDate".into(),
                apache_avro::types::Value::Long(1_700_000_000_000),
            ),
            (
                "CreatedById".into(),
                apache_avro::types::Value::String(org.config().user_id.clone()),
            ),
            (
                "Order_Number__c".into(),
                apache_avro::types::Value::Union(
                    1,
                    Box::new(apache_avro::types::Value::String("SO-1".into())),
                ),
            ),
            (
                "Amount__c".into(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
            ),
            (
                "Status__c".into(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
            ),
            (
                "Customer_Id__c".into(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
            ),
            (
                "Quantity__c".into(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
            ),
        ]),
    )
    .expect("encode");
    let response = client
        .grpc
        .publish(client.req(PublishRequest {
            topic_name: topic.into(),
            events: vec![
                ProducerEvent {
                    id: "corr-1".into(),
                    schema_id: info.schema_id.clone(),
                    payload: payload.clone().into(),
                    headers: Vec::new(),
                },
                ProducerEvent {
                    id: "corr-2".into(),
                    schema_id: "unknown".into(),
                    payload: payload.into(),
                    headers: Vec::new(),
                },
            ],
            auth_refresh: String::new(),
        }))
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(response.results.len(), 2);
    assert_eq!(response.results[0].correlation_key, "corr-1");
    assert!(response.results[0].error.is_none());
    assert_eq!(response.results[0].replay_id.len(), 10);
    assert_eq!(response.results[1].correlation_key, "corr-2");
    assert!(response.results[1].error.is_some());

    let replay = org
        .publish_event(
            "Order_Event__e",
            obj(json!({"Order_Number__c": "SO-2", "Amount__c": 12.5})),
        )
        .expect("publish api");
    assert!(replay > response.results[0].replay_id);
    assert_eq!(org.event_count(topic), 2);
    let mut sub = client
        .subscribe(fetch(topic, ReplayPreset::Earliest, Vec::new(), 5))
        .await;
    let events = sub.take(2, 5).await;
    assert_eq!(
        events[0].event.as_ref().map(|e| e.id.as_str()),
        Some("corr-1")
    );
    let second = client
        .decode(events[1].event.as_ref().expect("event"))
        .await;
    assert_eq!(second["Order_Number__c"], "SO-2");
    assert_eq!(second["Amount__c"], 12.5);

    // Publishing to a change event channel is refused.
    let status = client
        .grpc
        .publish(client.req(PublishRequest {
            topic_name: ACCOUNTS.into(),
            events: Vec::new(),
            auth_refresh: String::new(),
        }))
        .await
        .expect_err("cdc publish");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Schema evolution: the topic moves to a new schema; old ids stay resolvable.
    let before = client
        .grpc
        .get_topic(client.req(TopicRequest {
            topic_name: ACCOUNTS.into(),
        }))
        .await
        .expect("topic")
        .into_inner()
        .schema_id;
    let new_id = org
        .add_field("Account", "Loyalty__c", json!("string"))
        .expect("add field");
    let after = client
        .grpc
        .get_topic(client.req(TopicRequest {
            topic_name: ACCOUNTS.into(),
        }))
        .await
        .expect("topic")
        .into_inner()
        .schema_id;
    assert_ne!(before, after);
    assert_eq!(after, new_id);
    let old = client.schema(&before).await;
    assert!(matches!(old, apache_avro::Schema::Record(r) if !r.lookup.contains_key("Loyalty__c")));
    org.shutdown().await;
}

#[tokio::test]
async fn transactions_merge_and_custom_channels_see_member_entities() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let tagged = org.with_client_tag("loader");
    let mut tx = tagged.transaction();
    let a = tx.create("Account", obj(json!({"Name": "A"}))).expect("a");
    let c = tx
        .create("Contact", obj(json!({"Name": {"LastName": "Doe"}})))
        .expect("c");
    tx.commit().expect("commit");
    let mut tx = tagged.transaction();
    let b = tx.create("Account", obj(json!({"Name": "B"}))).expect("b");
    tx.commit().expect("commit");
    let mut tx = tagged.transaction();
    tx.update("Account", &a, obj(json!({"Rating": "Hot"})))
        .expect("u");
    tx.update("Account", &b, obj(json!({"Rating": "Hot"})))
        .expect("u");
    tx.commit().expect("commit");
    assert!(matches!(
        tagged.update("Account", &a, obj(json!({"Nope__c": 1}))),
        Err(super::SimError::UnknownField { .. })
    ));

    // 2 creates + 1 create + 1 merged update.
    assert_eq!(org.event_count("/data/Sales__chn"), 4);
    assert_eq!(org.event_count("/data/ChangeEvents"), 4);
    assert_eq!(org.event_count("/data/ContactChangeEvent"), 1);
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(
            "/data/Sales__chn",
            ReplayPreset::Earliest,
            Vec::new(),
            10,
        ))
        .await;
    let events = sub.take(4, 10).await;
    let mut headers = Vec::new();
    for e in &events {
        headers.push(
            client.decode(e.event.as_ref().expect("event")).await["ChangeEventHeader"].clone(),
        );
    }
    assert_eq!(headers[0]["transactionKey"], headers[1]["transactionKey"]);
    assert_eq!(headers[0]["sequenceNumber"], 1);
    assert_eq!(headers[1]["sequenceNumber"], 2);
    assert_eq!(headers[1]["recordIds"], json!([c]));
    assert_eq!(headers[3]["changeType"], "UPDATE");
    assert_eq!(headers[3]["recordIds"], json!([a, b]));
    assert_eq!(
        headers[3]["changeOrigin"],
        "com/salesforce/api/rest/62.0;client=loader"
    );
    org.shutdown().await;
}

#[tokio::test]
async fn credits_add_up_to_at_most_100_outstanding() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 10))
        .await;
    sub.request(95).await;
    // Keepalives report the credits owed; wait until the server has counted both requests.
    loop {
        let keepalive = sub.next().await;
        assert!(keepalive.events.is_empty());
        assert!(keepalive.pending_num_requested <= 100);
        if keepalive.pending_num_requested == 100 {
            break;
        }
    }
    org.generate("Account", 150).expect("generate");
    let got = sub.take(100, 100).await;
    assert_eq!(got.len(), 100);
    let keepalive = sub.next().await;
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.pending_num_requested, 0);
    org.shutdown().await;
}

/// A client may keep requesting while events flow: the server reads its FetchRequests as they
/// come, instead of leaving them to pile up in HTTP/2 until h2 ends the connection
/// (`GOAWAY ENHANCE_YOUR_CALM`, `too_many_data_frames`).
#[tokio::test]
async fn requests_sent_while_events_flow_are_read_as_they_come() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    org.generate("Account", 3000).expect("generate");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Earliest, Vec::new(), 1))
        .await;
    let mut got = 0;
    while got < 3000 {
        let r = sub.next().await;
        got += r.events.len();
        // Two tiny requests per event: twice the credits needed.
        for _ in 0..2 * r.events.len() {
            sub.request(1).await;
        }
    }
    assert_eq!(got, 3000);
    // The excess was read and dropped at the 100-outstanding cap.
    assert!(org.stream_fault_counts().credits_over_limit > 0);
    org.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn expired_tokens_are_refused() {
    let org = SimOrg::start(SimConfig {
        token_ttl: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await
    .expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let topic = || TopicRequest {
        topic_name: ACCOUNTS.into(),
    };
    client
        .grpc
        .get_topic(client.req(topic()))
        .await
        .expect("fresh token");
    tokio::time::advance(Duration::from_secs(11)).await;
    let status = client
        .grpc
        .get_topic(client.req(topic()))
        .await
        .expect_err("expired token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.service.auth.error"
    );
    org.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions_with_unavailable() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 10))
        .await;
    let _ = sub.next().await; // the subscription is live
    let shutdown = tokio::spawn(org.shutdown());
    let status = sub.error().await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.service.unavailable"
    );
    drop(sub);
    shutdown.await.expect("shutdown completes");
}

#[tokio::test]
async fn sim_generate_endpoint_creates_records_with_one_event_each() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let http = http_client();
    let url = format!("{}/sim/generate", org.instance_url());
    let resp = http
        .post(&url)
        .json(&json!({"object": "Contact", "count": 250}))
        .send()
        .await
        .expect("generate");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["count"], 250);
    let first = body["ids"][0].as_str().expect("id");
    assert!(org.record("Contact", first).is_some());
    assert_eq!(org.event_count("/data/ContactChangeEvent"), 250);
    let resp = http
        .post(&url)
        .json(&json!({"object": "Lead", "count": 1}))
        .send()
        .await
        .expect("generate");
    assert_eq!(resp.status(), 404);
    org.shutdown().await;
}

#[tokio::test]
async fn reset_stream_every_ends_each_stream_with_internal_after_n_events() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    org.generate("Account", 10).expect("generate");
    org.reset_stream_every(4);
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Earliest, Vec::new(), 100))
        .await;
    let mut events = Vec::new();
    let status = loop {
        match sub.stream.message().await {
            Ok(Some(r)) => events.extend(r.events),
            Ok(None) => panic!("stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(events.len(), 4, "exactly n events, then the reset");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.service.unavailable"
    );
    // The next stream resumes after the last event and is reset after 4 more.
    let last = events.last().expect("events").replay_id.clone();
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Custom, last.to_vec(), 100))
        .await;
    let more = sub.take(4, 100).await;
    assert_eq!(more.len(), 4);
    assert_eq!(sub.error().await.code(), Code::Internal);
    assert_eq!(org.stream_fault_counts().streams_reset, 2);
    // Off again: the rest arrives on one stream.
    org.reset_stream_every(0);
    let last = more.last().expect("events").replay_id.clone();
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Custom, last.to_vec(), 100))
        .await;
    assert_eq!(sub.take(2, 100).await.len(), 2);
    assert_eq!(org.replay_ids(ACCOUNTS).len(), 10);
    org.shutdown().await;
}

#[tokio::test]
async fn refused_subscriptions_answer_unavailable_until_the_deadline() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    org.refuse_subscriptions_for(Duration::from_millis(400));
    for _ in 0..3 {
        let (tx, rx) = mpsc::channel(1);
        tx.send(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 1))
            .await
            .expect("queue");
        let req = client.req(ReceiverStream::new(rx));
        let status = client.grpc.subscribe(req).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            error_code(&status),
            "sfdc.platform.eventbus.grpc.service.unavailable"
        );
    }
    assert_eq!(org.stream_fault_counts().refused_subscriptions, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 1))
        .await;
    assert!(sub.next().await.events.is_empty(), "a keepalive: served");
    assert_eq!(org.stream_fault_counts().refused_subscriptions, 3);
    org.shutdown().await;
}

#[tokio::test]
async fn silenced_streams_send_nothing_and_stay_open() {
    let org = SimOrg::start(quick_keepalive()).await.expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 10))
        .await;
    let keepalive = sub.next().await;
    assert!(keepalive.events.is_empty());
    org.silence_streams();
    org.generate("Account", 5).expect("generate");
    // Neither events nor keepalives (every 50 ms) nor an end of stream.
    let waited = tokio::time::timeout(Duration::from_millis(500), sub.stream.message()).await;
    assert!(waited.is_err(), "a silent stream sends nothing: {waited:?}");
    assert_eq!(org.stream_fault_counts().streams_silenced, 1);
    // A new stream is served.
    let mut fresh = client
        .subscribe(fetch(
            ACCOUNTS,
            ReplayPreset::Custom,
            keepalive.latest_replay_id,
            10,
        ))
        .await;
    assert_eq!(fresh.take(5, 10).await.len(), 5);
    org.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn open_streams_end_with_an_auth_error_when_their_token_expires() {
    let org = SimOrg::start(SimConfig {
        token_ttl: Duration::from_secs(10),
        ..SimConfig::default()
    })
    .await
    .expect("start");
    let mut client = Client::connect(&org, org.issue_access_token()).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Latest, Vec::new(), 10))
        .await;
    let status = sub.error().await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        error_code(&status),
        "sfdc.platform.eventbus.grpc.service.auth.error"
    );
    assert_eq!(org.stream_fault_counts().streams_expired, 1);
    org.shutdown().await;
}

/// Datetimes have second precision in a real org: `CreatedDate`, `LastModifiedDate`,
/// `SystemModstamp` and the change events' `commitTimestamp` end in `000` (SOAP API Developer
/// Guide, "Primitive Data Types": dateTime; the real capture of the pozil Node client's README,
/// tests/fixtures/real/), over REST as `….000+0000`, for writes over REST and the Rust API.
#[tokio::test]
async fn record_datetimes_and_commit_timestamps_have_second_precision() {
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let token = login(&org).await;
    let http = http_client();
    let base = format!("{}/services/data/v62.0/sobjects", org.instance_url());
    let mut ids = org.generate("Account", 2).expect("generate");
    for name in ["One", "Two"] {
        let created: Value = http
            .post(format!("{base}/Account"))
            .bearer_auth(&token)
            .json(&json!({ "Name": name }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    org.update("Account", &ids[0], obj(json!({"Phone": "+1 555 0100"})))
        .expect("update");
    for id in &ids {
        let rec = org.record("Account", id).expect("record");
        for f in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            assert_eq!(rec[f].as_i64().expect(f) % 1000, 0, "{f} of {id}: {rec:?}");
        }
        let row: Value = http
            .get(format!("{base}/Account/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        for f in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            let text = row[f].as_str().expect(f);
            assert!(text.ends_with(".000+0000"), "{f} of {id}: {text}");
        }
    }
    let mut client = Client::connect(&org, token).await;
    let mut sub = client
        .subscribe(fetch(ACCOUNTS, ReplayPreset::Earliest, Vec::new(), 10))
        .await;
    let events = sub.take(5, 10).await;
    for e in &events {
        let d = client.decode(e.event.as_ref().expect("event")).await;
        let header = &d["ChangeEventHeader"];
        let commit = header["commitTimestamp"].as_i64().expect("commitTimestamp");
        assert_eq!(commit % 1000, 0, "{header}");
        let modified = d["LastModifiedDate"].as_i64().expect("LastModifiedDate");
        assert_eq!(modified % 1000, 0, "{d}");
    }
    org.shutdown().await;
}

/// Seeded records existed before anything listened: no change events; the same seed gives the
/// same records; they are indexed (by External Id) and readable like any other; a later seed
/// appends after them in Id order; `POST /sim/seed` does the same over HTTP.
#[tokio::test]
async fn seeding_writes_existing_records_without_events_deterministically() {
    let a = SimOrg::start(SimConfig::default()).await.expect("start");
    let b = SimOrg::start(SimConfig::default()).await.expect("start");
    let (first, last) = a.seed("account", 1_000, 11).expect("seed").expect("ids");
    b.seed("Account", 1_000, 11).expect("seed");
    assert_eq!(a.event_count("/data/ChangeEvents"), 0);
    let (ra, rb) = (a.records("Account"), b.records("Account"));
    assert_eq!(ra.len(), 1_000);
    // The dates are placed relative to the moment of seeding, which may fall in another second
    // for the two orgs: everything else is the same.
    let undated = |records: &[Map<String, Value>]| -> Vec<Map<String, Value>> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                for field in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
                    r.remove(field);
                }
                r
            })
            .collect()
    };
    assert_eq!(undated(&ra), undated(&rb), "deterministic from the seed");
    assert_eq!(ra[0]["Id"], first.as_str());
    assert_eq!(ra[999]["Id"], last.as_str());
    let now = crate::sim::util::org_now();
    for r in &ra {
        let (c, m) = (
            r["CreatedDate"].as_i64().expect("c"),
            r["SystemModstamp"].as_i64().expect("m"),
        );
        assert!(c <= m && m <= now && c % 1000 == 0, "{r:?}");
        assert_eq!(r["LastModifiedDate"], r["SystemModstamp"]);
    }
    let with = |f: &str| {
        ra.iter()
            .filter(|r| r.get(f).is_some_and(|v| !v.is_null()))
            .count()
    };
    assert!(
        (50..200).contains(&with("Description")),
        "a Long Text Area on some: {}",
        with("Description")
    );
    assert!((50..300).contains(&(1_000 - with("Phone"))), "some nulls");
    let ext = ra[5]["External_Id__c"].as_str().expect("ext");
    let found = a
        .find_by_external_id("Account", "External_Id__c", ext)
        .expect("found by External Id");
    assert_eq!(found["Id"], ra[5]["Id"]);
    assert!(a.seed("Lead", 1, 1).is_err());

    let token = login(&a).await;
    let resp = http_client()
        .post(format!("{}/sim/seed", a.instance_url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({"object": "Contact", "count": 10, "seed": 3}))
        .send()
        .await
        .expect("seed");
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["count"], 10);
    assert_eq!(a.records("Contact").len(), 10);
    assert_eq!(a.event_count("/data/ChangeEvents"), 0);
    a.shutdown().await;
    b.shutdown().await;
}

/// Measures seeding and a Bulk API 2.0 query job over many records (not a pass/fail test:
/// speed is measured, not asserted): `cargo test --release --lib measure_bulk -- --ignored
/// --nocapture` (FB_BULK_RECORDS, default 1,000,000).
#[tokio::test]
#[ignore]
async fn measure_bulk_snapshot_throughput() {
    let n: usize = std::env::var("FB_BULK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let org = SimOrg::start(SimConfig::default()).await.expect("start");
    let t = std::time::Instant::now();
    org.seed("Account", n, 1).expect("seed");
    println!("seed {n} Accounts: {:?}", t.elapsed());
    let token = login(&org).await;
    let base = format!("{}/services/data/v62.0/jobs/query", org.instance_url());
    let http = http_client();
    let job: serde_json::Value = http
        .post(&base)
        .bearer_auth(&token)
        .json(&serde_json::json!({"operation": "query", "query": "SELECT Id, Name, Type, Industry, Phone, Website, Description, NumberOfEmployees, AnnualRevenue, BillingStreet, BillingCity, BillingPostalCode, BillingCountryCode, OwnerId, CreatedDate, LastModifiedDate, SystemModstamp, IsDeleted FROM Account"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("job");
    let id = job["id"].as_str().expect("id");
    let t = std::time::Instant::now();
    let info: serde_json::Value = http
        .get(format!("{base}/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("info json");
    println!(
        "job completes (query + CSV render): {:?} {}",
        t.elapsed(),
        info["state"]
    );
    let t = std::time::Instant::now();
    let mut locator = String::new();
    let (mut rows, mut bytes) = (0usize, 0usize);
    loop {
        let mut url = reqwest::Url::parse(&format!("{base}/{id}/results")).expect("url");
        url.query_pairs_mut().append_pair("maxRecords", "50000");
        if !locator.is_empty() {
            url.query_pairs_mut().append_pair("locator", &locator);
        }
        let resp = http
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("page");
        locator = resp.headers()["sforce-locator"]
            .to_str()
            .expect("loc")
            .to_owned();
        rows += resp.headers()["sforce-numberofrecords"]
            .to_str()
            .expect("n")
            .parse::<usize>()
            .expect("n");
        bytes += resp.bytes().await.expect("body").len();
        if locator == "null" {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "results: {rows} rows, {} MB in {secs:.2} s = {:.0} rows/s",
        bytes / 1_000_000,
        rows as f64 / secs
    );
    org.shutdown().await;
}
