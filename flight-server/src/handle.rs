//! Prepared statement handles carry their whole state — the query and any bound parameters — so
//! the server keeps none, and concurrent clients cannot rebind each other's statements.

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use tonic::Status;

const VERSION: u8 = 1;

/// A prepared statement: its SQL and, once bound, one row of parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedHandle {
    /// The SQL as the client sent it (`?` or `$n` placeholders).
    pub query: String,
    /// Bound parameters, one row.
    pub params: Option<RecordBatch>,
}

impl PreparedHandle {
    /// `[version][query length u32][query][parameters as an Arrow IPC stream]`.
    pub fn encode(&self) -> Result<Bytes, Status> {
        let mut out = BytesMut::new();
        out.put_u8(VERSION);
        out.put_u32(
            u32::try_from(self.query.len())
                .map_err(|_| Status::invalid_argument("query too long"))?,
        );
        out.put_slice(self.query.as_bytes());
        if let Some(batch) = &self.params {
            let mut ipc = Vec::new();
            let mut writer = StreamWriter::try_new(&mut ipc, &batch.schema()).map_err(internal)?;
            writer.write(batch).map_err(internal)?;
            writer.finish().map_err(internal)?;
            drop(writer);
            out.put_slice(&ipc);
        }
        Ok(out.freeze())
    }

    /// Reads a handle made by [`PreparedHandle::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let bad = || Status::invalid_argument("not a tokenledger prepared statement handle");
        let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
        if version != VERSION || rest.len() < 4 {
            return Err(bad());
        }
        let length = u32::from_be_bytes(rest[..4].try_into().expect("four bytes")) as usize;
        let rest = &rest[4..];
        if rest.len() < length {
            return Err(bad());
        }
        let query = std::str::from_utf8(&rest[..length])
            .map_err(|_| bad())?
            .to_string();
        let params = if rest.len() > length {
            let mut reader = StreamReader::try_new(&rest[length..], None).map_err(|_| bad())?;
            reader.next().transpose().map_err(|_| bad())?
        } else {
            None
        };
        Ok(PreparedHandle { query, params })
    }
}

fn internal(e: datafusion::arrow::error::ArrowError) -> Status {
    Status::internal(format!("encoding parameters: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn round_trips_with_and_without_parameters() {
        let plain = PreparedHandle {
            query: "SELECT ?".into(),
            params: None,
        };
        assert_eq!(
            PreparedHandle::decode(&plain.encode().unwrap()).unwrap(),
            plain
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap();
        let bound = PreparedHandle {
            query: "SELECT $1, $2".into(),
            params: Some(batch),
        };
        assert_eq!(
            PreparedHandle::decode(&bound.encode().unwrap()).unwrap(),
            bound
        );
        assert!(PreparedHandle::decode(b"garbage").is_err());
        assert!(PreparedHandle::decode(&[]).is_err());
    }
}
