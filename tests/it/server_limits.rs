//! `tokenledger serve` shared by several teams: tenant isolation seen through the ADBC driver,
//! a query deadline that really stops the work, and the refusal to take passwords in plaintext
//! off loopback.

use std::process::Command;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

use crate::flight_clients::ServeProcess;
use crate::peers::repo_root;

const ANA: (&str, &str, &[&str]) = ("ana", "ana's password", &["acme-retail"]);
const BO: (&str, &str, &[&str]) = ("bo", "bo's password", &["umbrella-legal", "hooli-devices"]);

#[test]
fn adbc_users_see_only_their_tenants_rows() {
    let server = ServeProcess::serve_to(
        &repo_root().join("testdata/sample"),
        false,
        &[("admin", "admin's password", &["*"]), ANA, BO],
        &[],
    );
    let users = [ANA, BO]
        .iter()
        .map(|(name, password, tenants)| format!("{name}:{password}:{}", tenants.join(",")))
        .collect::<Vec<_>>()
        .join(";");
    if server
        .pytest_with(
            ".venv",
            &["test_tenancy.py"],
            None,
            &[("TOKENLEDGER_TENANT_USERS", users)],
        )
        .is_none()
    {
        return;
    }
    // The query log says who asked, from where, for which tenants, how long they waited and
    // how much was sent.
    let lines = server.query_lines("GROUP BY tenant");
    let ana = lines
        .iter()
        .find(|l| l.contains("user=ana"))
        .unwrap_or_else(|| panic!("no query line of ana in:\n{}", server.log()));
    for field in [
        "peer=127.0.0.1:",
        "tenants=acme-retail",
        "queued_ms=",
        "bytes=",
    ] {
        assert!(ana.contains(field), "{field} missing from {ana}");
    }
    let bytes: u64 = ana
        .split("bytes=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(bytes > 0, "{ana}");
}

/// CPU seconds the process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 14th, stime 15th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[test]
fn a_cpu_sink_past_its_deadline_stops_and_the_cpu_goes_idle() {
    let server = ServeProcess::serve_to(
        &repo_root().join("testdata/sample"),
        false,
        &[("admin", "admin's password", &["*"])],
        &["--query-timeout", "2"],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", server.port()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("admin", "admin's password").await.unwrap();
        let sink = "SELECT count(*) FROM generate_series(1, 1000000000000) AS t(v) \
                    CROSS JOIN (SELECT 1) WHERE v % 7 = 3";
        let info = client.execute(sink.into(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let started = Instant::now();
        let cpu_before = cpu_seconds(server.pid());
        let outcome: Result<Vec<_>, _> = match client.do_get(ticket).await {
            Ok(stream) => stream.try_collect().await,
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        let cpu_during = cpu_seconds(server.pid()) - cpu_before;
        let error = format!("{:?}", outcome.unwrap_err());
        assert!(error.contains("DeadlineExceeded"), "{error}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(3),
            "stopped after {took:?}; the deadline was 2 s"
        );
        assert!(cpu_during > 1.0, "the sink did burn CPU: {cpu_during:.2} s");
        // After the stop, the server idles: well under a tenth of a core over a second.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle_from = cpu_seconds(server.pid());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = cpu_seconds(server.pid()) - idle_from;
        assert!(
            after < 0.1,
            "the server still used {after:.2} CPU s in the second after"
        );
        // And answers.
        let info = client.execute("SELECT 1".into(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<_> = client
            .do_get(ticket)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(batches[0].num_rows(), 1);
    });
}

#[test]
fn passwords_off_loopback_need_tls() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    crate::flight_clients::add_user(&users, "ana", "pw");
    let out = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
        .args(["serve", "--listen", "0.0.0.0:0", "--users"])
        .arg(&users)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("plaintext") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
}
