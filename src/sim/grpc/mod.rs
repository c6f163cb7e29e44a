//! The Pub/Sub API gRPC service of the simulated org (`eventbus.v1.PubSub`).
//!
//! Contract:
//! * Every RPC authenticates from the `accesstoken`, `instanceurl` and `tenantid` metadata; a
//!   missing header or a token that is unknown, expired or for another instance/org gives
//!   `UNAUTHENTICATED`.
//! * Errors are `tonic::Status` values whose message ends in `rpcId: <uuid>` and whose metadata
//!   (sent as trailers) carries `error-code` (`sfdc.platform.eventbus.grpc.…`) and `rpc-id`.
//! * `Subscribe` follows the documented flow control: credits from `num_requested` add up to at
//!   most 100 outstanding; a FetchResponse carries at most the outstanding number of events, the
//!   credits still owed (`pending_num_requested`) and `latest_replay_id`. An empty FetchResponse
//!   is sent after `keepalive_interval` without any response; the stream is closed when no
//!   credits are pending and no FetchRequest arrived within `idle_timeout`. Responses go through
//!   a small bounded channel, so a slow reader stalls the subscription (HTTP/2 backpressure).
//! * A Subscribe stream ends with `UNAUTHENTICATED` (`service.auth.error`) when the token it was
//!   opened with expires, as a session timeout ends a real stream.
//! * Stream fault knobs ([`StreamFaults`]): end every stream with `INTERNAL`
//!   (`service.unavailable`, as seen in Salesforce outages) after it sent N events; refuse every
//!   `Subscribe` with `UNAVAILABLE` (`service.unavailable`) until a deadline; make the open streams
//!   go silent (no events, no keepalives, not closed) as a dead stream behind a proxy does.
//! * `Publish` accepts platform events encoded with any schema version of the topic; each event
//!   gets its own `PublishResult` (an event over 1 MB refused in its own). `PublishStream` in
//!   [`publish_stream`], `ManagedSubscribe` (Beta) in [`managed`].

mod managed;
mod publish_stream;
mod service;
mod status;
pub(super) mod stream_faults;
pub(super) mod subscribe;

pub use self::stream_faults::StreamFaultCounts;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use self::service::PubSubService;
use self::status::{new_rpc_id, sf_status};
use self::subscribe::{RESPONSE_BUFFER, Subscription};
use crate::salesforce::proto::pub_sub_server::{PubSub, PubSubServer};
use crate::salesforce::proto::{
    Error as PublishError, ErrorCode, FetchRequest, FetchResponse, ManagedFetchRequest,
    ManagedFetchResponse, PublishRequest, PublishResponse, PublishResult, SchemaInfo,
    SchemaRequest, TopicInfo, TopicRequest,
};
use crate::sim::bus::Channel;
use crate::sim::shared::Shared;
use crate::sim::util::lock;

/// Serves the Pub/Sub API on `listener` until the org shuts down, over TLS when `tls` is given.
pub(super) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
) {
    let shutdown = shared.shutdown.clone();
    let service = PubSubServer::new(PubSubService { shared });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = match builder.tls_config(tls) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(%error, "simulated Pub/Sub server: TLS identity refused");
                return;
            }
        };
    }
    let result = builder
        .add_service(service)
        .serve_with_incoming_shutdown(
            // Like Salesforce's front ends: no Nagle delay on small FetchResponses (with delayed
            // ACKs it added tens of milliseconds to every event at low rates).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "simulated Pub/Sub server failed");
    }
}

#[tonic::async_trait]
impl PubSub for PubSubService {
    type SubscribeStream = ReceiverStream<Result<FetchResponse, Status>>;
    type PublishStreamStream = ReceiverStream<Result<PublishResponse, Status>>;
    type ManagedSubscribeStream = ReceiverStream<Result<ManagedFetchResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FetchRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rpc_id = new_rpc_id();
        let session = self.authenticate(&request, &rpc_id)?;
        self.shared.stream_faults.check_refusal(&rpc_id)?;
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let task = Subscription {
            service: self.handle(),
            rpc_id,
            tx,
            expires: session.expires,
        };
        tokio::spawn(task.run(Box::pin(request.into_inner())));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_schema(
        &self,
        request: Request<SchemaRequest>,
    ) -> Result<Response<SchemaInfo>, Status> {
        let rpc_id = new_rpc_id();
        self.authenticate(&request, &rpc_id)?;
        let schema_id = request.into_inner().schema_id;
        if schema_id.trim().is_empty() {
            return Err(sf_status(
                Code::InvalidArgument,
                "schema.validation.failed",
                "Schema validation failed. The schema ID can't be blank.",
                &rpc_id,
            ));
        }
        // A replayed capture's schemas: GetSchema's exact captured text.
        if let Some(json) = crate::sim::replay::captured_schema(&self.shared.config, &schema_id) {
            return Ok(Response::new(SchemaInfo {
                schema_json: json,
                schema_id,
                rpc_id,
            }));
        }
        let schema = lock(&self.shared.org)
            .schema_by_id(&schema_id)
            .ok_or_else(|| {
                sf_status(
                    Code::NotFound,
                    "schema.not.found",
                    &format!("The schema with ID {schema_id} was not found."),
                    &rpc_id,
                )
            })?;
        Ok(Response::new(SchemaInfo {
            schema_json: schema.json.clone(),
            schema_id: schema.id.clone(),
            rpc_id,
        }))
    }

    async fn get_topic(
        &self,
        request: Request<TopicRequest>,
    ) -> Result<Response<TopicInfo>, Status> {
        let rpc_id = new_rpc_id();
        self.authenticate(&request, &rpc_id)?;
        let topic_name = request.into_inner().topic_name;
        let channel = self.channel(&topic_name, &rpc_id)?;
        // A replayed capture's topics: what GetTopic answered the capture.
        if let Some(t) = crate::sim::replay::captured_topic(&self.shared.config, &topic_name) {
            return Ok(Response::new(TopicInfo {
                can_publish: t.can_publish,
                can_subscribe: t.can_subscribe,
                schema_id: t.schema_id.clone(),
                tenant_guid: self.shared.config.org_id.clone(),
                topic_name,
                rpc_id,
            }));
        }
        Ok(Response::new(TopicInfo {
            can_publish: matches!(channel.live(), Channel::PlatformEvent(_)),
            can_subscribe: true,
            schema_id: self.topic_schema_id(&channel),
            tenant_guid: self.shared.config.org_id.clone(),
            topic_name,
            rpc_id,
        }))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let rpc_id = new_rpc_id();
        self.authenticate(&request, &rpc_id)?;
        let req = request.into_inner();
        let channel = self.channel(&req.topic_name, &rpc_id)?;
        let Channel::PlatformEvent(name) = channel.live().clone() else {
            return Err(publish_stream::publish_denied(&req.topic_name, &rpc_id));
        };
        if req.events.is_empty() {
            return Err(sf_status(
                Code::InvalidArgument,
                "publish.event.count.invalid",
                "The PublishRequest must contain at least one event.",
                &rpc_id,
            ));
        }
        Ok(Response::new(self.publish_all(&name, req.events, &rpc_id)))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let rpc_id = new_rpc_id();
        self.authenticate(&request, &rpc_id)?;
        let (tx, rx) = publish_stream::response_channel();
        let task = publish_stream::PublishStream {
            service: self.handle(),
            rpc_id,
            tx,
        };
        tokio::spawn(task.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn managed_subscribe(
        &self,
        request: Request<Streaming<ManagedFetchRequest>>,
    ) -> Result<Response<Self::ManagedSubscribeStream>, Status> {
        let rpc_id = new_rpc_id();
        let session = self.authenticate(&request, &rpc_id)?;
        self.shared.stream_faults.check_refusal(&rpc_id)?;
        let (tx, rx) = managed::response_channel();
        let task = managed::ManagedStream {
            service: self.handle(),
            rpc_id,
            tx,
            expires: session.expires,
        };
        tokio::spawn(task.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The largest event payload accepted ("Pub/Sub API and Event Allocations": "Each event message
/// in a batch in a PublishRequest has a maximum size of 1 MB … the PublishResult of that event
/// contains an error").
const MAX_EVENT_BYTES: usize = 1024 * 1024;

impl PubSubService {
    /// Another handle on the same org, for a stream's task.
    pub(super) fn handle(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }

    /// One request's events published on the Platform Event `name` (`Publish`, `PublishStream`):
    /// a result each, and the event's current schema id.
    pub(super) fn publish_all(
        &self,
        name: &str,
        events: Vec<crate::salesforce::proto::ProducerEvent>,
        rpc_id: &str,
    ) -> PublishResponse {
        let results = events
            .into_iter()
            .map(|event| self.publish_one(name, event))
            .collect();
        let schema_id = lock(&self.shared.org)
            .platform_event_schema(name)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        PublishResponse {
            results,
            schema_id,
            rpc_id: rpc_id.to_owned(),
        }
    }

    fn publish_one(
        &self,
        name: &str,
        mut event: crate::salesforce::proto::ProducerEvent,
    ) -> PublishResult {
        let failed = |key: String, msg: String| PublishResult {
            replay_id: Vec::new(),
            error: Some(PublishError {
                code: ErrorCode::Publish as i32,
                msg,
            }),
            correlation_key: key,
        };
        if event.payload.len() > MAX_EVENT_BYTES {
            let len = event.payload.len();
            return failed(
                event.id,
                format!(
                    "The event is {len} bytes; an event can be at most {MAX_EVENT_BYTES} bytes (1 MB)."
                ),
            );
        }
        if event.id.len() > 36 {
            return failed(
                String::new(),
                "The event id must not exceed 36 characters.".into(),
            );
        }
        let key = event.id.clone();
        let schema = lock(&self.shared.org).schema_by_id(&event.schema_id);
        let Some(schema) = schema.filter(|s| s.name == name && !s.is_change_event) else {
            return failed(
                key,
                format!(
                    "The schema ID {:?} is not a schema of {name}.",
                    event.schema_id
                ),
            );
        };
        let mut reader = &event.payload[..];
        match apache_avro::from_avro_datum(schema.schema(), &mut reader, None) {
            Ok(_) if !reader.is_empty() => {
                return failed(key, "The event payload has trailing bytes.".into());
            }
            Ok(value) => {
                let json = crate::sim::org::avro_to_json(&value);
                let created_by = json.get("CreatedById").and_then(|v| v.as_str());
                if created_by.is_none_or(str::is_empty) {
                    return failed(key, "CreatedById is required.".into());
                }
            }
            Err(e) => return failed(key, format!("The event payload can't be decoded: {e}")),
        }
        if event.id.is_empty() {
            event.id = uuid::Uuid::new_v4().to_string();
        }
        let correlation_key = event.id.clone();
        let seq = self.shared.append_platform_event(name, event);
        PublishResult {
            replay_id: crate::sim::util::lock(&self.shared.bus).id_of(seq),
            error: None,
            correlation_key,
        }
    }
}
