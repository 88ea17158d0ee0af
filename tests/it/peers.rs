//! Third-party programs the tests run against: the S3-compatible server and the independent
//! engine (DuckDB). The README's test command installs them into `.venv/` and sets
//! TOKENLEDGER_REQUIRE_PEERS=1, so there a missing peer fails the run. A bare `cargo test` finds
//! them in the venvs too; without them, the tests that need them say so in one line and skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Finds a program in the project venv (then, unless `venv_only`, on PATH). `None` only when
/// skipping is allowed.
pub fn peer(program: &str, venv_only: bool) -> Option<PathBuf> {
    find_peer(".venv", program, venv_only)
}

/// The Python interpreter of one of the venvs scripts/test.sh creates (`.venv`, `.venv-dbapi`).
pub fn venv_python(venv: &str) -> Option<PathBuf> {
    find_peer(venv, "python3", true)
}

fn find_peer(venv: &str, program: &str, venv_only: bool) -> Option<PathBuf> {
    let in_venv = repo_root().join(venv).join("bin").join(program);
    if in_venv.exists() {
        return Some(in_venv);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.exists())
    });
    if on_path.is_some() && !venv_only {
        return on_path;
    }
    assert!(
        std::env::var("TOKENLEDGER_REQUIRE_PEERS").as_deref() != Ok("1"),
        "{program} is not installed in {venv}, and this run requires the test peers"
    );
    eprintln!(
        "SKIPPED: {program} is not installed in {venv}; scripts/test.sh installs the test peers \
         and runs these tests too"
    );
    None
}

/// Runs the tokenledger binary with `args` and extra environment.
pub fn tokenledger(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    command
        .args(args)
        .current_dir(repo_root())
        .env_remove("TOKENLEDGER_DATA")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("tokenledger runs")
}

/// Stdout of a run that must succeed.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "tokenledger failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `n` distinct free loopback ports (all held until all are found, so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Access key and secret the test S3 server accepts.
pub const S3_KEY: &str = "tokenledger-test";
pub const S3_SECRET: &str = "tokenledger-test-secret";

/// A SeaweedFS S3 server on 127.0.0.1, stopped when dropped.
pub struct S3Server {
    child: Child,
    weed: PathBuf,
    args: Vec<String>,
    bucket: String,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `weed mini` with `bucket` created, on free loopback ports, and waits until an
    /// authenticated write succeeds. A port found free can be taken before `weed` binds it (by
    /// another test's connection): when `weed` exits, it starts again on other ports.
    pub fn start(bucket: &str) -> Option<S3Server> {
        let weed = peer("weed", false)?;
        let mut attempts = 1;
        loop {
            let mut server = Self::spawn(&weed, bucket);
            match server.wait_ready() {
                Ok(()) => return Some(server),
                Err(StartFailure::Exited(why)) if attempts < 3 => {
                    eprintln!("weed exited while starting, starting again on other ports: {why}");
                    attempts += 1;
                }
                Err(StartFailure::Exited(why) | StartFailure::NotReady(why)) => panic!("{why}"),
            }
        }
    }

    fn spawn(weed: &Path, bucket: &str) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        ensure_room_for_weed(dir.path());
        let flags = [
            "s3.port",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        let ports = free_ports(flags.len());
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", dir.path().display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-master.telemetry=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            // Left to itself, weed sizes volumes from the disk's total size (1 GiB on a large disk)
            // and makes as many as fit in the free space. The tests write a few MB.
            format!("-master.volumeSizeLimitMB={WEED_VOLUME_MIB}"),
            format!("-bucket={bucket}"),
        ];
        args.extend(
            flags
                .iter()
                .zip(&ports)
                .map(|(flag, port)| format!("-{flag}={port}")),
        );
        let child = spawn_weed(weed, &args, dir.path());
        S3Server {
            child,
            weed: weed.to_path_buf(),
            args,
            bucket: bucket.to_string(),
            endpoint: format!("http://127.0.0.1:{}", ports[0]),
            _dir: dir,
        }
    }

    /// Kills the server, as a crash or network loss would take it away.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports over the same data, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_weed(&self.weed, &self.args, self._dir.path());
        if let Err(StartFailure::Exited(why) | StartFailure::NotReady(why)) = self.wait_ready() {
            panic!("{why}");
        }
    }

    /// Environment for tokenledger to reach this server the AWS way.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// The same settings as [`S3Server::env`], as session overrides (for in-process sessions).
    pub fn overrides(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(key, value)| {
                let key = if key == "AWS_ENDPOINT_URL" {
                    "aws_endpoint"
                } else {
                    key
                };
                (key.to_lowercase(), value)
            })
            .collect()
    }

    /// Waits until an authenticated write succeeds, for at most 60 s.
    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let bucket = &self.bucket;
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe_dir = tempfile::tempdir().unwrap();
        let csv = probe_dir.path().join("probe.csv");
        std::fs::write(&csv, "workflow,bpo_unit_price_usd\nprobe,1.0\n").unwrap();
        let env: Vec<(&str, String)> = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let data = format!("s3://{bucket}/_readiness");
        let log = || std::fs::read_to_string(self._dir.path().join("weed.log")).unwrap_or_default();
        loop {
            let out = tokenledger(
                &[
                    "import",
                    "--data",
                    &data,
                    "--table",
                    "baselines",
                    csv.to_str().unwrap(),
                ],
                &env,
            );
            if out.status.success() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(StartFailure::Exited(format!(
                    "weed for {} exited ({status})\nweed log:\n{}",
                    self.endpoint,
                    log()
                )));
            }
            if Instant::now() > deadline {
                return Err(StartFailure::NotReady(format!(
                    "S3 server at {} not ready after 60 s: {}\nweed log:\n{}",
                    self.endpoint,
                    String::from_utf8_lossy(&out.stderr),
                    log()
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The size of one SeaweedFS volume, in MiB.
const WEED_VOLUME_MIB: u64 = 64;

/// SeaweedFS takes no write when the disk holding its data has less than 1 % of its size free
/// (it marks every volume read-only), nor room for one volume. Every S3 test then waits out its
/// 60 s on a write that never lands, with a log that does not say why; this names the cause.
fn ensure_room_for_weed(dir: &Path) {
    let out = Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(dir)
        .output()
        .expect("df runs");
    let report = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = report
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [size, free] = numbers[..] else {
        panic!("unexpected df output for {}: {report}", dir.display());
    };
    let needed = size / 100 + WEED_VOLUME_MIB * 1024 * 1024;
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    assert!(
        free >= needed,
        "the disk holding {} has {:.2} GiB free; the test S3 server (SeaweedFS) takes writes only \
         with 1 % of the disk ({:.2} GiB) plus one {WEED_VOLUME_MIB} MiB volume free. Free some space.",
        dir.display(),
        gib(free),
        gib(size / 100),
    );
}

/// Why `weed` did not come up.
enum StartFailure {
    /// It exited (a port it was given was taken, say).
    Exited(String),
    /// It kept running without answering.
    NotReady(String),
}
fn spawn_weed(weed: &Path, args: &[String], dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("weed.log"))
        .unwrap();
    Command::new(weed)
        .args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("weed starts")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs DuckDB (Python package) on `sql` and returns its result as CSV with a header.
pub fn duckdb_csv(sql: &str, cwd: &Path) -> Option<String> {
    let python = peer("python3", true)?;
    let script = "import sys, duckdb\n\
                  rel = duckdb.sql(sys.argv[1])\n\
                  print(','.join(rel.columns))\n\
                  for row in rel.fetchall():\n    print(','.join('' if v is None else str(v) for v in row))\n";
    let out = Command::new(python)
        .args(["-c", script, sql])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}
