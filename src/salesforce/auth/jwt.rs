//! The JWT bearer flow's assertion: the claims ([`JwtClaims`], `aud` from [`jwt_audience`]), the
//! RS256 signer ([`JwtSigner`]) and the loading of its private key from the config
//! ([`load_jwt_signer`]).
//!
//! Contract: a signer holds an RSA key of 2048 to 4096 bits, read from PKCS#8 or PKCS#1 PEM; an
//! unusable key is a [`KeyError`] that never carries key material, and [`load_jwt_signer`] names
//! the config key it came from (`salesforce.auth.private_key_file` or
//! `salesforce.auth.private_key`). An assertion is `base64url(header).base64url(claims).
//! base64url(signature)` without padding, header `{"alg":"RS256"}`; its `exp` is at most
//! [`MAX_ASSERTION_LIFETIME`] ahead (Salesforce's limit).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

/// An unusable JWT signing key. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No usable PEM private key in the text.
    #[error(
        "no PEM private key found (expected `-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`{detail})"
    )]
    NotPem { detail: String },
    /// A PEM private key, but not an RSA key of 2048–4096 bits (RS256 needs one).
    #[error("not an RSA private key usable for RS256 (2048 to 4096 bits): {0}")]
    NotRsa(String),
    /// Signing failed.
    #[error("signing the JWT assertion failed")]
    Sign,
}

/// The `grant_type` of the JWT bearer flow.
pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The longest assertion lifetime Salesforce accepts (`exp` at most 3 minutes ahead).
pub(crate) const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(180);

/// The `aud` claim of a JWT bearer assertion: `audience` when configured; otherwise
/// `https://test.salesforce.com` for a sandbox login URL (`test.salesforce.com` or a
/// `*.sandbox.my.salesforce.com` My Domain) and `https://login.salesforce.com` for everything
/// else (production, My Domain, a simulated org, which accepts it).
pub fn jwt_audience(login_url: &str, audience: Option<&str>) -> String {
    if let Some(audience) = audience {
        return audience.trim_end_matches('/').to_owned();
    }
    let host = login_url
        .split_once("://")
        .map_or(login_url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com".to_owned()
    } else {
        "https://login.salesforce.com".to_owned()
    }
}

/// The claims of a JWT bearer assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JwtClaims {
    /// The connected app's consumer key.
    pub iss: String,
    /// The username to act as.
    pub sub: String,
    /// The authorization server: `https://login.salesforce.com`, `https://test.salesforce.com`
    /// or an Experience Cloud site URL.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Signs JWT bearer assertions with RS256. `Debug` shows no key material.
pub(crate) struct JwtSigner {
    key: RsaKeyPair,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("modulus_bits", &(self.key.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Parses an RSA private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what `openssl req
    /// -newkey` writes) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<JwtSigner, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| KeyError::NotPem {
            detail: match e {
                rustls_pki_types::pem::Error::NoItemsFound => String::new(),
                _ => "; the PEM is malformed".to_owned(),
            },
        })?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(KeyError::NotRsa(
                    "an EC (SEC1) key; the JWT bearer flow needs RSA".to_owned(),
                ));
            }
        }
        .map_err(|e| KeyError::NotRsa(e.to_string()))?;
        Ok(JwtSigner { key })
    }

    /// Reads and parses a PEM key file (see [`JwtSigner::from_pem`]).
    pub fn from_file(path: &Path) -> Result<JwtSigner, KeyError> {
        // Zeroed when dropped: the buffer holds the key.
        let pem =
            secrecy::SecretSlice::from(std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?);
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if let Some(exposure) = key_file_exposure(meta.permissions().mode()) {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the JWT private key file {exposure}: `chmod 600` it (or 0440 with a group of its own)"
                );
            }
        }
        JwtSigner::from_pem(pem.expose_secret())
    }

    /// `base64url(header).base64url(claims).base64url(RS256 signature)`, without padding.
    pub fn assertion(&self, claims: &JwtClaims) -> Result<String, KeyError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let body = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
        let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// Who else can touch a key file of this mode, if anyone should not: any user (`o+r`), or a
/// writer other than the owner. Group read alone is allowed: it is how Kubernetes mounts a
/// secret for a non-root container (`defaultMode: 0440` with the pod's `fsGroup`, as the Helm
/// chart does).
fn key_file_exposure(mode: u32) -> Option<&'static str> {
    if mode & 0o004 != 0 {
        Some("is readable by every user of the machine")
    } else if mode & 0o022 != 0 {
        Some("is writable by users other than its owner")
    } else {
        None
    }
}

/// Loads the JWT signing key of `auth`, naming the config key it came from on failure; `None`
/// for the other flows.
pub(crate) fn load_jwt_signer(
    auth: &AuthConfig,
) -> Option<Result<JwtSigner, (&'static str, KeyError)>> {
    let AuthConfig::JwtBearer {
        private_key_file,
        private_key,
        ..
    } = auth
    else {
        return None;
    };
    Some(match (private_key_file, private_key) {
        (Some(path), _) => {
            JwtSigner::from_file(path).map_err(|e| ("salesforce.auth.private_key_file", e))
        }
        (None, Some(pem)) => JwtSigner::from_pem(pem_lines(pem.expose_secret()).as_bytes())
            .map_err(|e| ("salesforce.auth.private_key", e)),
        (None, None) => Err((
            "salesforce.auth.private_key_file",
            KeyError::NotPem {
                detail: "; set `private_key_file` or `private_key`".to_owned(),
            },
        )),
    })
}

/// An inline PEM kept on one line with `\n` escapes (as environment variables often hold it)
/// gets its line breaks back. `${VAR}` is interpolated as data (issue 19, item 10), so YAML no
/// longer turns the escapes of a value inside a double-quoted string into line breaks; a PEM
/// never contains a backslash, so nothing else is changed.
fn pem_lines(pem: &str) -> std::borrow::Cow<'_, str> {
    if !pem.contains('\n') && pem.contains("\\n") {
        pem.replace("\\n", "\n").into()
    } else {
        pem.into()
    }
}

#[cfg(test)]
mod tests {
    use super::{JwtSigner, key_file_exposure, pem_lines};

    #[test]
    fn an_inline_pem_on_one_line_with_escapes_loads() {
        let pem = include_str!("../../sim/jwt_demo_key.pem");
        let one_line = pem.replace('\n', "\\n");
        assert!(JwtSigner::from_pem(one_line.as_bytes()).is_err());
        assert!(JwtSigner::from_pem(pem_lines(&one_line).as_bytes()).is_ok());
        assert_eq!(pem_lines(pem), pem);
    }

    #[test]
    fn key_files_others_can_read_or_write_are_named() {
        for private in [0o600, 0o400, 0o640, 0o440, 0o100_600] {
            assert_eq!(key_file_exposure(private), None, "{private:o}");
        }
        for readable in [0o644, 0o604, 0o444, 0o100_644] {
            assert!(key_file_exposure(readable).unwrap().contains("every user"));
        }
        for writable in [0o620, 0o602, 0o660] {
            assert!(key_file_exposure(writable).unwrap().contains("writable"));
        }
    }
}
