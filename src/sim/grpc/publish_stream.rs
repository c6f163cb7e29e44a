//! `PublishStream`: a bidirectional stream of `PublishRequest`s answered by one
//! `PublishResponse` each, as the Pub/Sub API Developer Guide documents it ("PublishStream RPC
//! Method"; `proto/pubsub_api.proto`, the comment of `rpc PublishStream`).
//!
//! Contract:
//! * Requests may be pipelined: the client need not wait for a response before sending the next
//!   request; responses come in request order, one per request, with one `PublishResult` per
//!   event carrying the event's `correlation_key` (the `ProducerEvent.id` the publisher set) and
//!   its replay id, or an error. Events land on the bus exactly as `Publish`'s do
//!   (`PubSubService::publish_one`).
//! * The first request names the topic, which must be a Platform Event channel
//!   (`PERMISSION_DENIED` otherwise, as `Publish`); a later request naming another topic ends the
//!   stream with `INVALID_ARGUMENT` (the proto's comment). A later request with no topic publishes
//!   on the first one.
//! * An event over 1 MB is refused in its own result; the others of its request are published
//!   (as by `Publish`: `PubSubService::publish_one`).
//! * A request over the gRPC 4 MB limit ends the stream (same page: "If your PublishRequest
//!   exceeds 4 MB, the publish call fails … and the server closes the stream"). tonic's decoder
//!   enforces the limit (`max_decoding_message_size`, 4 MiB by default), and the stream ends with
//!   its error.
//! * The stream is closed when no request with at least one event arrives for
//!   `SimConfig::publish_idle_timeout` (Salesforce: 70 s, the proto's comment "A client must send
//!   a valid publish request with one or more events every 70 seconds to hold on to the stream.
//!   Otherwise, the server closes the stream and notifies the client"); the notification is the
//!   status `ABORTED` with the error code `publish.stream.idle`, chosen: the guide names neither.
//! * A request with no event is refused (`INVALID_ARGUMENT`, as `Publish`) and ends the stream.
//! * Every error carries the `error-code` and `rpc-id` trailers (`status::sf_status`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};

use super::service::PubSubService;
use super::status::sf_status;
use crate::salesforce::proto::{PublishRequest, PublishResponse};
use crate::sim::bus::Channel;

/// Responses buffered for a slow reader before the stream stops reading requests.
const RESPONSE_BUFFER: usize = 16;

/// What the stream's responses go through.
type Reply = Result<PublishResponse, Status>;

/// One open `PublishStream`.
pub(super) struct PublishStream {
    pub(super) service: PubSubService,
    pub(super) rpc_id: String,
    pub(super) tx: mpsc::Sender<Reply>,
}

/// The channel the stream's responses go through.
pub(super) fn response_channel() -> (mpsc::Sender<Reply>, mpsc::Receiver<Reply>) {
    mpsc::channel(RESPONSE_BUFFER)
}

impl PublishStream {
    /// Serves the stream until the client ends it, an error ends it, or it goes idle.
    pub(super) async fn run(self, mut requests: Streaming<PublishRequest>) {
        let idle = self.service.shared.config.publish_idle_timeout;
        let shutdown = self.service.shared.shutdown.clone();
        let mut topic: Option<(String, String)> = None;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, requests.next()) => next,
                () = shutdown.cancelled() => return,
            };
            let result = match next {
                Err(_) => Err(self.idle_status(idle)),
                Ok(None) => return,
                Ok(Some(Err(status))) => {
                    // What the transport refused (a request over the 4 MB limit): the stream
                    // ends with that error.
                    Err(sf_status(
                        status.code(),
                        "publish.request.invalid",
                        status.message(),
                        &self.rpc_id,
                    ))
                }
                Ok(Some(Ok(request))) => self.answer(&mut topic, request),
            };
            let end = result.is_err();
            if self.tx.send(result).await.is_err() || end {
                return;
            }
        }
    }

    fn idle_status(&self, idle: Duration) -> Status {
        sf_status(
            Code::Aborted,
            "publish.stream.idle",
            &format!(
                "The PublishStream was closed because no publish request with events arrived within {} seconds.",
                idle.as_secs()
            ),
            &self.rpc_id,
        )
    }

    /// The response to one request; an error ends the stream.
    fn answer(
        &self,
        topic: &mut Option<(String, String)>,
        request: PublishRequest,
    ) -> Result<PublishResponse, Status> {
        let name = match topic {
            Some((first, name)) => {
                if !request.topic_name.is_empty() && request.topic_name != *first {
                    return Err(sf_status(
                        Code::InvalidArgument,
                        "publish.topic.mismatch",
                        &format!(
                            "The topic {} doesn't match the topic {first} of the first PublishRequest of this stream.",
                            request.topic_name
                        ),
                        &self.rpc_id,
                    ));
                }
                name.clone()
            }
            None => {
                let name = self.platform_event(&request.topic_name)?;
                *topic = Some((request.topic_name.clone(), name.clone()));
                name
            }
        };
        if request.events.is_empty() {
            return Err(sf_status(
                Code::InvalidArgument,
                "publish.event.count.invalid",
                "The PublishRequest must contain at least one event.",
                &self.rpc_id,
            ));
        }
        Ok(self
            .service
            .publish_all(&name, request.events, &self.rpc_id))
    }

    /// The Platform Event a topic names, or the error `Publish` gives.
    fn platform_event(&self, topic_name: &str) -> Result<String, Status> {
        match self.service.channel(topic_name, &self.rpc_id)?.live() {
            Channel::PlatformEvent(name) => Ok(name.clone()),
            _ => Err(publish_denied(topic_name, &self.rpc_id)),
        }
    }
}

/// `PERMISSION_DENIED` for publishing on a channel that isn't a Platform Event's.
pub(super) fn publish_denied(topic_name: &str, rpc_id: &str) -> Status {
    sf_status(
        Code::PermissionDenied,
        "topic.meta.permission",
        &format!("Publishing to topic {topic_name} is not allowed."),
        rpc_id,
    )
}
