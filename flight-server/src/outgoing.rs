//! The messages of a DoGet answer, as the service produces them and the transport
//! ([`crate::frames`]) writes them: owned here so that the service and the transport each
//! depend on this module, not on each other.

use std::pin::Pin;

use arrow_flight::FlightData;
use futures::Stream;
use tonic::Status;

use crate::ipc::BatchMessage;

/// A message of a DoGet answer.
pub enum Outgoing {
    /// Encoded by prost (the schema, metadata answers).
    Message(FlightData),
    /// A record batch, written by [`BatchMessage::write_to`].
    Batch(BatchMessage),
}

impl Outgoing {
    /// Header and body bytes (as the query log counts them).
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Message(data) => data.data_header.len() + data.data_body.len(),
            Outgoing::Batch(batch) => batch.len(),
        }
    }

    /// The message as a `FlightData`.
    pub fn into_flight_data(self) -> FlightData {
        match self {
            Outgoing::Message(data) => data,
            Outgoing::Batch(batch) => batch.to_flight_data(),
        }
    }
}

/// A DoGet answer's messages.
pub type OutgoingStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send + 'static>>;
