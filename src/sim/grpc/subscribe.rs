//! One Subscribe stream of the Pub/Sub service, with the documented flow control: credits from
//! `num_requested` add up to at most 100 outstanding; a FetchResponse carries at most the
//! outstanding number of events, the credits still owed (`pending_num_requested`) and
//! `latest_replay_id`. An empty FetchResponse is sent after `keepalive_interval` without any
//! response; the stream is closed when no credits are pending and no FetchRequest arrived within
//! `idle_timeout`. A client that half-closes its request stream has only stopped asking: it
//! still gets what its credits cover. Responses go through a small bounded channel, so a slow reader stalls the
//! subscription (HTTP/2 backpressure). The stream ends with `UNAUTHENTICATED` when its token
//! expires, and as the stream fault knobs ([`StreamFaults`](super::stream_faults::StreamFaults))
//! say. Events on `/data/ChangeEvents` carry a blank `schema_id`, as real orgs send them
//! (pozil/pub-sub-api-node-client#34: "The schema ID can't be blank" from `GetSchema` after
//! subscribing to `/data/ChangeEvents`; forcedotcom/pub-sub-api#63: "Schema ID is not sent from
//! the server" for that channel); a custom channel's events carry theirs (the capture in
//! pozil/pub-sub-api-node-client#27 has `schemaId` on a custom channel). A replayed capture's
//! channel sends each event with the schema id it carried on that channel in the capture.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

use super::service::PubSubService;
use super::status::sf_status;
use crate::salesforce::proto::{ConsumerEvent, FetchRequest, FetchResponse, ReplayPreset};
use crate::sim::bus::{Channel, LoggedEvent, ReplayIdError};
use crate::sim::util::lock;

/// Most events a subscriber may have outstanding.
pub const MAX_OUTSTANDING: i32 = 100;

/// Capacity of the channel between a subscription task and its response stream.
pub(super) const RESPONSE_BUFFER: usize = 2;

/// Message of `…subscription.fetch.replayid.corrupted`, as documented.
pub const REPLAY_ID_CORRUPTED_MSG: &str = "The Replay ID validation failed. Ensure that the replay_id field value in FetchRequest is valid and refers to an event that is within the retention window.";

/// One Subscribe stream.
pub(super) struct Subscription {
    pub(super) service: PubSubService,
    pub(super) rpc_id: String,
    pub(super) tx: mpsc::Sender<Result<FetchResponse, Status>>,
    /// When the token the stream was opened with expires: the stream ends then.
    pub(super) expires: Instant,
}

/// Why the subscription loop stopped sending.
enum Stop {
    /// The client went away or the stream must simply end.
    Quiet,
    /// End the stream with this status.
    Fail(Status),
}

/// The FetchRequests of a subscription: the client's stream (`Subscribe`), or those a managed
/// subscription derives from its ManagedFetchRequests (`managed`).
pub(super) type Inbound =
    std::pin::Pin<Box<dyn Stream<Item = Result<FetchRequest, Status>> + Send>>;

/// The next request, as `Streaming::message` gives it. Once the client has half-closed its
/// request stream (`Ok(None)`), `inbound` never yields again: the client has only stopped
/// asking, so the stream goes on serving the credits it holds and then closes as idle (see
/// [`Subscription::on_request`]).
async fn message(inbound: &mut Inbound) -> Result<Option<FetchRequest>, Status> {
    let message = inbound.next().await.transpose();
    if let Ok(None) = message {
        *inbound = Box::pin(futures_util::stream::pending());
    }
    message
}

impl Subscription {
    pub(super) async fn run(self, mut inbound: Inbound) {
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

    /// Reads the first FetchRequest: the topic, its channel, the first credits and the cursor
    /// the replay preset starts from.
    async fn open(&self, inbound: &mut Inbound) -> Result<(String, Channel, i32, u64), Stop> {
        let shared = &self.service.shared;
        let first = tokio::select! {
            m = message(inbound) => m,
            () = shared.shutdown.cancelled() => return Err(Stop::Quiet),
            () = self.tx.closed() => return Err(Stop::Quiet),
        };
        let first = match first {
            Ok(Some(req)) => req,
            _ => return Err(Stop::Quiet),
        };
        let topic = first.topic_name.clone();
        let channel = match self.service.channel(&topic, &self.rpc_id) {
            Ok(c) => c,
            Err(status) => return Err(Stop::Fail(status)),
        };
        let mut credits = 0;
        match self.check_credits(&first) {
            Ok(n) => self.add_credits(&mut credits, n),
            Err(stop) => return Err(stop),
        }
        let cursor = self.start_cursor(&first)?;
        Ok((topic, channel, credits, cursor))
    }

    /// The cursor of the first FetchRequest's replay preset (expired events dropped first).
    fn start_cursor(&self, first: &FetchRequest) -> Result<u64, Stop> {
        let shared = &self.service.shared;
        let mut bus = lock(&shared.bus);
        bus.expire(shared.config.retention);
        match ReplayPreset::try_from(first.replay_preset) {
            Ok(ReplayPreset::Latest) => Ok(bus.tip()),
            Ok(ReplayPreset::Earliest) => Ok(bus.earliest_cursor()),
            Ok(ReplayPreset::Custom) if first.replay_id.is_empty() => Err(self.error(
                Code::InvalidArgument,
                "subscription.fetch.replayid.validation.failed",
                "The Replay ID validation failed. A replay_id is required with the CUSTOM replay preset.",
            )),
            Ok(ReplayPreset::Custom) => match bus.check_replay_id(&first.replay_id) {
                Ok(seq) => Ok(seq),
                Err(ReplayIdError::Malformed | ReplayIdError::OutOfRange) => Err(self.error(
                    Code::InvalidArgument,
                    "subscription.fetch.replayid.corrupted",
                    REPLAY_ID_CORRUPTED_MSG,
                )),
            },
            Err(_) => Err(self.error(
                Code::InvalidArgument,
                "subscription.fetch.request.invalid",
                "The FetchRequest has an unknown replay_preset.",
            )),
        }
    }

    /// A FetchResponse carrying `events` of `channel` (none for a keepalive).
    fn response(
        &self,
        channel: &Channel,
        events: &[Arc<LoggedEvent>],
        cursor: u64,
        credits: i32,
    ) -> FetchResponse {
        let blank_schema_id = matches!(channel.live(), Channel::AllChanges);
        // A replayed capture's channel serves each event with the schema id it carried there.
        let replayed = match channel {
            Channel::Replayed { topic, .. } => Some(topic.as_str()),
            _ => None,
        };
        // The replay ids on the wire: the simulator's own, or a replayed capture's (bus.rs);
        // the bus is locked for them only, not while the events are copied.
        let (ids, latest) = {
            let bus = lock(&self.service.shared.bus);
            let ids: Vec<Vec<u8>> = events.iter().map(|e| bus.id_of(e.seq)).collect();
            (ids, bus.id_of(cursor))
        };
        FetchResponse {
            events: events
                .iter()
                .zip(ids)
                .map(|(e, replay_id)| {
                    let mut event = e.event.clone();
                    let captured = replayed.and_then(|topic| e.source.captured_schema_id(topic));
                    if let Some(id) = captured {
                        id.clone_into(&mut event.schema_id);
                    } else if blank_schema_id {
                        event.schema_id.clear();
                    }
                    ConsumerEvent {
                        event: Some(event),
                        replay_id: replay_id.into(),
                    }
                })
                .collect(),
            latest_replay_id: latest,
            rpc_id: self.rpc_id.clone(),
            pending_num_requested: credits,
        }
    }

    async fn serve(&self, inbound: &mut Inbound) -> Stop {
        let shared = self.service.shared.clone();
        let mut resets = shared.resets.subscribe();
        resets.mark_unchanged();
        let mut silences = shared.stream_faults.silences.subscribe();
        silences.mark_unchanged();
        let (topic, channel, mut credits, mut cursor) = match self.open(inbound).await {
            Ok(opened) => opened,
            Err(stop) => return stop,
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
            while let Some(message) = message(inbound).now_or_never() {
                match self.on_request(message, &topic, &mut credits, &mut in_flight) {
                    Ok(true) => idle_since = None,
                    Ok(false) => {}
                    Err(stop) => return stop,
                }
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
                    let response = self.response(&channel, &events, cursor, credits);
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
                message = message(inbound) => {
                    match self.on_request(message, &topic, &mut credits, &mut in_flight) {
                        Ok(true) => idle_since = None,
                        Ok(false) => {}
                        Err(stop) => return stop,
                    }
                }
                () = sleep_until_opt(in_flight.front().map(|(at, _)| *at)), if !in_flight.is_empty() => {}
                changed = tip.changed(), if credits > 0 => {
                    if changed.is_err() {
                        return Stop::Quiet;
                    }
                }
                () = tokio::time::sleep_until(last_sent + keepalive) => {
                    let response = self.response(&channel, &[], cursor, credits);
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
    /// round trip (`Ok(true)`). A half-closed request stream (`Ok(false)`) does not end the
    /// subscription: the client asked for the credits it holds, and gRPC lets the server go on
    /// sending after the client's half-close (gRPC over HTTP/2: a client's END_STREAM ends its
    /// own side only). The Pub/Sub API guide says nothing of a half-close, so the stream treats
    /// it as a client that stopped sending FetchRequests: events up to the credits it holds,
    /// keepalives, then the idle close once no credit is left (README.md, Known
    /// differences).
    fn on_request(
        &self,
        message: Result<Option<FetchRequest>, Status>,
        topic: &str,
        credits: &mut i32,
        in_flight: &mut std::collections::VecDeque<(Instant, i32)>,
    ) -> Result<bool, Stop> {
        let req = match message {
            Ok(Some(req)) => req,
            Ok(None) => {
                tracing::debug!(rpc_id = %self.rpc_id, "the client half-closed its request stream");
                return Ok(false);
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
        Ok(true)
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
