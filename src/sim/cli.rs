//! `forcebridge sim`: the simulated org as a process of its own, for local development and for
//! users' CI. Prints its endpoints, credentials and a ready-to-use config, then serves until
//! interrupted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{SimConfig, SimError, SimOrg};

/// Options of `forcebridge sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address of the Pub/Sub gRPC service.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub grpc: SocketAddr,
    /// Address of the HTTP side (OAuth token endpoint, REST): the login and instance URL.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub http: SocketAddr,
    /// Interval of empty keepalive FetchResponses (Salesforce: within 270 s).
    #[arg(long, default_value = "270s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
    /// Create this many Accounts at start, so that subscribers with `earliest` see events at once.
    #[arg(long, default_value_t = 0)]
    pub seed_accounts: usize,
}

/// Runs the simulated org until `cancel` fires.
pub async fn run_cli(args: SimArgs, cancel: CancellationToken) -> Result<(), SimError> {
    let config = SimConfig {
        keepalive_interval: args.keepalive_interval,
        ..SimConfig::default()
    };
    let org = SimOrg::start_on(config, args.grpc, args.http).await?;
    if args.seed_accounts > 0 {
        org.generate("Account", args.seed_accounts)?;
    }
    let c = org.config();
    println!("simulated Salesforce org {} is up", c.org_id);
    println!("  Pub/Sub API (gRPC, plaintext)  {}", org.pubsub_endpoint());
    println!("  login + instance URL (HTTP)    {}", org.instance_url());
    println!(
        "  client credentials             client_id={} client_secret={} (acts as the integration user {})",
        c.client_id, c.client_secret, c.integration_user_id
    );
    println!(
        "  username-password              username={} password={} security_token={}",
        c.username, c.password, c.security_token
    );
    println!();
    println!("a config for it (kafka.bootstrap_servers is yours to fill in):");
    println!(
        "salesforce:\n  login_url: {}\n  pubsub_endpoint: {}\n  allow_plaintext: true\n  auth:\n    type: client_credentials\n    client_id: {}\n    client_secret: {}",
        org.instance_url(),
        org.pubsub_endpoint(),
        c.client_id,
        c.client_secret
    );
    println!();
    println!("make changes over REST, e.g.:");
    println!(
        "  TOKEN=$(curl -s {url}/services/oauth2/token -d grant_type=client_credentials -d client_id={id} -d client_secret={secret} | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')",
        url = org.instance_url(),
        id = c.client_id,
        secret = c.client_secret
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' {}/services/data/v62.0/sobjects/Account -d '{{\"Name\":\"Acme\"}}'",
        org.instance_url()
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' {}/sim/generate -d '{{\"object\":\"Account\",\"count\":1000}}'",
        org.instance_url()
    );
    println!(
        "  curl -s -H 'Content-Type: application/json' {}/sim/faults -d '{{\"fail_next\":{{\"count\":3,\"fault\":\"service_unavailable\"}},\"lock_rows\":1}}'",
        org.instance_url()
    );
    cancel.cancelled().await;
    org.shutdown().await;
    Ok(())
}
