//! The DRAM tier's page pool: one preallocated set of fixed-size pages.
//!
//! A block's payload occupies `ceil(len / page_bytes)` pages taken from the
//! free list; nothing payload-sized is allocated on the put or get path. A
//! stored block is an `Arc<Block>`: readers get a [`BlockRef`] that clones the
//! `Arc` (zero-copy, refcounted), and the pages go back to the free list when
//! the engine has dropped the block *and* the last reader is done. Pages are
//! fully overwritten before reuse (the payload, then zeros to the page end),
//! so one tenant's bytes never show through in another's block.
//!
//! The pool's memory is allocated once at open, page by page (`calloc`, so
//! the kernel maps it lazily); its size is the DRAM tier's capacity.
//!
//! Nobody waits on the pool: [`PagePool::store`] takes pages or answers
//! `None` at once. Pages of an evicted block that readers still hold come
//! back when they are done, so eviction counts a victim's pages as freed
//! only when the engine held the last reference (the engine's `tiering`).
//! The free list's mutex is a leaf lock, held for a `Vec` split or extend.

use std::sync::{Arc, Mutex, PoisonError};

/// The shared free list.
#[derive(Debug)]
struct PoolShared {
    page_bytes: usize,
    page_count: usize,
    free: Mutex<Vec<Box<[u8]>>>,
}

/// A pool of fixed-size pages.
#[derive(Clone, Debug)]
pub(crate) struct PagePool {
    shared: Arc<PoolShared>,
}

impl PagePool {
    /// A pool of `page_count` pages of `page_bytes` each.
    pub(crate) fn new(page_bytes: usize, page_count: usize) -> Self {
        let free = (0..page_count)
            .map(|_| vec![0u8; page_bytes].into_boxed_slice())
            .collect();
        PagePool {
            shared: Arc::new(PoolShared {
                page_bytes,
                page_count,
                free: Mutex::new(free),
            }),
        }
    }

    pub(crate) fn page_bytes(&self) -> usize {
        self.shared.page_bytes
    }

    pub(crate) fn page_count(&self) -> usize {
        self.shared.page_count
    }

    /// Pages a payload of `len` bytes occupies (an empty payload takes none).
    pub(crate) fn pages_for(&self, len: usize) -> usize {
        len.div_ceil(self.shared.page_bytes)
    }

    /// Free pages now (pages of evicted blocks still read come back later).
    pub(crate) fn free_pages(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<[u8]>>> {
        self.shared
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies `payload` (given as chunks adding up to `len` bytes) into pages
    /// taken from the free list; `None` when too few pages are free. Also
    /// gives the CRC-32C of the bytes as copied, computed page piece by page
    /// piece while each is hot in cache: what the pages hold, even when the
    /// source changed under the copy (a client's shared-memory region).
    pub(crate) fn store(&self, len: usize, chunks: &[&[u8]]) -> Option<(Block, u32)> {
        let mut pages = self.take(len)?;
        let mut written = 0usize;
        let mut crc = 0u32;
        let mut page_index = 0usize;
        let mut in_page = 0usize;
        for chunk in chunks {
            let mut chunk: &[u8] = chunk;
            while !chunk.is_empty() {
                let Some(page) = pages.get_mut(page_index) else {
                    break;
                };
                let room = page.len() - in_page;
                let take = room.min(chunk.len());
                let (head, rest) = chunk.split_at(take);
                if let Some(target) = page.get_mut(in_page..in_page + take) {
                    target.copy_from_slice(head);
                    crc = crc32c::crc32c_append(crc, target);
                }
                chunk = rest;
                in_page += take;
                written += take;
                if in_page == page.len() {
                    page_index += 1;
                    in_page = 0;
                }
            }
        }
        debug_assert_eq!(written, len, "chunks add up to the payload length");
        if let Some(page) = pages.get_mut(page_index)
            && let Some(tail) = page.get_mut(in_page..)
        {
            tail.fill(0);
        }
        let block = Block {
            pages,
            len,
            pool: Arc::clone(&self.shared),
        };
        Some((block, crc))
    }
}

impl PagePool {
    /// The pages for `len` bytes, off the free list; `None` when too few
    /// are free.
    fn take(&self, len: usize) -> Option<Vec<Box<[u8]>>> {
        let need = self.pages_for(len);
        let mut free = self.lock();
        if free.len() < need {
            return None;
        }
        let keep = free.len() - need;
        Some(free.split_off(keep))
    }

    /// [`PagePool::store`] with the `len` bytes read by `fill` straight into
    /// the pages, one page piece at a time, in order (a block arriving on a
    /// socket: no buffer between the socket and the pages); each piece's
    /// CRC-32C is computed once it is in its page. `Some(Err)` when `fill`
    /// failed: the pages are back on the free list.
    pub(crate) fn store_from(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
    ) -> Option<std::io::Result<(Block, u32)>> {
        let pages = self.take(len)?;
        let mut block = Block {
            pages,
            len,
            pool: Arc::clone(&self.shared),
        };
        let mut left = len;
        let mut crc = 0u32;
        for page in &mut block.pages {
            let (head, tail) = page.split_at_mut(left.min(page.len()));
            if let Err(error) = fill(head) {
                return Some(Err(error));
            }
            crc = crc32c::crc32c_append(crc, head);
            tail.fill(0);
            left -= head.len();
        }
        Some(Ok((block, crc)))
    }
}

/// A payload stored in pool pages; its pages return to the pool on drop.
#[derive(Debug)]
pub(crate) struct Block {
    pages: Vec<Box<[u8]>>,
    len: usize,
    pool: Arc<PoolShared>,
}

impl Block {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The payload as page-sized chunks.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let mut left = self.len;
        self.pages.iter().map(move |page| {
            let take = left.min(page.len());
            left -= take;
            page.get(..take).unwrap_or_default()
        })
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let pages = std::mem::take(&mut self.pages);
        self.pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(pages);
    }
}

/// Where a block was served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The DRAM page pool.
    Dram,
    /// The SSD value log.
    Ssd,
}

impl Tier {
    /// `"dram"` or `"ssd"`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Dram => "dram",
            Tier::Ssd => "ssd",
        }
    }
}

#[derive(Clone, Debug)]
enum Payload {
    Pages(Arc<Block>),
    Owned { bytes: Arc<Vec<u8>>, start: usize },
}

/// A read-only reference to a block's payload. A DRAM block is not copied:
/// the reference keeps its pages alive until dropped, so hold it only for the
/// duration of a transfer. A block read from SSD and not promoted is owned.
#[derive(Clone, Debug)]
pub struct BlockRef {
    payload: Payload,
    crc: u32,
    tier: Tier,
}

impl BlockRef {
    pub(crate) fn from_pages(block: Arc<Block>, crc: u32) -> Self {
        BlockRef {
            payload: Payload::Pages(block),
            crc,
            tier: Tier::Dram,
        }
    }

    pub(crate) fn from_record(bytes: Vec<u8>, start: usize, crc: u32) -> Self {
        BlockRef {
            payload: Payload::Owned {
                bytes: Arc::new(bytes),
                start,
            },
            crc,
            tier: Tier::Ssd,
        }
    }

    pub(crate) fn with_tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Payload bytes.
    pub fn len(&self) -> usize {
        match &self.payload {
            Payload::Pages(block) => block.len(),
            Payload::Owned { bytes, start } => bytes.len().saturating_sub(*start),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// CRC-32C of the payload (verified when the bytes entered the engine and
    /// at every tier transition).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The tier the block was found in.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The payload as a sequence of chunks (pages for a DRAM block).
    pub fn chunks(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        match &self.payload {
            Payload::Pages(block) => Box::new(block.chunks()),
            Payload::Owned { bytes, start } => {
                Box::new(std::iter::once(bytes.get(*start..).unwrap_or_default()))
            }
        }
    }

    /// The bytes `offset..offset + len` of the payload as chunks, clamped to
    /// the payload's end.
    pub fn range_chunks(&self, offset: usize, len: usize) -> impl Iterator<Item = &[u8]> {
        let mut skip = offset;
        let mut left = len;
        self.chunks().filter_map(move |chunk| {
            if skip >= chunk.len() {
                skip -= chunk.len();
                return None;
            }
            let from = std::mem::take(&mut skip);
            let take = left.min(chunk.len() - from);
            left -= take;
            (take > 0).then(|| chunk.get(from..from + take).unwrap_or_default())
        })
    }

    /// The bytes `offset..offset + len` (clamped to the payload) as
    /// contiguous pieces of at most `max` bytes that own a reference to the
    /// block: they can be handed to the network without copying (a piece
    /// never spans two pages).
    pub fn slices(&self, offset: usize, len: usize, max: usize) -> Vec<PayloadSlice> {
        let max = max.max(1);
        let mut out = Vec::new();
        let mut page_start = 0usize;
        let end = offset.saturating_add(len).min(self.len());
        let pieces: Vec<(usize, usize)> = match &self.payload {
            Payload::Pages(block) => block
                .pages
                .iter()
                .map(|page| page.len())
                .enumerate()
                .collect(),
            Payload::Owned { .. } => vec![(0, self.len())],
        };
        for (index, page_len) in pieces {
            let (from, to) = (offset.max(page_start), end.min(page_start + page_len));
            let mut at = from;
            while at < to {
                let take = max.min(to - at);
                out.push(PayloadSlice {
                    owner: self.clone(),
                    piece: index,
                    start: at - page_start,
                    end: at - page_start + take,
                });
                at += take;
            }
            page_start += page_len;
            if page_start >= end {
                break;
            }
        }
        out
    }

    /// Copies the payload into `out`, which must be exactly `len()` bytes.
    pub fn copy_to(&self, out: &mut [u8]) -> bool {
        if out.len() != self.len() {
            return false;
        }
        let mut at = 0;
        for chunk in self.chunks() {
            if let Some(target) = out.get_mut(at..at + chunk.len()) {
                target.copy_from_slice(chunk);
            }
            at += chunk.len();
        }
        true
    }

    /// The payload, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.len()];
        self.copy_to(&mut out);
        out
    }
}

/// A contiguous piece of a block's payload that keeps the block alive
/// ([`BlockRef::slices`]).
#[derive(Clone, Debug)]
pub struct PayloadSlice {
    owner: BlockRef,
    piece: usize,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for PayloadSlice {
    fn as_ref(&self) -> &[u8] {
        let piece: &[u8] = match &self.owner.payload {
            Payload::Pages(block) => block
                .pages
                .get(self.piece)
                .map_or(&[][..], |page| &page[..]),
            Payload::Owned { bytes, start } => bytes.get(*start..).unwrap_or_default(),
        };
        piece.get(self.start..self.end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_back_when_the_last_reader_is_done() {
        let pool = PagePool::new(16, 4);
        let block = Arc::new(pool.store(40, &[&[1u8; 25], &[2u8; 15]]).unwrap().0);
        assert_eq!(pool.free_pages(), 1);
        let reader = BlockRef::from_pages(Arc::clone(&block), 0);
        drop(block);
        assert_eq!(pool.free_pages(), 1, "a reader keeps the pages");
        let mut expected = vec![1u8; 25];
        expected.extend([2u8; 15]);
        assert_eq!(reader.to_vec(), expected);
        let ranged: Vec<u8> = reader.range_chunks(14, 20).flatten().copied().collect();
        assert_eq!(ranged, expected[14..34]);
        let clamped: Vec<u8> = reader.range_chunks(30, 100).flatten().copied().collect();
        assert_eq!(clamped, expected[30..]);
        let slices = reader.slices(10, 25, 4);
        assert!(slices.iter().all(|slice| slice.as_ref().len() <= 4));
        let joined: Vec<u8> = slices
            .iter()
            .flat_map(|slice| slice.as_ref().to_vec())
            .collect();
        assert_eq!(joined, expected[10..35]);
        drop(slices); // slices hold the block too
        let owned = BlockRef::from_record(expected.clone(), 5, 0);
        let joined: Vec<u8> = owned
            .slices(3, 100, 7)
            .iter()
            .flat_map(|s| s.as_ref().to_vec())
            .collect();
        assert_eq!(joined, expected[8..]);
        drop(reader);
        assert_eq!(pool.free_pages(), 4);
        assert!(
            pool.store(65, &[&[0u8; 65]]).is_none(),
            "five pages do not fit"
        );
    }

    #[test]
    fn reused_pages_never_show_old_bytes() {
        let pool = PagePool::new(16, 1);
        drop(pool.store(16, &[&[0xAA; 16]]).unwrap());
        let (block, crc) = pool.store(3, &[b"abc"]).unwrap();
        assert_eq!(
            crc,
            crc32c::crc32c(b"abc"),
            "the CRC of the bytes as copied"
        );
        assert_eq!(block.pages[0].as_ref(), b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0");
    }
}
