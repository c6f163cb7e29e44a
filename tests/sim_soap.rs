//! The SOAP API's login() and logout() on the simulated org, as a SOAP-login client sends them
//! (the envelope jsforce's `loginBySoap` writes, and one with prefixed elements): the session
//! works for REST until logout, and each refusal is the fault real orgs send.

use forcebridge::sim::{SimConfig, SimOrg};

fn login_envelope(username: &str, password: &str) -> String {
    format!(
        "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\"><se:Header/><se:Body>\
         <login xmlns=\"urn:partner.soap.sforce.com\"><username>{username}</username>\
         <password>{password}</password></login></se:Body></se:Envelope>"
    )
}

fn logout_envelope(session: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:urn=\"urn:partner.soap.sforce.com\"><soapenv:Header><urn:SessionHeader>\
         <urn:sessionId>{session}</urn:sessionId></urn:SessionHeader></soapenv:Header>\
         <soapenv:Body><urn:logout/></soapenv:Body></soapenv:Envelope>"
    )
}

/// The text of the first `<tag>` of `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find('<')?;
    Some(&xml[start..end])
}

async fn post(org: &SimOrg, path: &str, body: String) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", org.instance_url()))
        .header("Content-Type", "text/xml")
        .header("SOAPAction", "\"\"")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn password(config: &SimConfig) -> String {
    format!("{}{}", config.password, config.security_token)
}

/// login() at 64.0: the result's session is a REST token of the org's user, `serverUrl` points
/// at the instance; logout() ends the session.
#[tokio::test]
async fn a_soap_session_works_for_rest_until_logout() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let config = org.config().clone();
    let (status, body) = post(
        &org,
        "/services/Soap/u/64.0",
        login_envelope(&config.username, &password(&config)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let org15 = &config.org_id[..15];
    assert_eq!(
        element(&body, "serverUrl").unwrap(),
        format!("{}/services/Soap/u/64.0/{org15}", org.instance_url())
    );
    assert_eq!(element(&body, "userId").unwrap(), config.user_id);
    assert_eq!(element(&body, "organizationId").unwrap(), config.org_id);
    assert_eq!(element(&body, "passwordExpired").unwrap(), "false");
    assert_eq!(element(&body, "userName").unwrap(), config.username);
    let session = element(&body, "sessionId").unwrap().to_owned();

    let rest = |token: String| {
        let url = format!("{}/services/data/v64.0/limits", org.instance_url());
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    assert_eq!(rest(session.clone()).await, 200);
    let (status, body) = post(&org, "/services/Soap/u/64.0", logout_envelope(&session)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<logoutResponse"), "{body}");
    assert_eq!(rest(session.clone()).await, 401);
    let (status, body) = post(&org, "/services/Soap/u/64.0", logout_envelope(&session)).await;
    assert_eq!(status, 500);
    assert_eq!(
        element(&body, "sf:exceptionCode"),
        Some("INVALID_SESSION_ID")
    );
    org.shutdown().await;
}

/// Each refusal: a SOAP fault with HTTP 500, its `faultstring` `CODE: message` and the code again
/// in the detail.
#[tokio::test]
async fn refused_logins_are_the_faults_real_orgs_send() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let config = org.config().clone();
    let good = login_envelope(&config.username, &password(&config));
    let cases = [
        (
            "/services/Soap/u/64.0",
            login_envelope(&config.username, &config.password),
            "INVALID_LOGIN",
            "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
        ),
        (
            "/services/Soap/u/65.0",
            good.clone(),
            "INVALID_OPERATION",
            "INVALID_OPERATION: The SOAP Login operation is not available in the API version specified (65.0). Refer to the documentation for supported versions.",
        ),
        (
            "/services/Soap/c/30.0",
            good.clone(),
            "UNSUPPORTED_API_VERSION",
            "UNSUPPORTED_API_VERSION: Invalid Api version specified on URL",
        ),
        (
            "/services/Soap/u/64.0",
            "username=a&password=b".to_owned(),
            "UNKNOWN_EXCEPTION",
            "UNKNOWN_EXCEPTION: the request is not a SOAP envelope with a Body element",
        ),
    ];
    for (path, body, code, faultstring) in cases {
        let (status, answer) = post(&org, path, body).await;
        assert_eq!(status, 500, "{path}: {answer}");
        assert_eq!(
            element(&answer, "faultstring"),
            Some(faultstring),
            "{answer}"
        );
        assert_eq!(element(&answer, "sf:exceptionCode"), Some(code), "{answer}");
    }
    // The enterprise endpoint logs in too.
    let (status, answer) = post(&org, "/services/Soap/c/62.0", good).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains("urn:enterprise.soap.sforce.com"),
        "{answer}"
    );
    org.shutdown().await;
}

/// An org where login() is switched off, as orgs created since Winter '26 are by default.
#[tokio::test]
async fn an_org_without_soap_login_refuses_it() {
    forcebridge::ops::telemetry::install_crypto_provider();
    let org = SimOrg::start(SimConfig {
        soap_login: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = org.config().clone();
    let body = login_envelope(&config.username, &password(&config));
    let (status, answer) = post(&org, "/services/Soap/u/64.0", body).await;
    assert_eq!(status, 500);
    assert_eq!(
        element(&answer, "faultstring"),
        Some(
            "INVALID_OPERATION: SOAP API login() is disabled by default in this org. Contact the org administrator to enable SOAP API login()."
        )
    );
    org.shutdown().await;
}
