//! `tokenledger serve` with the clients analysts and data teams really use: the ADBC Flight SQL
//! driver, `pyarrow.flight` and flightsql-dbapi (Superset's dialect), each run by pytest from the
//! venvs scripts/test.sh creates (tests/python/). The Python tests compute their expected values
//! from the Parquet files with pyarrow.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::{repo_root, venv_python};

const USER: &str = "analyst";
const PASSWORD: &str = "correct horse battery";

/// A `tokenledger serve` process on a free loopback port, killed when dropped.
pub struct ServeProcess {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    data: PathBuf,
    tls_root_certs: Option<PathBuf>,
}

impl ServeProcess {
    /// Serves the sample data to one user (`USER`), with TLS when `tls` is set.
    fn start(tls: bool) -> ServeProcess {
        Self::serve(&repo_root().join("testdata/sample"), tls)
    }

    /// Serves the data directory `data` to one user (`USER`, every tenant), with TLS when `tls`
    /// is set.
    pub fn serve(data: &Path, tls: bool) -> ServeProcess {
        Self::serve_to(data, tls, &[(USER, PASSWORD, &["*"])], &[])
    }

    /// Serves `data` to `users` (name, password, tenants; the first one is the one pytest gets
    /// as `TOKENLEDGER_FLIGHT_USER`), with `extra` arguments to `tokenledger serve`.
    pub fn serve_to(
        data: &Path,
        tls: bool,
        users_and_tenants: &[(&str, &str, &[&str])],
        extra: &[&str],
    ) -> ServeProcess {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        for (name, password, tenants) in users_and_tenants {
            add_user_with_tenants(&users, name, password, tenants);
        }
        let mut args: Vec<String> = vec!["serve".into(), "--data".into(), path(data)];
        args.extend(extra.iter().map(|a| a.to_string()));
        if !extra
            .iter()
            .any(|a| a.starts_with("--http") || *a == "--no-http")
        {
            // The report page too, on a free port (not the default one every server would share).
            args.extend(["--http".into(), "127.0.0.1:0".into()]);
        }
        args.extend([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--users".into(),
            path(&users),
        ]);
        let tls_root_certs = tls.then(|| {
            let (root, cert, key) = write_test_certificates(dir.path());
            args.extend([
                "--tls-cert".into(),
                path(&cert),
                "--tls-key".into(),
                path(&key),
            ]);
            root
        });
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(&args)
            .current_dir(repo_root())
            .env("TOKENLEDGER_LOG", "info")
            .env(
                "TOKENLEDGER_CLUSTER_SECRET",
                crate::distributed::TEST_CLUSTER_SECRET,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tokenledger serve starts");
        let mut server = ServeProcess {
            child,
            port: 0,
            dir,
            data: data.to_path_buf(),
            tls_root_certs,
        };
        server.port = server.wait_for_port();
        server
    }

    /// Reads the port from the "serving … on grpc://127.0.0.1:PORT" line.
    fn wait_for_port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains("over Arrow Flight SQL on")) {
                let port = line.rsplit(':').next().unwrap().trim();
                return port
                    .parse()
                    .unwrap_or_else(|_| panic!("no port in {line:?}"));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tokenledger serve exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "serve did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The report page's port, from the "report page on http(s)://127.0.0.1:PORT/" line.
    pub fn http_port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.starts_with("report page on http")) {
                let port = line.trim_end_matches('/').rsplit(':').next().unwrap();
                return port
                    .parse()
                    .unwrap_or_else(|_| panic!("no port in {line:?}"));
            }
            assert!(Instant::now() < deadline, "no report page:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The test CA's certificate, when the server was started with TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls_root_certs.as_deref()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Log lines of finished queries whose SQL contains `fragment`.
    pub fn query_lines(&self, fragment: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" query ") || l.contains(": query"))
            .filter(|l| l.contains(fragment))
            .map(str::to_string)
            .collect()
    }

    /// Runs pytest from `venv` on `tests` (paths under tests/python, optionally `-k` selected),
    /// and fails with its output unless every test passed. `None` when peers may be skipped.
    pub fn pytest(&self, venv: &str, tests: &[&str], select: Option<&str>) -> Option<String> {
        self.pytest_with(venv, tests, select, &[])
    }

    /// [`ServeProcess::pytest`] with more environment variables.
    pub fn pytest_with(
        &self,
        venv: &str,
        tests: &[&str],
        select: Option<&str>,
        env: &[(&str, String)],
    ) -> Option<String> {
        let python = venv_python(venv)?;
        let mut command = Command::new(python);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command
            .args(["-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"])
            .args(tests.iter().map(|t| format!("tests/python/{t}")))
            .current_dir(repo_root())
            .env("TOKENLEDGER_FLIGHT_PORT", self.port.to_string())
            .env("TOKENLEDGER_FLIGHT_USER", USER)
            .env("TOKENLEDGER_FLIGHT_PASSWORD", PASSWORD)
            .env("TOKENLEDGER_DATA_DIR", &self.data)
            .env("TOKENLEDGER_SERVER_PID", self.child.id().to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        if let Some(select) = select {
            command.args(["-k", select]);
        }
        if let Some(root) = &self.tls_root_certs {
            command.env("TOKENLEDGER_TLS_ROOT_CERTS", root);
        }
        let out = command.output().expect("pytest runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "pytest {tests:?} failed:\n{report}\nserver log:\n{}",
            self.log()
        );
        eprintln!("{report}");
        Some(report)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `tokenledger user add NAME --users FILE --tenant '*'`, with the password on stdin as a
/// script would.
pub(crate) fn add_user(users: &Path, name: &str, password: &str) {
    add_user_with_tenants(users, name, password, &["*"]);
}

/// `tokenledger user add NAME --users FILE --tenant T…`.
pub(crate) fn add_user_with_tenants(users: &Path, name: &str, password: &str, tenants: &[&str]) {
    let mut args = vec!["user", "add", name, "--users"];
    let users = path(users);
    args.push(&users);
    for tenant in tenants {
        args.extend(["--tenant", tenant]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(&args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// returns (CA certificate, server certificate, server key).
pub(crate) fn write_test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: a server certificate whose issuer equals its subject looks self-signed.
    ca.distinguished_name
        .push(DnType::CommonName, "tokenledger test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "tokenledger test server");
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&files.0, ca_cert.pem()).unwrap();
    std::fs::write(&files.1, server_cert.pem()).unwrap();
    std::fs::write(&files.2, server_key.serialize_pem()).unwrap();
    // A private key others may read is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&files.2, std::fs::Permissions::from_mode(0o600)).unwrap();
    files
}

#[test]
fn adbc_and_pyarrow_flight_clients_get_the_parquet_answers() {
    let server = ServeProcess::start(false);
    if server
        .pytest(".venv", &["test_adbc.py", "test_pyarrow_flight.py"], None)
        .is_none()
    {
        return;
    }
    // One log line per query, with user, duration, rows and status.
    let totals = server.query_lines("GROUP BY workflow");
    assert!(!totals.is_empty(), "no query line in:\n{}", server.log());
    for line in &totals {
        for field in ["user=analyst", "duration_ms=", "rows=4", "status=\"ok\""] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    let dropped = server.query_lines("generate_series(1, 100000000)");
    assert_eq!(dropped.len(), 1, "{}", server.log());
    assert!(
        dropped[0].contains("status=\"cancelled\""),
        "{}",
        dropped[0]
    );
    let large = server.query_lines("repeat('x', 250)");
    assert!(large[0].contains("rows=4000000"), "{}", large[0]);
    let refused = server.query_lines("CREATE TABLE stolen");
    assert!(refused[0].contains("status=\"error\""), "{}", refused[0]);
}

#[test]
fn superset_flightsql_dbapi_client_gets_the_parquet_answers() {
    let server = ServeProcess::start(false);
    server.pytest(".venv-dbapi", &["test_dbapi.py"], None);
}

#[test]
fn tls_clients_verify_the_server_and_plaintext_is_refused() {
    let server = ServeProcess::start(true);
    server.pytest(
        ".venv",
        &["test_adbc.py", "test_pyarrow_flight.py"],
        Some("totals or unauthenticated or tls_server"),
    );
}
