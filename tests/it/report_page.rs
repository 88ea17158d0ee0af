//! The report page of `tokenledger serve --http` in a real browser: headless chromium from
//! Debian's packages, driven by Selenium from tests/python/test_report_page.py, against a server
//! over the sample data with an administrator and a one-tenant user.

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
