//! Reading the log: positional reads of one record (verified against its
//! location) and scans of a segment, on the caller's thread, never through
//! the writer.
//!
//! Invariant: a reader never reads past a segment's `data_end` (loaded with
//! acquire, stored with release by the writer after each write), so every
//! byte it reads was completely written. It takes the segments map's read
//! lock only to find the segment; it changes nothing.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use pagoda_formats::record::{self, RECORD_HEADER_SIZE, RecordKind, ScanEnd, decode_record};
use pagoda_formats::segment::SEGMENT_HEADER_SIZE;

use super::{Location, SegmentInfo, Wal, io_error};
use crate::error::{Error, Result};

impl Wal {
    /// Reads a record's payload, verifying its checksums and that the record
    /// at `location` is the one written there.
    pub fn read(&self, location: &Location) -> Result<Vec<u8>> {
        self.read_verifying(location, true)
    }

    /// [`Wal::read`] of a payload that carries a stronger check of its own
    /// over every byte (an encrypted block record's AEAD tag,
    /// `formats/SPEC.md` §10.1): the record header is verified as by `read`
    /// (its CRC, then sequence, length and epoch), the payload's CRC is not,
    /// which saves a pass over it. The caller must verify the payload before
    /// it uses any of it, and reports a failure itself.
    pub fn read_sealed(&self, location: &Location) -> Result<Vec<u8>> {
        self.read_verifying(location, false)
    }

    fn read_verifying(&self, location: &Location, verify_payload: bool) -> Result<Vec<u8>> {
        let segment = self
            .shared
            .segment(location.segment_id)
            .ok_or(Error::NotFound {
                location: *location,
            })?;
        let total = location.record_len();
        let end = segment.data_end.load(Ordering::Acquire);
        if location.offset < SEGMENT_HEADER_SIZE
            || location
                .offset
                .checked_add(total)
                .is_none_or(|record_end| record_end > end)
        {
            return Err(Error::NotFound {
                location: *location,
            });
        }
        let mut bytes = vec![0u8; usize::try_from(total).expect("bounded record length")];
        segment
            .file
            .read_at(&mut bytes, location.offset)
            .map_err(io_error("read", Some(location.segment_id)))?;
        let header = if verify_payload {
            decode_record(&bytes).map(|record| record.header)
        } else {
            record::decode_header(&bytes)
        }
        .map_err(|detail| Error::BadRecord {
            location: *location,
            detail,
        })?;
        if header.sequence != location.sequence
            || header.payload_len != location.payload_len
            || header.epoch != segment.header.epoch
        {
            return Err(Error::BadRecord {
                location: *location,
                detail: pagoda_formats::Error::SequenceRegression {
                    previous: location.sequence,
                    found: header.sequence,
                },
            });
        }
        bytes.truncate(RECORD_HEADER_SIZE + location.payload_len as usize);
        bytes.drain(..RECORD_HEADER_SIZE);
        Ok(bytes)
    }

    /// Reads `len` bytes at `offset` of a record's payload. The whole record
    /// is read and its checksum verified on every call (`formats/SPEC.md`,
    /// "Range reads"), so no unverified byte is ever returned.
    pub fn read_range(&self, location: &Location, offset: u64, len: u64) -> Result<Vec<u8>> {
        let payload = self.read(location)?;
        let start = usize::try_from(offset).ok();
        let end = start
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| start.checked_add(len));
        match start
            .zip(end)
            .and_then(|(start, end)| payload.get(start..end))
        {
            Some(range) => Ok(range.to_vec()),
            None => Err(Error::InvalidOptions(format!(
                "range {offset}+{len} is outside the payload of {} bytes",
                payload.len()
            ))),
        }
    }

    /// The log's segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        segments
            .iter()
            .map(|(id, entry)| SegmentInfo {
                id: *id,
                epoch: entry.header.epoch,
                first_sequence: entry.header.first_sequence,
                data_end: entry.data_end.load(Ordering::Acquire),
                sealed: entry.sealed.load(Ordering::Acquire),
            })
            .collect()
    }

    /// The records of a segment from `from_offset` (a record boundary; the
    /// first record when `None`), with how the scan ended.
    pub fn scan_segment(
        &self,
        segment_id: u64,
        from_offset: Option<u64>,
    ) -> Result<(Vec<(Location, RecordKind)>, ScanEnd)> {
        let missing = Location {
            segment_id,
            offset: 0,
            sequence: 0,
            payload_len: 0,
        };
        let segment = self
            .shared
            .segment(segment_id)
            .ok_or(Error::NotFound { location: missing })?;
        let from = from_offset
            .unwrap_or(SEGMENT_HEADER_SIZE)
            .max(SEGMENT_HEADER_SIZE);
        let end = segment.data_end.load(Ordering::Acquire);
        let len = usize::try_from(end.saturating_sub(from)).expect("segment fits in memory");
        let mut bytes = vec![0u8; len];
        segment
            .file
            .read_at(&mut bytes, from)
            .map_err(io_error("scan", Some(segment_id)))?;
        let report = record::scan(&bytes, from, segment.header.epoch);
        let records = report
            .records
            .iter()
            .map(|found| {
                let location = Location {
                    segment_id,
                    offset: found.offset,
                    sequence: found.header.sequence,
                    payload_len: found.header.payload_len,
                };
                (location, found.header.kind)
            })
            .collect();
        Ok((records, report.end))
    }
}
