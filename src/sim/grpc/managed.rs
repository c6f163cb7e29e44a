//! `ManagedSubscribe` (Beta): a subscription through a `ManagedEventSubscription` record, whose
//! position the server keeps (Pub/Sub API Developer Guide, "ManagedSubscribe RPC Method (Beta)",
//! "Managed Event Subscriptions (Beta)"; `proto/pubsub_api.proto`, `ManagedFetchRequest`).
//!
//! Contract:
//! * The first `ManagedFetchRequest` names the subscription by `subscription_id` (the record's
//!   Id) or `developer_name`; later requests may omit it. An unknown one: `NOT_FOUND`
//!   (`subscription.managed.not.found`); one in `STOP` state: `FAILED_PRECONDITION`
//!   (`subscription.managed.stopped`); one another stream holds ("A managed subscription is unique
//!   per client and can't be shared"): `FAILED_PRECONDITION` (`subscription.managed.in.use`). The
//!   error codes are chosen: the guide lists none for these.
//! * The stream starts after the committed replay id; with no commit at `defaultReplay`; when the
//!   committed id is no longer in the event bus, at `errorRecoveryReplay`.
//! * Events, keepalives, flow control (`num_requested`, at most 100 outstanding) and the stream's
//!   end are `Subscribe`'s: the stream runs the same [`Subscription`] over FetchRequests derived
//!   from the ManagedFetchRequests.
//! * A request carrying `commit_replay_id_request` stores that replay id on the server and is
//!   answered by a ManagedFetchResponse whose `commit_response` echoes the `commit_request_id`
//!   with the replay id and `process_time` (epoch ms), and the stream's `latest_replay_id`; a
//!   replay id that is not one of this org
//!   gets the response with an `error` and is not stored.
//! * The subscription is released when the stream ends, so a restarted client resumes it.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::service::PubSubService;
use super::status::sf_status;
use super::subscribe::{RESPONSE_BUFFER, Subscription};
use crate::salesforce::proto::{
    CommitReplayRequest, CommitReplayResponse, Error as ProtoError, ErrorCode, FetchRequest,
    FetchResponse, ManagedFetchRequest, ManagedFetchResponse, ReplayPreset,
};
use crate::sim::bus::ReplayIdError;
use crate::sim::managed::{ManagedSubscription, Replay};
use crate::sim::util::{lock, now_ms};

type Reply = Result<ManagedFetchResponse, Status>;

/// One open `ManagedSubscribe` stream.
pub(super) struct ManagedStream {
    pub(super) service: PubSubService,
    pub(super) rpc_id: String,
    pub(super) tx: mpsc::Sender<Reply>,
    pub(super) expires: tokio::time::Instant,
}

/// The channel the stream's responses go through.
pub(super) fn response_channel() -> (mpsc::Sender<Reply>, mpsc::Receiver<Reply>) {
    mpsc::channel(RESPONSE_BUFFER)
}

impl ManagedStream {
    /// Serves the stream until the client ends it or an error does.
    pub(super) async fn run(self, mut requests: Streaming<ManagedFetchRequest>) {
        let Ok(Some(first)) = requests.message().await else {
            return;
        };
        let sub = match self.acquire(&first) {
            Ok(sub) => sub,
            Err(status) => {
                let _ = self.tx.send(Err(status)).await;
                return;
            }
        };
        self.serve(&sub, first, &mut requests).await;
        lock(&self.service.shared.managed).release(&sub.id);
    }

    fn error(&self, code: Code, error_code: &str, message: &str) -> Status {
        sf_status(code, error_code, message, &self.rpc_id)
    }

    /// The subscription the first request names, held for this stream.
    fn acquire(&self, first: &ManagedFetchRequest) -> Result<ManagedSubscription, Status> {
        let key = if first.subscription_id.is_empty() {
            &first.developer_name
        } else {
            &first.subscription_id
        };
        let mut managed = lock(&self.service.shared.managed);
        let Some(found) = managed.find(key).cloned() else {
            return Err(self.error(
                Code::NotFound,
                "subscription.managed.not.found",
                &format!("The managed subscription {key:?} was not found."),
            ));
        };
        if !found.running {
            return Err(self.error(
                Code::FailedPrecondition,
                "subscription.managed.stopped",
                &format!(
                    "The managed subscription {} is in the STOP state.",
                    found.developer_name
                ),
            ));
        }
        managed.acquire(&found.id).ok_or_else(|| {
            self.error(
                Code::FailedPrecondition,
                "subscription.managed.in.use",
                &format!(
                    "The managed subscription {} is already used by another client.",
                    found.developer_name
                ),
            )
        })
    }

    /// The FetchRequest a `Subscribe` stream would open with at the subscription's position.
    fn start(&self, sub: &ManagedSubscription, num_requested: i32) -> FetchRequest {
        let preset = |replay: Replay| match replay {
            Replay::Latest => ReplayPreset::Latest,
            Replay::Earliest => ReplayPreset::Earliest,
        };
        let (replay_preset, replay_id) = match &sub.committed {
            None => (preset(sub.default_replay), Vec::new()),
            Some(id) => match lock(&self.service.shared.bus).check_replay_id(id) {
                Ok(_) => (ReplayPreset::Custom, id.clone()),
                Err(_) => (preset(sub.error_recovery_replay), Vec::new()),
            },
        };
        FetchRequest {
            topic_name: sub.topic_name.clone(),
            replay_preset: replay_preset as i32,
            replay_id,
            num_requested,
            auth_refresh: String::new(),
        }
    }

    async fn serve(
        &self,
        sub: &ManagedSubscription,
        first: ManagedFetchRequest,
        requests: &mut Streaming<ManagedFetchRequest>,
    ) {
        let (fetch_tx, fetch_rx) = mpsc::channel::<Result<FetchRequest, Status>>(16);
        let (inner_tx, mut inner_rx) = mpsc::channel(RESPONSE_BUFFER);
        let subscription = Subscription {
            service: self.service.handle(),
            rpc_id: self.rpc_id.clone(),
            tx: inner_tx,
            expires: self.expires,
        };
        let _ = fetch_tx
            .send(Ok(self.start(sub, first.num_requested)))
            .await;
        tokio::spawn(subscription.run(Box::pin(ReceiverStream::new(fetch_rx))));
        // The position commit responses carry: the latest replay id sent on the stream.
        let mut latest = {
            let bus = lock(&self.service.shared.bus);
            bus.id_of(bus.tip())
        };
        if let Some(commit) = first.commit_replay_id_request
            && !self.send(Ok(self.commit(sub, commit, &latest))).await
        {
            return;
        }
        // The client's requests until it half-closes them; then the subscription goes on
        // serving the credits it holds, as a half-closed Subscribe does (`subscribe.rs`).
        let mut fetch_tx = Some(fetch_tx);
        loop {
            tokio::select! {
                // The client went away (a reset stream reads as a half-close on this side).
                () = self.tx.closed() => return,
                request = requests.message(), if fetch_tx.is_some() => {
                    let request = match request {
                        Ok(Some(request)) => request,
                        Ok(None) => {
                            fetch_tx = None;
                            continue;
                        }
                        Err(_) => return,
                    };
                    if let Some(commit) = request.commit_replay_id_request
                        && !self.send(Ok(self.commit(sub, commit, &latest))).await
                    {
                        return;
                    }
                    if request.num_requested != 0 {
                        let credits = FetchRequest { num_requested: request.num_requested, ..Default::default() };
                        let Some(fetch_tx) = &fetch_tx else { return };
                        if fetch_tx.send(Ok(credits)).await.is_err() {
                            return;
                        }
                    }
                }
                response = inner_rx.recv() => match response {
                    Some(Ok(response)) => {
                        latest.clone_from(&response.latest_replay_id);
                        if !self.send(Ok(managed_response(response))).await {
                            return;
                        }
                    }
                    Some(Err(status)) => {
                        let _ = self.send(Err(status)).await;
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    async fn send(&self, reply: Reply) -> bool {
        tokio::select! {
            sent = self.tx.send(reply) => sent.is_ok(),
            () = self.service.shared.shutdown.cancelled() => false,
        }
    }

    /// Stores a commit and answers it.
    fn commit(
        &self,
        sub: &ManagedSubscription,
        request: CommitReplayRequest,
        latest: &[u8],
    ) -> ManagedFetchResponse {
        let shared = &self.service.shared;
        let checked = lock(&shared.bus).check_replay_id(&request.replay_id);
        let error = match checked {
            Ok(_) => {
                lock(&shared.managed).commit(&sub.id, request.replay_id.to_vec());
                None
            }
            Err(ReplayIdError::Malformed | ReplayIdError::OutOfRange) => Some(ProtoError {
                code: ErrorCode::Commit as i32,
                msg: "The Replay ID to commit isn't valid or is no longer in the event bus.".into(),
            }),
        };
        ManagedFetchResponse {
            events: Vec::new(),
            // Always set: the pozil Node client decodes `latest_replay_id` of every response,
            // commit responses included, and fails on an empty one.
            latest_replay_id: latest.to_vec(),
            rpc_id: self.rpc_id.clone(),
            pending_num_requested: 0,
            commit_response: Some(CommitReplayResponse {
                commit_request_id: request.commit_request_id,
                replay_id: request.replay_id,
                error,
                process_time: now_ms(),
            }),
        }
    }
}

fn managed_response(response: FetchResponse) -> ManagedFetchResponse {
    ManagedFetchResponse {
        events: response.events,
        latest_replay_id: response.latest_replay_id,
        rpc_id: response.rpc_id,
        pending_num_requested: response.pending_num_requested,
        commit_response: None,
    }
}
