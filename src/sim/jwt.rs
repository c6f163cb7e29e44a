//! The JWT bearer grant of the simulated org's token endpoint, checked as Salesforce does.
//!
//! Contract: [`verify`] takes the `assertion` form field and answers the user the token acts as,
//! or Salesforce's error pair (HTTP 400):
//! * malformed (not three base64url parts of JSON), a header `alg` other than `RS256`, a
//!   signature that the connected app's certificate ([`SimConfig::jwt_certificate_pem`]) does
//!   not verify, or an `exp` more than 5 minutes (+ 30 s skew) ahead → `invalid_grant` /
//!   `invalid assertion` (see [`MAX_LIFETIME`]);
//! * `exp` not in the future → `invalid_grant` / `expired authorization code` (what Salesforce
//!   answers for a late assertion);
//! * `iss` not the consumer key → `invalid_client_id` / `client identifier invalid`;
//! * `aud` not the org's login URL, `https://login.salesforce.com` or
//!   `https://test.salesforce.com` → `invalid_grant` / `audience is invalid`;
//! * `sub` not a pre-authorized user → `invalid_grant` / `user hasn't approved this consumer`.
//!   Both users of the org are pre-authorized: [`SimConfig::username`] (the org's user) and
//!   [`integration_username`] (the integration user); the token acts as that user, as
//!   Salesforce's does.
//!
//! The certificate is the PEM of an X.509 certificate, as uploaded to a connected app; the
//! default is the demo certificate whose private key is [`DEMO_PRIVATE_KEY_PEM`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use super::config::SimConfig;
pub use super::jwt_demo::{DEMO_CERTIFICATE_PEM, DEMO_PRIVATE_KEY_PEM};

/// Allowed clock skew on `exp`.
const SKEW: Duration = Duration::from_secs(30);
/// The longest assertion lifetime accepted. Salesforce documents "the expiration time of the
/// assertion within 3 minutes" (Salesforce Help, "OAuth 2.0 JWT Bearer Flow for Server-to-Server
/// Integration"), but real orgs accept assertions that live 5 minutes: simple-salesforce#491 (a
/// real org accepted `exp = now + 300` from `requests`), the 5-minute cap of
/// arthurimirzian/salesforce-jwt-bearer-token-flow (issue #7), and the pozil Pub/Sub Node
/// client's default assertion, used against real orgs. What a real org does beyond 5 minutes is
/// not known; the simulated org refuses it (README.md, "Known differences from a real org").
const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// Parses a certificate PEM into DER, checking that it is an X.509 certificate.
pub(crate) fn parse_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no PEM certificate: {e}"))?;
    webpki::EndEntityCert::try_from(&der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(der)
}

/// The integration user's username: `integration@<domain of SimConfig::username>`.
pub(crate) fn integration_username(config: &SimConfig) -> String {
    let domain = config
        .username
        .split_once('@')
        .map_or("forcebridge.sim", |(_, d)| d);
    format!("integration@{domain}")
}

/// An OAuth error pair.
pub(crate) type Refusal = (&'static str, &'static str);

const INVALID_ASSERTION: Refusal = ("invalid_grant", "invalid assertion");

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
}

/// Checks `assertion`; answers the id of the user the token acts as.
pub(crate) fn verify<'c>(
    config: &'c SimConfig,
    certificate: &CertificateDer<'_>,
    login_url: &str,
    assertion: &str,
) -> Result<&'c str, Refusal> {
    let mut parts = assertion.split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(INVALID_ASSERTION);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| INVALID_ASSERTION);
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| INVALID_ASSERTION)?;
    if header.alg != "RS256" {
        return Err(INVALID_ASSERTION);
    }
    let cert = webpki::EndEntityCert::try_from(certificate).map_err(|_| INVALID_ASSERTION)?;
    let signing_input = &assertion[..assertion.len() - signature.len() - 1];
    cert.verify_signature(
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        signing_input.as_bytes(),
        &decode(signature)?,
    )
    .map_err(|_| INVALID_ASSERTION)?;
    let claims: Claims = serde_json::from_slice(&decode(body)?).map_err(|_| INVALID_ASSERTION)?;
    if claims.iss != config.client_id {
        return Err(("invalid_client_id", "client identifier invalid"));
    }
    let aud = claims.aud.trim_end_matches('/');
    if aud != login_url
        && aud != "https://login.salesforce.com"
        && aud != "https://test.salesforce.com"
    {
        return Err(("invalid_grant", "audience is invalid"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if claims.exp <= now {
        return Err(("invalid_grant", "expired authorization code"));
    }
    if claims.exp > now + (MAX_LIFETIME + SKEW).as_secs() {
        return Err(INVALID_ASSERTION);
    }
    if claims.sub == config.username {
        Ok(&config.user_id)
    } else if claims.sub == integration_username(config) {
        Ok(&config.integration_user_id)
    } else {
        Err(("invalid_grant", "user hasn't approved this consumer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::auth::{JwtClaims, JwtSigner};

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(config: &SimConfig) -> JwtClaims {
        JwtClaims {
            iss: config.client_id.clone(),
            sub: config.username.clone(),
            aud: "https://login.salesforce.com".into(),
            exp: now() + 120,
        }
    }

    fn check(config: &SimConfig, claims: &JwtClaims) -> Result<String, Refusal> {
        let signer = JwtSigner::from_pem(DEMO_PRIVATE_KEY_PEM.as_bytes()).unwrap();
        let cert = parse_certificate(&config.jwt_certificate_pem).unwrap();
        let assertion = signer.assertion(claims).unwrap();
        verify(config, &cert, "http://127.0.0.1:1", &assertion).map(str::to_owned)
    }

    #[test]
    fn each_claim_is_checked_with_salesforces_error() {
        let config = SimConfig::default();
        assert_eq!(check(&config, &claims(&config)), Ok(config.user_id.clone()));
        let integration = JwtClaims {
            sub: integration_username(&config),
            ..claims(&config)
        };
        assert_eq!(
            check(&config, &integration),
            Ok(config.integration_user_id.clone())
        );
        let own_url = JwtClaims {
            aud: "http://127.0.0.1:1/".into(),
            ..claims(&config)
        };
        assert!(check(&config, &own_url).is_ok());
        // A 5-minute assertion, the pozil Node client's default, is accepted as real orgs do.
        let five_minutes = JwtClaims {
            exp: now() + 300,
            ..claims(&config)
        };
        assert_eq!(check(&config, &five_minutes), Ok(config.user_id.clone()));
        let cases = [
            (
                JwtClaims {
                    iss: "someone-else".into(),
                    ..claims(&config)
                },
                ("invalid_client_id", "client identifier invalid"),
            ),
            (
                JwtClaims {
                    aud: "https://example.com".into(),
                    ..claims(&config)
                },
                ("invalid_grant", "audience is invalid"),
            ),
            (
                JwtClaims {
                    exp: now() - 1,
                    ..claims(&config)
                },
                ("invalid_grant", "expired authorization code"),
            ),
            (
                JwtClaims {
                    exp: now() + 3600,
                    ..claims(&config)
                },
                INVALID_ASSERTION,
            ),
            (
                JwtClaims {
                    exp: now() + 300 + 31 + 5,
                    ..claims(&config)
                },
                INVALID_ASSERTION,
            ),
            (
                JwtClaims {
                    sub: "nobody@forcebridge.sim".into(),
                    ..claims(&config)
                },
                ("invalid_grant", "user hasn't approved this consumer"),
            ),
        ];
        for (claims, refusal) in cases {
            assert_eq!(check(&config, &claims), Err(refusal), "{claims:?}");
        }
    }

    #[test]
    fn tampered_or_malformed_assertions_are_invalid() {
        let config = SimConfig::default();
        let cert = parse_certificate(&config.jwt_certificate_pem).unwrap();
        let signer = JwtSigner::from_pem(DEMO_PRIVATE_KEY_PEM.as_bytes()).unwrap();
        let good = signer.assertion(&claims(&config)).unwrap();
        let (signing_input, signature) = good.rsplit_once('.').unwrap();
        let other_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&JwtClaims {
                sub: integration_username(&config),
                ..claims(&config)
            })
            .unwrap(),
        );
        let header = signing_input.split('.').next().unwrap();
        let none_alg = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let body = signing_input.split('.').nth(1).unwrap();
        for bad in [
            format!("{header}.{other_body}.{signature}"),
            format!("{none_alg}.{body}."),
            signing_input.to_owned(),
            format!("{good}.extra"),
            "not a jwt".to_owned(),
        ] {
            assert_eq!(
                verify(&config, &cert, "http://127.0.0.1:1", &bad),
                Err(INVALID_ASSERTION),
                "{bad}"
            );
        }
        assert!(verify(&config, &cert, "http://127.0.0.1:1", &good).is_ok());
    }

    #[test]
    fn a_bad_certificate_is_refused() {
        assert!(parse_certificate("nonsense").is_err());
        assert!(parse_certificate(DEMO_PRIVATE_KEY_PEM).is_err());
        assert!(parse_certificate(DEMO_CERTIFICATE_PEM).is_ok());
    }
}
