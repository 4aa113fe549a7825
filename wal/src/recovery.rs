//! Opening a log directory: finding segments, checking their headers,
//! scanning the tail segment, and cutting a torn tail (`formats/SPEC.md`,
//! "Torn tails and corruption"). Also the read-only [`inspect`] behind
//! `pagoda wal dump` and `pagoda wal verify`, which changes nothing.
//!
//! After recovery every segment is sealed: the writer starts a new segment,
//! with a new epoch, at its first append. A segment is therefore only ever
//! written by one process lifetime, and bytes a crash left behind a recovered
//! tail can never be mistaken for records of a later run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use pagoda_formats::record::{self, RecordHeader, ScanEnd};
use pagoda_formats::segment::{SEGMENT_HEADER_SIZE, SegmentHeader, parse_segment_file_name};

use crate::disk::{Disk, DiskFile};
use crate::error::{Error, Result};
use crate::log::{Recovery, RecoveryReport, SegmentEntry, WalOptions};

pub(crate) struct Recovered {
    pub(crate) segments: BTreeMap<u64, Arc<SegmentEntry>>,
    pub(crate) next_segment_id: u64,
    pub(crate) epoch: u64,
    pub(crate) next_sequence: u64,
    pub(crate) report: RecoveryReport,
}

fn io(operation: &'static str, segment: u64) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        operation,
        segment: Some(segment),
        source,
    }
}

fn read_all(file: &dyn DiskFile, from: u64, to: u64, segment: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(to.saturating_sub(from)).map_err(|_| Error::BadSegment {
        name: pagoda_formats::segment::segment_file_name(segment),
        detail: "segment larger than memory".into(),
    })?;
    let mut bytes = vec![0u8; len];
    file.read_at(&mut bytes, from)
        .map_err(io("read segment", segment))?;
    Ok(bytes)
}

/// A segment file found in the directory, with its header decoded or the
/// reason it could not be.
pub(crate) struct FoundSegment {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) file: Arc<dyn DiskFile>,
    pub(crate) len: u64,
    pub(crate) header: std::result::Result<SegmentHeader, String>,
}

pub(crate) fn find_segments(disk: &dyn Disk) -> Result<Vec<FoundSegment>> {
    let names = disk.list().map_err(|source| Error::Io {
        operation: "list",
        segment: None,
        source,
    })?;
    let mut found = Vec::new();
    for name in names {
        let Some(id) = parse_segment_file_name(&name) else {
            continue;
        };
        let file = disk.open(&name, false).map_err(io("open segment", id))?;
        let len = file.len().map_err(io("stat segment", id))?;
        let header_bytes = read_all(file.as_ref(), 0, len.min(SEGMENT_HEADER_SIZE), id)?;
        let header = SegmentHeader::decode(&header_bytes)
            .map_err(|error| error.to_string())
            .and_then(|header| {
                if header.segment_id == id {
                    Ok(header)
                } else {
                    Err(format!("header names segment {}", header.segment_id))
                }
            });
        found.push(FoundSegment {
            id,
            name,
            file,
            len,
            header,
        });
    }
    Ok(found)
}

pub(crate) fn recover(disk: &dyn Disk, options: &WalOptions) -> Result<Recovered> {
    let mut found = find_segments(disk)?;
    let mut report = RecoveryReport {
        segment_count: found.len(),
        end: "clean",
        ..RecoveryReport::default()
    };
    remove_incomplete_last(disk, &mut found, &mut report)?;
    let mut segments = BTreeMap::new();
    let mut epoch = 0;
    let mut next_sequence = 1;
    let last_id = found.last().map(|segment| segment.id);
    for segment in found {
        let header = segment.header.map_err(|detail| Error::BadSegment {
            name: segment.name.clone(),
            detail,
        })?;
        if header.log_kind != options.log_kind {
            return Err(Error::WrongLogKind {
                segment: segment.id,
                expected: options.log_kind,
                found: header.log_kind,
            });
        }
        epoch = epoch.max(header.epoch);
        next_sequence = next_sequence.max(header.first_sequence);
        let mut data_end = segment.len.max(SEGMENT_HEADER_SIZE);
        if Some(segment.id) == last_id {
            let tail = recover_tail(
                segment.file.as_ref(),
                segment.id,
                &header,
                segment.len,
                options,
                &mut report,
            )?;
            data_end = tail.end;
            if let Some(last) = tail.last_sequence {
                next_sequence = next_sequence.max(last + 1);
            }
        }
        let entry = SegmentEntry {
            file: segment.file,
            header,
            data_end: AtomicU64::new(data_end),
            sealed: AtomicBool::new(true),
        };
        segments.insert(segment.id, Arc::new(entry));
    }
    let next_segment_id = segments.keys().next_back().map_or(1, |id| id + 1);
    Ok(Recovered {
        segments,
        next_segment_id,
        epoch: epoch + 1,
        next_sequence,
        report,
    })
}

/// A last segment whose header never became valid, or whose file is shorter
/// than the header region, was being created when the process died (the
/// header is synced before any record is written): if nothing but zeros
/// follows the header area, it held no record and is removed. Anything else
/// is damage to report, never to delete.
fn remove_incomplete_last(
    disk: &dyn Disk,
    found: &mut Vec<FoundSegment>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let Some(last) = found.last() else {
        return Ok(());
    };
    // A file shorter than its header region never held a record: records
    // start after it, and a completed creation (header synced) is 4096 bytes.
    let short = last.len < SEGMENT_HEADER_SIZE;
    if last.header.is_ok() && !short {
        return Ok(());
    }
    let body = read_all(
        last.file.as_ref(),
        SEGMENT_HEADER_SIZE.min(last.len),
        last.len,
        last.id,
    )?;
    if body.iter().any(|&byte| byte != 0) {
        return Ok(());
    }
    let id = last.id;
    disk.remove(&last.name)
        .map_err(io("remove incomplete segment", id))?;
    disk.sync_dir().map_err(io("sync directory", id))?;
    report.removed_incomplete_segment = Some(id);
    report.segment_count -= 1;
    found.pop();
    Ok(())
}

struct Tail {
    end: u64,
    last_sequence: Option<u64>,
}

fn recover_tail(
    file: &dyn DiskFile,
    id: u64,
    header: &SegmentHeader,
    len: u64,
    options: &WalOptions,
    report: &mut RecoveryReport,
) -> Result<Tail> {
    let bytes = read_all(file, SEGMENT_HEADER_SIZE.min(len), len, id)?;
    let mut from = SEGMENT_HEADER_SIZE;
    let mut last_sequence: Option<u64> = None;
    let end = loop {
        let slice = bytes
            .get(usize::try_from(from - SEGMENT_HEADER_SIZE).unwrap_or(usize::MAX)..)
            .unwrap_or_default();
        let scan = record::scan(slice, from, header.epoch);
        let mut records = scan.records.iter().map(|found| found.header);
        if let Some(last) = records
            .by_ref()
            .map(|header: RecordHeader| header.sequence)
            .last()
        {
            last_sequence = Some(last_sequence.map_or(last, |previous| previous.max(last)));
        }
        match scan.end {
            ScanEnd::Corrupt {
                offset,
                error,
                evidence_offset,
                synced_through,
            } => {
                if options.recovery == Recovery::TolerateTornTail {
                    return Err(Error::CorruptRecord {
                        segment: id,
                        offset,
                        detail: error,
                        witness_offset: evidence_offset,
                        witness_synced_through: synced_through,
                    });
                }
                report
                    .skipped
                    .push((id, offset, evidence_offset, error.to_string()));
                from = evidence_offset;
            }
            ScanEnd::Clean { offset } => break (offset, "clean"),
            ScanEnd::Stale { offset, .. } => break (offset, "stale"),
            ScanEnd::TornTail { offset, .. } => break (offset, "torn"),
        }
    };
    let (end, kind) = end;
    report.tail_segment = Some(id);
    report.tail_end = end;
    report.end = kind;
    if len > end {
        report.truncated_bytes = len - end;
        file.set_len(end).map_err(io("truncate torn tail", id))?;
        file.sync_data().map_err(io("sync truncated tail", id))?;
    }
    Ok(Tail { end, last_sequence })
}

/// What [`inspect`] found in one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedSegment {
    /// Segment id.
    pub id: u64,
    /// File length.
    pub len: u64,
    /// The header, or why it is invalid.
    pub header: std::result::Result<SegmentHeader, String>,
    /// Records found: offset, header.
    pub records: Vec<(u64, RecordHeader)>,
    /// How the scan ended (`None` when the header was invalid).
    pub end: Option<ScanEnd>,
}

impl InspectedSegment {
    /// What is wrong with this segment, if anything. `is_last` tells whether
    /// it is the log's last segment, where a torn tail is a normal outcome of
    /// a crash and not damage.
    pub fn problem(&self, is_last: bool) -> Option<String> {
        if let Err(detail) = &self.header {
            return Some(format!("segment {}: bad header: {detail}", self.id));
        }
        match self.end.as_ref()? {
            ScanEnd::Clean { .. } => None,
            ScanEnd::Stale { offset, epoch } if is_last => {
                let _ = (offset, epoch);
                None
            }
            ScanEnd::TornTail { .. } if is_last => None,
            ScanEnd::Corrupt {
                offset,
                error,
                evidence_offset,
                ..
            } => Some(format!(
                "segment {} offset {offset}: {error} (record at offset {evidence_offset} shows \
                 it had been synced)",
                self.id
            )),
            ScanEnd::Stale { offset, epoch } => Some(format!(
                "segment {} offset {offset}: record of stale epoch {epoch} in a sealed segment",
                self.id
            )),
            ScanEnd::TornTail { offset, error } => Some(format!(
                "segment {} offset {offset}: {error} in a sealed segment",
                self.id
            )),
        }
    }
}

/// Reads every segment of a log directory without changing anything.
pub fn inspect(disk: &dyn Disk) -> Result<Vec<InspectedSegment>> {
    let mut inspected = Vec::new();
    for segment in find_segments(disk)? {
        let (records, end) = match &segment.header {
            Ok(header) => {
                let body = read_all(
                    segment.file.as_ref(),
                    SEGMENT_HEADER_SIZE.min(segment.len),
                    segment.len,
                    segment.id,
                )?;
                let scan = record::scan(&body, SEGMENT_HEADER_SIZE, header.epoch);
                let records = scan
                    .records
                    .iter()
                    .map(|found| (found.offset, found.header))
                    .collect();
                (records, Some(scan.end))
            }
            Err(_) => (Vec::new(), None),
        };
        inspected.push(InspectedSegment {
            id: segment.id,
            len: segment.len,
            header: segment.header,
            records,
            end,
        });
    }
    Ok(inspected)
}
