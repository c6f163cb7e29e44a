//! Which `instance_url` a login may hand back: the host every REST call (and the bearer token)
//! goes to next (issue 19, item 11).
//!
//! Contract: [`check_instance_url`] accepts an `instance_url` only when
//! * it passes the plaintext rule (`crate::salesforce::tls::check_url`: `https://`, or `http://`
//!   to loopback with `salesforce.allow_plaintext`), and
//! * its host is a Salesforce domain ([`SALESFORCE_DOMAINS`], or a subdomain of one), or it is the
//!   configured login host itself, same host and port (a simulated org, a login proxy).
//!
//! Anything else is refused with a message naming the host: a token endpoint that names another
//! host is not trusted with the token.

use crate::salesforce::tls::check_url;

/// The registered domains Salesforce serves orgs from; an org's `instance_url` is one of them or
/// a subdomain. Sources (Salesforce Help): "My Domain URL Formats" (`*.my.salesforce.com`,
/// sandboxes `*.sandbox.my.salesforce.com`, Developer Edition `*.develop.my.salesforce.com`,
/// scratch orgs, instanced URLs such as `na1.salesforce.com` and `usa77.salesforce.com`, legacy
/// `*.cloudforce.com` and `*.database.com` suffixes), "Allow the Required Domains"
/// (`*.force.com`, `*.salesforce.com`, the Salesforce on Alibaba Cloud domains
/// `*.sfcrmproducts.cn` and `*.sfcrmapps.cn`), and Government Cloud Plus – Defense
/// (`*.salesforce.mil`). Hyperforce orgs keep these same domains.
pub(crate) const SALESFORCE_DOMAINS: &[&str] = &[
    "salesforce.com",
    "force.com",
    "cloudforce.com",
    "database.com",
    "salesforce.mil",
    "sfcrmproducts.cn",
    "sfcrmapps.cn",
];

/// Whether `host` is one of [`SALESFORCE_DOMAINS`] or a subdomain of one (an IP address never is).
pub(crate) fn is_salesforce_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    SALESFORCE_DOMAINS.iter().any(|domain| {
        host == *domain
            || host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
    })
}

/// Checks the `instance_url` a login at `login_url` returned; the error names the host and says
/// what is accepted.
pub(crate) fn check_instance_url(
    instance_url: &str,
    login_url: &str,
    allow_plaintext: bool,
) -> Result<(), String> {
    let parsed = reqwest::Url::parse(instance_url).map_err(|e| format!("`{instance_url}`: {e}"))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    check_url(instance_url, allow_plaintext).map_err(|e| format!("host `{host}`: {e}"))?;
    if parsed.domain().is_some_and(is_salesforce_host) {
        return Ok(());
    }
    let login = reqwest::Url::parse(login_url).ok();
    let same_origin = login.as_ref().is_some_and(|login| {
        login.host_str() == parsed.host_str()
            && login.port_or_known_default() == parsed.port_or_known_default()
    });
    if same_origin {
        return Ok(());
    }
    let login_host = login
        .as_ref()
        .map(|l| match (l.host_str(), l.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => String::new(),
        })
        .unwrap_or_default();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Err(format!(
        "host `{host}{port}` is neither a Salesforce domain ({}) nor the login host `{login_host}`; the access token is not sent to it",
        SALESFORCE_DOMAINS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_domains_and_their_subdomains() {
        for host in [
            "acme.my.salesforce.com",
            "acme--uat.sandbox.my.salesforce.com",
            "acme-dev-ed.develop.my.salesforce.com",
            "na1.salesforce.com",
            "usa77.salesforce.com",
            "acme.lightning.force.com",
            "acme.my.salesforce.mil",
            "acme.my.sfcrmproducts.cn",
            "ACME.MY.SALESFORCE.COM",
        ] {
            assert!(is_salesforce_host(host), "{host}");
        }
        for host in [
            "evilsalesforce.com",
            "salesforce.com.evil.example",
            "acme.my.salesforce.com.attacker.io",
            "notforce.com",
            ".salesforce.com",
            "127.0.0.1",
        ] {
            assert!(!is_salesforce_host(host), "{host}");
        }
    }

    #[test]
    fn a_salesforce_instance_is_accepted_from_any_login_host() {
        let login = "https://login.salesforce.com";
        assert!(check_instance_url("https://acme.my.salesforce.com", login, false).is_ok());
        assert!(check_instance_url("https://acme.my.salesforce.com/", login, true).is_ok());
        let custom = "https://sso-proxy.corp.example:8443";
        assert!(check_instance_url("https://acme.my.salesforce.com", custom, false).is_ok());
    }

    #[test]
    fn a_foreign_host_is_refused_naming_it() {
        let err = check_instance_url(
            "https://collector.attacker.io",
            "https://acme.my.salesforce.com",
            false,
        )
        .unwrap_err();
        assert!(err.contains("`collector.attacker.io`"), "{err}");
        assert!(
            err.contains("nor the login host `acme.my.salesforce.com`"),
            "{err}"
        );
    }

    #[test]
    fn the_login_host_itself_is_accepted_same_host_and_port_only() {
        let login = "http://127.0.0.1:8080";
        assert!(check_instance_url("http://127.0.0.1:8080", login, true).is_ok());
        for foreign in [
            "http://127.0.0.1:9999",
            "http://127.0.0.2:8080",
            "http://localhost:8080",
        ] {
            let err = check_instance_url(foreign, login, true).unwrap_err();
            let host = foreign.trim_start_matches("http://");
            assert!(err.contains(&format!("`{host}`")), "{err}");
        }
        let proxy = "https://sf-login.corp.example";
        assert!(check_instance_url("https://sf-login.corp.example/", proxy, false).is_ok());
        assert!(check_instance_url("https://other.corp.example", proxy, false).is_err());
    }

    #[test]
    fn the_plaintext_rule_applies_to_the_instance() {
        // http:// to a non-loopback host, even a Salesforce one and even with allow_plaintext.
        let login = "http://127.0.0.1:8080";
        for (url, plaintext) in [
            ("http://acme.my.salesforce.com", true),
            ("http://acme.my.salesforce.com", false),
            ("http://127.0.0.1:8080", false),
            ("ftp://acme.my.salesforce.com", true),
        ] {
            let err = check_instance_url(url, login, plaintext).unwrap_err();
            assert!(err.starts_with("host `"), "{url}: {err}");
        }
    }
}
