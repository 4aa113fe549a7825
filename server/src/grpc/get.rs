//! A Get's stream: each requested range's block is read on the blocking
//! pool, then sent as a start (lengths and checksums) and its chunks, which
//! reference the block's pages (no copy). A block that is not stored is
//! answered `Missing` and the stream goes on; an engine error or a range
//! outside its block ends the stream with that status. The stream stops as
//! soon as the client is gone or its bounds end it ([`Outbox::send`]).

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use pagoda_engine::Engine;
use pagoda_formats::chain::ChainHash;
use pagoda_formats::limits as format_limits;
use pagoda_formats::namespace::NamespaceId;
use pagoda_formats::proto::v1 as pb;
use tonic::Status;

use super::{blocking, hash_of, range_length, tier};
use crate::streams::Outbox;

/// One requested range: the block's hash, the offset and the length (0:
/// the rest of the block).
pub(super) type Range = (ChainHash, u64, u64);

/// The chunk size a Get asks for: 0 for the default, at most the limit.
pub(super) fn chunk_bytes_of(asked: u32) -> Result<usize, Status> {
    Ok(match asked {
        0 => format_limits::CHUNK_BYTES_DEFAULT,
        n if n > format_limits::CHUNK_BYTES_MAX => {
            return Err(Status::invalid_argument(format!(
                "chunk_bytes {n} is over the limit of {}",
                format_limits::CHUNK_BYTES_MAX
            )));
        }
        n => n,
    } as usize)
}

/// The ranges of a Get, each hash checked.
pub(super) fn ranges_of(ranges: &[pb::BlockRange]) -> Result<Vec<Range>, Status> {
    ranges
        .iter()
        .map(|range| {
            Ok((
                hash_of(&range.chain_hash, "chain_hash")?,
                range.offset,
                range.length,
            ))
        })
        .collect::<Result<Vec<_>, Status>>()
}

/// Where a Get's blocks come from and go to.
pub(super) struct RangeStream {
    pub(super) sender: Outbox<pb::GetResponse>,
    pub(super) engine: Arc<Engine>,
    pub(super) id: NamespaceId,
    pub(super) chunk_bytes: usize,
}

impl RangeStream {
    /// Sends every range, in order, until one ends the stream.
    pub(super) async fn send_all(&self, ranges: Vec<Range>) {
        for (index, range) in ranges.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if self.send_range(index, range).await.is_break() {
                return;
            }
        }
    }

    /// Sends one range: `Missing`, or its start and its chunks. `Break`
    /// when the stream is over.
    async fn send_range(&self, index: u32, (hash, offset, length): Range) -> ControlFlow<()> {
        let engine = Arc::clone(&self.engine);
        let id = self.id;
        let found = blocking(move || engine.get(&id, &hash)).await;
        let block = match found {
            Ok(Some(block)) => block,
            Ok(None) => {
                let missing = pb::get_response::Part::Missing(pb::GetMissing { index });
                return self.send(missing).await;
            }
            Err(error) => {
                let _ = self.sender.send(Err(error)).await;
                return ControlFlow::Break(());
            }
        };
        let len = block.len() as u64;
        let Some(take) = range_length(offset, length, len) else {
            let _ = self
                .sender
                .send(Err(Status::invalid_argument(format!(
                    "range {index} (offset {offset}, length {length}) is not within \
                     the block's {len} bytes"
                ))))
                .await;
            return ControlFlow::Break(());
        };
        let (from, count) = (
            usize::try_from(offset).unwrap_or(usize::MAX),
            usize::try_from(take).unwrap_or(usize::MAX),
        );
        let range_crc = block
            .range_chunks(from, count)
            .fold(0, crc32c::crc32c_append);
        let start = pb::GetBlockStart {
            index,
            payload_len: len,
            payload_crc32c: block.crc(),
            offset,
            length: take,
            range_crc32c: range_crc,
            tier: tier(block.tier()),
        };
        self.send(pb::get_response::Part::Start(start)).await?;
        // The pages themselves go out: each chunk holds a reference
        // to the block, no copy.
        for slice in block.slices(from, count, self.chunk_bytes) {
            self.send(pb::get_response::Part::Chunk(Bytes::from_owner(slice)))
                .await?;
        }
        ControlFlow::Continue(())
    }

    /// Sends one message; `Break` when the stream is over.
    async fn send(&self, part: pb::get_response::Part) -> ControlFlow<()> {
        match self
            .sender
            .send(Ok(pb::GetResponse { part: Some(part) }))
            .await
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}
