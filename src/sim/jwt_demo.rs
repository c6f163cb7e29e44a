//! The demo connected app's JWT credentials: the certificate a simulated org trusts by default
//! and its private key, both bundled PEM files.

/// The demo connected app's certificate (self-signed, RSA 2048), the default of
/// [`SimConfig::jwt_certificate_pem`](super::SimConfig::jwt_certificate_pem).
pub const DEMO_CERTIFICATE_PEM: &str = include_str!("jwt_demo_cert.pem");

/// The private key of [`DEMO_CERTIFICATE_PEM`] (PKCS#8 PEM). Public on purpose: it is the
/// simulated org's demo credential, like its client secret; never use it for a real org.
pub const DEMO_PRIVATE_KEY_PEM: &str = include_str!("jwt_demo_key.pem");
