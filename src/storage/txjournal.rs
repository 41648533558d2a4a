//! The journal of transactions a ranger node acknowledged: each raw transaction whose hash
//! `eth_sendRawTransaction` answers is appended here and synced to disk *before* the answer,
//! so a crash (`kill -9`, power loss) loses nothing acknowledged. At start the journal is read
//! back (its transactions go through the pool's rules again: included ones are refused as
//! "nonce too low") and rewritten with what is still held; it is rewritten the same way when
//! it grows past a bound.
//!
//! Record: `len (u32 LE) | crc32c(payload) (u32 LE) | payload`. A torn or corrupt tail (a
//! crash mid-append) ends the read; everything before it was synced, so nothing acknowledged
//! sits after it.
//!
//! Appends commit in groups: many callers write under one lock, and one `fdatasync` makes
//! every record written before it durable, so concurrent requests share the sync.

use alloy_primitives::Bytes;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Largest record read back (far above any transaction a pool takes).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest journal read at start; past it the rest is ignored, and said so.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 30;
const HEADER: usize = 8;

/// The open journal.
pub struct TxJournal {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Held while syncing; (generation, offset) durable so far.
    synced: Mutex<(u64, u64)>,
}

struct Writer {
    file: File,
    /// Bumped by every rewrite (a new file).
    generation: u64,
    written: u64,
    /// Bytes the last rewrite left (the size at open before any).
    rewritten: u64,
}

/// A point in the journal (the file's generation, and the bytes written in it): what
/// [`TxJournal::wait_durable`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64, u64);

/// What [`TxJournal::open`] read back.
#[derive(Debug, Default)]
pub struct Recovered {
    pub transactions: Vec<Bytes>,
    /// Bytes after the last whole record (a torn append, or corruption), ignored.
    pub torn_bytes: u64,
    /// Bytes past [`MAX_JOURNAL_BYTES`], not read.
    pub unread_bytes: u64,
}

impl TxJournal {
    /// Opens (or creates) the journal at `path` and reads back its records.
    pub fn open(path: &Path) -> std::io::Result<(Self, Recovered)> {
        let recovered = match File::open(path) {
            Ok(file) => read_records(file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Recovered::default(),
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        let journal = Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                generation: 0,
                written,
                rewritten: written,
            }),
            synced: Mutex::new((0, written)),
        };
        Ok((journal, recovered))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes in the journal now.
    pub fn len_bytes(&self) -> u64 {
        self.writer().written
    }

    /// Bytes the last rewrite left in the journal.
    pub fn rewritten_bytes(&self) -> u64 {
        self.writer().rewritten
    }

    /// Appends `raw` and returns once it is on disk.
    pub fn append(&self, raw: &[u8]) -> std::io::Result<()> {
        let ticket = self.write(raw)?;
        self.wait_durable(ticket)
    }

    /// Writes `raw` (not yet synced): [`TxJournal::wait_durable`] with the ticket returns once
    /// it is on disk. A failed write leaves the journal as it was.
    pub fn write(&self, raw: &[u8]) -> std::io::Result<Ticket> {
        let record = encode(raw)?;
        let mut w = self.writer();
        if let Err(e) = w.file.write_all(&record) {
            // A half-written record would end every later read-back before the records
            // after it: cut it off.
            let keep = w.written;
            let _ = w.file.set_len(keep);
            return Err(e);
        }
        w.written += record.len() as u64;
        Ok(Ticket(w.generation, w.written))
    }

    /// Everything written so far, as a ticket for [`TxJournal::wait_durable`].
    pub fn written(&self) -> Ticket {
        let w = self.writer();
        Ticket(w.generation, w.written)
    }

    /// Returns once every record appended so far is on disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.wait_durable(self.written())
    }

    /// Returns once the journal is on disk through `ticket` (one `fdatasync` serves every
    /// record written before it, whoever wrote them).
    pub fn wait_durable(&self, ticket: Ticket) -> std::io::Result<()> {
        let Ticket(generation, offset) = ticket;
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.0 > generation || (synced.0 == generation && synced.1 >= offset) {
            return Ok(()); // another caller's sync covered this record
        }
        let (file, target) = {
            let w = self.writer();
            if w.generation != generation {
                // A rewrite since: it took the pool after this transaction was pooled, and
                // synced the new file before swapping it in.
                return Ok(());
            }
            (w.file.try_clone()?, (w.generation, w.written))
        };
        file.sync_data()?;
        *synced = target;
        Ok(())
    }

    /// Replaces the journal with `transactions` (what is still held): written to a new file,
    /// synced, renamed over the old one. Appends wait meanwhile; call it with the pool's
    /// contents read *after* taking [`TxJournal::rewrite_with`]'s lock, so nothing pooled is
    /// left out.
    pub fn rewrite_with(&self, held: impl FnOnce() -> Vec<Bytes>) -> std::io::Result<()> {
        let mut w = self.writer();
        let transactions = held();
        let tmp = self.path.with_extension("rewrite");
        let file = match write_synced(&tmp, &transactions)
            .and_then(|file| std::fs::rename(&tmp, &self.path).map(|()| file))
        {
            Ok(file) => file,
            Err(e) => {
                // A partial copy (a full disk) is no use to anyone: the journal stays as it was.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let written = file.metadata()?.len();
        let generation = w.generation + 1;
        *w = Writer {
            file,
            generation,
            written,
            rewritten: written,
        };
        // Until the directory is synced a power loss may bring back the old file, which holds
        // everything the new one does (and more): nothing acknowledged is lost either way.
        match self.path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }
}

/// `transactions` as records in a new file at `path` (replacing a stale one), synced, and
/// left open for appending: once renamed over the journal it is the journal's writer.
fn write_synced(path: &Path, transactions: &[Bytes]) -> std::io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)?;
    for raw in transactions {
        file.write_all(&encode(raw)?)?;
    }
    file.sync_all()?;
    Ok(file)
}

fn encode(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    if raw.len() > MAX_RECORD_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a {}-byte transaction is over the journal's record limit",
                raw.len()
            ),
        ));
    }
    let mut record = Vec::with_capacity(HEADER + raw.len());
    record.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(raw).to_le_bytes());
    record.extend_from_slice(raw);
    Ok(record)
}

/// Every whole record from the start of `file`, up to [`MAX_JOURNAL_BYTES`].
fn read_records(file: File) -> std::io::Result<Recovered> {
    let unread_bytes = file.metadata()?.len().saturating_sub(MAX_JOURNAL_BYTES);
    let mut bytes = Vec::new();
    file.take(MAX_JOURNAL_BYTES).read_to_end(&mut bytes)?;
    let mut transactions = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = (len <= MAX_RECORD_BYTES)
            .then(|| bytes.get(at + HEADER..at + HEADER + len))
            .flatten()
        else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        transactions.push(Bytes::copy_from_slice(payload));
        at += HEADER + len;
    }
    Ok(Recovered {
        transactions,
        torn_bytes: (bytes.len() - at) as u64,
        unread_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_records_come_back_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txs.journal");
        let (journal, recovered) = TxJournal::open(&path).unwrap();
        assert!(recovered.transactions.is_empty());
        journal.append(b"first").unwrap();
        journal.append(b"second").unwrap();
        drop(journal);
        // A crash mid-append: half a header and a record whose payload is cut short.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&encode(b"third").unwrap()[..10]).unwrap();
        drop(file);
        let (journal, recovered) = TxJournal::open(&path).unwrap();
        assert_eq!(
            recovered.transactions,
            vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")]
        );
        assert_eq!(recovered.torn_bytes, 10);
        journal
            .rewrite_with(|| vec![Bytes::from_static(b"second")])
            .unwrap();
        journal.append(b"fourth").unwrap();
        let (_, recovered) = TxJournal::open(&path).unwrap();
        assert_eq!(
            recovered.transactions,
            vec![Bytes::from_static(b"second"), Bytes::from_static(b"fourth")]
        );
        assert_eq!(recovered.torn_bytes, 0);
    }

    #[test]
    fn a_corrupt_record_ends_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txs.journal");
        let (journal, _) = TxJournal::open(&path).unwrap();
        journal.append(b"kept").unwrap();
        journal.append(b"flipped").unwrap();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovered) = TxJournal::open(&path).unwrap();
        assert_eq!(recovered.transactions, vec![Bytes::from_static(b"kept")]);
        assert_eq!(recovered.torn_bytes, (HEADER + 7) as u64);
        assert!(encode(&vec![0u8; MAX_RECORD_BYTES + 1]).is_err());
    }
}
