//! Prepared statement handles carry their whole state — the query and any bound parameters — so
//! concurrent clients cannot rebind each other's statements. The one piece of server state,
//! [`LegacyBindings`], exists for older clients that ignore the handle a binding returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use tonic::Status;

const VERSION: u8 = 2;

/// A prepared statement: its SQL and, once bound, one row of parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedHandle {
    /// Drawn at random when the statement is prepared; names it in [`LegacyBindings`].
    pub id: u64,
    /// The SQL as the client sent it (`?` or `$n` placeholders).
    pub query: String,
    /// Bound parameters, one row.
    pub params: Option<RecordBatch>,
}

impl PreparedHandle {
    /// A new, unbound statement.
    pub fn prepare(query: String) -> Self {
        PreparedHandle {
            id: rand::random(),
            query,
            params: None,
        }
    }

    /// `[version][id u64][query length u32][query][parameters as an Arrow IPC stream]`.
    pub fn encode(&self) -> Result<Bytes, Status> {
        let mut out = BytesMut::new();
        out.put_u8(VERSION);
        out.put_u64(self.id);
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
        let mut rest = bytes;
        if rest.len() < 13 || rest.get_u8() != VERSION {
            return Err(bad());
        }
        let id = rest.get_u64();
        let length = rest.get_u32() as usize;
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
        Ok(PreparedHandle { id, query, params })
    }
}

/// Who bound parameters to which statement: (user, statement id).
type BindingKey = (String, u64);

/// Parameters bound through DoPut, by user and statement id, for clients that go on executing the handle
/// they got at prepare time and ignore the one DoPut returns (flightsql-dbapi, which Superset
/// uses, and other clients written before Flight SQL 13). Ids are random per prepare, and a
/// binding is found only by the user who made it, so nobody runs with another's parameters.
/// Bounded: the oldest binding goes first, and closing a
/// statement frees its binding.
pub struct LegacyBindings {
    capacity: usize,
    bound: Mutex<(HashMap<BindingKey, RecordBatch>, VecDeque<BindingKey>)>,
}

impl LegacyBindings {
    /// Keeps the bindings of at most `capacity` statements.
    pub fn new(capacity: usize) -> Self {
        LegacyBindings {
            capacity,
            bound: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Remembers `params` as `user`'s latest binding of statement `id`.
    pub fn bind(&self, user: &str, id: u64, params: RecordBatch) {
        let mut guard = self.bound.lock().expect("bindings lock");
        let (by_id, order) = &mut *guard;
        let key = (user.to_string(), id);
        if by_id.insert(key.clone(), params).is_none() {
            order.push_back(key);
        }
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                by_id.remove(&oldest);
            }
        }
    }

    /// `handle` with the parameters `user` bound to it when it carries none itself.
    pub fn resolve(&self, user: &str, mut handle: PreparedHandle) -> PreparedHandle {
        if handle.params.is_none() {
            let guard = self.bound.lock().expect("bindings lock");
            handle.params = guard.0.get(&(user.to_string(), handle.id)).cloned();
        }
        handle
    }

    /// Drops `user`'s binding of a closed statement.
    pub fn forget(&self, user: &str, id: u64) {
        let mut guard = self.bound.lock().expect("bindings lock");
        let (by_id, order) = &mut *guard;
        let key = (user.to_string(), id);
        if by_id.remove(&key).is_some() {
            order.retain(|kept| *kept != key);
        }
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
        let plain = PreparedHandle::prepare("SELECT ?".into());
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
            id: 7,
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

    fn one_row(value: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap()
    }

    #[test]
    fn legacy_bindings_are_per_statement_bounded_and_freed() {
        let bindings = LegacyBindings::new(2);
        let [a, b, c] =
            ["SELECT $1", "SELECT $1", "SELECT $1"].map(|q| PreparedHandle::prepare(q.to_string()));
        bindings.bind("ana", a.id, one_row(1));
        bindings.bind("ana", b.id, one_row(2));
        bindings.bind("ana", a.id, one_row(3)); // rebinding keeps a's place
        assert_eq!(bindings.resolve("ana", a.clone()).params, Some(one_row(3)));
        assert_eq!(bindings.resolve("ana", b.clone()).params, Some(one_row(2)));
        // Another user replaying ana's handle gets no parameters of hers.
        assert_eq!(bindings.resolve("bo", b.clone()).params, None);
        bindings.forget("bo", b.id);
        assert_eq!(bindings.resolve("ana", b.clone()).params, Some(one_row(2)));
        bindings.bind("ana", c.id, one_row(4)); // evicts a, the oldest
        assert_eq!(bindings.resolve("ana", a.clone()).params, None);
        bindings.forget("ana", b.id);
        assert_eq!(bindings.resolve("ana", b).params, None);
        // Parameters in the handle win over remembered ones.
        let carried = PreparedHandle {
            params: Some(one_row(9)),
            ..c.clone()
        };
        assert_eq!(bindings.resolve("ana", carried).params, Some(one_row(9)));
        assert_eq!(bindings.resolve("ana", c).params, Some(one_row(4)));
    }
}
