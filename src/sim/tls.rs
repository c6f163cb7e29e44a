//! TLS for the simulated org: a generated test CA ([`TestCa`]) whose server certificate names
//! `127.0.0.1`, `::1` and `localhost`, served by both the gRPC side (tonic's `ServerTlsConfig`)
//! and the HTTP side ([`TlsListener`], rustls through `tokio-rustls`).
//!
//! The CA is made fresh for each org (ECDSA P-256 with `ring`, through `rcgen`), so nothing
//! secret is checked in; clients trust it through `salesforce.ca_file`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// The certificate and key a simulated org serves TLS with.
#[derive(Clone)]
pub struct SimTls {
    /// The server certificate chain (PEM), leaf first.
    pub certificate_chain_pem: String,
    /// The server's private key (PEM, PKCS#8).
    pub private_key_pem: String,
}

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTls").finish_non_exhaustive()
    }
}

/// A generated test CA and a server identity it signed for the loopback names.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate (PEM): what a client puts in `salesforce.ca_file`.
    pub ca_certificate_pem: String,
    /// What the simulated org serves ([`super::SimConfig::tls`]).
    pub server: SimTls,
}

/// Certificate generation or TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SimTlsError {
    /// `rcgen` refused to build a certificate.
    #[error("cannot generate the test certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate or key PEM is unusable.
    #[error("the TLS identity is unusable: {0}")]
    Identity(String),
}

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

impl TestCa {
    /// A fresh CA and a server certificate for [`SERVER_NAMES`] signed by it.
    pub fn generate() -> Result<TestCa, SimTlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "forcebridge simulated org test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_certificate = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(
            SERVER_NAMES
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
        )?;
        server
            .distinguished_name
            .push(DnType::CommonName, "forcebridge simulated org");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_certificate = server.signed_by(&server_key, &issuer)?;
        Ok(TestCa {
            ca_certificate_pem: ca_certificate.pem(),
            server: SimTls {
                certificate_chain_pem: server_certificate.pem(),
                private_key_pem: server_key.serialize_pem(),
            },
        })
    }
}

impl SimTls {
    /// The rustls server configuration of the HTTP side (HTTP/1.1, the protocol it serves).
    pub(crate) fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>, SimTlsError> {
        crate::ops::telemetry::install_crypto_provider();
        let bad = |e: &dyn std::fmt::Display| SimTlsError::Identity(e.to_string());
        let chain = CertificateDer::pem_slice_iter(self.certificate_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let key =
            PrivateKeyDer::from_pem_slice(self.private_key_pem.as_bytes()).map_err(|e| bad(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The tonic server TLS configuration of the gRPC side.
    pub(crate) fn grpc_config(&self) -> tonic::transport::ServerTlsConfig {
        crate::ops::telemetry::install_crypto_provider();
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.certificate_chain_pem,
                &self.private_key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An `axum` listener that accepts TCP connections and hands on those whose TLS handshake
/// succeeded. Handshakes run concurrently, so a slow or failing client holds up nobody; a failed
/// handshake is logged at debug level and dropped.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves handshakes on `listener` until `shutdown` fires.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(ok) => ok,
                    Err(error) => {
                        tracing::debug!(%error, "simulated org: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "simulated org: TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "simulated org: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (shutdown): wait for the server's graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
