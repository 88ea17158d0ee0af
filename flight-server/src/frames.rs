//! DoGet answered with result batches written straight into gRPC frames.
//!
//! The generated Flight service encodes each `FlightData` with prost, which copies the message
//! body into tonic's frame buffer. Here DoGet has its own codec: a statement's batches reach it
//! laid out but unwritten ([`crate::ipc::BatchMessage`]), and it writes them once, into the
//! frame. Every other call, and DoGet of anything but a statement, goes to the generated
//! service unchanged.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightServiceServer;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body as HttpBody, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::outgoing::{Outgoing, OutgoingStream};
use crate::service::TokenledgerFlightSql;

/// The Flight service, with DoGet answered through its own codec (`OutgoingCodec`).
#[derive(Clone)]
pub struct FlightSqlServer {
    generated: FlightServiceServer<TokenledgerFlightSql>,
    service: Arc<TokenledgerFlightSql>,
    max_decoding_message_size: usize,
}

impl FlightSqlServer {
    /// Serves `service`, accepting requests of up to `max_decoding_message_size` bytes.
    pub fn new(service: TokenledgerFlightSql, max_decoding_message_size: usize) -> Self {
        let service = Arc::new(service);
        Self {
            generated: FlightServiceServer::from_arc(Arc::clone(&service))
                .max_decoding_message_size(max_decoding_message_size),
            service,
            max_decoding_message_size,
        }
    }
}

impl NamedService for FlightSqlServer {
    const NAME: &'static str = "arrow.flight.protocol.FlightService";
}

const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

impl<B> Service<http::Request<B>> for FlightSqlServer
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != DO_GET {
            return self.generated.call(request);
        }
        let do_get = DoGet(Arc::clone(&self.service));
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc =
                Grpc::new(OutgoingCodec).apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.server_streaming(do_get, request).await)
        })
    }
}

struct DoGet(Arc<TokenledgerFlightSql>);

impl ServerStreamingService<Ticket> for DoGet {
    type Response = Outgoing;
    type ResponseStream = OutgoingStream;
    type Future = BoxFuture<Response<OutgoingStream>, Status>;

    fn call(&mut self, request: Request<Ticket>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { service.do_get_outgoing(request).await })
    }
}

/// DoGet's codec: tickets decoded by prost, answers written by [`OutgoingEncoder`].
struct OutgoingCodec;

impl Codec for OutgoingCodec {
    type Encode = Outgoing;
    type Decode = Ticket;
    type Encoder = OutgoingEncoder;
    type Decoder = TicketDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        TicketDecoder
    }
}

struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outgoing::Message(data) => data
                .encode(dst)
                .map_err(|e| Status::internal(format!("encoding a Flight message: {e}"))),
            Outgoing::Batch(batch) => {
                batch.write_to(dst);
                Ok(())
            }
        }
    }
}

struct TicketDecoder;

impl Decoder for TicketDecoder {
    type Item = Ticket;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ticket>, Status> {
        Ticket::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("the DoGet ticket is not a Ticket: {e}")))
    }
}
