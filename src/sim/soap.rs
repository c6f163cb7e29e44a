//! The SOAP API's `login()` and `logout()` calls, what jsforce's `conn.login(username, password)`
//! (without an OAuth client) and other SOAP-login clients call before using the REST API.
//!
//! Contract (SOAP API Developer Guide, "login()", "LoginResult", "logout()", "SOAP API
//! End-of-Life Policy"):
//! * `POST /services/Soap/u/{version}` (partner) and `/services/Soap/c/{version}` (enterprise),
//!   a SOAP 1.1 envelope whose body holds `login` (`username`, `password` = password + security
//!   token) or `logout` (the session in the `SessionHeader`'s `sessionId`).
//! * `login` answers 200 with a `loginResponse`: `serverUrl`
//!   (`{instance}/services/Soap/{u|c}/{version}/{orgId15}`), `metadataServerUrl`, `sessionId` (a
//!   token the REST API and the Pub/Sub API accept, as an OAuth token, acting as the org's
//!   user), `userId`, `passwordExpired` false, `sandbox` false, and `userInfo` (`organizationId`,
//!   `userName`, `userFullName`, `userEmail`, `sessionSecondsValid`, …).
//! * `logout` ends the session: the token is refused afterwards.
//! * Faults are SOAP faults with HTTP 500, shaped as real orgs send them (the `INVALID_LOGIN`
//!   envelope captured in apexsharp/apexsharp#20; the `UnexpectedErrorFault` of
//!   forcedotcom/postman-salesforce-apis#26):
//!   - wrong credentials: `INVALID_LOGIN` "Invalid username, password, security token; or user
//!     locked out.";
//!   - a version below 31.0: `UNSUPPORTED_API_VERSION` "Invalid Api version specified on URL"
//!     (versions 7.0 to 30.0 are retired; superfell/zkSforce#52 shows the fault);
//!   - version 65.0 and later: `INVALID_OPERATION` "The SOAP Login operation is not available in
//!     the API version specified (65.0). …" (login() is not available from 65.0 on; the message
//!     is the one forcedotcom/wsc#363 met);
//!   - login() switched off ([`SimConfig::soap_login`](super::SimConfig::soap_login) false, as
//!     in orgs created in Winter '26 and later): `INVALID_OPERATION` "SOAP API login() is
//!     disabled by default in this org. …" (OpenFn/adaptors#1715);
//!   - an unknown session on logout: `INVALID_SESSION_ID`;
//!   - a body that is not a login or logout envelope: `UNKNOWN_EXCEPTION` naming what is
//!     missing; any other SOAP call: `UNKNOWN_EXCEPTION` (the simulator serves login and logout
//!     only: README.md, Known differences).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::shared::Shared;
use super::util::lock;

/// The first API version whose `login()` is gone ("SOAP API End-of-Life Policy").
const LOGIN_REMOVED_IN: (u32, u32) = (65, 0);
/// The oldest API version still served (versions 21.0 to 30.0 retired in Summer '25).
const OLDEST_VERSION: (u32, u32) = (31, 0);

/// `POST /services/Soap/{u|c}/{version}`.
pub(super) async fn call(
    State(s): State<Arc<Shared>>,
    Path((api, version)): Path<(String, String)>,
    body: String,
) -> Response {
    let result = match Envelope::read(&body) {
        Err(missing) => Err(Fault::unknown(&missing)),
        Ok(Envelope { operation, .. }) if operation == "login" => login(&s, &api, &version, &body),
        Ok(Envelope { operation, session }) if operation == "logout" => logout(&s, session),
        Ok(Envelope { operation, .. }) => Err(Fault::unknown(&format!(
            "the simulated org serves the SOAP calls login and logout, not {operation}"
        ))),
    };
    match result {
        Ok(body) => xml(StatusCode::OK, &envelope(&body)),
        Err(fault) => fault.response(),
    }
}

/// What the request's envelope asks for.
struct Envelope {
    /// The local name of the body's first element (`login`, `logout`, …).
    operation: String,
    /// The `SessionHeader`'s `sessionId`, when present.
    session: Option<String>,
}

impl Envelope {
    fn read(xml: &str) -> Result<Self, String> {
        let tags = tags(xml);
        let body = tags
            .iter()
            .position(|t| t.name == "Body" && !t.closing)
            .ok_or("the request is not a SOAP envelope with a Body element")?;
        let operation = tags[body + 1..]
            .iter()
            .find(|t| !t.closing)
            .filter(|t| t.name != "Body")
            .ok_or("the SOAP Body holds no call")?
            .name
            .clone();
        let session = text_of(xml, "sessionId");
        Ok(Self { operation, session })
    }
}

/// A start or end tag: its local name (the namespace prefix dropped) and where its text starts.
struct Tag {
    name: String,
    closing: bool,
    /// Byte offset just after the tag's `>`.
    end: usize,
}

/// The element tags of `xml`, in order (declarations and comments skipped).
fn tags(xml: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = xml[rest..].find('<').map(|i| rest + i) {
        let Some(close) = xml[open..].find('>').map(|i| open + i) else {
            break;
        };
        let inner = &xml[open + 1..close];
        rest = close + 1;
        if inner.starts_with('?') || inner.starts_with('!') {
            continue;
        }
        let closing = inner.starts_with('/');
        let raw = inner.trim_start_matches('/');
        let qualified = raw
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let name = qualified.rsplit(':').next().unwrap_or("").to_owned();
        out.push(Tag {
            name,
            closing,
            end: rest,
        });
    }
    out
}

/// The unescaped text of the first element named `local` (any prefix).
fn text_of(xml: &str, local: &str) -> Option<String> {
    let tag = tags(xml)
        .into_iter()
        .find(|t| t.name == local && !t.closing)?;
    let text = &xml[tag.end..];
    let text = &text[..text.find('<')?];
    Some(unescape(text))
}

/// XML's predefined entities and character references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return out;
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..amp + 2 + semi]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `major.minor` of a version segment (`64.0`).
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn login(s: &Shared, api: &str, version: &str, body: &str) -> Result<String, Fault> {
    let parsed =
        parse_version(version).filter(|v| *v >= OLDEST_VERSION && (api == "u" || api == "c"));
    let Some(parsed) = parsed else {
        return Err(Fault::new(
            "sf:UNSUPPORTED_API_VERSION",
            "UNSUPPORTED_API_VERSION",
            "Invalid Api version specified on URL",
            "UnexpectedErrorFault",
        ));
    };
    if parsed >= LOGIN_REMOVED_IN {
        return Err(Fault::operation(&format!(
            "The SOAP Login operation is not available in the API version specified ({version}). Refer to the documentation for supported versions."
        )));
    }
    let cfg = &s.config;
    if !cfg.soap_login {
        return Err(Fault::operation(
            "SOAP API login() is disabled by default in this org. Contact the org administrator to enable SOAP API login().",
        ));
    }
    let username = text_of(body, "username").unwrap_or_default();
    let password = text_of(body, "password").unwrap_or_default();
    if username != cfg.username || password != format!("{}{}", cfg.password, cfg.security_token) {
        return Err(Fault::new(
            "INVALID_LOGIN",
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
            "LoginFault",
        ));
    }
    let session = s.issue_token(&cfg.user_id);
    s.logins.served();
    let org15 = &cfg.org_id[..15.min(cfg.org_id.len())];
    let instance = &s.instance_url;
    let seconds = cfg.token_ttl.as_secs();
    let user = escape(&cfg.username);
    let ns = if api == "c" { "enterprise" } else { "partner" };
    Ok(format!(
        "<loginResponse xmlns=\"urn:{ns}.soap.sforce.com\"><result>\
         <metadataServerUrl>{instance}/services/Soap/m/{version}/{org15}</metadataServerUrl>\
         <passwordExpired>false</passwordExpired><sandbox>false</sandbox>\
         <serverUrl>{instance}/services/Soap/{api}/{version}/{org15}</serverUrl>\
         <sessionId>{session}</sessionId><userId>{uid}</userId><userInfo>\
         <accessibilityMode>false</accessibilityMode><currencySymbol>$</currencySymbol>\
         <orgAttachmentFileSizeLimit>5242880</orgAttachmentFileSizeLimit>\
         <orgDefaultCurrencyIsoCode>USD</orgDefaultCurrencyIsoCode>\
         <orgDisallowHtmlAttachments>false</orgDisallowHtmlAttachments>\
         <orgHasPersonAccounts>false</orgHasPersonAccounts>\
         <organizationId>{org}</organizationId>\
         <organizationMultiCurrency>false</organizationMultiCurrency>\
         <organizationName>forcebridge simulated org</organizationName>\
         <sessionSecondsValid>{seconds}</sessionSecondsValid>\
         <userDefaultCurrencyIsoCode xsi:nil=\"true\"/><userEmail>{user}</userEmail>\
         <userFullName>Forcebridge Demo</userFullName><userId>{uid}</userId>\
         <userLanguage>en_US</userLanguage><userLocale>en_US</userLocale>\
         <userName>{user}</userName><userTimeZone>Etc/UTC</userTimeZone>\
         <userType>Standard</userType><userUiSkin>Theme3</userUiSkin>\
         </userInfo></result></loginResponse>",
        uid = cfg.user_id,
        org = cfg.org_id,
    ))
}

fn logout(s: &Shared, session: Option<String>) -> Result<String, Fault> {
    let removed = session.and_then(|token| lock(&s.tokens).remove(&token));
    match removed {
        Some(_) => Ok("<logoutResponse xmlns=\"urn:partner.soap.sforce.com\"/>".to_owned()),
        None => Err(Fault::new(
            "sf:INVALID_SESSION_ID",
            "INVALID_SESSION_ID",
            "Invalid Session ID found in SessionHeader: Illegal Session",
            "UnexpectedErrorFault",
        )),
    }
}

/// A SOAP fault, sent with HTTP 500.
struct Fault {
    faultcode: &'static str,
    code: &'static str,
    message: String,
    /// The `detail` element's fault type (`LoginFault`, `UnexpectedErrorFault`).
    kind: &'static str,
}

impl Fault {
    fn new(faultcode: &'static str, code: &'static str, message: &str, kind: &'static str) -> Self {
        Self {
            faultcode,
            code,
            message: message.to_owned(),
            kind,
        }
    }

    fn operation(message: &str) -> Self {
        Self::new(
            "sf:INVALID_OPERATION",
            "INVALID_OPERATION",
            message,
            "UnexpectedErrorFault",
        )
    }

    fn unknown(message: &str) -> Self {
        Self::new(
            "UNKNOWN_EXCEPTION",
            "UNKNOWN_EXCEPTION",
            message,
            "UnexpectedErrorFault",
        )
    }

    fn response(self) -> Response {
        let message = escape(&self.message);
        let body = format!(
            "<soapenv:Fault><faultcode>{faultcode}</faultcode>\
             <faultstring>{code}: {message}</faultstring><detail>\
             <sf:{kind} xsi:type=\"sf:{kind}\"><sf:exceptionCode>{code}</sf:exceptionCode>\
             <sf:exceptionMessage>{message}</sf:exceptionMessage></sf:{kind}></detail>\
             </soapenv:Fault>",
            faultcode = self.faultcode,
            code = self.code,
            kind = self.kind,
        );
        xml(StatusCode::INTERNAL_SERVER_ERROR, &envelope(&body))
    }
}

/// `body` in a SOAP 1.1 envelope, with the namespaces real answers declare.
fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope \
         xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:sf=\"urn:fault.partner.soap.sforce.com\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>{body}\
         </soapenv:Body></soapenv:Envelope>"
    )
}

fn xml(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
        body.to_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_call_and_its_fields_whatever_the_prefixes() {
        let jsforce = "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\"><se:Header/><se:Body><login xmlns=\"urn:partner.soap.sforce.com\"><username>a&amp;b@x.com</username><password>p&lt;w&#x21;&#33;</password></login></se:Body></se:Envelope>";
        let envelope = Envelope::read(jsforce).unwrap();
        assert_eq!(envelope.operation, "login");
        assert_eq!(text_of(jsforce, "username").unwrap(), "a&b@x.com");
        assert_eq!(text_of(jsforce, "password").unwrap(), "p<w!!");
        let prefixed = "<?xml version=\"1.0\"?><soapenv:Envelope><soapenv:Header><urn:SessionHeader><urn:sessionId>00D!AQ</urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body><urn:logout/></soapenv:Body></soapenv:Envelope>";
        let envelope = Envelope::read(prefixed).unwrap();
        assert_eq!(envelope.operation, "logout");
        assert_eq!(envelope.session.as_deref(), Some("00D!AQ"));
    }

    #[test]
    fn a_body_without_a_call_is_named() {
        let err = |xml: &str| Envelope::read(xml).err().unwrap();
        assert_eq!(
            err("username=a&password=b"),
            "the request is not a SOAP envelope with a Body element"
        );
        assert_eq!(
            err("<Envelope><Body></Body></Envelope>"),
            "the SOAP Body holds no call"
        );
    }

    #[test]
    fn unknown_entities_are_kept_as_written() {
        assert_eq!(unescape("a &bogus; b &#xZZ; c &"), "a &bogus; b &#xZZ; c &");
    }
}
