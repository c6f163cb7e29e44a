//! Every OAuth flow against the simulated org: JWT bearer (success for Pub/Sub and REST, a bad
//! signature, an expired assertion, re-login after a revoked session), client credentials
//! (wrong secret), username-password (with and without the security token), a given access
//! token (org id from userinfo); and the JWT key's config validation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use forcebridge::config::{AuthConfig, Config, SalesforceConfig};
use forcebridge::retry::Directive;
use forcebridge::salesforce::auth::{AuthError, Authenticator, SessionHandle, http_client};
use forcebridge::salesforce::pubsub::PubSub;
use forcebridge::salesforce::rest::{LimitGuard, Reserve, RestClient};
use forcebridge::salesforce::tls::ClientTls;
use forcebridge::sim::{SimConfig, SimOrg};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// A PKCS#1 RSA key whose certificate the simulated org does not know.
const OTHER_KEY_PEM: &str = include_str!("fixtures/other_jwt_key.pem");

/// The simulated org's trust settings: plaintext to loopback.
fn plaintext() -> ClientTls {
    ClientTls::new().allow_plaintext(true)
}

fn salesforce(sim: &SimOrg, auth: AuthConfig) -> SalesforceConfig {
    SalesforceConfig {
        login_url: sim.instance_url(),
        pubsub_endpoint: sim.pubsub_endpoint(),
        api_version: "62.0".into(),
        allow_plaintext: true,
        ca_file: None,
        http_timeout: Duration::from_secs(10),
        client_tag: None,
        auth,
    }
}

fn authenticator(sim: &SimOrg, auth: AuthConfig) -> Authenticator {
    Authenticator::new(
        &salesforce(sim, auth),
        http_client(&plaintext(), Duration::from_secs(10)).unwrap(),
    )
}

/// A file of its own in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "forcebridge-auth-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn jwt(sim: &SimOrg, username: &str, key_file: Option<PathBuf>, key: Option<&str>) -> AuthConfig {
    AuthConfig::JwtBearer {
        client_id: sim.config().client_id.clone(),
        username: username.to_owned(),
        audience: None,
        private_key_file: key_file,
        private_key: key.map(|k| SecretString::from(k.to_owned())),
        assertion_lifetime: Duration::from_secs(180),
    }
}

fn refusal(error: AuthError) -> (String, String) {
    assert_eq!(error.directive(), Directive::Stop, "{error}");
    match error {
        AuthError::Rejected {
            error, description, ..
        } => (error, description),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A JWT bearer login (key from a file) yields a session for the org's user that the Pub/Sub
/// API and the REST API both accept; a key given inline logs in as the integration user.
#[tokio::test]
async fn jwt_bearer_session_works_for_pubsub_and_rest() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let key = TempFile::with(sim.jwt_private_key_pem().unwrap());
    let auth = jwt(&sim, &sim.config().username, Some(key.0.clone()), None);
    let session = authenticator(&sim, auth).login().await.unwrap();
    assert_eq!(session.org_id, sim.config().org_id);
    assert_eq!(
        session.user_id.as_deref(),
        Some(sim.config().user_id.as_str())
    );
    assert_eq!(session.instance_url, sim.instance_url());

    let token = session.access_token.expose_secret().to_owned();
    let pubsub = PubSub::connect(
        &sim.pubsub_endpoint(),
        SessionHandle::new(session),
        &plaintext(),
    )
    .await
    .unwrap();
    let topic = pubsub.get_topic("/data/AccountChangeEvent").await.unwrap();
    assert!(!topic.schema_id.is_empty());
    let limits = http_client(&plaintext(), Duration::from_secs(10))
        .unwrap()
        .get(format!("{}/services/data/v62.0/limits", sim.instance_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(limits.status(), 200);

    let inline = jwt(
        &sim,
        &sim.integration_username(),
        None,
        sim.jwt_private_key_pem(),
    );
    let session = authenticator(&sim, inline).login().await.unwrap();
    assert_eq!(
        session.user_id.as_deref(),
        Some(sim.config().integration_user_id.as_str())
    );
    sim.shutdown().await;
}

/// An assertion signed with a key whose certificate the connected app does not have is
/// refused with Salesforce's `invalid_grant` / `invalid assertion`, plus what to check.
#[tokio::test]
async fn jwt_bad_signature_is_refused_clearly() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let auth = jwt(&sim, &sim.config().username, None, Some(OTHER_KEY_PEM));
    let error = authenticator(&sim, auth).login().await.unwrap_err();
    let text = error.to_string();
    let (error, description) = refusal(error);
    assert_eq!(error, "invalid_grant");
    assert!(
        description.starts_with("invalid assertion"),
        "{description}"
    );
    assert!(
        text.contains("certificate uploaded to the connected app"),
        "{text}"
    );
    sim.shutdown().await;
}

/// An assertion whose `exp` has passed (the client's clock is 10 minutes behind) is refused
/// with `invalid_grant` / `expired authorization code`, and the error points at the clock.
#[tokio::test]
async fn jwt_expired_assertion_is_refused_clearly() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let auth = jwt(
        &sim,
        &sim.config().username,
        None,
        sim.jwt_private_key_pem(),
    );
    let late = authenticator(&sim, auth.clone())
        .with_clock(|| SystemTime::now() - Duration::from_secs(600));
    let error = late.login().await.unwrap_err();
    let text = error.to_string();
    let (error, description) = refusal(error);
    assert_eq!(error, "invalid_grant");
    assert!(
        description.starts_with("expired authorization code"),
        "{description}"
    );
    assert!(text.contains("clock"), "{text}");
    // The same key and claims with a correct clock are accepted.
    authenticator(&sim, auth).login().await.unwrap();
    sim.shutdown().await;
}

/// A user the connected app does not know is refused as not pre-authorized.
#[tokio::test]
async fn jwt_unknown_user_is_refused() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let auth = jwt(&sim, "nobody@example.com", None, sim.jwt_private_key_pem());
    let (error, description) = refusal(authenticator(&sim, auth).login().await.unwrap_err());
    assert_eq!(error, "invalid_grant");
    assert!(
        description.starts_with("user hasn't approved this consumer"),
        "{description}"
    );
    sim.shutdown().await;
}

/// When the org revokes the session, the REST client logs in again through the JWT flow (a new
/// assertion) and the call succeeds with the new token.
#[tokio::test]
async fn jwt_session_is_renewed_after_a_rejection() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let auth = jwt(
        &sim,
        &sim.config().username,
        None,
        sim.jwt_private_key_pem(),
    );
    let http = http_client(&plaintext(), Duration::from_secs(10)).unwrap();
    let authenticator = Authenticator::new(&salesforce(&sim, auth.clone()), http.clone());
    let session = SessionHandle::new(authenticator.login().await.unwrap());
    let first = session.current();
    let rest = RestClient::new(
        http,
        authenticator,
        session.clone(),
        "62.0".into(),
        "auth-test".into(),
        LimitGuard::new(Reserve::Calls(0), Duration::from_secs(60)),
    )
    .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
    sim.revoke_tokens();
    rest.limits(&CancellationToken::new()).await.unwrap();
    assert_ne!(
        session.current().access_token.expose_secret(),
        first.access_token.expose_secret(),
        "a new session replaced the revoked one"
    );
    assert_eq!(rest.stats().relogins.load(Ordering::Relaxed), 1);
    sim.shutdown().await;
}

/// Client credentials: the right secret acts as the integration user; a wrong one is
/// `invalid_client`.
#[tokio::test]
async fn client_credentials_and_a_wrong_secret() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let auth = |secret: &str| AuthConfig::ClientCredentials {
        client_id: sim.config().client_id.clone(),
        client_secret: SecretString::from(secret.to_owned()),
    };
    let session = authenticator(&sim, auth(&sim.config().client_secret))
        .login()
        .await
        .unwrap();
    assert_eq!(
        session.user_id.as_deref(),
        Some(sim.config().integration_user_id.as_str())
    );
    let error = authenticator(&sim, auth("not-the-secret"))
        .login()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid_client"), "{error}");
    let (error, description) = refusal(error);
    assert_eq!(
        (error.as_str(), description.as_str()),
        ("invalid_client", "invalid client credentials")
    );
    sim.shutdown().await;
}

/// Issue 19, item 11: a token endpoint that names a foreign `instance_url` is not trusted with
/// the token. A second listener (loopback, so the plaintext rule alone would let it through)
/// records every connection: none arrives, the login fails naming the host, and the failure
/// stops the process (`Directive::Stop`). An https host outside Salesforce's domains is refused
/// the same way; the sim's own URL still logs in.
#[tokio::test]
async fn a_foreign_instance_url_gets_no_token() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let collector = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let foreign = format!("http://{}", collector.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let record = received.clone();
    let accept = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut stream, _)) = collector.accept().await {
            record.lock().unwrap().extend_from_slice(b"<connection>");
            let mut buf = vec![0; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                record.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let auth = AuthConfig::ClientCredentials {
        client_id: sim.config().client_id.clone(),
        client_secret: SecretString::from(sim.config().client_secret.clone()),
    };
    let host = foreign.trim_start_matches("http://").to_owned();
    for (instance_url, named) in [
        (foreign.clone(), host.as_str()),
        (
            "https://collector.attacker.example".to_owned(),
            "collector.attacker.example",
        ),
    ] {
        sim.answer_logins_with_instance_url(Some(instance_url.clone()));
        let login = authenticator(&sim, auth.clone()).login().await;
        // Trusted, the host would get the token with the next REST call.
        let error = match login {
            Ok(session) => panic!("the login trusted {}", session.instance_url),
            Err(error) => error,
        };
        let message = error.to_string();
        assert!(message.contains(&format!("`{named}`")), "{message}");
        assert!(message.contains("not trusted"), "{message}");
        assert_eq!(error.directive(), Directive::Stop, "{message}");
    }
    // Every request of both logins has been answered: nothing more can reach the collector.
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(seen.is_empty(), "the foreign host received: {seen}");
    sim.answer_logins_with_instance_url(None);
    authenticator(&sim, auth).login().await.unwrap();
    accept.abort();
    sim.shutdown().await;
}

/// Username-password: password + security token logs in as the org's user; the password
/// without the token, or with a wrong one, is `invalid_grant` / `authentication failure`.
#[tokio::test]
async fn password_flow_with_and_without_the_security_token() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let c = sim.config();
    let auth = |token: Option<&str>| AuthConfig::Password {
        client_id: c.client_id.clone(),
        client_secret: SecretString::from(c.client_secret.clone()),
        username: c.username.clone(),
        password: SecretString::from(c.password.clone()),
        security_token: token.map(|t| SecretString::from(t.to_owned())),
    };
    let session = authenticator(&sim, auth(Some(&c.security_token)))
        .login()
        .await
        .unwrap();
    assert_eq!(session.user_id.as_deref(), Some(c.user_id.as_str()));
    for token in [None, Some("WRONGTOKEN")] {
        let (error, description) =
            refusal(authenticator(&sim, auth(token)).login().await.unwrap_err());
        assert_eq!(
            (error.as_str(), description.as_str()),
            ("invalid_grant", "authentication failure"),
            "token {token:?}"
        );
    }
    sim.shutdown().await;
}

/// A given access token without an org id takes it (and the user) from userinfo; a token the
/// org does not know is refused there.
#[tokio::test]
async fn given_access_token_takes_the_org_id_from_userinfo() {
    let sim = SimOrg::start(SimConfig::default()).await.unwrap();
    let auth = |token: String| AuthConfig::AccessToken {
        access_token: SecretString::from(token),
        instance_url: sim.instance_url(),
        org_id: None,
    };
    let session = authenticator(&sim, auth(sim.issue_access_token()))
        .login()
        .await
        .unwrap();
    assert_eq!(session.org_id, sim.config().org_id);
    assert_eq!(
        session.user_id.as_deref(),
        Some(sim.config().user_id.as_str())
    );
    let error = authenticator(&sim, auth("00Dbogus!token".into()))
        .login()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("userinfo"), "{error}");
    assert_eq!(error.directive(), Directive::Stop);
    sim.shutdown().await;
}

fn config_with_auth(auth_yaml: &str) -> Result<Config, String> {
    let text = format!(
        "name: jwt-test\nsalesforce:\n  login_url: https://acme.my.salesforce.com\n  auth:\n{auth_yaml}\nsource:\n  channels:\n    - name: /data/AccountChangeEvent\nkafka:\n  bootstrap_servers: localhost:9092\n"
    );
    Config::from_yaml(&text, |_| None).map_err(|e| e.to_string())
}

fn indented(pem: &str) -> String {
    pem.lines().map(|l| format!("      {l}\n")).collect()
}

/// The key's config: exactly one source, a readable file, a parsable key, a lifetime within
/// Salesforce's 3 minutes, each error naming its key; the inline PEM never in `Debug`.
#[test]
fn jwt_key_config_is_validated_and_kept_secret() {
    let pem = forcebridge::sim::jwt::DEMO_PRIVATE_KEY_PEM;
    let file = TempFile::with(pem);
    let head = "    type: jwt_bearer\n    client_id: 3MVG9id\n    username: etl@acme.com\n";
    let file_line = format!("    private_key_file: {}\n", file.0.display());
    let inline = format!("    private_key: |\n{}", indented(pem));

    let ok = config_with_auth(&format!("{head}{file_line}")).unwrap();
    let AuthConfig::JwtBearer {
        assertion_lifetime,
        audience,
        ..
    } = &ok.salesforce.auth
    else {
        panic!("not jwt_bearer: {:?}", ok.salesforce.auth);
    };
    assert_eq!(*assertion_lifetime, Duration::from_secs(180));
    assert_eq!(audience, &None);
    let ok = config_with_auth(&format!("{head}{inline}")).unwrap();
    let debug = format!("{ok:?}");
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!debug.contains(body_line), "the key leaked into Debug");
    assert!(!debug.contains("PRIVATE KEY"), "the key leaked into Debug");

    let both = config_with_auth(&format!("{head}{file_line}{inline}")).unwrap_err();
    assert!(both.contains("salesforce.auth.private_key_file"), "{both}");
    let neither = config_with_auth(head).unwrap_err();
    assert!(
        neither.contains("salesforce.auth.private_key_file"),
        "{neither}"
    );

    let missing = std::env::temp_dir().join("forcebridge-auth-no-such-key.pem");
    let unreadable = config_with_auth(&format!(
        "{head}    private_key_file: {}\n",
        missing.display()
    ))
    .unwrap_err();
    assert!(
        unreadable.contains("salesforce.auth.private_key_file")
            && unreadable.contains("cannot read"),
        "{unreadable}"
    );
    let not_a_key = TempFile::with("just some text\n");
    let garbage = config_with_auth(&format!(
        "{head}    private_key_file: {}\n",
        not_a_key.0.display()
    ))
    .unwrap_err();
    assert!(
        garbage.contains("salesforce.auth.private_key_file")
            && garbage.contains("no PEM private key"),
        "{garbage}"
    );
    let bad_inline = config_with_auth(&format!(
        "{head}    private_key: |\n      -----BEGIN PRIVATE KEY-----\n      AAAA\n      -----END PRIVATE KEY-----\n"
    ))
    .unwrap_err();
    assert!(
        bad_inline.contains("salesforce.auth.private_key`"),
        "{bad_inline}"
    );
    assert!(!bad_inline.contains("AAAA"), "{bad_inline}");

    let too_long =
        config_with_auth(&format!("{head}{file_line}    assertion_lifetime: 5m\n")).unwrap_err();
    assert!(
        too_long.contains("salesforce.auth.assertion_lifetime"),
        "{too_long}"
    );
}

/// The audience defaults to login.salesforce.com, or test.salesforce.com for sandboxes.
#[test]
fn jwt_audience_follows_the_login_url() {
    use forcebridge::salesforce::auth::jwt_audience;
    assert_eq!(
        jwt_audience("https://acme.my.salesforce.com", None),
        "https://login.salesforce.com"
    );
    assert_eq!(
        jwt_audience("https://test.salesforce.com/", None),
        "https://test.salesforce.com"
    );
    assert_eq!(
        jwt_audience("https://acme--uat.sandbox.my.salesforce.com", None),
        "https://test.salesforce.com"
    );
    assert_eq!(
        jwt_audience("https://x", Some("https://acme.my.site.com/")),
        "https://acme.my.site.com"
    );
}
