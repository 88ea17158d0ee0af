//! The report page of `tokenledger serve --http` in a real browser: headless chromium from
//! Debian's packages, driven by Selenium from tests/python/test_report_page.py, against a server
//! over the sample data with an administrator and a one-tenant user.

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine;

use crate::flight_clients::ServeProcess;
use crate::peers::repo_root;

#[test]
fn the_report_page_in_a_headless_browser() {
    if which("chromium").is_none() || which("chromedriver").is_none() {
        assert!(
            std::env::var_os("TOKENLEDGER_REQUIRE_PEERS").is_none(),
            "chromium and chromedriver are not installed (scripts/test.sh installs them)"
        );
        return;
    }
    let server = ServeProcess::serve_to(
        &repo_root().join("testdata/sample"),
        false,
        &[
            ("analyst", "correct horse battery", &["*"]),
            ("acme", "acme's password", &["acme-retail"]),
        ],
        &[],
    );
    let artefacts = repo_root().join("test-artefacts");
    server.pytest_with(
        ".venv",
        &["test_report_page.py"],
        None,
        &[
            ("TOKENLEDGER_HTTP_PORT", server.http_port().to_string()),
            (
                "TOKENLEDGER_PAGE_TENANT_USER",
                "acme:acme's password:acme-retail".into(),
            ),
            ("TOKENLEDGER_ARTEFACTS", artefacts.display().to_string()),
        ],
    );
    let screenshot = artefacts.join("report-page.png");
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        screenshot.display()
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.exists())
}

/// A page load is a query of its user under the server's limits: with no room to wait
/// (`--max-queued-queries 0`), the page says the server is busy (503) instead of running.
#[test]
fn the_report_page_waits_its_turn_like_a_flight_query() {
    let server = ServeProcess::serve_to(
        &repo_root().join("testdata/handmade"),
        false,
        &[("analyst", "pw", &["*"])],
        &["--max-queued-queries", "0"],
    );
    let (status, body) = get(server.http_port(), "/", Some(("analyst", "pw")));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("server busy"), "{body}");
    let (status, _) = get(server.http_port(), "/", Some(("analyst", "wrong")));
    assert_eq!(status, 401);
}

/// A plain HTTP/1.1 GET: the status code and body.
fn get(port: u16, path: &str, user: Option<(&str, &str)>) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((name, password)) = user {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response)
}
