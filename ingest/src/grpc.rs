//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip accepted.
//!
//! The service is tonic's generated one with one change: its codec hands over the request's
//! bytes instead of a decoded message. The receiver then decodes them itself ([`decode`]), span
//! by span when one span does not decode, as OTLP/HTTP does, and spools the bytes it received
//! rather than encoding the request again.
//!
//! [`decode`]: crate::decode

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::auth::{Exporter, ExporterAuth};
use crate::decode::decode_protobuf;
use crate::error::IngestError;
use crate::http::MAX_REQUEST_BYTES;
use crate::pipeline::Ingestor;

/// The one method this service answers.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace service over `ingestor`.
pub fn service(ingestor: Ingestor, auth: Option<Arc<ExporterAuth>>) -> TraceGrpc {
    let mut compression = EnabledCompressionEncodings::default();
    compression.enable(CompressionEncoding::Gzip);
    TraceGrpc {
        receiver: Arc::new(GrpcReceiver { ingestor, auth }),
        compression,
    }
}

/// The trace service as tonic serves it.
#[derive(Clone)]
pub struct TraceGrpc {
    receiver: Arc<GrpcReceiver>,
    compression: EnabledCompressionEncodings,
}

impl NamedService for TraceGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tower_service::Service<http::Request<B>> for TraceGrpc
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let receiver = Arc::clone(&self.receiver);
        let compression = self.compression;
        Box::pin(async move {
            let mut grpc = Grpc::new(RawRequestCodec)
                .apply_compression_config(compression, compression)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.unary(Export(receiver), request).await)
        })
    }
}

/// Receives trace exports over gRPC.
pub struct GrpcReceiver {
    ingestor: Ingestor,
    auth: Option<Arc<ExporterAuth>>,
}

impl GrpcReceiver {
    async fn export(
        &self,
        request: Request<Bytes>,
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
        let decoded = decode_protobuf(request.into_inner()).map_err(|e| to_status(&e))?;
        let accepted = self
            .ingestor
            .accept(decoded, &writer)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: accepted.partial_success(),
        }))
    }
}

/// The Export method as tonic calls it.
struct Export(Arc<GrpcReceiver>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = futures::future::BoxFuture<'static, Result<Response<Self::Response>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = Arc::clone(&self.0);
        Box::pin(async move { receiver.export(request).await })
    }
}

/// Takes a request message as its bytes (tonic has checked its size and inflated it) and
/// writes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

#[derive(Debug, Clone, Copy)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

#[derive(Debug, Clone, Copy)]
struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

fn to_status(error: &IngestError) -> Status {
    let (_, code) = error.answer();
    Status::new(code, error.to_string())
}
