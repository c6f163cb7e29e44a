//! The Pub/Sub RPCs other clients use, against the simulated org through the generated tonic
//! client (the proto verbatim): `PublishStream` (pipelined requests, per-event results with the
//! publisher's correlation keys, events over 1 MB refused alone, a topic change refused, the idle
//! close), `ManagedSubscribe` (Tooling API records, commits, resuming, one client at a time),
//! Platform Events published over REST, and the error trailers of every refusal.

use std::time::Duration;

use apache_avro::types::Value as Avro;
use forcebridge::salesforce::proto::pub_sub_client::PubSubClient;
use forcebridge::salesforce::proto::{
    CommitReplayRequest, FetchRequest, FetchResponse, ManagedFetchRequest, ManagedFetchResponse,
    ProducerEvent, PublishRequest, PublishResponse, ReplayPreset, SchemaRequest, TopicRequest,
};
use forcebridge::sim::{SimConfig, SimOrg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

const TOPIC: &str = "/event/Order_Event__e";

struct Client {
    grpc: PubSubClient<Channel>,
    token: String,
    instance_url: String,
    org_id: String,
}

impl Client {
    async fn connect(org: &SimOrg) -> Self {
        Self {
            grpc: PubSubClient::connect(org.pubsub_endpoint()).await.unwrap(),
            token: org.issue_access_token(),
            instance_url: org.instance_url(),
            org_id: org.config().org_id.clone(),
        }
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert("accesstoken", self.token.parse().unwrap());
        md.insert("instanceurl", self.instance_url.parse().unwrap());
        md.insert("tenantid", self.org_id.parse().unwrap());
        r
    }

    /// The topic's schema id and schema.
    async fn schema(&mut self) -> (String, apache_avro::Schema) {
        let req = self.req(TopicRequest {
            topic_name: TOPIC.into(),
        });
        let id = self
            .grpc
            .get_topic(req)
            .await
            .unwrap()
            .into_inner()
            .schema_id;
        let req = self.req(SchemaRequest {
            schema_id: id.clone(),
        });
        let json = self
            .grpc
            .get_schema(req)
            .await
            .unwrap()
            .into_inner()
            .schema_json;
        (id, apache_avro::Schema::parse_str(&json).unwrap())
    }

    /// A Subscribe stream on the topic from EARLIEST with `n` credits; the sender asks for more.
    async fn subscribe_earliest(
        &mut self,
        n: i32,
    ) -> (mpsc::Sender<FetchRequest>, Streaming<FetchResponse>) {
        let (tx, rx) = mpsc::channel(4);
        tx.send(FetchRequest {
            topic_name: TOPIC.into(),
            replay_preset: ReplayPreset::Earliest as i32,
            replay_id: Vec::new(),
            num_requested: n,
            auth_refresh: String::new(),
        })
        .await
        .unwrap();
        let req = self.req(ReceiverStream::new(rx));
        (tx, self.grpc.subscribe(req).await.unwrap().into_inner())
    }

    async fn publish_stream(
        &mut self,
    ) -> (mpsc::Sender<PublishRequest>, Streaming<PublishResponse>) {
        let (tx, rx) = mpsc::channel(64);
        let req = self.req(ReceiverStream::new(rx));
        let responses = self.grpc.publish_stream(req).await.unwrap().into_inner();
        (tx, responses)
    }
}

/// An org, a client of it, the topic's schema id and schema, and the org's user.
async fn start(config: SimConfig) -> (SimOrg, Client, String, apache_avro::Schema, String) {
    let org = SimOrg::start(config).await.unwrap();
    let mut client = Client::connect(&org).await;
    let (schema_id, schema) = client.schema().await;
    let user = org.config().user_id.clone();
    (org, client, schema_id, schema, user)
}

/// A PublishRequest of these events (`topic` empty after a stream's first request).
fn request(topic: &str, events: Vec<ProducerEvent>) -> PublishRequest {
    PublishRequest {
        topic_name: topic.into(),
        events,
        auth_refresh: String::new(),
    }
}

/// An `Order_Event__e` payload with this order number.
fn order(schema: &apache_avro::Schema, user: &str, number: &str) -> Vec<u8> {
    let null = || Avro::Union(0, Box::new(Avro::Null));
    apache_avro::to_avro_datum(
        schema,
        Avro::Record(vec![
            ("CreatedDate".into(), Avro::Long(1_700_000_000_000)),
            ("CreatedById".into(), Avro::String(user.into())),
            (
                "Order_Number__c".into(),
                Avro::Union(1, Box::new(Avro::String(number.into()))),
            ),
            ("Amount__c".into(), null()),
            ("Status__c".into(), null()),
            ("Customer_Id__c".into(), null()),
            ("Quantity__c".into(), null()),
        ]),
    )
    .unwrap()
}

fn event(id: String, schema_id: &str, payload: Vec<u8>) -> ProducerEvent {
    ProducerEvent {
        id,
        schema_id: schema_id.to_owned(),
        payload: payload.into(),
        headers: Vec::new(),
    }
}

fn error_code(status: &Status) -> &str {
    status
        .metadata()
        .get("error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A status as Salesforce sends it: an error code and an rpc id in the trailers, the rpc id at
/// the end of the message.
fn assert_sf_status(status: &Status, code: tonic::Code, error_code_suffix: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        error_code(status),
        format!("sfdc.platform.eventbus.grpc.{error_code_suffix}"),
        "{status:?}"
    );
    let rpc_id = status.metadata().get("rpc-id").unwrap().to_str().unwrap();
    assert!(status.message().ends_with(&format!("rpcId: {rpc_id}")));
}

/// 500 events in 5 pipelined requests of 100 (all sent before any response is read): one
/// response per request, in order, each event acknowledged with its correlation key and a replay
/// id, and a subscriber receives all 500 with those ids, in order.
#[tokio::test]
async fn publish_stream_acknowledges_500_pipelined_events_with_their_correlation_keys() {
    let (org, mut client, schema_id, schema, user) = start(SimConfig::default()).await;
    let (tx, mut responses) = client.publish_stream().await;
    for batch in 0..5 {
        let events = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                event(
                    format!("corr-{n:03}"),
                    &schema_id,
                    order(&schema, &user, &format!("SO-{n}")),
                )
            })
            .collect();
        let topic_name = if batch == 0 { TOPIC } else { "" };
        tx.send(request(topic_name, events)).await.unwrap();
    }
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        let response = responses.message().await.unwrap().unwrap();
        assert_eq!(response.schema_id, schema_id);
        assert!(!response.rpc_id.is_empty());
        assert_eq!(response.results.len(), 100);
        for result in response.results {
            assert!(result.error.is_none(), "{result:?}");
            assert_eq!(result.replay_id.len(), 10);
            acknowledged.push((result.correlation_key, result.replay_id.to_vec()));
        }
    }
    let keys: Vec<String> = acknowledged.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<String> = (0..500).map(|n| format!("corr-{n:03}")).collect();
    assert_eq!(keys, expected);

    let (fetch_tx, mut sub) = client.subscribe_earliest(100).await;
    let mut received = Vec::new();
    while received.len() < 500 {
        let response = sub.message().await.unwrap().unwrap();
        for consumer in response.events {
            let event = consumer.event.unwrap();
            let value = apache_avro::from_avro_datum(&schema, &mut &event.payload[..], None);
            assert!(value.is_ok(), "{value:?}");
            received.push((event.id, consumer.replay_id.to_vec()));
        }
        if received.len() % 100 == 0 && received.len() < 500 {
            fetch_tx
                .send(FetchRequest {
                    num_requested: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(received, acknowledged);
    org.shutdown().await;
}

/// An event over 1 MB is refused in its own result; the other event of its request is
/// published, and the stream goes on.
#[tokio::test]
async fn an_event_over_one_megabyte_is_refused_alone() {
    let (org, mut client, schema_id, schema, user) = start(SimConfig::default()).await;
    let (tx, mut responses) = client.publish_stream().await;
    let big = order(&schema, &user, &"x".repeat(1024 * 1024 + 1));
    tx.send(request(
        TOPIC,
        vec![
            event("big".into(), &schema_id, big),
            event("small".into(), &schema_id, order(&schema, &user, "SO-1")),
        ],
    ))
    .await
    .unwrap();
    let response = responses.message().await.unwrap().unwrap();
    assert_eq!(response.results[0].correlation_key, "big");
    let error = response.results[0].error.as_ref().unwrap();
    assert!(error.msg.contains("1 MB"), "{error:?}");
    assert!(response.results[0].replay_id.is_empty());
    assert_eq!(response.results[1].correlation_key, "small");
    assert!(response.results[1].error.is_none());
    assert_eq!(org.event_count(TOPIC), 1);
    tx.send(request(
        "",
        vec![event(
            "next".into(),
            &schema_id,
            order(&schema, &user, "SO-2"),
        )],
    ))
    .await
    .unwrap();
    let response = responses.message().await.unwrap().unwrap();
    assert!(response.results[0].error.is_none());
    assert_eq!(org.event_count(TOPIC), 2);
    org.shutdown().await;
}

/// A request over gRPC's 4 MB limit ends the stream with an error (Salesforce closes it).
#[tokio::test]
async fn a_request_over_four_megabytes_ends_the_stream() {
    let (org, mut client, schema_id, schema, user) = start(SimConfig::default()).await;
    let (tx, mut responses) = client.publish_stream().await;
    let events = (0..5)
        .map(|i| {
            let payload = order(&schema, &user, &"y".repeat(900 * 1024));
            event(format!("e{i}"), &schema_id, payload)
        })
        .collect();
    tx.send(request(TOPIC, events)).await.unwrap();
    let status = responses.message().await.unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
    assert_eq!(org.event_count(TOPIC), 0);
    org.shutdown().await;
}

/// A later request naming another topic ends the stream with `INVALID_ARGUMENT`; a first
/// request on a change event channel is refused as `Publish` refuses it.
#[tokio::test]
async fn the_topic_is_fixed_by_the_first_request() {
    let (org, mut client, schema_id, schema, user) = start(SimConfig::default()).await;
    let (tx, mut responses) = client.publish_stream().await;
    let one = |id: &str| vec![event(id.into(), &schema_id, order(&schema, &user, "SO-1"))];
    tx.send(request(TOPIC, one("a"))).await.unwrap();
    assert!(responses.message().await.unwrap().is_some());
    tx.send(request("/event/Other_Event__e", one("b")))
        .await
        .unwrap();
    let status = responses.message().await.unwrap_err();
    assert_sf_status(
        &status,
        tonic::Code::InvalidArgument,
        "publish.topic.mismatch",
    );

    let (tx, mut responses) = client.publish_stream().await;
    tx.send(request("/data/AccountChangeEvent", one("c")))
        .await
        .unwrap();
    let status = responses.message().await.unwrap_err();
    assert_sf_status(
        &status,
        tonic::Code::PermissionDenied,
        "topic.meta.permission",
    );
    assert_eq!(org.event_count(TOPIC), 1);
    org.shutdown().await;
}

/// No request with events for the idle timeout (70 s on Salesforce, shortened here): the server
/// closes the stream with a status that says so.
#[tokio::test]
async fn an_idle_publish_stream_is_closed() {
    let (org, mut client, schema_id, schema, user) = start(SimConfig {
        publish_idle_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let (tx, mut responses) = client.publish_stream().await;
    tx.send(request(
        TOPIC,
        vec![event("a".into(), &schema_id, order(&schema, &user, "SO-1"))],
    ))
    .await
    .unwrap();
    assert!(responses.message().await.unwrap().is_some());
    let status = responses.message().await.unwrap_err();
    assert_sf_status(&status, tonic::Code::Aborted, "publish.stream.idle");
    drop(tx);
    org.shutdown().await;
}

/// A subscriber that half-closes its request stream right after its first FetchRequest still
/// receives the events it asked for (gRPC lets the server send after the client's half-close;
/// the Pub/Sub API guide is silent), then the stream closes as idle once no credit is left.
#[tokio::test]
async fn a_half_closed_subscription_still_gets_the_events_it_asked_for() {
    let (org, mut client, schema_id, schema, user) = start(SimConfig {
        keepalive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let (tx, mut events) = client.subscribe_earliest(3).await;
    drop(tx);
    // The first keepalive shows the half-closed stream is still open before anything is published.
    let keepalive = events.message().await.unwrap().unwrap();
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.pending_num_requested, 3);
    let published: Vec<ProducerEvent> = (0..4)
        .map(|n| {
            event(
                format!("e{n}"),
                &schema_id,
                order(&schema, &user, &format!("SO-{n}")),
            )
        })
        .collect();
    let (publish, mut acks) = client.publish_stream().await;
    publish.send(request(TOPIC, published)).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().results.len(), 4);
    let mut received = Vec::new();
    while let Some(response) = events.message().await.unwrap() {
        received.extend(response.events.into_iter().map(|e| e.event.unwrap().id));
    }
    // The three credits, not the fourth event; then the idle close ends the stream with OK.
    assert_eq!(received, ["e0", "e1", "e2"]);
    drop(publish);
    org.shutdown().await;
}

/// Creates a `ManagedEventSubscription` through the Tooling API; its Id.
async fn create_managed(org: &SimOrg, token: &str, name: &str, default_replay: &str) -> String {
    let url = format!(
        "{}/services/data/v62.0/tooling/sobjects/ManagedEventSubscription",
        org.instance_url()
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"FullName": name, "Metadata": {
            "label": name, "topicName": TOPIC, "defaultReplay": default_replay,
            "errorRecoveryReplay": "LATEST", "state": "RUN"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// A ManagedSubscribe stream whose first request names the subscription.
async fn managed_stream(
    client: &mut Client,
    first: ManagedFetchRequest,
) -> (
    mpsc::Sender<ManagedFetchRequest>,
    Streaming<ManagedFetchResponse>,
) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let req = client.req(ReceiverStream::new(rx));
    let stream = client
        .grpc
        .managed_subscribe(req)
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

/// The next `n` events of a managed stream (commit responses and keepalives skipped), after
/// those of `first`.
async fn managed_events(
    stream: &mut Streaming<ManagedFetchResponse>,
    first: Option<ManagedFetchResponse>,
    n: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = first;
    while out.len() < n {
        let response = match pending.take() {
            Some(r) => r,
            None => stream.message().await.unwrap().unwrap(),
        };
        for consumer in response.events {
            out.push((consumer.event.unwrap().id, consumer.replay_id.to_vec()));
        }
    }
    out
}

/// A managed subscription created through the Tooling API: subscribed by developer name from
/// `defaultReplay` (EARLIEST), a commit answered with its request id, the stream closed, then
/// resubscribed by Id: it resumes right after the committed replay id. A second client of the
/// same subscription is refused while the first holds it; an unknown one is `NOT_FOUND` with
/// the error trailers.
#[tokio::test]
async fn a_managed_subscription_resumes_after_its_committed_replay_id() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let (org, mut client, schema_id, schema, user) = start(SimConfig::default()).await;
    let (publisher, mut acks) = client.publish_stream().await;
    publisher
        .send(request(
            TOPIC,
            (0..5)
                .map(|i| event(format!("e{i}"), &schema_id, order(&schema, &user, "SO")))
                .collect(),
        ))
        .await
        .unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().results.len(), 5);
    let token = client.token.clone();
    let id = create_managed(&org, &token, "Orders_Sub", "EARLIEST").await;
    assert!(id.starts_with("18x"));

    let (tx, mut stream) = managed_stream(
        &mut client,
        ManagedFetchRequest {
            developer_name: "Orders_Sub".into(),
            num_requested: 3,
            ..Default::default()
        },
    )
    .await;
    let first = managed_events(&mut stream, None, 3).await;
    let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["e0", "e1", "e2"]);

    let (_second, mut refused) = managed_stream(
        &mut Client::connect(&org).await,
        ManagedFetchRequest {
            subscription_id: id.clone(),
            num_requested: 1,
            ..Default::default()
        },
    )
    .await;
    let refused = refused.message().await.unwrap_err();
    assert_sf_status(
        &refused,
        tonic::Code::FailedPrecondition,
        "subscription.managed.in.use",
    );

    tx.send(ManagedFetchRequest {
        commit_replay_id_request: Some(CommitReplayRequest {
            commit_request_id: "commit-1".into(),
            replay_id: first[1].1.clone(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let committed = loop {
        let response = stream.message().await.unwrap().unwrap();
        if let Some(commit) = response.commit_response {
            break commit;
        }
    };
    assert_eq!(committed.commit_request_id, "commit-1");
    assert_eq!(committed.replay_id.to_vec(), first[1].1);
    assert!(committed.error.is_none());
    assert!(committed.process_time > 0);
    drop(tx);
    drop(stream);

    // The server notices the closed stream and releases the subscription.
    let mut resumed = None;
    for _ in 0..100 {
        let (tx, mut stream) = managed_stream(
            &mut Client::connect(&org).await,
            ManagedFetchRequest {
                subscription_id: id.clone(),
                num_requested: 10,
                ..Default::default()
            },
        )
        .await;
        match stream.message().await {
            Ok(first) => {
                resumed = Some((tx, stream, first));
                break;
            }
            Err(status) if error_code(&status).ends_with("in.use") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let (_tx, mut stream, first) = resumed.expect("the subscription is released");
    let next = managed_events(&mut stream, first, 3).await;
    let ids: Vec<&str> = next.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["e2", "e3", "e4"],
        "resumes right after the committed e1"
    );

    let (_third, mut unknown) = managed_stream(
        &mut client,
        ManagedFetchRequest {
            developer_name: "No_Such_Sub".into(),
            num_requested: 1,
            ..Default::default()
        },
    )
    .await;
    let unknown = unknown.message().await.unwrap_err();
    assert_sf_status(
        &unknown,
        tonic::Code::NotFound,
        "subscription.managed.not.found",
    );
    org.shutdown().await;
}

/// A Platform Event published over REST (`POST /sobjects/Order_Event__e`) answers as the
/// Platform Events Developer Guide shows (201, `OPERATION_ENQUEUED` with the EventUuid) and
/// reaches a Pub/Sub subscriber with its fields; a field the event doesn't have is refused.
#[tokio::test]
async fn a_platform_event_published_over_rest_reaches_subscribers() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut client = Client::connect(&org).await;
    let url = format!(
        "{}/services/data/v62.0/sobjects/Order_Event__e",
        org.instance_url()
    );
    let http = reqwest::Client::new();
    let response = http
        .post(&url)
        .bearer_auth(&client.token)
        .json(&serde_json::json!({"Order_Number__c": "SO-REST", "Amount__c": 12.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["errors"][0]["statusCode"], "OPERATION_ENQUEUED");
    let uuid = body["errors"][0]["message"].as_str().unwrap().to_owned();

    let refused = http
        .post(&url)
        .bearer_auth(&client.token)
        .json(&serde_json::json!({"No_Such__c": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let errors: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(errors[0]["errorCode"], "INVALID_FIELD", "{errors}");

    let (_, schema) = client.schema().await;
    let (_fetch_tx, mut sub) = client.subscribe_earliest(10).await;
    let response = sub.message().await.unwrap().unwrap();
    assert_eq!(response.events.len(), 1);
    let event = response.events[0].event.as_ref().unwrap();
    assert_eq!(event.id, uuid);
    let value = apache_avro::from_avro_datum(&schema, &mut &event.payload[..], None).unwrap();
    let json = forcebridge::sim::org::avro_to_json(&value);
    assert_eq!(json["Order_Number__c"], "SO-REST");
    assert_eq!(json["Amount__c"], 12.5);
    assert_eq!(json["CreatedById"], org.config().user_id.as_str());
    org.shutdown().await;
}
