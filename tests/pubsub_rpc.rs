//! The Pub/Sub RPCs other clients use, against the simulated org through the generated tonic
//! client (the proto verbatim): `PublishStream` (pipelined requests, per-event results with the
//! publisher's correlation keys, events over 1 MB refused alone, a topic change refused, the idle
//! close) and the error trailers of every refusal.

use std::time::Duration;

use apache_avro::types::Value as Avro;
use forcebridge::salesforce::proto::pub_sub_client::PubSubClient;
use forcebridge::salesforce::proto::{
    FetchRequest, ProducerEvent, PublishRequest, PublishResponse, ReplayPreset, SchemaRequest,
    TopicRequest,
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

    async fn publish_stream(
        &mut self,
    ) -> (mpsc::Sender<PublishRequest>, Streaming<PublishResponse>) {
        let (tx, rx) = mpsc::channel(64);
        let req = self.req(ReceiverStream::new(rx));
        let responses = self.grpc.publish_stream(req).await.unwrap().into_inner();
        (tx, responses)
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
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut client = Client::connect(&org).await;
    let (schema_id, schema) = client.schema().await;
    let user = org.config().user_id.clone();
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
        tx.send(PublishRequest {
            topic_name: topic_name.into(),
            events,
            auth_refresh: String::new(),
        })
        .await
        .unwrap();
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

    let (fetch_tx, fetch_rx) = mpsc::channel(4);
    fetch_tx
        .send(FetchRequest {
            topic_name: TOPIC.into(),
            replay_preset: ReplayPreset::Earliest as i32,
            replay_id: Vec::new(),
            num_requested: 100,
            auth_refresh: String::new(),
        })
        .await
        .unwrap();
    let req = client.req(ReceiverStream::new(fetch_rx));
    let mut sub = client.grpc.subscribe(req).await.unwrap().into_inner();
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
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut client = Client::connect(&org).await;
    let (schema_id, schema) = client.schema().await;
    let user = org.config().user_id.clone();
    let (tx, mut responses) = client.publish_stream().await;
    let big = order(&schema, &user, &"x".repeat(1024 * 1024 + 1));
    tx.send(PublishRequest {
        topic_name: TOPIC.into(),
        events: vec![
            event("big".into(), &schema_id, big),
            event("small".into(), &schema_id, order(&schema, &user, "SO-1")),
        ],
        auth_refresh: String::new(),
    })
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
    tx.send(PublishRequest {
        topic_name: String::new(),
        events: vec![event(
            "next".into(),
            &schema_id,
            order(&schema, &user, "SO-2"),
        )],
        auth_refresh: String::new(),
    })
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
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut client = Client::connect(&org).await;
    let (schema_id, schema) = client.schema().await;
    let user = org.config().user_id.clone();
    let (tx, mut responses) = client.publish_stream().await;
    let events = (0..5)
        .map(|i| {
            let payload = order(&schema, &user, &"y".repeat(900 * 1024));
            event(format!("e{i}"), &schema_id, payload)
        })
        .collect();
    tx.send(PublishRequest {
        topic_name: TOPIC.into(),
        events,
        auth_refresh: String::new(),
    })
    .await
    .unwrap();
    let status = responses.message().await.unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
    assert_eq!(org.event_count(TOPIC), 0);
    org.shutdown().await;
}

/// A later request naming another topic ends the stream with `INVALID_ARGUMENT`; a first
/// request on a change event channel is refused as `Publish` refuses it.
#[tokio::test]
async fn the_topic_is_fixed_by_the_first_request() {
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut client = Client::connect(&org).await;
    let (schema_id, schema) = client.schema().await;
    let user = org.config().user_id.clone();
    let (tx, mut responses) = client.publish_stream().await;
    let one = |id: &str| vec![event(id.into(), &schema_id, order(&schema, &user, "SO-1"))];
    tx.send(PublishRequest {
        topic_name: TOPIC.into(),
        events: one("a"),
        auth_refresh: String::new(),
    })
    .await
    .unwrap();
    assert!(responses.message().await.unwrap().is_some());
    tx.send(PublishRequest {
        topic_name: "/event/Other_Event__e".into(),
        events: one("b"),
        auth_refresh: String::new(),
    })
    .await
    .unwrap();
    let status = responses.message().await.unwrap_err();
    assert_sf_status(
        &status,
        tonic::Code::InvalidArgument,
        "publish.topic.mismatch",
    );

    let (tx, mut responses) = client.publish_stream().await;
    tx.send(PublishRequest {
        topic_name: "/data/AccountChangeEvent".into(),
        events: one("c"),
        auth_refresh: String::new(),
    })
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
    let org = SimOrg::start(SimConfig {
        publish_idle_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut client = Client::connect(&org).await;
    let (schema_id, schema) = client.schema().await;
    let user = org.config().user_id.clone();
    let (tx, mut responses) = client.publish_stream().await;
    tx.send(PublishRequest {
        topic_name: TOPIC.into(),
        events: vec![event("a".into(), &schema_id, order(&schema, &user, "SO-1"))],
        auth_refresh: String::new(),
    })
    .await
    .unwrap();
    assert!(responses.message().await.unwrap().is_some());
    let status = responses.message().await.unwrap_err();
    assert_sf_status(&status, tonic::Code::Aborted, "publish.stream.idle");
    drop(tx);
    org.shutdown().await;
}

/// `ManagedSubscribe`'s refusal carries the trailers every other error carries.
#[tokio::test]
async fn unimplemented_rpcs_carry_the_error_trailers() {
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let mut client = Client::connect(&org).await;
    let (_tx, rx) = mpsc::channel(1);
    let req = client.req(ReceiverStream::new(rx));
    let status = client.grpc.managed_subscribe(req).await.unwrap_err();
    assert_sf_status(&status, tonic::Code::Unimplemented, "service.unimplemented");
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
    let (fetch_tx, fetch_rx) = mpsc::channel(4);
    fetch_tx
        .send(FetchRequest {
            topic_name: TOPIC.into(),
            replay_preset: ReplayPreset::Earliest as i32,
            replay_id: Vec::new(),
            num_requested: 10,
            auth_refresh: String::new(),
        })
        .await
        .unwrap();
    let req = client.req(ReceiverStream::new(fetch_rx));
    let mut sub = client.grpc.subscribe(req).await.unwrap().into_inner();
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
