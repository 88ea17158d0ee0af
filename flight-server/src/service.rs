//! The Flight SQL protocol over a tokenledger session. Planning and execution are the engine's
//! (DataFusion's); this module only translates between the protocol and the session.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use datafusion::logical_expr::LogicalPlan;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokenledger_engine::{Access, TraceSession};
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{Admission, Turn, Weight};
use crate::auth::{Auth, Caller};
use crate::error::{engine_status, status};
use crate::executor::QueryExecutor;
use crate::handle::{LegacyBindings, PreparedHandle};
use crate::ipc::BatchEncoder;
use crate::metadata::{self, client_schema, to_client_batch};
use crate::outgoing::{Outgoing, OutgoingStream};
use crate::placeholders::number_placeholders;
use crate::planned::Planned;
use crate::sql_info::SQL_INFO;

type FlightDataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service over one session.
pub struct TokenledgerFlightSql {
    session: Arc<TraceSession>,
    auth: Arc<Auth>,
    admission: Arc<Admission>,
    executor: Arc<QueryExecutor>,
    bindings: LegacyBindings,
    /// Statements planned at GetFlightInfo, for their DoGet.
    planned: Planned,
}

/// Statements whose DoPut bindings are remembered for clients that ignore the returned handle.
const LEGACY_BINDINGS: usize = 4096;

impl TokenledgerFlightSql {
    /// Serves `session`, admitting callers by `auth` and their queries by `admission`, and
    /// running queries that read tables on `executor`.
    pub fn new(
        session: Arc<TraceSession>,
        auth: Arc<Auth>,
        admission: Arc<Admission>,
        executor: Arc<QueryExecutor>,
    ) -> Self {
        TokenledgerFlightSql {
            session,
            auth,
            admission,
            executor,
            bindings: LegacyBindings::new(LEGACY_BINDINGS),
            planned: Planned::default(),
        }
    }

    /// Who is calling (their token checked), with the address they call from.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth
            .authorize(request.metadata(), request.remote_addr())
    }

    /// The session as `caller` sees it: their tenants' rows only.
    async fn session_for(&self, caller: &Caller) -> Result<TraceSession, Status> {
        self.session
            .for_scope(&caller.scope)
            .await
            .map_err(engine_status)
    }

    /// Plans (does not run) a client's query in the caller's session: read-only, `?`
    /// placeholders numbered, parameters bound. A query refused here gets its log line here,
    /// as it never reaches execution.
    async fn plan(
        &self,
        caller: &Caller,
        query: &str,
        params: Option<&RecordBatch>,
    ) -> Result<DataFrame, Status> {
        let session = self.session_for(caller).await?;
        let planned = match session
            .plan_sql(&number_placeholders(query), Access::ReadOnly)
            .await
        {
            Ok(frame) => match params {
                Some(batch) => param_values(batch)
                    .and_then(|values| frame.with_param_values(values).map_err(status)),
                None => Ok(frame),
            },
            Err(refused) => Err(engine_status(refused)),
        };
        if let Err(refused) = &planned {
            QueryLog::new(caller, query.to_string()).fail(refused.message());
        }
        planned
    }

    /// Plans a prepared statement with its parameters: those in the handle, else those a client
    /// that ignores the handle DoPut returns bound earlier.
    async fn plan_prepared(
        &self,
        caller: &Caller,
        command: &CommandPreparedStatementQuery,
    ) -> Result<(PreparedHandle, DataFrame), Status> {
        let handle = self.bindings.resolve(
            &caller.user,
            PreparedHandle::decode(&command.prepared_statement_handle)?,
        );
        let frame = self
            .plan(caller, &handle.query, handle.params.as_ref())
            .await?;
        Ok((handle, frame))
    }

    /// A FlightInfo with the query's result schema and one endpoint holding `ticket`.
    fn flight_info(
        &self,
        frame: &DataFrame,
        ticket: Bytes,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let schema = client_schema(frame.schema().as_arrow());
        info_for(&schema, ticket, descriptor)
    }

    /// Runs `frame` when admission gives it a turn, and streams its batches to the client as
    /// execution produces them, until the query's deadline. Dropping the response stream (the
    /// client went away, or the deadline passed) drops the execution stream, which stops the
    /// query and frees its memory and its turn.
    async fn execute(
        &self,
        frame: DataFrame,
        caller: &Caller,
        query: String,
    ) -> Result<Response<OutgoingStream>, Status> {
        let timeout = self.admission.limits().timeout;
        let deadline = Instant::now() + timeout;
        let schema = Arc::new(client_schema(frame.schema().as_arrow()));
        let log = QueryLog::new(caller, query);
        let weight = weight(frame.logical_plan());
        let turn = self
            .admission
            .admit(&caller.user, weight, deadline)
            .await
            .inspect_err(|refused| log.fail(refused.message()))?;
        log.queued_ms
            .store(turn.queued.as_millis() as u64, Ordering::Relaxed);
        let started = match weight {
            // A constant is computed where the request arrived: it needs no query thread.
            Weight::Constant => self.session.execute(frame).await,
            Weight::Reads => {
                let session = Arc::clone(&self.session);
                let arrow_schema = Arc::new(frame.schema().as_arrow().clone());
                self.executor
                    .run(arrow_schema, async move { session.execute(frame).await })
                    .await
            }
        };
        let batches = started.map_err(|e| {
            log.fail(&e.to_string());
            status(e)
        })?;
        let end_log = Arc::clone(&log);
        let sent = Arc::clone(&log);
        let batches = batches.map(move |batch| {
            batch.map_err(|e| {
                log.fail(&e.to_string());
                status(e)
            })
        });
        // Polled once, after the last batch: only a stream read to its end counts as completed.
        let batches = batches.chain(futures::stream::poll_fn(move |_| {
            end_log.complete();
            Poll::Ready(None)
        }));
        let stream = encode(schema, batches, Arc::clone(&sent)).inspect_ok(move |message| {
            sent.bytes
                .fetch_add(message.len() as u64, Ordering::Relaxed);
        });
        Ok(Response::new(Box::pin(Deadline {
            inner: Some(Box::pin(stream)),
            expires: Box::pin(tokio::time::sleep_until(deadline.into())),
            timeout,
            turn: Some(turn),
        })))
    }

    /// DoGet, with a statement's record batches left for the DoGet codec to write into gRPC
    /// frames ([`crate::frames`]); any other ticket answered as the Flight SQL service answers it.
    pub(crate) async fn do_get_outgoing(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<OutgoingStream>, Status> {
        let command = Any::decode(&*request.get_ref().ticket).map_err(|e| {
            Status::invalid_argument(format!("the ticket is not a Flight SQL command: {e}"))
        })?;
        let unpack_error =
            |e: datafusion::arrow::error::ArrowError| Status::invalid_argument(e.to_string());
        if let Some(ticket) = command
            .unpack::<TicketStatementQuery>()
            .map_err(unpack_error)?
        {
            return self.statement_answer(ticket, request).await;
        }
        if let Some(command) = command
            .unpack::<CommandPreparedStatementQuery>()
            .map_err(unpack_error)?
        {
            return self.prepared_answer(command, request).await;
        }
        let answer = FlightService::do_get(self, request).await?;
        Ok(answer.map(|messages| Box::pin(messages.map_ok(Outgoing::Message)) as OutgoingStream))
    }

    /// The answer to a statement's ticket: the statement planned at GetFlightInfo, else planned now.
    async fn statement_answer(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<OutgoingStream>, Status> {
        let caller = self.caller(&request)?;
        let query = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8 SQL"))?;
        let frame = match self.planned.take(&caller.user, &caller.scope, &query) {
            Some(frame) => frame,
            None => self.plan(&caller, &query, None).await?,
        };
        self.execute(frame, &caller, query).await
    }

    /// The answer to a prepared statement's ticket, with its bound parameters.
    async fn prepared_answer(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<OutgoingStream>, Status> {
        let caller = self.caller(&request)?;
        let (handle, frame) = self.plan_prepared(&caller, &command).await?;
        self.execute(frame, &caller, handle.query).await
    }

    /// FlightInfo for a metadata command: its answer's schema, and the command as the ticket.
    fn command_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: Any,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let ticket = command.encode_to_vec().into();
        Ok(Response::new(info_for(
            schema,
            ticket,
            request.into_inner(),
        )?))
    }

    /// An empty answer of `schema` (keys: tokenledger's tables declare none).
    fn empty_answer<T>(
        &self,
        request: &Request<T>,
        schema: Schema,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.caller(request)?;
        Ok(Self::batch_response(RecordBatch::new_empty(Arc::new(
            schema,
        ))))
    }

    /// Streams a metadata batch computed in full (catalog listings are small).
    fn batch_response(batch: RecordBatch) -> Response<FlightDataStream> {
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    async fn tables(
        &self,
        caller: &Caller,
        query: &CommandGetTables,
    ) -> Result<RecordBatch, Status> {
        let mut builder = query.clone().into_builder();
        let session = self.session_for(caller).await?;
        for table in session.tables().await.map_err(engine_status)? {
            let table_type = match table.table_type {
                TableType::View => "VIEW",
                TableType::Temporary => "LOCAL TEMPORARY",
                TableType::Base => "TABLE",
            };
            let described = metadata::describe_columns(
                &table.catalog,
                &table.schema,
                &table.name,
                &table.columns,
            );
            builder
                .append(
                    &table.catalog,
                    &table.schema,
                    &table.name,
                    table_type,
                    &described,
                )
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        builder.build().map_err(|e| Status::internal(e.to_string()))
    }
}

/// The FlightInfo for a result of `schema` fetched with `ticket`.
fn info_for(
    schema: &Schema,
    ticket: Bytes,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

/// Whether `plan` reads anything (a table, a table function, a recursive query) or only
/// computes constants, as a connection check's `SELECT 1` does.
fn weight(plan: &LogicalPlan) -> Weight {
    let mut reads = false;
    let _ = plan.apply_with_subqueries(|node| {
        reads = matches!(
            node,
            LogicalPlan::TableScan(_) | LogicalPlan::RecursiveQuery(_) | LogicalPlan::Extension(_)
        );
        Ok(if reads {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if reads {
        Weight::Reads
    } else {
        Weight::Constant
    }
}

/// A query's response stream cut off at its deadline: past it the client gets
/// DEADLINE_EXCEEDED and the query is dropped, which stops it. Holds the query's turn until the
/// stream ends either way.
struct Deadline {
    inner: Option<OutgoingStream>,
    expires: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    turn: Option<Turn>,
}

impl Stream for Deadline {
    type Item = Result<Outgoing, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if self.expires.as_mut().poll(cx).is_ready() {
            self.inner = None;
            self.turn = None;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the query reached its time limit of {} s (--query-timeout) and was stopped",
                self.timeout.as_secs()
            )))));
        }
        let next = self.inner.as_mut().map(|inner| inner.poll_next_unpin(cx));
        if let Some(Poll::Ready(None)) = next {
            self.inner = None;
            self.turn = None;
        }
        next.unwrap_or(Poll::Ready(None))
    }
}

/// One bound row of parameters → DataFusion's positional parameter values.
fn param_values(batch: &RecordBatch) -> Result<Vec<ScalarValue>, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "parameters must be bound as exactly one row, got {}",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0).map_err(status))
        .collect()
}

/// An answer's messages as `FlightData`, for callers of the Flight SQL service's own DoGet.
fn as_flight_data(messages: OutgoingStream) -> FlightDataStream {
    Box::pin(messages.map_ok(Outgoing::into_flight_data))
}

/// A result stream as Flight messages, counting rows into `log`: a flat result written straight
/// from its arrays ([`BatchEncoder`]), any other by arrow-flight's encoder after a cast to the
/// client's types.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
    log: Arc<QueryLog>,
) -> OutgoingStream {
    let Some(encoder) = BatchEncoder::for_schema(Arc::clone(&schema)) else {
        let out_schema = Arc::clone(&schema);
        let batches = batches.map(move |batch| {
            let batch = to_client_batch(&batch?, &out_schema).map_err(|e| {
                log.fail(&e.to_string());
                status(e)
            })?;
            log.rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
            Ok::<_, Status>(batch)
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(FlightError::from))
            .map_ok(Outgoing::Message)
            .map_err(Status::from);
        return Box::pin(stream);
    };
    let first = encoder.schema_message();
    let messages = batches
        .map(move |batch| {
            let batch = batch?;
            log.rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
            let messages = encoder.messages(&batch).map_err(|e| {
                log.fail(&e.to_string());
                status(e)
            })?;
            let messages = messages.into_iter().map(|m| Ok(Outgoing::Batch(m)));
            Ok::<_, Status>(futures::stream::iter(messages))
        })
        .try_flatten();
    let first = Outgoing::Message(first);
    Box::pin(futures::stream::once(async { Ok(first) }).chain(messages))
}

/// Logs one line per query when its stream ends (completed, failed or dropped by the client).
struct QueryLog {
    user: String,
    peer: String,
    tenants: String,
    query: String,
    started: Instant,
    queued_ms: AtomicU64,
    bytes: AtomicU64,
    rows: AtomicUsize,
    /// Set when the result stream reached its end; a stream dropped before is a cancelled query.
    completed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl QueryLog {
    fn new(caller: &Caller, query: String) -> Arc<Self> {
        Arc::new(QueryLog {
            user: caller.user.clone(),
            peer: caller
                .peer
                .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
            tenants: caller.scope.to_string(),
            query,
            started: Instant::now(),
            queued_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rows: AtomicUsize::new(0),
            completed: AtomicBool::new(false),
            failure: Mutex::new(None),
        })
    }

    fn complete(&self) {
        self.completed.store(true, Ordering::Relaxed);
    }

    fn fail(&self, error: &str) {
        *self.failure.lock().expect("query log lock") = Some(error.to_string());
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        let rows = self.rows.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let queued_ms = self.queued_ms.load(Ordering::Relaxed);
        let (user, peer, tenants) = (&self.user, &self.peer, &self.tenants);
        let millis = self.started.elapsed().as_secs_f64() * 1e3;
        let query: String = self.query.split_whitespace().collect::<Vec<_>>().join(" ");
        match self.failure.lock().expect("query log lock").take() {
            None => {
                let status = if self.completed.load(Ordering::Relaxed) {
                    "ok"
                } else {
                    "cancelled"
                };
                tracing::info!(%user, %peer, %tenants, queued_ms, duration_ms = millis, rows, bytes, status, query = %query, "query")
            }
            Some(error) => {
                tracing::warn!(%user, %peer, %tenants, queued_ms, duration_ms = millis, rows, bytes, status = "error", error = %error, query = %query, "query")
            }
        }
    }
}

fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

#[tonic::async_trait]
impl FlightSqlService for TokenledgerFlightSql {
    type FlightService = TokenledgerFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let peer = request.remote_addr().map(|address| address.ip());
        let token = self.auth.handshake(request.metadata(), peer).await?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token.clone()),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(futures::stream::once(async { Ok(reply) })));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let frame = self.plan(&caller, &query.query, None).await?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.clone()),
        };
        let info = self.flight_info(
            &frame,
            ticket.as_any().encode_to_vec().into(),
            request.into_inner(),
        )?;
        self.planned
            .keep(&caller.user, &caller.scope, &query.query, frame);
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let (_, frame) = self.plan_prepared(&caller, &command).await?;
        let info = self.flight_info(
            &frame,
            command.as_any().encode_to_vec().into(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let answer = self.statement_answer(ticket, request).await?;
        Ok(answer.map(as_flight_data))
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let answer = self.prepared_answer(command, request).await?;
        Ok(answer.map(as_flight_data))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let frame = self.plan(&caller, &query.query, None).await?;
        let dataset_schema = client_schema(frame.schema().as_arrow());
        let parameter_schema = metadata::parameter_schema(frame.logical_plan()).map_err(status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: PreparedHandle::prepare(query.query).encode()?,
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let handle = PreparedHandle::decode(&command.prepared_statement_handle)?;
        let flight_data = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight_data)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("reading bound parameters: {e}")))?;
        let params = match batches.as_slice() {
            [] => None,
            [batch] => Some(batch.clone()),
            _ => {
                return Err(Status::invalid_argument(
                    "parameters must be bound as one batch of one row",
                ));
            }
        };
        // The returned handle carries the parameters; older clients that keep the first handle
        // find them by its id.
        if let Some(batch) = &params {
            self.bindings.bind(&caller.user, handle.id, batch.clone());
        }
        let bound = PreparedHandle { params, ..handle };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode()?),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(&request)?;
        let handle = PreparedHandle::decode(&query.prepared_statement_handle)?;
        self.bindings.forget(&caller.user, handle.id);
        Ok(())
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.caller(&request)?;
        match request.get_ref().r#type.as_str() {
            // Sessions hold no state; ADBC and JDBC close or configure them anyway.
            "CloseSession" | "SetSessionOptions" | "GetSessionOptions" => {
                Ok(Response::new(Box::pin(futures::stream::empty())))
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action {other:?}"
            ))),
        }
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(request, &schema, query.as_any())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let caller = self.caller(&request)?;
        let mut builder: GetCatalogsBuilder = query.into_builder();
        let session = self.session_for(&caller).await?;
        let mut names: Vec<String> = session.schemas().into_iter().map(|s| s.0).collect();
        names.dedup();
        for name in names {
            builder.append(name);
        }
        Ok(Self::batch_response(
            builder
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        ))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(request, &schema, query.as_any())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let caller = self.caller(&request)?;
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        for (catalog_name, schema_name) in self.session_for(&caller).await?.schemas() {
            builder.append(catalog_name, schema_name);
        }
        Ok(Self::batch_response(
            builder
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        ))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema: SchemaRef = query.clone().into_builder().schema();
        self.command_info(request, &schema, query.as_any())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let caller = self.caller(&request)?;
        Ok(Self::batch_response(self.tables(&caller, &query).await?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(request, &schema, query.as_any())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.caller(&request)?;
        let mut builder = query.into_builder();
        for table_type in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            builder.append(table_type);
        }
        Ok(Self::batch_response(
            builder
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        ))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &SQL_INFO.schema(), query.as_any())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.caller(&request)?;
        let batch = query
            .into_builder(&SQL_INFO)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_response(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::XDBC_TYPES.schema();
        self.command_info(request, &schema, query.as_any())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.caller(&request)?;
        let batch = query
            .into_builder(&metadata::XDBC_TYPES)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_response(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &metadata::primary_keys_schema(), query.as_any())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.empty_answer(&request, metadata::primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &metadata::foreign_keys_schema(), query.as_any())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.empty_answer(&request, metadata::foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &metadata::foreign_keys_schema(), query.as_any())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.empty_answer(&request, metadata::foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &metadata::foreign_keys_schema(), query.as_any())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        self.empty_answer(&request, metadata::foreign_keys_schema())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
        Err(Status::invalid_argument(format!(
            "unknown ticket type {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
