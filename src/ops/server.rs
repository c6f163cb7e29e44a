//! The ops server's accept loop: HTTP/1.1 with a header-read timeout, a request timeout and a
//! connection limit that a flood of idle or half-sent connections cannot use to starve
//! `/healthz` (issue 19, item 12).
//!
//! Contract:
//! * A connection must send a request's whole header within `header_read_timeout` (also between
//!   the requests of a kept-alive connection), or hyper closes it.
//! * A request is answered within `request_timeout`; past it the answer is 503
//!   `request timed out` and the handler is dropped.
//! * At most `max_connections` connections are open. A connection accepted over the limit closes
//!   the oldest open connection that is not in the middle of a request (an idle or half-sent
//!   one: the kind a flood holds); when every connection is mid-request, the new one waits for
//!   a slot (each ends within `request_timeout`). So a prober's new connection is served unless
//!   `max_connections` requests are running at once.
//! * When `stop` fires, no connection is accepted; idle ones close, running requests finish
//!   (within `request_timeout`), then [`serve`] returns.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// The limits of the ops server (`ops.header_read_timeout`, `ops.request_timeout`,
/// `ops.max_connections`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// A request's header must arrive within this.
    pub header_read_timeout: Duration,
    /// A request is answered within this.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    /// The defaults of the `ops` config keys: 5s, 10s, 64.
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

impl From<&crate::config::OpsConfig> for ServerLimits {
    fn from(ops: &crate::config::OpsConfig) -> Self {
        ServerLimits {
            header_read_timeout: ops.header_read_timeout,
            request_timeout: ops.request_timeout,
            max_connections: ops.max_connections,
        }
    }
}

/// One open connection, as the limit sees it.
struct Open {
    since: Instant,
    /// A request is being answered.
    busy: Arc<AtomicBool>,
    /// Closes the connection (dropped mid-read).
    close: CancellationToken,
}

/// The open connections; `freed` is notified whenever one ends.
#[derive(Default)]
struct Connections {
    open: Mutex<(u64, HashMap<u64, Open>)>,
    freed: Notify,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Open>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one more connection: at once when under `max`, else by closing the
    /// oldest connection not in a request, else by waiting for one to end. `false` when `stop`
    /// fired first.
    async fn make_room(&self, max: usize, stop: &CancellationToken) -> bool {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut open = self.lock();
                if open.1.len() < max {
                    return true;
                }
                let oldest_idle = open
                    .1
                    .iter()
                    .filter(|(_, c)| !c.busy.load(Ordering::Acquire))
                    .min_by_key(|(_, c)| c.since)
                    .map(|(id, _)| *id);
                if let Some(id) = oldest_idle
                    && let Some(evicted) = open.1.remove(&id)
                {
                    evicted.close.cancel();
                    return true;
                }
            }
            tokio::select! {
                () = &mut freed => {}
                () = stop.cancelled() => return false,
            }
        }
    }

    /// Registers a new connection; its id and how to watch and close it.
    fn add(&self) -> (u64, Arc<AtomicBool>, CancellationToken) {
        let busy = Arc::new(AtomicBool::new(false));
        let close = CancellationToken::new();
        let mut open = self.lock();
        open.0 += 1;
        let id = open.0;
        let entry = Open {
            since: Instant::now(),
            busy: busy.clone(),
            close: close.clone(),
        };
        open.1.insert(id, entry);
        (id, busy, close)
    }

    fn remove(&self, id: u64) {
        self.lock().1.remove(&id);
        self.freed.notify_waiters();
    }
}

/// Serves `app` on `listener` within `limits` until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let connections = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    while connections.make_room(limits.max_connections, &stop).await {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A connection that failed before it was accepted (reset, out of descriptors):
                // the next one may do better.
                Err(error) => {
                    tracing::debug!(%error, "ops server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let (id, busy, close) = connections.add();
        let connections = connections.clone();
        let (app, stop) = (app.clone(), stop.clone());
        tasks.spawn(async move {
            connection(stream, app, limits, busy, close, stop).await;
            connections.remove(id);
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Serves one connection until it ends, is closed by the limit, or `stop` fires.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ServerLimits,
    busy: Arc<AtomicBool>,
    close: CancellationToken,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (app, busy) = (app.clone(), busy.clone());
        async move {
            busy.store(true, Ordering::Release);
            let answer = tokio::time::timeout(request_timeout, app.oneshot(request)).await;
            busy.store(false, Ordering::Release);
            Ok::<Response, Infallible>(match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = close.cancelled() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let bound = limits.header_read_timeout + limits.request_timeout;
            let _ = tokio::time::timeout(bound, conn).await;
        }
    }
}
