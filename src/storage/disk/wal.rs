//! The write-ahead log of `--sync always` ([`LOG_FILE`] beside the
//! database): what makes a write durable before the database's own fsync.
//!
//! Why: a durable redb commit writes each changed B-tree page where it
//! belongs (about two scattered page writes per Put) and fsyncs; together
//! with the record of acknowledged revisions that was two device flushes
//! per group commit. The committer now commits each batch to redb without
//! fsync (`Durability::None`: readers could see it at once, which is why
//! they only see snapshots the committer publishes), appends one record
//! holding the batch's mutations to this file, fdatasyncs it, and only then
//! acknowledges. Every second while writes flow, when the log passes [`CHECKPOINT_BYTES`],
//! and at a clean close, a checkpoint (a durable redb commit) makes the
//! database hold everything logged; the log then starts again at offset 0.
//!
//! The database's `meta` table holds the sequence number of the last
//! record applied, written in the same commit as the batch, so a replay
//! knows where the database's durable state ends: it applies, through the
//! committer's own code path, the records after it. Records of a lap
//! before the last checkpoint stay in the file behind the current ones
//! (overwriting in place spares the file system's metadata), and are told
//! apart by their sequence numbers: the current lap starts at offset 0 with
//! the record after the database's durable one and goes on contiguously.
//!
//! What ends the log at replay: the end of the file, a record that is torn
//! or damaged (a checksum that fails), or a record of an earlier lap. A
//! torn last record was never acknowledged (its fsync did not return), so
//! it is dropped. But a valid record with a later sequence number after an
//! invalid one means damage in the middle of acknowledged writes: the
//! store refuses to open, as `acknowledged.rs` does, and nothing is
//! changed. Records are 8-byte aligned so that this check can look at
//! every place a record could start.
//!
//! That check reads bytes no record of the current lap covers: earlier
//! laps, a torn record, all holding clients' values. A value may hold a
//! copy of a well-formed record (with a later sequence number), which
//! must never pass for one, or a client could keep the server from
//! starting again. So the file starts with a header ([`HEADER`] bytes: a
//! magic and a random key, chosen when the file is made or emptied and
//! never shown to clients), and each record's checksum covers the key:
//! a record is valid only in the log it was written to. A log written
//! before the header (key 0, records from offset 0) is read as it was,
//! and emptied with a header once its records are in the database.
//!
//! The file goes through a redb [`StorageBackend`], so that the power-loss
//! simulation (`power_loss.rs`) covers it as it covers the database.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::StorageBackend;

use super::log_format;

/// The log's file in the data dir.
pub const LOG_FILE: &str = "keyvalue.wal";

/// The start of a log file with a key: this, then the key (`u64`, little-endian).
const MAGIC: [u8; 8] = *b"kvwal\0k1";
/// Bytes before the first record of a log with a key.
pub(super) const HEADER: usize = 16;

/// The largest record buffer kept between appends.
const KEPT_BUFFER_BYTES: usize = 1 << 20;

/// A log longer than this asks for a checkpoint at once.
pub(super) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Records read back: sequence number and payload, in order.
pub(super) type Records = Vec<(u64, Bytes)>;

/// The open log, written by the committer.
pub(super) struct Log {
    file: Box<dyn StorageBackend>,
    path: PathBuf,
    /// The key of its records' checksums (0: a log written before keys).
    key: u64,
    /// Where its first record goes.
    start: u64,
    /// Where the next record goes.
    end: u64,
    buffer: Vec<u8>,
}

impl Log {
    /// Opens (or creates) the log of `dir`.
    pub(super) fn open(dir: &Path) -> io::Result<Log> {
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let file = open_file(&path)?;
        if !existed {
            crate::durable_fs::sync_dir(dir)?;
        }
        let key = if file.len()? == 0 {
            write_header(file.as_ref())?
        } else {
            let mut found = vec![0; HEADER.min(usize::try_from(file.len()?).unwrap_or(HEADER))];
            file.read(0, &mut found)?;
            header(&found).0
        };
        let start = if key == 0 { 0 } else { HEADER as u64 };
        Ok(Log {
            file,
            path,
            key,
            start,
            end: start,
            buffer: Vec::new(),
        })
    }

    /// A log written before keys is emptied, with a header: called once
    /// the database holds every record it has durably.
    pub(super) fn upgrade(&mut self) -> io::Result<()> {
        if self.key == 0 {
            self.clear()?;
        }
        Ok(())
    }

    /// Where the log is.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The records after `durable` (the last one the database holds
    /// durably), in order; an error names damage in the middle of the
    /// log, or a failed read. Does not move where the next record goes.
    pub(super) fn live(&self, durable: u64) -> Result<Records, String> {
        let data = self.read_all().map_err(|e| e.to_string())?;
        let records = scan(&data, durable)?;
        let data = Bytes::from(data);
        Ok(records
            .into_iter()
            .map(|(seq, range)| (seq, data.slice(range)))
            .collect())
    }

    /// As [`Log::live`], but a damaged log gives the records before the
    /// damage (`kvserver accept-lost-writes`, which accepts losing the
    /// rest), and what the damage was.
    pub(super) fn live_before_damage(
        &self,
        durable: u64,
    ) -> Result<(Records, Option<String>), String> {
        let data = self.read_all().map_err(|e| e.to_string())?;
        let (records, damage) = match scan(&data, durable) {
            Ok(records) => (records, None),
            Err(damage) => (scan_before_damage(&data, durable), Some(damage)),
        };
        let data = Bytes::from(data);
        let records = records
            .into_iter()
            .map(|(seq, range)| (seq, data.slice(range)))
            .collect();
        Ok((records, damage))
    }

    /// Empties the file (after a checkpoint that holds every record worth
    /// keeping), so that no record of it is ever read again.
    pub(super) fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.key = write_header(self.file.as_ref())?;
        self.start = HEADER as u64;
        self.end = self.start;
        Ok(())
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.file.len()?).map_err(io::Error::other)?;
        let mut data = vec![0; len];
        self.file.read(0, &mut data)?;
        Ok(data)
    }

    /// Appends the record `seq`, whose payload `payload` writes, and
    /// fdatasyncs it. The buffer is kept for the next record, unless this
    /// one was large: one batch of big values must not pin its size.
    pub(super) fn append(
        &mut self,
        seq: u64,
        payload: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        self.buffer.clear();
        log_format::frame_with(self.key, seq, &mut self.buffer, payload);
        let written = self
            .file
            .write(self.end, &self.buffer)
            .and_then(|()| self.file.sync_data());
        let len = self.buffer.len() as u64;
        if self.buffer.capacity() > KEPT_BUFFER_BYTES {
            self.buffer = Vec::new();
        }
        written?;
        self.end += len;
        Ok(())
    }

    /// After a checkpoint: the next record goes to the start again.
    pub(super) fn restart(&mut self) {
        self.end = self.start;
    }

    /// Bytes written since the last checkpoint.
    pub(super) fn written(&self) -> u64 {
        self.end - self.start
    }
}

/// Writes the header of a new key at the start of the empty `file`, and
/// syncs it; returns the key.
fn write_header(file: &dyn StorageBackend) -> io::Result<u64> {
    use std::hash::{BuildHasher, Hasher};
    // Seeded from the OS's randomness once per process, and the clock.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |now| now.as_nanos()));
    let key = hasher.finish() | 1;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&key.to_le_bytes());
    file.write(0, &header)?;
    file.sync_data()?;
    Ok(key)
}

/// The key of the log file starting with `data`, and where its records
/// start: none (0) and 0 for a log written before keys.
fn header(data: &[u8]) -> (u64, usize) {
    match data.get(..HEADER) {
        Some(header) if header[..8] == MAGIC => {
            let key = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
            (key, HEADER)
        }
        _ => (0, 0),
    }
}

fn open_file(path: &Path) -> io::Result<Box<dyn StorageBackend>> {
    #[cfg(test)]
    if let Some(backend) = super::power_loss::backend(path, true) {
        return Ok(Box::new(backend?));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Ok(Box::new(
        redb::backends::FileBackend::new(file).map_err(io::Error::other)?,
    ))
}

/// Reads the log file's `data` against the database's durable record
/// `durable`: the records after it, by sequence number and payload range;
/// or what is damaged.
pub(super) fn scan(data: &[u8], durable: u64) -> Result<Vec<(u64, Range<usize>)>, String> {
    let (key, mut at) = header(data);
    let mut last: Option<u64> = None;
    let mut live = Vec::new();
    while let Some((seq, payload, len)) = log_format::unframe(key, &data[at..]) {
        match last {
            None if seq > durable + 1 => {
                return Err(format!(
                    "the log's first record is {seq}, but the database holds only up to \
                     record {durable}: records {}..={} are missing",
                    durable + 1,
                    seq - 1
                ));
            }
            Some(last) if seq <= last => break, // a record of an earlier lap
            Some(last) if seq > last + 1 => {
                return Err(format!(
                    "record {seq} at offset {at} follows record {last}: records {}..={} \
                     are missing",
                    last + 1,
                    seq - 1
                ));
            }
            _ => {}
        }
        if seq > durable {
            live.push((seq, at + payload.start..at + payload.end));
        }
        last = Some(seq);
        at += len;
    }
    // Whatever ends the log here, nothing written after it may be valid.
    let expected = last.map_or(durable + 1, |last| last + 1).max(durable + 1);
    let mut later = at.div_ceil(8) * 8 + 8;
    while later + log_format::FRAME <= data.len() {
        if log_format::claimed_seq(&data[later..]).is_some_and(|seq| seq >= expected)
            && let Some((seq, _, _)) = log_format::unframe(key, &data[later..])
        {
            return Err(format!(
                "record {expected} at offset {at} is damaged, and record {seq} at offset \
                 {later} follows it: acknowledged writes in between are lost"
            ));
        }
        later += 8;
    }
    Ok(live)
}

/// The contiguous records after `durable` from the start of `data`, up
/// to the first that is not: what a damaged log still gives.
fn scan_before_damage(data: &[u8], durable: u64) -> Vec<(u64, Range<usize>)> {
    let (key, mut at) = header(data);
    let mut live = Vec::new();
    let mut last = None;
    while let Some((seq, payload, len)) = log_format::unframe(key, &data[at..]) {
        let contiguous = match last {
            None => seq <= durable + 1,
            Some(last) => seq == last + 1,
        };
        if !contiguous {
            break;
        }
        if seq > durable {
            live.push((seq, at + payload.start..at + payload.end));
        }
        last = Some(seq);
        at += len;
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_records_read_back_and_a_large_one_does_not_pin_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        let large = vec![7u8; 3 * KEPT_BUFFER_BYTES];
        log.append(1, |out| out.extend_from_slice(&large)).unwrap();
        assert!(
            log.buffer.capacity() <= KEPT_BUFFER_BYTES,
            "{}",
            log.buffer.capacity()
        );
        log.append(2, |out| out.extend_from_slice(b"small"))
            .unwrap();
        assert!(log.buffer.capacity() > 0, "a small record's buffer is kept");
        let live = log.live(0).unwrap();
        assert_eq!(live.len(), 2);
        assert_eq!((live[0].0, &live[0].1[..]), (1, &large[..]));
        assert_eq!((live[1].0, &live[1].1[..]), (2, &b"small"[..]));
    }

    const KEY: u64 = 0x0123_4567_89ab_cdef;

    /// A log file with a header of `key` (none if 0) holding `records`.
    fn log_with(key: u64, records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        if key != 0 {
            data.extend_from_slice(&MAGIC);
            data.extend_from_slice(&key.to_le_bytes());
        }
        for (seq, payload) in records {
            log_format::frame(key, *seq, payload, &mut data);
        }
        data
    }

    fn log_of(records: &[(u64, &[u8])]) -> Vec<u8> {
        log_with(KEY, records)
    }

    fn seqs(found: Result<Vec<(u64, Range<usize>)>, String>) -> Vec<u64> {
        found.unwrap().into_iter().map(|(seq, _)| seq).collect()
    }

    #[test]
    fn the_records_after_the_durable_one_are_live() {
        let data = log_of(&[(4, b"a"), (5, b"bb"), (6, b"ccc")]);
        assert_eq!(seqs(scan(&data, 3)), [4, 5, 6]);
        assert_eq!(seqs(scan(&data, 5)), [6]);
        assert_eq!(seqs(scan(&data, 6)), Vec::<u64>::new());
        assert_eq!(seqs(scan(&data, 60)), Vec::<u64>::new());
        assert_eq!(seqs(scan(&[], 0)), Vec::<u64>::new());
        assert_eq!(seqs(scan(&[0; 100], 7)), Vec::<u64>::new());
        let found = scan(&data, 4).unwrap();
        assert_eq!(&data[found[0].1.clone()], b"bb");
    }

    #[test]
    fn an_earlier_lap_behind_the_current_one_ends_it() {
        // A lap of 1..=5, then a checkpoint at 5 and a new lap of 6, 7
        // written over its start.
        let mut data = log_of(&[(1, b"1111"), (2, b"2"), (3, b"3"), (4, b"4"), (5, b"5")]);
        let new = log_of(&[(6, b"x"), (7, b"y")]);
        data[..new.len()].copy_from_slice(&new);
        assert_eq!(seqs(scan(&data, 5)), [6, 7]);
        assert_eq!(seqs(scan(&data, 6)), [7]);
        // The checkpoint of 7 and nothing written since.
        assert_eq!(seqs(scan(&data, 7)), Vec::<u64>::new());
    }

    #[test]
    fn a_torn_last_record_is_dropped() {
        let data = log_of(&[(1, b"one"), (2, &[9u8; 700])]);
        let second = HEADER + log_format::padded(3);
        for cut in second..second + log_format::FRAME + 700 {
            let mut torn = data[..cut].to_vec();
            torn.resize(data.len() + 64, 0);
            assert_eq!(seqs(scan(&torn, 0)), [1], "cut at {cut}");
        }
        // Or whole, but with a sector of garbage.
        let mut torn = data.clone();
        torn[second + 600] ^= 0xff;
        assert_eq!(seqs(scan(&torn, 0)), [1]);
    }

    #[test]
    fn damage_followed_by_a_later_record_is_refused() {
        let data = log_of(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        let second = HEADER + log_format::padded(3);
        for at in second..second + log_format::padded(3) {
            let mut damaged = data.clone();
            damaged[at] ^= 0x40;
            if log_format::unframe(KEY, &damaged[second..]).is_some() {
                continue; // the padding: no damage to the record
            }
            let error = scan(&damaged, 0).unwrap_err();
            assert!(error.contains("record 2"), "{error}");
            assert!(error.contains("record 3"), "{error}");
        }
        // Already in the database, the damaged record is still no gap to skip.
        let mut damaged = data.clone();
        damaged[second + 2] ^= 1;
        assert!(scan(&damaged, 1).is_err());
    }

    #[test]
    fn a_gap_after_the_durable_record_is_refused() {
        let data = log_of(&[(5, b"a"), (6, b"b")]);
        assert!(scan(&data, 3).unwrap_err().contains("4..=4"));
        let data = log_of(&[(1, b"a"), (3, b"b")]);
        assert!(scan(&data, 0).unwrap_err().contains("2..=2"));
    }

    #[test]
    fn a_copy_of_a_record_in_a_value_behind_the_end_is_no_damage() {
        // Record 2's payload holds records 9 (one without a key, one of
        // another key), as a client's value could.
        let mut forged = Vec::new();
        log_format::frame(0, 9, b"forged", &mut forged);
        log_format::frame(KEY + 2, 9, b"forged", &mut forged);
        let data = log_of(&[(1, b"one"), (2, &forged), (3, b"three")]);
        assert_eq!(seqs(scan(&data, 0)), [1, 2, 3]);
        // Behind a shorter later lap at offset 0...
        let mut later = data.clone();
        let new = log_of(&[(4, b"x")]);
        later[..new.len()].copy_from_slice(&new);
        later[new.len()..new.len() + 8].fill(0);
        assert_eq!(seqs(scan(&later, 3)), [4]);
        // ...or behind a torn record.
        let mut torn = log_of(&[(1, b"one")]);
        let two = log_of(&[(2, &forged)]);
        torn.extend_from_slice(&two[HEADER..]);
        torn[HEADER + log_format::padded(3) + 1] ^= 1;
        assert_eq!(seqs(scan(&torn, 0)), [1]);
    }

    #[test]
    fn a_log_written_before_keys_is_read_as_it_was() {
        let data = log_with(0, &[(4, b"a"), (5, b"bb")]);
        assert_eq!(seqs(scan(&data, 3)), [4, 5]);
        let mut damaged = log_with(0, &[(4, b"a"), (5, b"bb"), (6, b"c")]);
        damaged[log_format::padded(1) + 17] ^= 1;
        assert!(scan(&damaged, 3).unwrap_err().contains("record 6"));
        // Nor is a keyed record valid in it.
        assert_eq!(
            seqs(scan(&log_of(&[(4, b"a")])[HEADER..], 3)),
            Vec::<u64>::new()
        );
    }
}
