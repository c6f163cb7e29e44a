//! The simulated org's HTTP side as a pooled HTTP/1.1 client meets it, over raw TCP: a request
//! whose body the server did not need must not cost the client its connection (or, if the server
//! closes it, the response must say `Connection: close`), so that the next request on the
//! connection does not fail with EPIPE.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use forcebridge::sim::{SimConfig, SimOrg};

/// One response read off the connection: the status line, the headers (lower-case names) and
/// the body (by `Content-Length`).
fn read_response(reader: &mut BufReader<TcpStream>) -> (String, Vec<(String, String)>, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (
        status.trim_end().to_owned(),
        headers,
        String::from_utf8(body).unwrap(),
    )
}

/// Sends a request with a body to an unknown path (or a known one with another method), then a GET of the version list on the same
/// connection: both are answered (the first with Salesforce's `NOT_FOUND` array), or the first
/// announces `Connection: close`.
fn unknown_path_then_next_request(
    org: &SimOrg,
    method: &str,
    path: &str,
    body_len: usize,
    expected: (u16, &str),
) {
    let addr = org.instance_url().trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let body = "x".repeat(body_len);
    write!(
        writer,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, headers, text) = read_response(&mut reader);
    assert!(status.contains(&format!(" {} ", expected.0)), "{status}");
    assert!(text.contains(expected.1), "{text}");
    let closes = headers
        .iter()
        .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
    if closes {
        return;
    }
    write!(
        writer,
        "GET /services/data HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let (status, _, text) = read_response(&mut reader);
    assert!(
        status.contains(" 200 "),
        "{status}: the connection was closed without Connection: close"
    );
    assert!(text.contains("/services/data/v"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unread_body_does_not_cost_the_connection() {
    let org = SimOrg::start(SimConfig::default()).await.unwrap();
    let handle = org.clone();
    tokio::task::spawn_blocking(move || {
        let not_found = (404, "\"errorCode\":\"NOT_FOUND\"");
        unknown_path_then_next_request(&handle, "POST", "/no/such/path", 64, not_found);
        unknown_path_then_next_request(&handle, "POST", "/no/such/path", 300_000, not_found);
        let not_allowed = (405, "\"errorCode\":\"METHOD_NOT_ALLOWED\"");
        unknown_path_then_next_request(&handle, "PUT", "/sim/seed", 64, not_allowed);
        unknown_path_then_next_request(&handle, "PATCH", "/services/oauth2/token", 64, not_allowed);
    })
    .await
    .unwrap();
    org.shutdown().await;
}
