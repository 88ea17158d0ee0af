//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip accepted.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::auth::{Exporter, ExporterAuth};
use crate::error::IngestError;
use crate::http::MAX_REQUEST_BYTES;
use crate::pipeline::Ingestor;

/// The gRPC trace service over `ingestor`.
pub fn service(
    ingestor: Ingestor,
    auth: Option<Arc<ExporterAuth>>,
) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(GrpcReceiver { ingestor, auth })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
}

/// Receives trace exports over gRPC.
pub struct GrpcReceiver {
    ingestor: Ingestor,
    auth: Option<Arc<ExporterAuth>>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let writer = match &self.auth {
            Some(auth) => {
                let header = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let peer = request.remote_addr().map(|address| address.ip());
                auth.authorize(header, peer).await.map_err(|e| {
                    self.ingestor.counters().count_login_refusal(&e);
                    to_status(&e)
                })?
            }
            None => Exporter::anonymous(),
        };
        let request = request.into_inner();
        let payload = request.encode_to_vec().into();
        let accepted = self
            .ingestor
            .accept(payload, &request, &writer)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (!accepted.rejected.is_empty()).then(|| ExportTracePartialSuccess {
                rejected_spans: accepted.rejected.len() as i64,
                error_message: accepted.rejected.join("; "),
            }),
        }))
    }
}

fn to_status(error: &IngestError) -> Status {
    let (_, code) = error.answer();
    Status::new(code, error.to_string())
}
