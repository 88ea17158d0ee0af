//! The Flight SQL protocol over a tokenledger session. Planning and execution are the engine's
//! (DataFusion's); this module only translates between the protocol and the session.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

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
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokenledger_engine::{Access, TraceSession};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Auth;
use crate::error::{engine_status, status};
use crate::handle::{LegacyBindings, PreparedHandle};
use crate::metadata::{self, client_schema, to_client_batch};
use crate::placeholders::number_placeholders;
use crate::sql_info::SQL_INFO;

type FlightDataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service over one session.
pub struct TokenledgerFlightSql {
    session: Arc<TraceSession>,
    auth: Arc<Auth>,
    bindings: LegacyBindings,
}

/// Statements whose DoPut bindings are remembered for clients that ignore the returned handle.
const LEGACY_BINDINGS: usize = 4096;

impl TokenledgerFlightSql {
    /// Serves `session`, admitting callers by `auth`.
    pub fn new(session: Arc<TraceSession>, auth: Arc<Auth>) -> Self {
        TokenledgerFlightSql {
            session,
            auth,
            bindings: LegacyBindings::new(LEGACY_BINDINGS),
        }
    }

    fn user<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.auth.authorize(request.metadata())
    }

    /// Plans (does not run) a client's query: read-only, `?` placeholders numbered, parameters
    /// bound. A query refused here gets its log line here, as it never reaches execution.
    async fn plan(
        &self,
        user: &str,
        query: &str,
        params: Option<&RecordBatch>,
    ) -> Result<DataFrame, Status> {
        let planned = match self
            .session
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
            QueryLog::new(user.to_string(), query.to_string()).fail(refused.message());
        }
        planned
    }

    /// Plans a prepared statement with its parameters: those in the handle, else those a client
    /// that ignores the handle DoPut returns bound earlier.
    async fn plan_prepared(
        &self,
        user: &str,
        command: &CommandPreparedStatementQuery,
    ) -> Result<(PreparedHandle, DataFrame), Status> {
        let handle = self
            .bindings
            .resolve(PreparedHandle::decode(&command.prepared_statement_handle)?);
        let frame = self
            .plan(user, &handle.query, handle.params.as_ref())
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

    /// Runs `frame` and streams its batches to the client as execution produces them. Dropping
    /// the response stream drops the execution stream, which stops the query.
    async fn execute(
        &self,
        frame: DataFrame,
        user: String,
        query: String,
    ) -> Result<Response<FlightDataStream>, Status> {
        let schema = Arc::new(client_schema(frame.schema().as_arrow()));
        let log = QueryLog::new(user, query);
        let batches = self.session.execute(frame).await.map_err(|e| {
            log.fail(&e.to_string());
            status(e)
        })?;
        let out_schema = Arc::clone(&schema);
        let end_log = Arc::clone(&log);
        let batches = batches.map(move |batch| {
            let batch = batch
                .and_then(|b| to_client_batch(&b, &out_schema))
                .map_err(|e| {
                    log.fail(&e.to_string());
                    FlightError::from(status(e))
                })?;
            log.rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
            Ok(batch)
        });
        // Polled once, after the last batch: only a stream read to its end counts as completed.
        let batches = batches.chain(futures::stream::poll_fn(move |_| {
            end_log.complete();
            Poll::Ready(None)
        }));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    /// FlightInfo for a metadata command: its answer's schema, and the command as the ticket.
    fn command_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: Any,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
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
        self.user(request)?;
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

    async fn tables(&self, query: &CommandGetTables) -> Result<RecordBatch, Status> {
        let mut builder = query.clone().into_builder();
        for table in self.session.tables().await.map_err(engine_status)? {
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

/// Logs one line per query when its stream ends (completed, failed or dropped by the client).
struct QueryLog {
    user: String,
    query: String,
    started: Instant,
    rows: AtomicUsize,
    /// Set when the result stream reached its end; a stream dropped before is a cancelled query.
    completed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl QueryLog {
    fn new(user: String, query: String) -> Arc<Self> {
        Arc::new(QueryLog {
            user,
            query,
            started: Instant::now(),
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
        let millis = self.started.elapsed().as_secs_f64() * 1e3;
        let query: String = self.query.split_whitespace().collect::<Vec<_>>().join(" ");
        match self.failure.lock().expect("query log lock").take() {
            None => {
                let status = if self.completed.load(Ordering::Relaxed) {
                    "ok"
                } else {
                    "cancelled"
                };
                tracing::info!(user = %self.user, duration_ms = millis, rows, status, query = %query, "query")
            }
            Some(error) => {
                tracing::warn!(user = %self.user, duration_ms = millis, rows, status = "error", error = %error, query = %query, "query")
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
        let token = self.auth.handshake(request.metadata())?;
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
        let user = self.user(&request)?;
        let frame = self.plan(&user, &query.query, None).await?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.clone()),
        };
        let info = self.flight_info(
            &frame,
            ticket.as_any().encode_to_vec().into(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = self.user(&request)?;
        let (_, frame) = self.plan_prepared(&user, &command).await?;
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
        let user = self.user(&request)?;
        let query = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8 SQL"))?;
        let frame = self.plan(&user, &query, None).await?;
        self.execute(frame, user, query).await
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let user = self.user(&request)?;
        let (handle, frame) = self.plan_prepared(&user, &command).await?;
        self.execute(frame, user, handle.query).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let user = self.user(&request)?;
        let frame = self.plan(&user, &query.query, None).await?;
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
        self.user(&request)?;
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
            self.bindings.bind(handle.id, batch.clone());
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
        self.user(&request)?;
        let handle = PreparedHandle::decode(&query.prepared_statement_handle)?;
        self.bindings.forget(handle.id);
        Ok(())
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.user(&request)?;
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
        self.user(&request)?;
        let mut builder: GetCatalogsBuilder = query.into_builder();
        let mut names: Vec<String> = self.session.schemas().into_iter().map(|s| s.0).collect();
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
        self.user(&request)?;
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        for (catalog_name, schema_name) in self.session.schemas() {
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
        self.user(&request)?;
        Ok(Self::batch_response(self.tables(&query).await?))
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
        self.user(&request)?;
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
        self.user(&request)?;
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
        self.user(&request)?;
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
        self.user(&request)?;
        Err(Status::invalid_argument(format!(
            "unknown ticket type {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
