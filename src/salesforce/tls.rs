//! How forcebridge reaches Salesforce: TLS trust and the plaintext rule, for the gRPC (Pub/Sub)
//! and the HTTP (OAuth, REST) clients alike.
//!
//! Contract:
//! * `https://` is verified with rustls against the platform's root certificates (tonic: the
//!   native store; reqwest: the platform verifier), plus the PEM bundle of `salesforce.ca_file`
//!   when configured (a corporate TLS-inspecting proxy, a test CA). Both clients get the same
//!   extra roots from one [`ClientTls`].
//! * `http://` is accepted only when `salesforce.allow_plaintext` is set *and* the host is
//!   loopback (`127.0.0.0/8`, `::1`, `localhost`): a simulated org on this machine. The HTTP
//!   client of a config without `allow_plaintext` refuses plaintext URLs altogether, including an
//!   `instance_url` handed back by a login; the login also holds that `instance_url` to this rule
//!   and to Salesforce's domains (`auth/instance.rs`) before the token is sent to it, and the
//!   HTTP client follows a redirect only to a URL that passes this rule (`auth::http_client`).
//! * A certificate the roots do not vouch for is reported as such ([`certificate_error`]) and is
//!   not retried: it does not fix itself.

use std::net::IpAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::SalesforceConfig;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    ReadCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {path}: {message}")]
    BadCa { path: String, message: String },
    /// A URL breaks the plaintext rule or is not a URL.
    #[error("{0}")]
    Url(String),
}

/// Trust settings of the Salesforce clients. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    allow_plaintext: bool,
    /// The extra roots as PEM (what tonic takes).
    extra_pem: Option<Vec<u8>>,
    /// The same roots as DER (what reqwest takes).
    extra_der: Vec<CertificateDer<'static>>,
}

impl ClientTls {
    /// The platform's roots only; plaintext refused.
    pub fn new() -> ClientTls {
        ClientTls::default()
    }

    /// The settings of `salesforce`: `allow_plaintext` and the roots of `ca_file`.
    pub fn from_config(salesforce: &SalesforceConfig) -> Result<ClientTls, TlsError> {
        let tls = ClientTls::new().allow_plaintext(salesforce.allow_plaintext);
        match &salesforce.ca_file {
            Some(path) => tls.with_ca_file(path),
            None => Ok(tls),
        }
    }

    /// Allows `http://` URLs to loopback hosts (a simulated org).
    pub fn allow_plaintext(mut self, allow: bool) -> ClientTls {
        self.allow_plaintext = allow;
        self
    }

    /// Also trusts the CA certificates of a PEM bundle file.
    pub fn with_ca_file(self, path: &Path) -> Result<ClientTls, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::ReadCa {
            path: path.display().to_string(),
            source,
        })?;
        self.with_ca_pem(&pem).map_err(|message| TlsError::BadCa {
            path: path.display().to_string(),
            message,
        })
    }

    /// Also trusts the CA certificates of a PEM bundle; the error says what is wrong with it.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<ClientTls, String> {
        let mut certs = Vec::new();
        for (n, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| format!("certificate {} is not valid PEM: {e}", n + 1))?;
            webpki::anchor_from_trusted_cert(&cert).map_err(|e| {
                format!(
                    "certificate {} is not a usable X.509 certificate: {e}",
                    n + 1
                )
            })?;
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err("no `-----BEGIN CERTIFICATE-----` block found".to_owned());
        }
        self.extra_der.extend(certs);
        let bundle = self.extra_pem.get_or_insert_with(Vec::new);
        bundle.extend_from_slice(pem);
        bundle.push(b'\n');
        Ok(self)
    }

    /// Whether `http://` to loopback is allowed.
    pub(crate) fn plaintext_allowed(&self) -> bool {
        self.allow_plaintext
    }

    /// Checks `url` against the plaintext rule (see [`check_url`]).
    pub(crate) fn check_url(&self, url: &str) -> Result<(), TlsError> {
        check_url(url, self.allow_plaintext).map_err(TlsError::Url)
    }

    /// The extra roots (DER), for the HTTP client ([`crate::salesforce::auth::http_client`]).
    pub(crate) fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_der
    }

    /// The tonic TLS settings: the platform's roots plus the extra roots.
    pub(crate) fn grpc_config(&self) -> tonic::transport::ClientTlsConfig {
        crate::ops::telemetry::install_crypto_provider();
        let config = tonic::transport::ClientTlsConfig::new().with_native_roots();
        match &self.extra_pem {
            Some(pem) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => config,
        }
    }
}

/// The plaintext rule: `https://` always; `http://` only with `allow_plaintext` and a loopback
/// host; anything else is refused. The message says what to change.
pub(crate) fn check_url(url: &str, allow_plaintext: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if !allow_plaintext => Err(format!(
            "`{url}` is plaintext: use https://, or set `salesforce.allow_plaintext: true` for a simulated org on loopback"
        )),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "`{url}` is plaintext to a host that is not loopback: `salesforce.allow_plaintext` allows http:// only to 127.0.0.0/8, ::1 and localhost"
        )),
        _ => Err(format!("`{url}` must start with https://")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The certificate problem behind `error`, if a TLS handshake failed on the server's
/// certificate (unknown issuer, wrong name, expired, …), found anywhere in its source chain.
pub fn certificate_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(err) = next {
        if let Some(found) = as_certificate_error(err) {
            return Some(found);
        }
        // `io::Error::source` skips the error it wraps; look inside it.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = certificate_error(inner)
        {
            return Some(found);
        }
        next = err.source();
    }
    None
}

fn as_certificate_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    match err.downcast_ref::<rustls::Error>()? {
        e @ (rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType) => Some(e.to_string()),
        _ => None,
    }
}

/// The hint added to a certificate error.
pub(crate) const CERTIFICATE_HINT: &str = "the server's certificate is not trusted: a TLS-inspecting proxy or a private CA needs its CA certificate in `salesforce.ca_file`";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn https_is_always_allowed() {
        assert!(check_url("https://login.salesforce.com", false).is_ok());
        assert!(check_url("https://api.pubsub.salesforce.com:7443", true).is_ok());
    }

    #[test]
    fn plaintext_needs_the_flag_and_a_loopback_host() {
        for url in [
            "http://127.0.0.1:8443",
            "http://127.5.0.1",
            "http://[::1]:7443",
            "http://localhost:8443/",
            "http://LOCALHOST",
        ] {
            assert!(check_url(url, true).is_ok(), "{url}");
            let refused = check_url(url, false).unwrap_err();
            assert!(refused.contains("allow_plaintext"), "{refused}");
        }
        for url in [
            "http://example.com",
            "http://10.0.0.1:8443",
            "http://[::2]",
            "http://localhost.example.com",
            "http://0.0.0.0:7443",
        ] {
            let refused = check_url(url, true).unwrap_err();
            assert!(refused.contains("not loopback"), "{url}: {refused}");
        }
        assert!(check_url("ftp://127.0.0.1", true).is_err());
        assert!(check_url("not a url", true).is_err());
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let err = ClientTls::new().with_ca_pem(b"hello").unwrap_err();
        assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
        let err = ClientTls::new()
            .with_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(err.contains("certificate 1"), "{err}");
    }

    #[test]
    fn a_generated_ca_is_accepted() {
        let ca = crate::sim::tls::TestCa::generate().expect("generate");
        let tls = ClientTls::new()
            .with_ca_pem(ca.ca_certificate_pem.as_bytes())
            .expect("valid CA");
        assert_eq!(tls.extra_der.len(), 1);
        crate::salesforce::auth::http_client(&tls, Duration::from_secs(1)).expect("client");
    }
}
