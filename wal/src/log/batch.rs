//! The bytes of one batch on their way to a segment: [`Batch`] keeps each
//! record's header, payload and padding as separate pieces for one vectored
//! write (no copy); [`AlignedBatch`] copies a padded batch into one buffer
//! aligned to 4096 bytes for `O_DIRECT`.
//!
//! Pure buffers, owned by the writer thread: nothing here does I/O.
//! Invariant: `Batch::bytes` is the sum of its pieces' lengths.

use pagoda_formats::limits::DIRECT_IO_ALIGN;
use pagoda_formats::record::RECORD_HEADER_SIZE;

/// The records of one batch, framed but not copied: each record is its
/// header, its payload buffer and its padding, written with one vectored write.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) pieces: Vec<Vec<u8>>,
    pub(super) bytes: u64,
}

impl Batch {
    pub(super) fn push(
        &mut self,
        header: [u8; RECORD_HEADER_SIZE],
        payload: Vec<u8>,
        encoded_len: u64,
    ) {
        let padding = encoded_len - RECORD_HEADER_SIZE as u64 - payload.len() as u64;
        self.pieces.push(header.to_vec());
        self.pieces.push(payload);
        if padding > 0 {
            self.pieces
                .push(vec![0; usize::try_from(padding).expect("padding < 8")]);
        }
        self.bytes += encoded_len;
    }

    pub(super) fn slices(&self) -> Vec<&[u8]> {
        self.pieces.iter().map(Vec::as_slice).collect()
    }

    pub(super) fn clear(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
    }
}

/// A padded batch copied into one contiguous buffer whose start is aligned
/// to 4096 bytes, as `O_DIRECT` needs: the allocation is over-sized by one
/// page and the aligned window inside it is used (no `unsafe` needed).
pub(super) struct AlignedBatch {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBatch {
    pub(super) fn copy_of(buffer: &Batch) -> Self {
        assert!(
            buffer.bytes.is_multiple_of(DIRECT_IO_ALIGN),
            "direct batches are padded"
        );
        let align = usize::try_from(DIRECT_IO_ALIGN).expect("4096 fits");
        let len = usize::try_from(buffer.bytes).expect("batch fits in memory");
        let mut storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        assert!(
            start < align,
            "a byte buffer can always be aligned within one page"
        );
        let mut window = storage.get_mut(start..start + len).expect("sized above");
        for piece in &buffer.pieces {
            let (head, tail) = window.split_at_mut(piece.len());
            head.copy_from_slice(piece);
            window = tail;
        }
        AlignedBatch {
            storage,
            start,
            len,
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.storage
            .get(self.start..self.start + self.len)
            .expect("sized at creation")
    }
}
