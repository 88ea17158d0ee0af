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

/// Every byte but letters and digits as `%XX`, so any text travels as one URL parameter.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a hostile link can put in each of the page's parameters: a newline that would end a
/// comment, comment markers, quotes, NUL, a very long value, dates the engine cannot hold.
/// Each is answered with the page (200) or a refusal naming the problem (400), never a server
/// error, and every response carries the security headers.
#[test]
fn the_page_takes_any_parameter_value_as_data() {
    let server = ServeProcess::serve_to(
        &repo_root().join("testdata/handmade"),
        false,
        &[("analyst", "pw", &["*"])],
        &[],
    );
    let long = "x".repeat(5_000);
    let hostile = [
        "x\nSELECT 1 --",
        "x\r\nSELECT * FROM spans; --",
        "x' OR '1'='1",
        "x -- comment",
        "x /* open",
        "x\0nul",
        "'; DROP TABLE spans; --",
        long.as_str(),
        "9999-12-31",
        "0001-01-01",
        "+10000-01-01",
    ];
    for parameter in ["from", "to", "workflow", "tenant"] {
        for value in hostile {
            for path in ["/", "/sql/allocation"] {
                let url = format!("{path}?{parameter}={}", url_encoded(value));
                let (status, response) = get(server.http_port(), &url, Some(("analyst", "pw")));
                assert!(
                    status == 200 || status == 400,
                    "{url}: {status}\n{response}"
                );
                let dates = parameter == "from" || parameter == "to";
                let refused = dates || value.len() > 1_000;
                assert_eq!(status, if refused { 400 } else { 200 }, "{url}");
                if dates && value.len() > 5 && value.starts_with(['9', '0', '+']) {
                    assert!(
                        response.contains("1678-01-01 to 2262-04-10"),
                        "{url}: {response}"
                    );
                }
                for header in [
                    "content-security-policy: default-src 'none'",
                    "x-content-type-options: nosniff",
                    "x-frame-options: DENY",
                ] {
                    assert!(
                        response
                            .to_ascii_lowercase()
                            .contains(&header.to_ascii_lowercase()),
                        "{url}: no {header}"
                    );
                }
            }
        }
    }
}

/// A workflow whose name holds a newline (imported from CSV, as a pipeline might write it) is
/// filtered on like any other: its rows and no one else's.
#[test]
fn a_workflow_named_with_a_newline_can_be_filtered_on() {
    let data = tempfile::tempdir().unwrap();
    let csv = data.path().join("csv");
    std::fs::create_dir(&csv).unwrap();
    let handmade = repo_root().join("testdata/handmade/csv");
    std::fs::copy(
        handmade.join("model_prices.csv"),
        csv.join("model_prices.csv"),
    )
    .unwrap();
    std::fs::write(
        csv.join("outcomes.csv"),
        "work_item_id,workflow,tenant,outcome,resolved_attempt,value_usd,human_minutes,human_cost_usd,closed_at\n\
         NL1,\"claims\nEU\",acme,resolved,1,9.00,0,0,2026-01-10T09:05:00Z\n\
         PLAIN1,claims,acme,resolved,1,9.00,0,0,2026-01-10T09:05:00Z\n",
    )
    .unwrap();
    std::fs::write(
        csv.join("spans.csv"),
        "trace_id,span_id,work_item_id,attempt,workflow,tenant,kind,name,provider,model,input_tokens,output_tokens,cost_usd,start_time,duration_ms,status\n\
         t-NL1,s1,NL1,1,\"claims\nEU\",acme,llm,chat,openai,gpt-4.1-mini,1000,100,0.25,2026-01-10T09:00:00Z,900,ok\n\
         t-PLAIN1,s1,PLAIN1,1,claims,acme,llm,chat,openai,gpt-4.1-mini,1000,100,0.75,2026-01-10T09:00:00Z,900,ok\n",
    )
    .unwrap();
    for table in ["model_prices", "outcomes", "spans"] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["import", "--data"])
            .arg(data.path())
            .args(["--table", table])
            .arg(csv.join(format!("{table}.csv")))
            .status()
            .unwrap();
        assert!(status.success(), "importing {table}");
    }
    let server = ServeProcess::serve_to(data.path(), false, &[("analyst", "pw", &["*"])], &[]);
    let page = |workflow: &str| {
        let url = format!("/?workflow={}", url_encoded(workflow));
        let (status, body) = get(server.http_port(), &url, Some(("analyst", "pw")));
        assert_eq!(status, 200, "{url}: {body}");
        body
    };
    // The charts' rows are in the page as JSON: each workflow's spend is its one call's cost.
    let newline = page("claims\nEU");
    assert!(
        newline.contains("\"spend_usd\":0.25"),
        "the newline workflow's spend"
    );
    assert!(
        !newline.contains("\"spend_usd\":0.75"),
        "no other workflow's spend"
    );
    let plain = page("claims");
    assert!(plain.contains("\"spend_usd\":0.75") && !plain.contains("\"spend_usd\":0.25"));
}

/// With `--tls-cert` and `--tls-key`, the page is served over HTTPS, with the same certificate
/// as Flight SQL: a real TLS client (Python's urllib, trusting the test CA) signs in and gets
/// the page; wrong passwords lock the user out as on Flight SQL (429 with Retry-After).
#[test]
fn the_page_is_served_over_tls_with_flight_sqls_login_policy() {
    let Some(python) = crate::peers::venv_python(".venv") else {
        return;
    };
    let server = ServeProcess::serve_to(
        &repo_root().join("testdata/handmade"),
        true,
        &[
            ("analyst", "s3cret-page-pw", &["*"]),
            ("ops", "ops-page-pw", &["*"]),
        ],
        &[],
    );
    let port = server.http_port();
    assert!(
        server.log().contains("report page on https://"),
        "{}",
        server.log()
    );
    let fetch = |user: &str, password: &str| {
        let script = r#"
import base64, ssl, sys, urllib.error, urllib.request
port, ca, user, password = sys.argv[1:5]
request = urllib.request.Request("https://127.0.0.1:%s/" % port)
token = base64.b64encode((user + ":" + password).encode()).decode()
request.add_header("Authorization", "Basic " + token)
context = ssl.create_default_context(cafile=ca)
try:
    answer = urllib.request.urlopen(request, context=context, timeout=60)
    print(answer.status, answer.headers.get("Content-Security-Policy"), "tokenledger" in answer.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("Retry-After"), False)
"#;
        let out = std::process::Command::new(&python)
            .args(["-c", script])
            .arg(port.to_string())
            .arg(server.ca().unwrap())
            .arg(user)
            .arg(password)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ok = fetch("analyst", "s3cret-page-pw");
    assert!(
        ok.starts_with("200 default-src 'none'") && ok.ends_with("True"),
        "{ok}"
    );
    // Guessing ops' password locks ops out from this address, right password included (a
    // browser already signed in keeps its session, as a Flight SQL token does).
    for _ in 0..5 {
        assert!(fetch("ops", "guess").starts_with("401"));
    }
    let locked = fetch("ops", "ops-page-pw");
    assert!(locked.starts_with("429 "), "{locked}");
    let retry_after: u64 = locked.split(' ').nth(1).unwrap().parse().unwrap();
    assert!((1..=31).contains(&retry_after), "{locked}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = std::panic::AssertUnwindSafe(|| get(port, "/", None));
    let (status, _) = std::panic::catch_unwind(plain).unwrap_or((0, String::new()));
    assert_ne!(status, 200);
    // No password, in any form, in the server's log.
    use base64::Engine;
    let log = server.log();
    for secret in [
        "s3cret-page-pw".to_string(),
        base64::engine::general_purpose::STANDARD.encode("analyst:s3cret-page-pw"),
        "ops-page-pw".to_string(),
        base64::engine::general_purpose::STANDARD.encode("ops:guess"),
    ] {
        assert!(!log.contains(&secret), "{secret} in the log:\n{log}");
    }
}
