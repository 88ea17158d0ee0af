//! A Flight SQL server in the test process, and what tests need to talk to it.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tokenledger_engine::{DataLocation, MemoryLimits, SessionOptions, TraceSession};
use tokenledger_flight_server::{Grant, Logins, QueryLimits, ServeOptions, Users, serve_on};
use tonic::transport::Channel;

/// A server on a free loopback port, stopped when dropped.
pub struct TestServer {
    pub address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _users_dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What to serve, to whom, within which limits.
pub struct Setup {
    data: PathBuf,
    users: Vec<(String, String, Grant)>,
    limits: QueryLimits,
    memory: Option<MemoryLimits>,
    settings: Vec<(String, String)>,
}

impl Setup {
    /// Serves `data` to anyone on loopback, with the default query limits and no memory limit.
    pub fn new(data: PathBuf) -> Self {
        Setup {
            data,
            users: Vec::new(),
            limits: QueryLimits::default(),
            memory: None,
            settings: Vec::new(),
        }
    }

    /// Adds a user (then only users may connect).
    pub fn user(mut self, name: &str, password: &str, grant: Grant) -> Self {
        self.users
            .push((name.to_string(), password.to_string(), grant));
        self
    }

    /// Query limits.
    pub fn limits(mut self, limits: QueryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Memory limits.
    pub fn memory(mut self, memory: MemoryLimits) -> Self {
        self.memory = Some(memory);
        self
    }

    /// A DataFusion setting of the server's session.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    pub async fn start(self) -> TestServer {
        let location = DataLocation::parse(self.data.to_str().unwrap()).unwrap();
        let options = SessionOptions {
            memory: self.memory,
            settings: self.settings,
            ..SessionOptions::default()
        };
        let session = Arc::new(TraceSession::open(location, &options).await.unwrap());
        let users_dir = tempfile::tempdir().unwrap();
        let users = (!self.users.is_empty()).then(|| {
            let path = users_dir.path().join("users");
            for (name, password, grant) in &self.users {
                Users::add(&path, name, password, grant).unwrap();
            }
            Arc::new(Logins::new(Users::load(&path).unwrap()))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let options = ServeOptions {
            listen: listener.local_addr().unwrap(),
            logins: users,
            tls: None,
            allow_plaintext_passwords: false,
            limits: self.limits,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            serve_on(session, &options, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            address,
            stop: Some(stop),
            _users_dir: users_dir,
        }
    }
}

/// A client connected to `server`, not logged in.
pub async fn client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(server.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// A client logged in as `user`.
pub async fn login(
    server: &TestServer,
    user: &str,
    password: &str,
) -> FlightSqlServiceClient<Channel> {
    let mut client = client(server).await;
    client.handshake(user, password).await.unwrap();
    client
}

/// Runs `sql` and collects its batches, or the error's gRPC status.
pub async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(status)?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream: FlightRecordBatchStream = client.do_get(ticket).await.map_err(status)?;
    stream.try_collect().await.map_err(status)
}

/// The gRPC status inside a Flight client error.
pub fn status(error: FlightError) -> tonic::Status {
    match error {
        FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// Every value of `batches` as text, row by row, rows sorted: what two answers are compared by.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &arrow::util::display::FormatOptions::default().with_null("NULL"),
                )
                .unwrap()
            })
            .collect();
        for row in 0..batch.num_rows() {
            // Doubles to 12 significant digits: sums taken in another order (other files,
            // other partitions) differ in their last bits.
            let cells: Vec<String> = formatters
                .iter()
                .zip(batch.columns())
                .map(
                    |(f, column)| match column.as_primitive_opt::<Float64Type>() {
                        Some(values) if values.is_valid(row) => {
                            format!("{:.11e}", values.value(row))
                        }
                        _ => f.value(row).to_string(),
                    },
                )
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}
