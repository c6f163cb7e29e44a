//! Starting a simulated org: [`SimOrg::start`] binds both listeners, checks the JWT certificate
//! and the TLS identity before anything is spawned (a bad one fails the start), builds the shared
//! state and spawns the Pub/Sub (`grpc`) and HTTP (`http`) servers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bus::Bus;
use super::config::SimConfig;
use super::error::SimError;
use super::grpc::{self, stream_faults::StreamFaults};
use super::handle::SimOrg;
use super::http;
use super::jwt;
use super::org::Org;
use super::rest::cursors::Cursors;
use super::rest::limits::ApiState;
use super::shared::Shared;
use super::tls;

impl SimOrg {
    /// Starts the org with both servers on `127.0.0.1:0`.
    pub async fn start(config: SimConfig) -> Result<SimOrg, SimError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(config, any, any).await
    }

    /// Starts the org with the gRPC and HTTP servers on the given addresses.
    pub async fn start_on(
        config: SimConfig,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> Result<SimOrg, SimError> {
        let jwt_certificate = jwt::parse_certificate(&config.jwt_certificate_pem)
            .map_err(SimError::JwtCertificate)?;
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind { addr, source })
        };
        let grpc_listener = bind(grpc).await?;
        let http_listener = bind(http).await?;
        let local = |l: &tokio::net::TcpListener, addr| {
            l.local_addr()
                .map_err(|source| SimError::Bind { addr, source })
        };
        let grpc_addr = local(&grpc_listener, grpc)?;
        let http_addr = local(&http_listener, http)?;
        // Checked before anything is spawned, so a bad identity fails the start.
        let http_tls = config.tls.as_ref().map(|t| t.rustls_config()).transpose()?;
        let grpc_tls = config.tls.as_ref().map(tls::SimTls::grpc_config);
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut api = ApiState::new(config.daily_api_requests);
        api.latency = config.rest_latency;
        // A replayed capture's events come first, with their captured replay ids (`replay`).
        let mut bus = Bus::default();
        if let Some(capture) = &config.replay {
            super::replay::load_into(&mut bus, capture, std::time::SystemTime::now())?;
        }
        let tip = bus.tip();
        let shared = Arc::new(Shared {
            api: Mutex::new(api),
            config,
            org: Mutex::new(Org::new()?),
            bus: Mutex::new(bus),
            tip: watch::Sender::new(tip),
            tokens: Mutex::new(HashMap::new()),
            resets: watch::Sender::new(0),
            stream_faults: StreamFaults::default(),
            instance_url: format!("{scheme}://{http_addr}"),
            pubsub_endpoint: format!("{scheme}://{grpc_addr}"),
            jwt_certificate,
            shutdown: CancellationToken::new(),
            gap_records: Mutex::new(HashSet::new()),
            cursors: Mutex::new(Cursors::default()),
            bulk: Mutex::new(super::rest::bulk_jobs::BulkJobs::default()),
            logins: Default::default(),
            managed: Mutex::default(),
            recent: Mutex::default(),
        });
        let http_listener = match http_tls {
            Some(config) => http::Incoming::Tls(
                tls::TlsListener::new(http_listener, config, shared.shutdown.clone())
                    .map_err(|source| SimError::Bind { addr: http, source })?,
            ),
            None => http::Incoming::Plain(http_listener),
        };
        let grpc_task = tokio::spawn(grpc::serve(shared.clone(), grpc_listener, grpc_tls));
        let http_task = tokio::spawn(http::serve(shared.clone(), http_listener));
        tracing::info!(
            instance_url = %shared.instance_url,
            pubsub_endpoint = %shared.pubsub_endpoint,
            org_id = %shared.config.org_id,
            "simulated org started"
        );
        Ok(SimOrg {
            shared,
            client_tag: None,
            tasks: Arc::new(Mutex::new(vec![grpc_task, http_task])),
        })
    }
}
