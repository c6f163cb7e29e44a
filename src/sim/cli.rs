//! `forcebridge sim`: the simulated org as a process of its own, for local development and for
//! users' CI. Prints its endpoints, credentials and a ready-to-use config, then serves until
//! interrupted. On SIGTERM or SIGINT it ends promptly with status 0, whatever it holds: the
//! servers stop (requests in flight get `STOP_GRACE`), and the org's data is left to the exit
//! instead of being freed piece by piece.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::SimConfig;
use super::error::SimError;
use super::handle::SimOrg;

/// Options of `forcebridge sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address of the Pub/Sub gRPC service.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub grpc: SocketAddr,
    /// Address of the HTTP side (OAuth token endpoint, REST): the login and instance URL.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub http: SocketAddr,
    /// Interval of empty keepalive FetchResponses, at most 270 s (Salesforce: within 270 s).
    #[arg(long, default_value = "270s", value_parser = parse_keepalive)]
    pub keepalive_interval: Duration,
    /// Create this many Accounts at start, so that subscribers with `earliest` see events at once.
    #[arg(long, default_value_t = 0)]
    pub seed_accounts: usize,
    /// Seed the org with existing records before it serves, e.g. `--seed Account=50000`
    /// (repeatable): records that existed before anything listened, so no change events; what
    /// a first load (snapshot) reads.
    #[arg(long = "seed", value_name = "OBJECT=COUNT", value_parser = parse_seed)]
    pub seed: Vec<(String, usize)>,
    /// Write the demo connected app's JWT private key (PEM) to this file, for the `jwt_bearer`
    /// auth flow (`private_key_file`).
    #[arg(long, value_name = "PATH")]
    pub write_jwt_key: Option<PathBuf>,
    /// Serve both sides over TLS (`https://`) with a certificate from a freshly generated test
    /// CA, and write that CA's certificate (PEM) to this file, for `salesforce.ca_file`.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Serve a capture made by `forcebridge capture` (its directory): the captured events come
    /// first on their channels, with their payload bytes, schema ids and replay ids; GetSchema and
    /// GetTopic answer as the real org did; the org id is the captured org's.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
    /// Answer the SOAP API's login() as an org created since Winter '26 does by default:
    /// disabled (`INVALID_OPERATION`). Without it, login() works up to API version 64.0.
    #[arg(long)]
    pub no_soap_login: bool,
}

/// `--keepalive-interval`: a duration, 1 ms to 270 s. Salesforce sends a keepalive "within 270
/// seconds" when there are no events (Pub/Sub API Developer Guide, "Subscribe RPC Method").
fn parse_keepalive(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if d.is_zero() || d > Duration::from_secs(270) {
        return Err(format!(
            "`{s}`: out of range: more than 0 and at most 270s (Salesforce sends one within 270 s)"
        ));
    }
    Ok(d)
}

/// `Object=count` of `--seed`.
fn parse_seed(s: &str) -> Result<(String, usize), String> {
    let (object, count) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected OBJECT=COUNT, e.g. Account=50000"))?;
    let count = count
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: the count `{count}` is not a number"))?;
    Ok((object.trim().to_owned(), count))
}

/// Creates the records `--seed-accounts` and `--seed` ask for.
fn seed_org(org: &SimOrg, args: &SimArgs) -> Result<(), SimError> {
    if args.seed_accounts > 0 {
        org.generate("Account", args.seed_accounts)?;
    }
    for (object, count) in &args.seed {
        org.seed(object, *count, 42)?;
    }
    Ok(())
}

/// Writes the demo JWT key, readable by the owner only where the platform supports modes.
fn write_key(path: &Path, pem: &str) -> Result<(), SimError> {
    let io = |source| SimError::WriteJwtKey {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(io)
}

/// The default config, serving the capture in `dir` (`--replay`) under its org id, if any.
fn replay_config(dir: Option<&std::path::Path>) -> Result<SimConfig, SimError> {
    let mut config = SimConfig::default();
    if let Some(dir) = dir {
        let capture =
            super::replay::format::read_capture(dir).map_err(super::replay::ReplayError::from)?;
        if let Some(org_id) = super::ids::normalize(&capture.manifest.org_id) {
            config.org_id = org_id;
        }
        config.replay = Some(std::sync::Arc::new(capture));
    }
    Ok(config)
}

/// Runs the simulated org until `cancel` fires.
pub async fn run_cli(args: SimArgs, cancel: CancellationToken) -> Result<(), SimError> {
    let test_ca = args
        .tls_ca
        .as_ref()
        .map(|_| super::tls::TestCa::generate())
        .transpose()?;
    let defaults = replay_config(args.replay.as_deref())?;
    let config = SimConfig {
        keepalive_interval: args.keepalive_interval,
        tls: test_ca.as_ref().map(|ca| ca.server.clone()),
        soap_login: !args.no_soap_login,
        ..defaults
    };
    let org = SimOrg::start_on(config, args.grpc, args.http).await?;
    if let (Some(path), Some(ca)) = (&args.tls_ca, &test_ca) {
        std::fs::write(path, &ca.ca_certificate_pem).map_err(|source| SimError::WriteCa {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let (Some(path), Some(pem)) = (&args.write_jwt_key, org.jwt_private_key_pem()) {
        write_key(path, pem)?;
    }
    seed_org(&org, &args)?;
    let c = org.config();
    println!("simulated Salesforce org {} is up", c.org_id);
    let mode = if args.tls_ca.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    println!(
        "  {:<30} {}",
        format!("Pub/Sub API (gRPC, {mode})"),
        org.pubsub_endpoint()
    );
    println!(
        "  {:<30} {}",
        format!("login/instance URL ({mode})"),
        org.instance_url()
    );
    if let Some(path) = &args.tls_ca {
        println!(
            "  {:<30} {} (salesforce.ca_file)",
            "test CA certificate",
            path.display()
        );
    }
    println!(
        "  client credentials             client_id={} client_secret={} (acts as the integration user {})",
        c.client_id, c.client_secret, c.integration_user_id
    );
    println!(
        "  username-password              username={} password={} security_token={}",
        c.username, c.password, c.security_token
    );
    match &args.write_jwt_key {
        Some(path) => println!(
            "  JWT bearer                     client_id={} username={} (or {}) private_key_file={}",
            c.client_id,
            c.username,
            org.integration_username(),
            path.display()
        ),
        None => println!(
            "  JWT bearer                     client_id={} username={}; --write-jwt-key PATH writes the private key",
            c.client_id, c.username
        ),
    }
    println!();
    println!("a config for it (kafka.bootstrap_servers is yours to fill in):");
    let trust = match &args.tls_ca {
        Some(path) => format!("ca_file: {}", path.display()),
        None => "allow_plaintext: true".to_owned(),
    };
    println!(
        "salesforce:\n  login_url: {}\n  pubsub_endpoint: {}\n  {trust}\n  auth:\n    type: client_credentials\n    client_id: {}\n    client_secret: {}",
        org.instance_url(),
        org.pubsub_endpoint(),
        c.client_id,
        c.client_secret
    );
    println!();
    println!("make changes over REST, e.g.:");
    // curl trusts the test CA through --cacert.
    let curl = match &args.tls_ca {
        Some(path) => format!("curl --cacert {}", path.display()),
        None => "curl".to_owned(),
    };
    println!(
        "  TOKEN=$({curl} -s {url}/services/oauth2/token -d grant_type=client_credentials -d client_id={id} -d client_secret={secret} | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')",
        url = org.instance_url(),
        id = c.client_id,
        secret = c.client_secret
    );
    println!(
        "  {curl} -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' {}/services/data/v62.0/sobjects/Account -d '{{\"Name\":\"Acme\"}}'",
        org.instance_url()
    );
    println!(
        "  {curl} -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' {}/sim/generate -d '{{\"object\":\"Account\",\"count\":1000}}'",
        org.instance_url()
    );
    println!(
        "  {curl} -s -H 'Content-Type: application/json' {}/sim/faults -d '{{\"fail_next\":{{\"count\":3,\"fault\":\"service_unavailable\"}},\"lock_rows\":1}}'",
        org.instance_url()
    );
    cancel.cancelled().await;
    org.stop_servers(STOP_GRACE).await;
    // Dropping the org frees every record and event one by one: seconds of work for millions
    // of them, between SIGTERM and the exit. The process is ending and its memory goes back to
    // the system at exit, so the org is not dropped (issue 19, item 13).
    std::mem::forget(org);
    Ok(())
}

/// How long requests in flight get to finish after SIGTERM before the servers drop them.
const STOP_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keepalive_interval_is_at_most_270_seconds() {
        assert_eq!(parse_keepalive("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_keepalive("270s"), Ok(Duration::from_secs(270)));
        let err = parse_keepalive("271s").unwrap_err();
        assert!(err.contains("at most 270s"), "{err}");
        assert!(parse_keepalive("0s").unwrap_err().contains("out of range"));
        assert!(parse_keepalive("soon").is_err());
    }
}
