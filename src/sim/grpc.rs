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
//!   gets its own `PublishResult`. `PublishStream` and `ManagedSubscribe` are `UNIMPLEMENTED`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

use super::bus::{self, Channel, ReplayIdError};
use super::ids;
use super::shared::{Session, Shared};
use super::util::lock;
use crate::salesforce::proto::pub_sub_server::{PubSub, PubSubServer};
use crate::salesforce::proto::{
    ConsumerEvent, Error as PublishError, ErrorCode, FetchRequest, FetchResponse,
    ManagedFetchRequest, ManagedFetchResponse, PublishRequest, PublishResponse, PublishResult,
    ReplayPreset, SchemaInfo, SchemaRequest, TopicInfo, TopicRequest,
};

/// Prefix of every Salesforce Pub/Sub error code.
pub const ERROR_CODE_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// Most events a subscriber may have outstanding.
pub const MAX_OUTSTANDING: i32 = 100;

/// Capacity of the channel between a subscription task and its response stream.
const RESPONSE_BUFFER: usize = 2;

/// Message of `…subscription.fetch.replayid.corrupted`, as documented.
pub const REPLAY_ID_CORRUPTED_MSG: &str = "The Replay ID validation failed. Ensure that the replay_id field value in FetchRequest is valid and refers to an event that is within the retention window.";

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

/// A Salesforce-style error status.
pub fn sf_status(code: Code, error_code: &str, message: &str, rpc_id: &str) -> Status {
    let mut status = Status::new(code, format!("{message} rpcId: {rpc_id}"));
    let md = status.metadata_mut();
    if let Ok(v) = format!("{ERROR_CODE_PREFIX}{error_code}").parse::<AsciiMetadataValue>() {
        md.insert("error-code", v);
    }
    if let Ok(v) = rpc_id.parse::<AsciiMetadataValue>() {
        md.insert("rpc-id", v);
    }
    status
}

fn new_rpc_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

struct PubSubService {
    shared: Arc<Shared>,
}

impl PubSubService {
    fn authenticate<T>(&self, req: &Request<T>, rpc_id: &str) -> Result<Session, Status> {
        let md = req.metadata();
        let get = |k: &str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let (Some(token), Some(url), Some(tenant)) =
            (get("accesstoken"), get("instanceurl"), get("tenantid"))
        else {
            return Err(sf_status(
                Code::Unauthenticated,
                "service.auth.headers.invalid",
                "Authentication headers are missing or invalid: accesstoken, instanceurl and tenantid are required.",
                rpc_id,
            ));
        };
        let auth_error = || {
            sf_status(
                Code::Unauthenticated,
                "service.auth.error",
                "An authentication exception occurred. Ensure that the access token, instance URL and tenant ID are valid and the token hasn't expired.",
                rpc_id,
            )
        };
        let session = self.shared.session(token).ok_or_else(auth_error)?;
        let url_ok = url.trim_end_matches('/') == self.shared.instance_url;
        let org_ok = ids::normalize(tenant).as_deref() == Some(self.shared.config.org_id.as_str());
        if !url_ok || !org_ok || !token.starts_with(&self.shared.config.org_id) {
            return Err(auth_error());
        }
        Ok(session)
    }

    fn channel(&self, topic: &str, rpc_id: &str) -> Result<Channel, Status> {
        if topic.trim().is_empty() {
            return Err(sf_status(
                Code::InvalidArgument,
                "topic.validation.empty",
                "The topic name can't be blank.",
                rpc_id,
            ));
        }
        self.shared.resolve_channel(topic).ok_or_else(|| {
            sf_status(
                Code::NotFound,
                "topic.not.found",
                &format!(
                    "The topic information for org {} and topic {topic} not found.",
                    self.shared.config.org_id
                ),
                rpc_id,
            )
        })
    }

    /// The topic's current schema id ("" for channels spanning several entities).
    fn topic_schema_id(&self, channel: &Channel) -> String {
        let org = lock(&self.shared.org);
        let schema = match channel {
            Channel::Entity(e) => org.object_schema(e),
            Channel::Custom(members) if members.len() == 1 => org.object_schema(&members[0]),
            Channel::PlatformEvent(p) => org.platform_event_schema(p),
            Channel::AllChanges | Channel::Custom(_) => None,
        };
        schema.map(|s| s.id.clone()).unwrap_or_default()
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
            service: PubSubService {
                shared: self.shared.clone(),
            },
            rpc_id,
            tx,
            expires: session.expires,
        };
        tokio::spawn(task.run(request.into_inner()));
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
        Ok(Response::new(TopicInfo {
            can_publish: matches!(channel, Channel::PlatformEvent(_)),
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
        let Channel::PlatformEvent(name) = channel else {
            return Err(sf_status(
                Code::PermissionDenied,
                "topic.meta.permission",
                &format!("Publishing to topic {} is not allowed.", req.topic_name),
                &rpc_id,
            ));
        };
        if req.events.is_empty() {
            return Err(sf_status(
                Code::InvalidArgument,
                "publish.event.count.invalid",
                "The PublishRequest must contain at least one event.",
                &rpc_id,
            ));
        }
        let results = req
            .events
            .into_iter()
            .map(|event| self.publish_one(&name, event))
            .collect();
        let schema_id = lock(&self.shared.org)
            .platform_event_schema(&name)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        Ok(Response::new(PublishResponse {
            results,
            schema_id,
            rpc_id,
        }))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let rpc_id = new_rpc_id();
        self.authenticate(&request, &rpc_id)?;
        Err(Status::unimplemented(format!(
            "PublishStream is not implemented by the forcebridge simulated org; use Publish. rpcId: {rpc_id}"
        )))
    }

    async fn managed_subscribe(
        &self,
        request: Request<Streaming<ManagedFetchRequest>>,
    ) -> Result<Response<Self::ManagedSubscribeStream>, Status> {
        let rpc_id = new_rpc_id();
        self.authenticate(&request, &rpc_id)?;
        Err(Status::unimplemented(format!(
            "ManagedSubscribe is not implemented by the forcebridge simulated org; use Subscribe. rpcId: {rpc_id}"
        )))
    }
}

impl PubSubService {
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
                let json = super::org::avro_to_json(&value);
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
            replay_id: bus::replay_id(seq),
            error: None,
            correlation_key,
        }
    }
}

/// One Subscribe stream.
struct Subscription {
    service: PubSubService,
    rpc_id: String,
    tx: mpsc::Sender<Result<FetchResponse, Status>>,
    /// When the token the stream was opened with expires: the stream ends then.
    expires: Instant,
}

/// Why the subscription loop stopped sending.
enum Stop {
    /// The client went away or the stream must simply end.
    Quiet,
    /// End the stream with this status.
    Fail(Status),
}

impl Subscription {
    async fn run(self, mut inbound: Streaming<FetchRequest>) {
        let stop = self.serve(&mut inbound).await;
        if let Stop::Fail(status) = stop {
            tracing::debug!(rpc_id = %self.rpc_id, %status, "subscription ended with an error");
            let shutdown = &self.service.shared.shutdown;
            if shutdown.is_cancelled() {
                let _ = self.tx.try_send(Err(status));
            } else {
                tokio::select! {
                    _ = async {
                        self.flushed().await;
                        let _ = self.tx.send(Err(status)).await;
                    } => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// Waits (at most a second) until the client's side has taken every response sent so far.
    /// tonic drops responses it has encoded but not yet flushed when the stream yields an error
    /// in the same poll; Salesforce ends a stream after the events it delivered.
    async fn flushed(&self) {
        let drained = async {
            while self.tx.capacity() < self.tx.max_capacity() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            // The encoder hands what it took to HTTP/2 on its next poll.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
    }

    fn error(&self, code: Code, error_code: &str, message: &str) -> Stop {
        Stop::Fail(sf_status(code, error_code, message, &self.rpc_id))
    }

    /// Sends a response; `false` if the client is gone or the org shuts down.
    async fn send(&self, response: FetchResponse) -> bool {
        tokio::select! {
            sent = self.tx.send(Ok(response)) => {
                if sent.is_err() {
                    tracing::debug!(rpc_id = %self.rpc_id, "the client dropped the response stream");
                }
                sent.is_ok()
            }
            () = self.service.shared.shutdown.cancelled() => false,
        }
    }

    fn check_credits(&self, req: &FetchRequest) -> Result<i32, Stop> {
        self.service
            .shared
            .stream_faults
            .requests
            .fetch_add(1, Ordering::Relaxed);
        if req.num_requested <= 0 {
            return Err(self.error(
                Code::InvalidArgument,
                "subscription.fetch.requested.events.invalid",
                "The number of requested events in FetchRequest must be greater than 0.",
            ));
        }
        Ok(req.num_requested)
    }

    async fn serve(&self, inbound: &mut Streaming<FetchRequest>) -> Stop {
        let shared = self.service.shared.clone();
        let mut resets = shared.resets.subscribe();
        resets.mark_unchanged();
        let mut silences = shared.stream_faults.silences.subscribe();
        silences.mark_unchanged();
        let first = tokio::select! {
            m = inbound.message() => m,
            () = shared.shutdown.cancelled() => return Stop::Quiet,
            () = self.tx.closed() => return Stop::Quiet,
        };
        let first = match first {
            Ok(Some(req)) => req,
            _ => return Stop::Quiet,
        };
        let topic = first.topic_name.clone();
        let channel = match self.service.channel(&topic, &self.rpc_id) {
            Ok(c) => c,
            Err(status) => return Stop::Fail(status),
        };
        let mut credits = 0;
        match self.check_credits(&first) {
            Ok(n) => self.add_credits(&mut credits, n),
            Err(stop) => return stop,
        }
        let mut cursor = {
            let mut bus = lock(&shared.bus);
            bus.expire(shared.config.retention);
            match ReplayPreset::try_from(first.replay_preset) {
                Ok(ReplayPreset::Latest) => bus.tip(),
                Ok(ReplayPreset::Earliest) => bus.earliest_cursor(),
                Ok(ReplayPreset::Custom) if first.replay_id.is_empty() => {
                    return self.error(
                        Code::InvalidArgument,
                        "subscription.fetch.replayid.validation.failed",
                        "The Replay ID validation failed. A replay_id is required with the CUSTOM replay preset.",
                    );
                }
                Ok(ReplayPreset::Custom) => match bus.check_replay_id(&first.replay_id) {
                    Ok(seq) => seq,
                    Err(ReplayIdError::Malformed | ReplayIdError::OutOfRange) => {
                        return self.error(
                            Code::InvalidArgument,
                            "subscription.fetch.replayid.corrupted",
                            REPLAY_ID_CORRUPTED_MSG,
                        );
                    }
                },
                Err(_) => {
                    return self.error(
                        Code::InvalidArgument,
                        "subscription.fetch.request.invalid",
                        "The FetchRequest has an unknown replay_preset.",
                    );
                }
            }
        };
        tracing::debug!(rpc_id = %self.rpc_id, %topic, cursor, credits, "subscription started");
        let keepalive = shared.config.keepalive_interval;
        let idle_timeout = shared.config.idle_timeout;
        let mut tip = shared.tip.subscribe();
        let mut last_sent = Instant::now();
        let mut idle_since: Option<Instant> = None;
        // Events sent on this stream (for `reset_stream_every`).
        let mut sent: u64 = 0;
        // Credits of FetchRequests still on their simulated round trip: (effective at, credits).
        let mut in_flight: std::collections::VecDeque<(Instant, i32)> = Default::default();
        loop {
            // Every FetchRequest already received is read before more is sent, as a server does
            // that reads its requests as they come: left unread while events flow, they pile up
            // in HTTP/2 until h2 ends the connection (GOAWAY ENHANCE_YOUR_CALM,
            // too_many_data_frames).
            while let Some(message) = inbound.message().now_or_never() {
                if let Err(stop) = self.on_request(message, &topic, &mut credits, &mut in_flight) {
                    return stop;
                }
                idle_since = None;
            }
            let now = Instant::now();
            while in_flight.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, n)) = in_flight.pop_front() {
                    self.add_credits(&mut credits, n);
                }
            }
            tip.borrow_and_update();
            if silences.has_changed().unwrap_or(false) {
                return self.stay_silent().await;
            }
            if Instant::now() >= self.expires {
                return self.token_expired();
            }
            let reset_every = shared.stream_faults.reset_every.load(Ordering::Relaxed);
            if reset_every > 0 && sent >= reset_every {
                shared.stream_faults.resets.fetch_add(1, Ordering::Relaxed);
                return self.error(
                    Code::Internal,
                    "service.unavailable",
                    "The service is unavailable. Try again later.",
                );
            }
            if credits > 0 {
                let max = match reset_every {
                    0 => credits as usize,
                    n => (credits as u64).min(n - sent) as usize,
                };
                let (events, next) = lock(&shared.bus).fetch(&channel, cursor, max);
                cursor = next;
                if !events.is_empty() {
                    sent += events.len() as u64;
                    credits -= events.len() as i32;
                    let response = FetchResponse {
                        events: events
                            .iter()
                            .map(|e| ConsumerEvent {
                                event: Some(e.event.clone()),
                                replay_id: bus::replay_id(e.seq).into(),
                            })
                            .collect(),
                        latest_replay_id: bus::replay_id(cursor),
                        rpc_id: self.rpc_id.clone(),
                        pending_num_requested: credits,
                    };
                    if !self.send(response).await {
                        return self.on_cancel();
                    }
                    last_sent = Instant::now();
                    if credits == 0 {
                        idle_since = Some(last_sent);
                    }
                    continue;
                }
            }
            let idle_deadline = idle_since.map(|t| t + idle_timeout);
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return self.on_cancel(),
                () = self.tx.closed() => {
                    tracing::debug!(rpc_id = %self.rpc_id, "the client dropped the response stream");
                    return Stop::Quiet;
                }
                _ = resets.changed() => {
                    return self.error(
                        Code::Unavailable,
                        "service.unavailable",
                        "The service is unavailable. Try again later.",
                    );
                }
                _ = silences.changed() => return self.stay_silent().await,
                () = tokio::time::sleep_until(self.expires) => return self.token_expired(),
                message = inbound.message() => {
                    if let Err(stop) = self.on_request(message, &topic, &mut credits, &mut in_flight) {
                        return stop;
                    }
                    idle_since = None;
                }
                () = sleep_until_opt(in_flight.front().map(|(at, _)| *at)), if !in_flight.is_empty() => {}
                changed = tip.changed(), if credits > 0 => {
                    if changed.is_err() {
                        return Stop::Quiet;
                    }
                }
                () = tokio::time::sleep_until(last_sent + keepalive) => {
                    let response = FetchResponse {
                        events: Vec::new(),
                        latest_replay_id: bus::replay_id(cursor),
                        rpc_id: self.rpc_id.clone(),
                        pending_num_requested: credits,
                    };
                    if !self.send(response).await {
                        return self.on_cancel();
                    }
                    last_sent = Instant::now();
                }
                () = sleep_until_opt(idle_deadline), if idle_deadline.is_some() => {
                    tracing::debug!(rpc_id = %self.rpc_id, "closing idle subscription");
                    return Stop::Quiet;
                }
            }
        }
    }

    /// Takes one FetchRequest after the first: its credits count now, or after the simulated
    /// round trip.
    fn on_request(
        &self,
        message: Result<Option<FetchRequest>, Status>,
        topic: &str,
        credits: &mut i32,
        in_flight: &mut std::collections::VecDeque<(Instant, i32)>,
    ) -> Result<(), Stop> {
        let req = match message {
            Ok(Some(req)) => req,
            Ok(None) => {
                tracing::debug!(rpc_id = %self.rpc_id, "the client closed its request stream");
                return Err(Stop::Quiet);
            }
            Err(status) => {
                tracing::debug!(rpc_id = %self.rpc_id, %status, "the client's request stream failed");
                return Err(Stop::Quiet);
            }
        };
        if !req.topic_name.is_empty() && req.topic_name != topic {
            return Err(self.error(
                Code::InvalidArgument,
                "subscription.fetch.topic.mismatch",
                &format!(
                    "The topic name {} in FetchRequest doesn't match the subscribed topic {topic}.",
                    req.topic_name
                ),
            ));
        }
        let n = self.check_credits(&req)?;
        let rtt = self
            .service
            .shared
            .stream_faults
            .rtt_micros
            .load(Ordering::Relaxed);
        if rtt > 0 {
            in_flight.push_back((Instant::now() + std::time::Duration::from_micros(rtt), n));
        } else {
            self.add_credits(credits, n);
        }
        Ok(())
    }

    /// Adds `n` credits; more than 100 outstanding is treated as 100, the excess counted.
    fn add_credits(&self, credits: &mut i32, n: i32) {
        let sum = credits.saturating_add(n);
        if sum > MAX_OUTSTANDING {
            self.service
                .shared
                .stream_faults
                .over_limit
                .fetch_add((sum - MAX_OUTSTANDING) as u64, Ordering::Relaxed);
        }
        *credits = sum.min(MAX_OUTSTANDING);
    }

    /// The token the stream was opened with expired.
    fn token_expired(&self) -> Stop {
        self.service
            .shared
            .stream_faults
            .expired
            .fetch_add(1, Ordering::Relaxed);
        self.error(
            Code::Unauthenticated,
            "service.auth.error",
            "An authentication exception occurred. Ensure that the access token, instance URL and tenant ID are valid and the token hasn't expired.",
        )
    }

    /// A dead stream: sends nothing more (no events, no keepalives), reads nothing, and stays
    /// open until the client gives up on it or the org shuts down.
    async fn stay_silent(&self) -> Stop {
        self.service
            .shared
            .stream_faults
            .silenced
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(rpc_id = %self.rpc_id, "subscription went silent");
        tokio::select! {
            () = self.service.shared.shutdown.cancelled() => self.on_cancel(),
            () = self.tx.closed() => Stop::Quiet,
        }
    }

    fn on_cancel(&self) -> Stop {
        if self.service.shared.shutdown.is_cancelled() {
            self.error(
                Code::Unavailable,
                "service.unavailable",
                "The service is unavailable. Try again later.",
            )
        } else {
            Stop::Quiet
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Stream fault knobs
// ---------------------------------------------------------------------------------------------

/// Fault injection for Subscribe streams (set through [`super::SimOrg`]'s knobs).
#[derive(Debug)]
pub(crate) struct StreamFaults {
    /// End every stream with `INTERNAL` after it sent this many events (0: off).
    pub reset_every: AtomicU64,
    /// Refuse every `Subscribe` with `UNAVAILABLE` until then.
    pub refuse_until: std::sync::Mutex<Option<Instant>>,
    /// Bumped to make every open stream go silent.
    pub silences: watch::Sender<u64>,
    /// Subscribe calls refused.
    pub refused: AtomicU64,
    /// Streams ended by `reset_every`.
    pub resets: AtomicU64,
    /// Streams ended because their token expired.
    pub expired: AtomicU64,
    /// Streams that went silent.
    pub silenced: AtomicU64,
    /// Credits of FetchRequests beyond the 100 outstanding, dropped (a client that counts its
    /// credits right never sends any).
    pub over_limit: AtomicU64,
    /// FetchRequests received on Subscribe streams.
    pub requests: AtomicU64,
    /// Simulated client↔org round trip, microseconds (0: none): the credits of a FetchRequest
    /// after the first take effect this long after it arrives (the flow-control round trip of a
    /// real network). Events already requested are not delayed.
    pub rtt_micros: AtomicU64,
}

impl Default for StreamFaults {
    fn default() -> Self {
        StreamFaults {
            reset_every: AtomicU64::new(0),
            refuse_until: std::sync::Mutex::new(None),
            silences: watch::Sender::new(0),
            refused: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            silenced: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rtt_micros: AtomicU64::new(0),
        }
    }
}

/// How often each stream fault fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFaultCounts {
    /// `Subscribe` calls refused with `UNAVAILABLE`.
    pub refused_subscriptions: u64,
    /// Streams ended with `INTERNAL` by [`super::SimOrg::reset_stream_every`].
    pub streams_reset: u64,
    /// Streams ended with `UNAUTHENTICATED` because their token expired.
    pub streams_expired: u64,
    /// Streams that went silent.
    pub streams_silenced: u64,
    /// Credits requested beyond the 100 outstanding (treated as 100, the excess dropped).
    pub credits_over_limit: u64,
    /// FetchRequests received on Subscribe streams (the first of each stream included).
    pub fetch_requests: u64,
}

impl StreamFaults {
    /// `Err(UNAVAILABLE)` while Subscribe calls are refused.
    fn check_refusal(&self, rpc_id: &str) -> Result<(), Status> {
        let until = *lock(&self.refuse_until);
        if until.is_some_and(|t| Instant::now() < t) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(sf_status(
                Code::Unavailable,
                "service.unavailable",
                "The service is unavailable. Try again later.",
                rpc_id,
            ));
        }
        Ok(())
    }

    /// The counters.
    pub fn counts(&self) -> StreamFaultCounts {
        StreamFaultCounts {
            refused_subscriptions: self.refused.load(Ordering::Relaxed),
            streams_reset: self.resets.load(Ordering::Relaxed),
            streams_expired: self.expired.load(Ordering::Relaxed),
            streams_silenced: self.silenced.load(Ordering::Relaxed),
            credits_over_limit: self.over_limit.load(Ordering::Relaxed),
            fetch_requests: self.requests.load(Ordering::Relaxed),
        }
    }
}
