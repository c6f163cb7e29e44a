//! The Salesforce Pub/Sub API client (gRPC, tonic).
//!
//! Contract:
//! * Every call carries the `accesstoken`, `instanceurl` and `tenantid` metadata of the *current*
//!   session ([`SessionHandle`]), so a re-login applies to the next call without a rebuild.
//! * TLS (rustls, the platform's root certificates plus `salesforce.ca_file`, see [`ClientTls`])
//!   for `https://` endpoints; `http://` only where the config allows plaintext and the host is
//!   loopback (a simulated org). A refused server certificate is [`PubSubError::Certificate`],
//!   fatal: retrying does not fix it. HTTP/2 keepalive pings detect half-open connections.
//! * A [`Subscription`] is one `Subscribe` stream. It never has more than `batch` (≤ 100) events
//!   outstanding — requested from the server, or received and not yet handed on — and tops credits
//!   up as the caller takes events ([`Subscription::next`]), before the server runs dry, so the
//!   stream neither stalls waiting for a whole batch nor buffers without bound. The count is the
//!   client's own (credits requested less events received): a response's `pending_num_requested`
//!   leaves out requests still on their way, so trusting it would ask for the same credits twice.
//!   An empty (keepalive) response, sent after the server had nothing to send for a while,
//!   resynchronises the count with the server's.
//! * A stream that delivers nothing, not even a keepalive, for `idle_timeout` is reported as
//!   [`PubSubError::Silent`] so the caller can rebuild it.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::retry::{Directive, classify_status};
use crate::salesforce::auth::SessionHandle;
use crate::salesforce::proto::pub_sub_client::PubSubClient;
use crate::salesforce::proto::{
    ConsumerEvent, FetchRequest, FetchResponse, ReplayPreset, SchemaRequest, TopicInfo,
    TopicRequest,
};
use crate::salesforce::tls::ClientTls;

/// The most events a Subscribe call may have outstanding (Salesforce's limit).
pub const MAX_OUTSTANDING: u32 = 100;

/// Pub/Sub client failures.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    /// The endpoint URL is not usable.
    #[error("invalid Pub/Sub endpoint `{endpoint}`: {message}")]
    Endpoint { endpoint: String, message: String },
    /// The channel could not be established.
    #[error("cannot connect to the Pub/Sub API at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS handshake failed on the server's certificate.
    #[error(
        "cannot connect to the Pub/Sub API at {endpoint}: {reason} ({})",
        crate::salesforce::tls::CERTIFICATE_HINT
    )]
    Certificate { endpoint: String, reason: String },
    /// An RPC failed; the Salesforce error code is in the status trailers.
    #[error("{rpc} on {topic} failed: {}{}", .status.message(), error_code_suffix(.status))]
    Rpc {
        rpc: &'static str,
        topic: String,
        status: tonic::Status,
    },
    /// The stream delivered nothing, not even a keepalive, for too long.
    #[error("Subscribe on {topic} delivered nothing for {after:?}: treating the stream as dead")]
    Silent { topic: String, after: Duration },
    /// The server ended the stream (e.g. after the 60 s no-credit rule).
    #[error("Subscribe on {topic} was closed by the server")]
    Closed { topic: String },
    /// The session's credentials cannot be sent as metadata.
    #[error("the session's {field} cannot be sent as gRPC metadata")]
    Metadata { field: &'static str },
}

impl PubSubError {
    /// An RPC refused because the org does not know what it names (`NOT_FOUND`, or
    /// `INVALID_ARGUMENT` for an id it cannot parse): permanent for that name.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PubSubError::Rpc { status, .. }
            if matches!(status.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument))
    }
}

fn error_code_suffix(status: &tonic::Status) -> String {
    crate::retry::error_code(status)
        .map(|c| format!(" (error-code {c})"))
        .unwrap_or_default()
}

impl PubSubError {
    /// What the supervisor should do about this error.
    pub fn directive(&self) -> Directive {
        match self {
            PubSubError::Rpc { status, .. } => classify_status(status),
            PubSubError::Connect { .. }
            | PubSubError::Silent { .. }
            | PubSubError::Closed { .. } => Directive::Retry,
            PubSubError::Endpoint { .. }
            | PubSubError::Certificate { .. }
            | PubSubError::Metadata { .. } => Directive::Stop,
        }
    }

    /// The gRPC status, when the error came from an RPC.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            PubSubError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// Adds the session's auth metadata to every call.
#[derive(Clone)]
pub struct AuthInterceptor {
    session: SessionHandle,
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let session = self.session.current();
        let metadata = request.metadata_mut();
        insert(
            metadata,
            "accesstoken",
            session.access_token.expose_secret(),
        )?;
        insert(metadata, "instanceurl", &session.instance_url)?;
        insert(metadata, "tenantid", &session.org_id)?;
        Ok(request)
    }
}

fn insert(metadata: &mut MetadataMap, key: &'static str, value: &str) -> Result<(), tonic::Status> {
    let mut value = AsciiMetadataValue::try_from(value).map_err(|_| {
        tonic::Status::invalid_argument(format!("{key} is not valid ASCII metadata"))
    })?;
    // `Debug` then prints `Sensitive`, and HPACK never indexes it (as reqwest's `bearer_auth`).
    value.set_sensitive(key == "accesstoken");
    metadata.insert(key, value);
    Ok(())
}

type Inner = PubSubClient<InterceptedService<Channel, AuthInterceptor>>;

/// A connected Pub/Sub client; cheap to clone (one HTTP/2 connection, many streams).
#[derive(Clone)]
pub struct PubSub {
    inner: Inner,
    /// Size limit of one decoded message; FetchResponses carry up to 100 events of ≤ 1 MB.
    max_message_size: usize,
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStart {
    /// New events only.
    Latest,
    /// The oldest retained event.
    Earliest,
    /// Strictly after this replay id.
    After(Bytes),
}

impl PubSub {
    /// Connects to `endpoint` (`https://api.pubsub.salesforce.com:7443`, or `http://` to a
    /// loopback simulated org when `tls` allows plaintext).
    pub async fn connect(
        endpoint: &str,
        session: SessionHandle,
        tls: &ClientTls,
    ) -> Result<PubSub, PubSubError> {
        let bad = |message: String| PubSubError::Endpoint {
            endpoint: endpoint.to_owned(),
            message,
        };
        tls.check_url(endpoint).map_err(|e| bad(e.to_string()))?;
        let mut builder = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if endpoint.starts_with("https://") {
            builder = builder
                .tls_config(tls.grpc_config())
                .map_err(|e| bad(e.to_string()))?;
        }
        let channel = builder.connect().await.map_err(|source| {
            match crate::salesforce::tls::certificate_error(&source) {
                Some(reason) => PubSubError::Certificate {
                    endpoint: endpoint.to_owned(),
                    reason,
                },
                None => PubSubError::Connect {
                    endpoint: endpoint.to_owned(),
                    source,
                },
            }
        })?;
        let max_message_size = 128 * 1024 * 1024;
        let inner = PubSubClient::with_interceptor(channel, AuthInterceptor { session })
            .max_decoding_message_size(max_message_size);
        Ok(PubSub {
            inner,
            max_message_size,
        })
    }

    /// `GetTopic`: whether the topic exists, may be subscribed to, and its current schema id.
    pub async fn get_topic(&self, topic: &str) -> Result<TopicInfo, PubSubError> {
        let request = TopicRequest {
            topic_name: topic.to_owned(),
        };
        self.inner
            .clone()
            .get_topic(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| PubSubError::Rpc {
                rpc: "GetTopic",
                topic: topic.to_owned(),
                status,
            })
    }

    /// Opens a `Subscribe` stream on `topic` with `batch` (1..=100) credits.
    pub async fn subscribe(
        &self,
        topic: &str,
        start: ReplayStart,
        batch: u32,
        idle_timeout: Duration,
    ) -> Result<Subscription, PubSubError> {
        let batch = batch.clamp(1, MAX_OUTSTANDING);
        let (preset, replay_id) = match start {
            ReplayStart::Latest => (ReplayPreset::Latest, Bytes::new()),
            ReplayStart::Earliest => (ReplayPreset::Earliest, Bytes::new()),
            ReplayStart::After(id) => (ReplayPreset::Custom, id),
        };
        let (requests, rx) = mpsc::channel(8);
        let first = FetchRequest {
            topic_name: topic.to_owned(),
            replay_preset: preset as i32,
            replay_id: replay_id.to_vec(),
            num_requested: batch as i32,
            auth_refresh: String::new(),
        };
        // The channel is empty and owned here: this cannot fail.
        let _ = requests.try_send(first);
        let rpc_error = |status| PubSubError::Rpc {
            rpc: "Subscribe",
            topic: topic.to_owned(),
            status,
        };
        let responses = self
            .inner
            .clone()
            .subscribe(ReceiverStream::new(rx))
            .await
            .map_err(rpc_error)?
            .into_inner();
        Ok(Subscription {
            topic: topic.to_owned(),
            requests,
            responses,
            batch,
            outstanding: batch,
            buffered: VecDeque::new(),
            idle_timeout,
        })
    }

    /// The decoding limit of one gRPC message.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }
}

impl PubSub {
    /// `GetSchema`: the Avro schema JSON of `schema_id`. A failure is [`PubSubError::Rpc`];
    /// [`PubSubError::is_not_found`] tells an id the org does not know.
    pub async fn get_schema(&self, schema_id: &str) -> Result<String, PubSubError> {
        let request = SchemaRequest {
            schema_id: schema_id.to_owned(),
        };
        match self.inner.clone().get_schema(request).await {
            Ok(response) => Ok(response.into_inner().schema_json),
            Err(status) => Err(PubSubError::Rpc {
                rpc: "GetSchema",
                topic: schema_id.to_owned(),
                status,
            }),
        }
    }
}

/// What a subscription yields.
#[derive(Debug)]
pub enum Delivery {
    /// One event, in replay order.
    Event(ConsumerEvent),
    /// An empty FetchResponse: nothing new, but the position advanced to `latest_replay_id`.
    Keepalive { latest_replay_id: Bytes },
}

/// One `Subscribe` stream with its flow-control credits.
pub struct Subscription {
    topic: String,
    requests: mpsc::Sender<FetchRequest>,
    responses: tonic::Streaming<FetchResponse>,
    batch: u32,
    /// Credits the server still owes us.
    outstanding: u32,
    /// Received, not yet handed on.
    buffered: VecDeque<ConsumerEvent>,
    idle_timeout: Duration,
}

impl Subscription {
    /// The channel name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Events requested from the server and not yet received, plus events received and not yet
    /// handed on: never more than the batch size.
    pub fn credits_in_hand(&self) -> u32 {
        self.outstanding + self.buffered.len() as u32
    }

    /// The next event or keepalive. Calling it again means the previous event was handed on, so
    /// credits are topped up here. `Ok(None)` never happens; the end of a stream is an error
    /// ([`PubSubError::Closed`]) so that the caller always resubscribes. Events received before
    /// the stream ended are handed on first, so a resubscription never fetches them again.
    pub async fn next(&mut self) -> Result<Delivery, PubSubError> {
        loop {
            if let Err(err) = self.top_up().await {
                // The stream ended (the server closes the request side with it): events already
                // received are still handed on, so they are not fetched (and counted) twice.
                return match self.buffered.pop_front() {
                    Some(event) => Ok(Delivery::Event(event)),
                    None => Err(err),
                };
            }
            if let Some(event) = self.buffered.pop_front() {
                return Ok(Delivery::Event(event));
            }
            let response =
                match tokio::time::timeout(self.idle_timeout, self.responses.message()).await {
                    Err(_) => {
                        return Err(PubSubError::Silent {
                            topic: self.topic.clone(),
                            after: self.idle_timeout,
                        });
                    }
                    Ok(Err(status)) => {
                        return Err(PubSubError::Rpc {
                            rpc: "Subscribe",
                            topic: self.topic.clone(),
                            status,
                        });
                    }
                    Ok(Ok(None)) => {
                        return Err(PubSubError::Closed {
                            topic: self.topic.clone(),
                        });
                    }
                    Ok(Ok(Some(response))) => response,
                };
            if response.events.is_empty() {
                // An empty response comes when the server had nothing to send for a while, with
                // every request it received counted: its count of the credits it still owes is
                // the truth (a server that forgot some must not leave the stream waiting).
                self.outstanding = u32::try_from(response.pending_num_requested)
                    .unwrap_or(0)
                    .min(self.batch);
                return Ok(Delivery::Keepalive {
                    latest_replay_id: Bytes::from(response.latest_replay_id),
                });
            }
            // With events, `pending_num_requested` leaves out the requests still on their way
            // to the server; counting it as the truth would request the same credits again.
            self.outstanding = self
                .outstanding
                .saturating_sub(u32::try_from(response.events.len()).unwrap_or(u32::MAX));
            self.buffered.extend(response.events);
        }
    }

    /// Requests more events once at least a quarter of the batch is free, so the server is never
    /// left without credit while we still have work in hand.
    async fn top_up(&mut self) -> Result<(), PubSubError> {
        let in_hand = self.outstanding + self.buffered.len() as u32;
        let free = self.batch.saturating_sub(in_hand);
        let threshold = (self.batch / 4).max(1);
        if free < threshold {
            return Ok(());
        }
        let request = FetchRequest {
            num_requested: free as i32,
            ..Default::default()
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| PubSubError::Closed {
                topic: self.topic.clone(),
            })?;
        self.outstanding += free;
        Ok(())
    }
}
