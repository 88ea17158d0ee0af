//! Result batches written as Arrow IPC record batch messages straight from the arrays a query
//! produced.
//!
//! Scans read text as string views, and clients read text as Utf8 (offsets and one run of bytes).
//! arrow's path casts each view column to Utf8, the IPC writer copies every buffer into a message
//! body, and gRPC copies the body into its frame: three copies of each text byte, two of each
//! number, into fresh memory. Here a batch is laid out first (lengths only), and its message is
//! written once, straight into the gRPC frame ([`crate::frames`]): views become offsets and bytes
//! as they are written.
//!
//! Only flat results are laid out here (fixed-width, Boolean, Utf8 and Binary, their views);
//! a stream with any other column type goes through arrow-flight's encoder.

use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::{Array, ArrayData, ArrayRef, RecordBatch};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::Result;
use flatbuffers::FlatBufferBuilder;
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::metadata::to_client_batch;

/// Largest body one message should carry: what arrow-flight aims for, under the 4 MiB a gRPC
/// client accepts by default.
const TARGET_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Every buffer starts on a multiple of this (arrow's writer default).
const ALIGNMENT: usize = 64;

/// Writes a result stream's messages for clients of `client_schema`.
pub struct BatchEncoder {
    client_schema: SchemaRef,
}

impl BatchEncoder {
    /// An encoder for results sent as `client_schema`, or None when one of its columns has a
    /// type this writer does not lay out (nested, dictionary, null).
    pub fn for_schema(client_schema: SchemaRef) -> Option<Self> {
        let flat = client_schema
            .fields()
            .iter()
            .all(|f| ColumnLayout::of(f.data_type()).is_some());
        flat.then_some(Self { client_schema })
    }

    /// The stream's first message: its schema.
    pub fn schema_message(&self) -> FlightData {
        SchemaAsIpc::new(&self.client_schema, &IpcWriteOptions::default()).into()
    }

    /// `batch` as record batch messages of at most about [`TARGET_MESSAGE_BYTES`] each.
    pub fn messages(&self, batch: &RecordBatch) -> Result<Vec<BatchMessage>> {
        let batch = self.writable(batch)?;
        let whole = Layout::of(&batch);
        let parts = whole.body_len.div_ceil(TARGET_MESSAGE_BYTES);
        if parts <= 1 || batch.num_rows() <= 1 {
            return Ok(vec![BatchMessage::new(whole, batch.num_rows())]);
        }
        let rows_per_part = batch.num_rows().div_ceil(parts);
        Ok((0..batch.num_rows())
            .step_by(rows_per_part)
            .map(|start| {
                let part = batch.slice(start, rows_per_part.min(batch.num_rows() - start));
                BatchMessage::new(Layout::of(&part), part.num_rows())
            })
            .collect())
    }

    /// `batch` with every column in a type written directly: its own, or else cast to the
    /// client's (a result type DataFusion chose differently from the planned one, say).
    fn writable(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let direct = batch
            .columns()
            .iter()
            .zip(self.client_schema.fields())
            .all(|(column, field)| writes_as(column.data_type(), field.data_type()));
        if direct {
            return Ok(batch.clone());
        }
        to_client_batch(batch, &self.client_schema)
    }
}

/// A buffer gRPC messages are encoded into (tonic's `EncodeBuf`, or a `BytesMut`).
pub trait FrameBuf: BufMut {
    /// Makes room for at least `additional` more bytes in one chunk.
    fn reserve_bytes(&mut self, additional: usize);
}

impl FrameBuf for BytesMut {
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl FrameBuf for tonic::codec::EncodeBuf<'_> {
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// FlightData's protobuf keys: `data_header` is field 2 and `data_body` field 1000, both
/// length-delimited (wire type 2).
const DATA_HEADER_KEY: u64 = (2 << 3) | 2;
const DATA_BODY_KEY: u64 = (1000 << 3) | 2;

/// One record batch message, laid out and not yet written: the `FlightData` protobuf it stands
/// for is written by [`BatchMessage::write_to`].
pub struct BatchMessage {
    header: Bytes,
    layout: Layout,
}

impl BatchMessage {
    fn new(layout: Layout, rows: usize) -> Self {
        Self {
            header: layout.header(rows),
            layout,
        }
    }

    /// Header and body bytes (as the query log counts them).
    pub fn len(&self) -> usize {
        self.header.len() + self.layout.body_len
    }

    /// Writes the message as a `FlightData` protobuf: the header, then the body straight from
    /// the arrays into `dst`.
    pub fn write_to(&self, dst: &mut impl FrameBuf) {
        let body_len = self.layout.body_len;
        encode_varint(DATA_HEADER_KEY, dst);
        encode_varint(self.header.len() as u64, dst);
        dst.put_slice(&self.header);
        encode_varint(DATA_BODY_KEY, dst);
        encode_varint(body_len as u64, dst);
        dst.reserve_bytes(body_len + OVERRUN);
        let chunk = dst.chunk_mut();
        assert!(
            chunk.len() >= body_len + OVERRUN,
            "reserved room for the body"
        );
        self.layout.write_body(&mut chunk[..body_len + OVERRUN]);
        // SAFETY: `write_body` wrote every byte of the body's `body_len` (pieces end to end,
        // each padded up to where the next starts); the bytes past it are not advanced over.
        unsafe { dst.advance_mut(body_len) };
    }

    /// Protobuf bytes this message writes.
    pub fn encoded_len(&self) -> usize {
        let body_len = self.layout.body_len;
        encoded_len_varint(DATA_HEADER_KEY)
            + encoded_len_varint(self.header.len() as u64)
            + self.header.len()
            + encoded_len_varint(DATA_BODY_KEY)
            + encoded_len_varint(body_len as u64)
            + body_len
    }

    /// The message as a `FlightData`, for paths that hand messages on rather than write them.
    pub fn to_flight_data(&self) -> FlightData {
        let mut encoded = BytesMut::with_capacity(self.encoded_len() + OVERRUN);
        self.write_to(&mut encoded);
        FlightData::decode(encoded.freeze()).expect("a FlightData written by write_to")
    }
}

/// Whether an array of `source` type is written directly as `client` type.
fn writes_as(source: &DataType, client: &DataType) -> bool {
    match (source, client) {
        (DataType::Utf8View, DataType::Utf8) | (DataType::BinaryView, DataType::Binary) => true,
        _ => source == client && ColumnLayout::of(source).is_some(),
    }
}

/// How one column's values are laid out in the body (after its validity bitmap).
#[derive(Debug, Clone, Copy, PartialEq)]
enum ColumnLayout {
    /// `width` bytes a value.
    Fixed { width: usize },
    /// One bit a value.
    Bits,
    /// i32 offsets, then the bytes (Utf8, Binary).
    Offsets,
    /// String or binary views, written as [`ColumnLayout::Offsets`].
    Views,
}

impl ColumnLayout {
    fn of(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::Boolean => Some(Self::Bits),
            DataType::Utf8 | DataType::Binary => Some(Self::Offsets),
            DataType::Utf8View | DataType::BinaryView => Some(Self::Views),
            DataType::FixedSizeBinary(width) => Some(Self::Fixed {
                width: usize::try_from(*width).ok()?,
            }),
            other => other.primitive_width().map(|width| Self::Fixed { width }),
        }
    }
}

/// One body buffer, still where the arrays hold it.
enum Piece {
    /// Bytes written as they are.
    Raw(Buffer),
    /// i32 offsets that start at `base`, written rebased to start at 0.
    Rebased { offsets: Buffer, base: i32 },
    /// Views, written as offsets here and their values end to end in the next piece.
    Views(ArrayData),
    /// Written with the piece before.
    Written,
}

/// A record batch message laid out: its flatbuffer header's contents and its body's pieces.
#[derive(Default)]
struct Layout {
    nodes: Vec<ipc::FieldNode>,
    buffers: Vec<ipc::Buffer>,
    /// One per entry of `buffers`, which holds its offset and length.
    pieces: Vec<Piece>,
    body_len: usize,
}

impl Layout {
    /// `batch`'s columns laid out one after another.
    fn of(batch: &RecordBatch) -> Self {
        let mut layout = Self::default();
        batch.columns().iter().for_each(|c| layout.column(c));
        layout
    }

    fn push(&mut self, piece: Piece, len: usize) {
        self.buffers
            .push(ipc::Buffer::new(self.body_len as i64, len as i64));
        self.pieces.push(piece);
        self.body_len += len.next_multiple_of(ALIGNMENT);
    }

    fn column(&mut self, column: &ArrayRef) {
        let data = column.to_data();
        let rows = data.len();
        let layout = ColumnLayout::of(data.data_type()).expect("checked by `writable`");
        self.nodes
            .push(ipc::FieldNode::new(rows as i64, data.null_count() as i64));
        match data.nulls().filter(|n| n.null_count() > 0) {
            Some(nulls) => self.push(Piece::Raw(nulls.inner().sliced()), rows.div_ceil(8)),
            None => self.push(Piece::Raw(Buffer::from_vec(Vec::<u8>::new())), 0),
        }
        match layout {
            ColumnLayout::Fixed { width } => {
                let values =
                    data.buffers()[0].slice_with_length(data.offset() * width, rows * width);
                self.push(Piece::Raw(values), rows * width);
            }
            ColumnLayout::Bits => {
                let bits = datafusion::arrow::buffer::BooleanBuffer::new(
                    data.buffers()[0].clone(),
                    data.offset(),
                    rows,
                );
                self.push(Piece::Raw(bits.sliced()), rows.div_ceil(8));
            }
            ColumnLayout::Offsets => {
                let offsets = data.buffer::<i32>(0);
                let (first, last) = (offsets[0], offsets[rows]);
                let bytes = (last - first) as usize;
                let offsets_buffer =
                    data.buffers()[0].slice_with_length(data.offset() * 4, (rows + 1) * 4);
                self.push(
                    Piece::Rebased {
                        offsets: offsets_buffer,
                        base: first,
                    },
                    (rows + 1) * 4,
                );
                let values = data.buffers()[1].slice_with_length(first as usize, bytes);
                self.push(Piece::Raw(values), bytes);
            }
            ColumnLayout::Views => {
                let bytes = view_lengths(&data).sum();
                self.push(Piece::Views(data), (rows + 1) * 4);
                self.push(Piece::Written, bytes);
            }
        }
    }

    /// The flatbuffer `Message` describing this body.
    fn header(&self, rows: usize) -> Bytes {
        let mut fbb = FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&self.nodes);
        let buffers = fbb.create_vector(&self.buffers);
        let mut batch = ipc::RecordBatchBuilder::new(&mut fbb);
        batch.add_length(rows as i64);
        batch.add_nodes(nodes);
        batch.add_buffers(buffers);
        let batch = batch.finish().as_union_value();
        let mut message = ipc::MessageBuilder::new(&mut fbb);
        message.add_version(ipc::MetadataVersion::V5);
        message.add_header_type(ipc::MessageHeader::RecordBatch);
        message.add_bodyLength(self.body_len as i64);
        message.add_header(batch);
        let message = message.finish();
        fbb.finish(message, None);
        Bytes::copy_from_slice(fbb.finished_data())
    }

    /// Writes the body into `body` (at least [`OVERRUN`] bytes longer): each piece at the offset
    /// its header gives, padded with zeros to [`ALIGNMENT`]. Pieces are written in order, so a
    /// piece may write past its end into what the next one writes over.
    fn write_body(&self, body: &mut UninitSlice) {
        for (index, (piece, buffer)) in self.pieces.iter().zip(&self.buffers).enumerate() {
            let (start, len) = (buffer.offset() as usize, buffer.length() as usize);
            let region = &mut body[start..];
            match piece {
                Piece::Raw(bytes) => region[..len].copy_from_slice(bytes),
                Piece::Rebased { offsets, base } => {
                    for (i, offset) in offsets.typed_data::<i32>().iter().enumerate() {
                        region[i * 4..i * 4 + 4].copy_from_slice(&(offset - base).to_le_bytes());
                    }
                }
                Piece::Views(data) => {
                    let values_at = self.buffers[index + 1].offset() as usize - start;
                    write_views(data, region, values_at);
                }
                Piece::Written => {}
            }
            let padded = len.next_multiple_of(ALIGNMENT);
            region[len..padded].copy_from_slice(&ZEROS[..padded - len]);
        }
    }
}

const ZEROS: [u8; ALIGNMENT] = [0; ALIGNMENT];

/// Bytes a body buffer has beyond its laid-out length: a short view's value is copied as the
/// view's whole 12-byte inline part, whatever its length.
const OVERRUN: usize = 12;

/// Each view's value length; 0 for a null, whatever its view holds.
fn view_lengths(data: &ArrayData) -> impl Iterator<Item = usize> + '_ {
    let nulls = data.nulls().filter(|n| n.null_count() > 0);
    data.buffer::<u128>(0)[..data.len()]
        .iter()
        .enumerate()
        .map(move |(i, view)| match nulls {
            Some(nulls) if nulls.is_null(i) => 0,
            _ => *view as u32 as usize,
        })
}

/// Writes views as Utf8 does into `region`: offsets (one more than the rows, from 0) at its
/// start, and the values end to end from `values_at`, with [`OVERRUN`] bytes to spare past the
/// last one.
fn write_views(data: &ArrayData, region: &mut UninitSlice, values_at: usize) {
    let views = &data.buffer::<u128>(0)[..data.len()];
    let buffers = &data.buffers()[1..];
    region[..4].copy_from_slice(&0i32.to_le_bytes());
    let mut end = 0;
    for (row, (view, len)) in views.iter().zip(view_lengths(data)).enumerate() {
        let at = values_at + end;
        if len <= 12 {
            region[at..at + 12].copy_from_slice(&view.to_le_bytes()[4..]);
        } else {
            let buffer = &buffers[(*view >> 64) as u32 as usize];
            let start = (*view >> 96) as u32 as usize;
            region[at..at + len].copy_from_slice(&buffer[start..start + len]);
        }
        end += len;
        let slot = (row + 1) * 4;
        region[slot..slot + 4].copy_from_slice(&(end as i32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_flight::utils::flight_data_to_batches;
    use datafusion::arrow::array::{
        BinaryViewArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
        Float64Array, Int64Array, LargeStringArray, ListArray, StringArray, StringViewArray,
        StringViewBuilder, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    use super::*;
    use crate::metadata::client_schema;

    /// Encodes `batch` as a stream, decodes it with arrow-flight's reader, and checks the result
    /// against arrow's cast of `batch` to the client's types, value for value.
    fn round_trip(batch: &RecordBatch) -> Vec<RecordBatch> {
        let client = Arc::new(client_schema(&batch.schema()));
        let encoder = BatchEncoder::for_schema(Arc::clone(&client)).expect("a flat schema");
        let mut messages = vec![encoder.schema_message()];
        for message in encoder.messages(batch).unwrap() {
            let mut written = BytesMut::new();
            message.write_to(&mut written);
            assert_eq!(written.len(), message.encoded_len());
            messages.push(message.to_flight_data());
        }
        let decoded = flight_data_to_batches(&messages).unwrap();
        let expected = to_client_batch(batch, &client).unwrap();
        let decoded_whole = datafusion::arrow::compute::concat_batches(&client, &decoded).unwrap();
        assert_eq!(decoded_whole, expected);
        decoded
    }

    fn mixed_batch() -> RecordBatch {
        let long = "a model name longer than twelve bytes";
        let text = StringViewArray::from(vec![
            Some("gpt-4o"),
            None,
            Some(""),
            Some(long),
            Some("exactly12byt"),
            Some("thirteen byte"),
            Some(long),
            None,
            Some("é ünïcode wörds"),
        ]);
        let n = text.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(text),
            Arc::new(Int64Array::from_iter(
                (0..n as i64).map(|i| (i % 3 != 1).then_some(i * 1000)),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| i as f64 * 0.25),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| (i % 4 != 2).then_some(i % 2 == 0)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| i * 1_000_000))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from_iter_values((0..n as i128).map(|i| i * 12_345))
                    .with_precision_and_scale(20, 4)
                    .unwrap(),
            ),
            Arc::new(Date32Array::from_iter_values(0..n as i32)),
            Arc::new(BinaryViewArray::from_iter(
                (0..n).map(|i| (i != 5).then(|| vec![i as u8; i * 3])),
            )),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    (0..n).map(|i| (i != 4).then_some([i as u8, 7, 7])),
                    3,
                )
                .unwrap(),
            ),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn views_nulls_and_fixed_width_columns_read_back_as_arrow_casts_them() {
        let batch = mixed_batch();
        let decoded = round_trip(&batch);
        assert_eq!(decoded.len(), 1);
        let text = decoded[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(text.value(3), "a model name longer than twelve bytes");
        assert_eq!(text.value(8), "é ünïcode wörds");
        assert!(text.is_null(1) && text.is_valid(2) && text.value(2).is_empty());
    }

    #[test]
    fn slices_that_start_inside_a_byte_of_bits_read_back_whole() {
        let batch = mixed_batch();
        for (offset, len) in [(1, 7), (3, 5), (5, 4), (8, 1), (9, 0)] {
            round_trip(&batch.slice(offset, len));
        }
    }

    #[test]
    fn utf8_arrays_with_offsets_not_from_zero_are_rebased() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("skipped"),
            Some("first kept"),
            None,
            Some("last"),
        ]));
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8, true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![text]).unwrap();
        let decoded = round_trip(&batch.slice(1, 3));
        let text = decoded[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(text.value_offsets(), &[0, 10, 10, 14]);
    }

    #[test]
    fn views_in_many_data_buffers_and_out_of_order_are_written_in_row_order() {
        // Small blocks: long values spread over several data buffers. Then the rows are taken out
        // of order, so views point backwards and across buffers.
        let mut builder = StringViewBuilder::new().with_fixed_block_size(64);
        let values: Vec<String> = (0..200)
            .map(|i| format!("trace-{i:04}-{}", "x".repeat(i % 40)))
            .collect();
        values.iter().for_each(|v| builder.append_value(v));
        let array = builder.finish();
        assert!(array.data_buffers().len() > 10);
        let order =
            datafusion::arrow::array::UInt32Array::from_iter_values((0..200u32).rev().step_by(3));
        let shuffled = datafusion::arrow::compute::take(&array, &order, None).unwrap();
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8View, false)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![shuffled]).unwrap();
        let decoded = round_trip(&batch);
        let text = decoded[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(text.value(0), values[199]);
        assert_eq!(text.value(1), values[196]);
    }

    #[test]
    fn a_batch_over_the_message_size_is_split_into_messages_under_it() {
        let value = "y".repeat(1000);
        let text = StringViewArray::from_iter_values((0..6000).map(|_| value.as_str()));
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8View, false)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(text)]).unwrap();
        let client = Arc::new(client_schema(&batch.schema()));
        let messages = BatchEncoder::for_schema(client)
            .unwrap()
            .messages(&batch)
            .unwrap();
        // 6 MB of text: three messages of 2,000 rows.
        assert_eq!(messages.len(), 3);
        assert!(
            messages
                .iter()
                .all(|m| m.len() <= TARGET_MESSAGE_BYTES + 1024)
        );
        let decoded = round_trip(&batch);
        assert_eq!(
            decoded.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2000; 3]
        );
    }

    #[test]
    fn nested_results_are_left_to_arrow_and_other_text_types_are_cast_first() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        let schema = Schema::new(vec![Field::new("l", list.data_type().clone(), true)]);
        assert!(BatchEncoder::for_schema(Arc::new(client_schema(&schema))).is_none());

        // Planned as Utf8View, produced as LargeUtf8: cast to Utf8, then written.
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec!["a", "bb"]));
        let produced = Schema::new(vec![Field::new("t", DataType::LargeUtf8, false)]);
        let batch = RecordBatch::try_new(Arc::new(produced), vec![large]).unwrap();
        let client = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, false)]));
        let encoder = BatchEncoder::for_schema(Arc::clone(&client)).unwrap();
        let mut messages = vec![encoder.schema_message()];
        messages.extend(
            encoder
                .messages(&batch)
                .unwrap()
                .iter()
                .map(BatchMessage::to_flight_data),
        );
        let decoded = flight_data_to_batches(&messages).unwrap();
        let text = decoded[0]
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(text.iter().collect::<Vec<_>>(), [Some("a"), Some("bb")]);
    }
}
