//! Block log and RocksDB store: round trips, recovery from torn tails, corruption reports,
//! both write backends, and a crash test that SIGKILLs a writer process.

use kaon::storage::blocklog::{
    Backend, BlockLog, BlockLogError, BlockLogOptions, RecordOffset, ALIGNMENT, MAX_RECORD_LEN,
};
use kaon::storage::store::{BlockIndex, Store, StoreError, TxLocation};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A temporary directory on a real disk where possible (O_DIRECT is refused by some tmpfs).
fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kaon-storage-")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::tempdir())
        .expect("create a temporary directory")
}

fn opts(backend: Backend, direct_io: bool) -> BlockLogOptions {
    BlockLogOptions {
        backend,
        direct_io,
        // Small extents so tests cross preallocation boundaries.
        preallocate_bytes: 256 << 10,
        ..BlockLogOptions::default()
    }
}

/// The backends this machine can run: io_uring where the kernel allows it (reported on
/// stderr when it does not, and then `Auto` must have fallen back to `Pwrite`).
fn backends() -> Vec<Backend> {
    let dir = tmpdir();
    match BlockLog::open(dir.path().join("probe"), opts(Backend::IoUring, true)) {
        Ok((log, _)) => {
            assert_eq!(log.backend(), Backend::IoUring);
            vec![Backend::IoUring, Backend::Pwrite]
        }
        Err(BlockLogError::IoUringUnavailable { .. }) => {
            eprintln!("io_uring unavailable here: testing the pwrite backend and the fallback");
            let (log, _) = BlockLog::open(dir.path().join("auto"), opts(Backend::Auto, true))
                .expect("Auto opens without io_uring");
            assert_eq!(log.backend(), Backend::Pwrite);
            vec![Backend::Pwrite]
        }
        Err(e) => panic!("unexpected error probing io_uring: {e}"),
    }
}

/// Deterministic record `i`: length 0..~9 KiB (some empty), bytes from a seeded generator.
fn record(i: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(i ^ 0x6b61_6f6e);
    let len = match i % 7 {
        0 => 0,
        1 => 4096,
        _ => rng.gen_range(1..9000),
    };
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn batch(from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n).map(record).collect()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|r| r.as_slice()).collect()
}

fn all_records(log: &BlockLog) -> Vec<(RecordOffset, Vec<u8>)> {
    log.iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("iterate over the log")
}

fn flip_byte(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open log file");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read byte");
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).expect("write byte");
}

#[test]
fn round_trip_and_reopen_both_backends() {
    for backend in backends() {
        for direct_io in [true, false] {
            let dir = tmpdir();
            let path = dir.path().join("blocks.log");
            let (mut log, report) = BlockLog::open(&path, opts(backend, direct_io)).unwrap();
            assert!(report.created);
            assert_eq!(report.records, 0);
            assert!(log.is_empty());
            assert_eq!(log.backend(), backend);

            let mut written = Vec::new();
            let mut next = 0u64;
            for n in [1u64, 32, 5, 100, 0, 17] {
                let recs = batch(next, n);
                let offsets = log.append_batch(&refs(&recs)).unwrap();
                assert_eq!(offsets.len() as u64, n);
                written.extend(offsets.into_iter().zip(recs));
                next += n;
            }
            // A large record crossing several preallocation extents.
            let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
            written.push((log.append(&big).unwrap(), big));

            assert_eq!(log.record_count(), written.len() as u64);
            assert_eq!(log.end_offset() % ALIGNMENT, 0);
            for (off, data) in &written {
                assert_eq!(&log.read(*off).unwrap(), data, "offset {off:?}");
            }
            assert_eq!(all_records(&log), written);
            let end = log.end_offset();
            drop(log);

            let (mut log, report) = BlockLog::open(&path, opts(backend, direct_io)).unwrap();
            assert!(!report.created);
            assert_eq!(report.truncated, None);
            assert_eq!(report.records, written.len() as u64);
            assert_eq!(report.end, end);
            assert_eq!(all_records(&log), written);
            // Appends continue after a reopen.
            let more = batch(1000, 3);
            let offsets = log.append_batch(&refs(&more)).unwrap();
            assert!(offsets[0].0 >= end);
            for (off, data) in offsets.iter().zip(&more) {
                assert_eq!(&log.read(*off).unwrap(), data);
            }
        }
    }
}

#[test]
fn handles_can_move_to_their_pipeline_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<BlockLog>();
    send_sync::<kaon::storage::blocklog::BlockLogReader>();
    send_sync::<Store>();
}

#[test]
fn files_written_by_one_backend_read_by_the_other() {
    let backends = backends();
    let dir = tmpdir();
    let path = dir.path().join("blocks.log");
    let mut expected = Vec::new();
    for (i, backend) in backends.iter().cycle().take(4).enumerate() {
        let (mut log, report) = BlockLog::open(&path, opts(*backend, i % 2 == 0)).unwrap();
        assert_eq!(report.records, expected.len() as u64);
        assert_eq!(all_records(&log), expected);
        let recs = batch(i as u64 * 10, 10);
        let offsets = log.append_batch(&refs(&recs)).unwrap();
        expected.extend(offsets.into_iter().zip(recs));
    }
}

#[test]
fn reader_handle_sees_acknowledged_records_from_another_thread() {
    let dir = tmpdir();
    let (mut log, _) = BlockLog::open(dir.path().join("l"), opts(Backend::Auto, true)).unwrap();
    let reader = log.reader();
    let (tx, rx) = crossbeam_channel::bounded::<(RecordOffset, Vec<u8>)>(4);
    let checker = std::thread::spawn(move || {
        let mut n = 0;
        for (off, data) in rx {
            assert!(off.0 < reader.end_offset());
            assert_eq!(reader.read(off).unwrap(), data);
            n += 1;
        }
        assert_eq!(reader.iter().count(), n);
        n
    });
    for i in 0..50 {
        let recs = batch(i * 3, 3);
        let offsets = log.append_batch(&refs(&recs)).unwrap();
        for pair in offsets.into_iter().zip(recs) {
            tx.send(pair).unwrap();
        }
    }
    drop(tx);
    assert_eq!(checker.join().unwrap(), 150);
}

#[test]
fn batches_larger_than_a_frame_are_split_and_durable() {
    let dir = tmpdir();
    let path = dir.path().join("l");
    let (mut log, _) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    // Two maximal records and a small one: a frame body holds one maximal record plus 1 MiB,
    // so two frames: [max] and [max, small].
    let mut recs: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i + 1; MAX_RECORD_LEN]).collect();
    recs.push(record(3));
    let offsets = log.append_batch(&refs(&recs)).unwrap();
    // The second frame starts on a fresh block; the small record shares it.
    assert!(offsets[1].0 > offsets[0].0 + MAX_RECORD_LEN as u64);
    assert_eq!((offsets[1].0 - 32) % ALIGNMENT, 0);
    assert_eq!(offsets[2].0, offsets[1].0 + 12 + MAX_RECORD_LEN as u64);
    drop(log);
    let (log, report) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    assert_eq!(report.records, 3);
    for (off, data) in offsets.iter().zip(&recs) {
        assert_eq!(&log.read(*off).unwrap(), data);
    }
}

#[test]
fn oversize_record_rejected_and_log_stays_usable() {
    let dir = tmpdir();
    let (mut log, _) = BlockLog::open(dir.path().join("l"), opts(Backend::Auto, true)).unwrap();
    let ok = record(1);
    log.append(&ok).unwrap();
    let end = log.end_offset();
    let too_big = vec![0u8; MAX_RECORD_LEN + 1];
    match log.append_batch(&[&ok, &too_big]) {
        Err(BlockLogError::RecordTooLarge { index: 1, len }) => assert_eq!(len, MAX_RECORD_LEN + 1),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // Nothing of the rejected batch was written.
    assert_eq!(log.end_offset(), end);
    assert_eq!(log.record_count(), 1);
    let off = log.append(&ok).unwrap();
    assert_eq!(log.read(off).unwrap(), ok);
}

#[test]
fn reads_at_bad_offsets_are_typed_errors() {
    let dir = tmpdir();
    let (mut log, _) = BlockLog::open(dir.path().join("l"), opts(Backend::Auto, true)).unwrap();
    let recs = batch(1, 4);
    let offsets = log.append_batch(&refs(&recs)).unwrap();
    let end = log.end_offset();
    assert!(matches!(
        log.read(RecordOffset(end)),
        Err(BlockLogError::OutOfRange { offset, .. }) if offset == end
    ));
    assert!(matches!(
        log.read(RecordOffset(u64::MAX - 4)),
        Err(BlockLogError::OutOfRange { .. })
    ));
    assert!(matches!(
        log.read(RecordOffset(0)),
        Err(BlockLogError::BadRecord { offset: 0, .. })
    ));
    // The middle of a record is not a record.
    let mid = offsets[2].0 + 5;
    assert!(matches!(
        log.read(RecordOffset(mid)),
        Err(BlockLogError::BadRecord { offset, .. }) if offset == mid
    ));
}

#[test]
fn corruption_under_an_open_log_is_reported_by_read_and_iter() {
    let dir = tmpdir();
    let path = dir.path().join("l");
    let (mut log, _) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    let recs = batch(2, 6); // record 2.. are non-empty
    let offsets = log.append_batch(&refs(&recs)).unwrap();
    let victim = offsets[3];
    flip_byte(&path, victim.0 + 12); // first payload byte (record 5 is not empty)
    let err = log.read(victim).unwrap_err();
    assert!(
        matches!(err, BlockLogError::BadRecord { offset, .. } if offset == victim.0),
        "{err}"
    );
    assert!(err.to_string().contains(&victim.0.to_string()));
    let results: Vec<_> = log.iter().collect();
    assert!(matches!(
        results.last(),
        Some(Err(BlockLogError::BadRecord { offset, .. })) if *offset == victim.0
    ));
    // Records before the victim are still readable.
    assert_eq!(log.read(offsets[2]).unwrap(), recs[2]);
}

/// Builds a log of `batches` batches of 4 records; returns (path, offsets per batch, records).
fn build_log(
    dir: &Path,
    batches: u64,
) -> (std::path::PathBuf, Vec<Vec<RecordOffset>>, Vec<Vec<u8>>) {
    let path = dir.join("blocks.log");
    let (mut log, _) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    let mut all_offsets = Vec::new();
    let mut all_recs = Vec::new();
    for b in 0..batches {
        let recs = batch(b * 4 + 2, 4);
        all_offsets.push(log.append_batch(&refs(&recs)).unwrap());
        all_recs.extend(recs);
    }
    (path, all_offsets, all_recs)
}

/// Start of the frame holding a batch: its first record's offset less the frame header.
fn frame_start(offsets: &[RecordOffset]) -> u64 {
    offsets[0].0 - 32
}

#[test]
fn torn_tails_are_cut_and_earlier_records_kept() {
    // Each case damages the last frame the way a crash can, then reopens.
    type Damage = fn(&Path, u64, u64);
    let cases: [(&str, Damage); 5] = [
        (
            "body cut short (second half never written)",
            |p, start, end| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                let mid = start + (end - start) / 2;
                f.write_all_at(&vec![0u8; (end - mid) as usize], mid)
                    .unwrap();
            },
        ),
        ("header block never written", |p, start, _| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(&[0u8; 4096], start).unwrap();
        }),
        ("file ends inside the frame", |p, start, _| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(start + 100).unwrap();
        }),
        ("garbage instead of the frame", |p, start, end| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            let junk: Vec<u8> = (0..end - start).map(|i| (i * 7 + 3) as u8).collect();
            f.write_all_at(&junk, start).unwrap();
        }),
        // Records 14 (empty) and 15 (4 KiB) open the last frame: damage 15's payload.
        ("a payload of the last frame torn", |p, start, _| {
            flip_byte(p, start + 32 + 24 + 100)
        }),
    ];
    for (name, damage) in cases {
        let dir = tmpdir();
        let (path, offsets, recs) = build_log(dir.path(), 4);
        let start = frame_start(&offsets[3]);
        let (log, _) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
        let end = log.end_offset();
        drop(log);
        damage(&path, start, end);

        let (mut log, report) = BlockLog::open(&path, opts(Backend::Auto, true))
            .unwrap_or_else(|e| panic!("{name}: reopen failed: {e}"));
        let torn = report
            .truncated
            .unwrap_or_else(|| panic!("{name}: no torn tail reported"));
        assert_eq!(torn.at, start, "{name}");
        assert!(torn.bad_offset >= start && torn.bad_offset < end, "{name}");
        assert_eq!(report.records, 12, "{name}");
        assert_eq!(log.end_offset(), start, "{name}");
        let kept: Vec<_> = all_records(&log).into_iter().map(|(_, r)| r).collect();
        assert_eq!(kept, recs[..12], "{name}");
        // The log is writable again, and a second reopen is clean.
        let more = batch(500, 2);
        let new = log.append_batch(&refs(&more)).unwrap();
        assert_eq!(new[0].0, start + 32, "{name}");
        drop(log);
        let (log, report) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
        assert_eq!(report.truncated, None, "{name}");
        assert_eq!(report.records, 14, "{name}");
        assert_eq!(log.read(new[1]).unwrap(), more[1], "{name}");
    }
}

#[test]
fn garbage_past_the_end_is_cut_without_losing_records() {
    let dir = tmpdir();
    let (path, _, recs) = build_log(dir.path(), 2);
    let (log, _) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    let end = log.end_offset();
    drop(log);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"partial frame from a crash", end + 3 * 4096)
        .unwrap();
    let (log, report) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    let torn = report.truncated.expect("garbage reported");
    assert_eq!(torn.at, end);
    assert_eq!(
        torn.discarded_nonzero_bytes as usize,
        b"partial frame from a crash".len()
    );
    assert_eq!(all_records(&log).len(), recs.len());
}

#[test]
fn mid_log_corruption_is_an_error_with_its_offset() {
    // (what to damage, expected error offset) for damage in the second of four frames.
    let dir = tmpdir();
    let (path, offsets, _) = build_log(dir.path(), 4);
    let pristine = std::fs::read(&path).unwrap();
    let frame = frame_start(&offsets[1]);
    let cases = [
        ("payload byte", offsets[1][2].0 + 12 + 3, offsets[1][2].0),
        ("record header byte", offsets[1][1].0 + 2, offsets[1][1].0),
        ("frame header byte", frame + 9, frame),
    ];
    for (name, at, expected) in cases {
        std::fs::write(&path, &pristine).unwrap();
        flip_byte(&path, at);
        match BlockLog::open(&path, opts(Backend::Auto, true)) {
            Err(BlockLogError::Corrupt {
                offset, next_valid, ..
            }) => {
                assert_eq!(offset, expected, "{name}");
                assert_eq!(next_valid, Some(frame_start(&offsets[2])), "{name}");
            }
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        // The file was not modified by the failed open.
        let mut after = std::fs::read(&path).unwrap();
        after[at as usize] ^= 0x5a;
        assert_eq!(after, pristine, "{name}");
    }
}

#[test]
fn bad_superblock_is_an_error_and_the_file_is_left_alone() {
    let dir = tmpdir();
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("short", b"KAONBLOG".to_vec()),
        ("foreign", vec![0x42; 8192]),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        match BlockLog::open(&path, opts(Backend::Auto, true)) {
            Err(e @ BlockLogError::BadSuperblock { .. }) => {
                assert!(
                    e.to_string().contains(name),
                    "{name}: error names the path: {e}"
                )
            }
            other => panic!("{name}: expected BadSuperblock, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
    }
    // A flipped superblock byte of a real log.
    let (path, _, _) = build_log(dir.path(), 1);
    flip_byte(&path, 17);
    assert!(matches!(
        BlockLog::open(&path, opts(Backend::Auto, true)),
        Err(BlockLogError::BadSuperblock { .. })
    ));
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tmpdir();
    let path = dir.path().join("l");
    let (_log, _) = BlockLog::open(&path, opts(Backend::Auto, true)).unwrap();
    let no_wait = BlockLogOptions {
        lock_wait: std::time::Duration::ZERO,
        ..opts(Backend::Auto, true)
    };
    assert!(matches!(
        BlockLog::open(&path, no_wait),
        Err(BlockLogError::Locked { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any single damaged byte of a log is either detected (an error at open), or it lies in
    /// the last, possibly torn frame (cut off at open, earlier records intact), or past the
    /// end (cut off, nothing lost). A wrong record is never returned.
    #[test]
    fn any_flipped_byte_is_detected_or_cut_from_the_tail(pos_frac in 0.0f64..1.0, extra in 0u64..8192) {
        let dir = tmpdir();
        let (path, offsets, recs) = build_log(dir.path(), 3);
        let (log, _) = BlockLog::open(&path, opts(Backend::Pwrite, false)).unwrap();
        let end = log.end_offset();
        drop(log);
        let last = frame_start(&offsets[2]);
        let last_body_end = offsets[2][3].0 + 12 + recs[11].len() as u64;
        // Positions in [0, end + 8192): the whole log plus some preallocated space after it.
        let at = ((end as f64 * pos_frac) as u64 + extra).min(end + 8191);
        flip_byte(&path, at);
        let result = BlockLog::open(&path, opts(Backend::Pwrite, false));
        if at >= end {
            let (log, report) = result.unwrap();
            prop_assert_eq!(report.truncated.map(|t| t.at), Some(end));
            prop_assert_eq!(all_records(&log).len(), 12);
        } else if at >= last && at < last_body_end {
            let (log, report) = result.unwrap();
            prop_assert_eq!(report.truncated.map(|t| t.at), Some(last));
            let kept: Vec<_> = all_records(&log).into_iter().map(|(_, r)| r).collect();
            prop_assert_eq!(&kept[..], &recs[..8]);
        } else if at < ALIGNMENT {
            prop_assert!(matches!(result, Err(BlockLogError::BadSuperblock { .. })), "{:?}", result);
        } else {
            match result {
                Err(BlockLogError::Corrupt { offset, .. }) => prop_assert!(offset <= at),
                other => prop_assert!(false, "byte {} flipped: expected Corrupt, got {:?}", at, other),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crash test: a child process appends and acknowledges; the parent SIGKILLs it after a seeded
// number of acknowledgements, reopens, and checks that every acknowledged record is intact.

const CRASH_DIR_ENV: &str = "KAON_CRASH_CHILD";
const CRASH_BACKEND_ENV: &str = "KAON_CRASH_BACKEND";
const CRASH_DIRECT_ENV: &str = "KAON_CRASH_DIRECT";
/// Printed by the child after a batch is durable, with the total number of records.
const ACK: &str = "KAON_ACK ";
/// Printed by the child just before it starts writing a batch.
const BEGIN: &str = "KAON_BEGIN ";

/// The writer run in a child process by `crash_kill_at_random_acks_loses_nothing`. Ignored
/// so that a plain `cargo test` does not run it; a no-op without its environment variable.
#[test]
#[ignore]
fn crash_child() {
    use std::io::Write;
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let backend = match std::env::var(CRASH_BACKEND_ENV).as_deref() {
        Ok("pwrite") => Backend::Pwrite,
        _ => Backend::IoUring,
    };
    let direct = std::env::var(CRASH_DIRECT_ENV).as_deref() != Ok("0");
    let (mut log, report) =
        BlockLog::open(Path::new(&dir).join("blocks.log"), opts(backend, direct)).unwrap();
    let mut next = report.records;
    let mut rng = StdRng::seed_from_u64(next);
    let stdout = std::io::stdout();
    // Bounded so a child whose parent vanished does not run forever.
    while next < report.records + 100_000 {
        let n = rng.gen_range(1..=40);
        let recs = batch(next, n);
        let mut out = stdout.lock();
        writeln!(out, "\n{BEGIN}{next}").unwrap();
        out.flush().unwrap();
        log.append_batch(&refs(&recs)).unwrap();
        next += n;
        writeln!(out, "\n{ACK}{next}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn crash_kill_at_random_acks_loses_nothing() {
    // /proc/self/exe runs this very binary even if a concurrent build replaced the file.
    let proc_exe = Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().expect("path of the test binary")
    };
    let uring = backends().contains(&Backend::IoUring);
    for round in 0..5u64 {
        let dir = tmpdir();
        let path = dir.path().join("blocks.log");
        let mut rng = StdRng::seed_from_u64(0xc4a5_0000 + round);
        let backend = if uring && round % 2 == 0 {
            "uring"
        } else {
            "pwrite"
        };
        let direct = if round == 3 { "0" } else { "1" };
        let mut acked_total = 0u64;
        for kill in 0..3 {
            // Kill after a seeded number of progress events: an ack (the child is between
            // batches) or a begin (the child is most likely mid-write or mid-sync).
            let kill_after = rng.gen_range(2..=80u32);
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "storage::crash_child",
                    "--nocapture",
                    "--include-ignored",
                ])
                .env(CRASH_DIR_ENV, dir.path())
                .env(CRASH_BACKEND_ENV, backend)
                .env(CRASH_DIRECT_ENV, direct)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the crash child");
            let stdout = child.stdout.take().expect("piped stdout");
            let mut events = 0u32;
            let mut last_ack = None;
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read child stdout");
                if let Some(pos) = line.find(ACK) {
                    let n: u64 = line[pos + ACK.len()..].trim().parse().expect("ack count");
                    last_ack = Some(n);
                } else if !line.contains(BEGIN) {
                    continue;
                }
                events += 1;
                if events == kill_after {
                    // std's kill is SIGKILL on Unix: no destructors, no flush, no goodbye.
                    child.kill().expect("SIGKILL the child");
                    break;
                }
            }
            let status = child.wait().expect("reap the child");
            let acked = last_ack.unwrap_or_else(|| {
                panic!("round {round} kill {kill}: child acked nothing ({status})")
            });
            assert!(acked > acked_total, "acks grow across restarts");
            acked_total = acked;

            let (log, report) = BlockLog::open(&path, opts(Backend::Pwrite, false))
                .unwrap_or_else(|e| panic!("round {round} kill {kill}: reopen failed: {e}"));
            assert!(
                report.records >= acked,
                "round {round} kill {kill}: {} records on disk, {acked} acknowledged",
                report.records
            );
            for (i, rec) in log.iter().enumerate() {
                let (_, data) = rec.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(
                    data,
                    record(i as u64),
                    "round {round} kill {kill}: record {i}"
                );
            }
            assert_eq!(log.iter().count() as u64, report.records);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RocksDB store.

fn h(n: u8) -> [u8; 32] {
    [n; 32]
}

#[test]
fn store_index_round_trip_and_reopen() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.head().unwrap(), None);
        for height in 0..20u64 {
            let txs: Vec<([u8; 32], u32, u32)> = (0..height as u32 % 4)
                .map(|i| (h(100 + height as u8 * 4 + i as u8), i % 2, i))
                .collect();
            store
                .index_block(&BlockIndex {
                    height,
                    hash: h(height as u8),
                    log_offset: 4096 + height * 8192,
                    txs: &txs,
                })
                .unwrap();
        }
        store.flush().unwrap();
    }
    let store = Store::open(&path).unwrap();
    for height in 0..20u64 {
        assert_eq!(
            store.log_offset(height).unwrap(),
            Some(4096 + height * 8192)
        );
        assert_eq!(store.height_of(&h(height as u8)).unwrap(), Some(height));
        for i in 0..height as u32 % 4 {
            assert_eq!(
                store
                    .tx_location(&h(100 + height as u8 * 4 + i as u8))
                    .unwrap(),
                Some(TxLocation {
                    height,
                    segment: i % 2,
                    index: i
                })
            );
        }
    }
    assert_eq!(store.log_offset(20).unwrap(), None);
    assert_eq!(store.height_of(&h(99)).unwrap(), None);
    assert_eq!(store.tx_location(&h(255)).unwrap(), None);
    let head = store.head().unwrap().unwrap();
    assert_eq!(
        (head.height, head.hash, head.log_offset),
        (19, h(19), 4096 + 19 * 8192)
    );
}

#[test]
fn store_state_is_namespaced_per_chain_and_batches_are_atomic() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        store.put_state(1, b"balance", b"one").unwrap();
        store.put_state(2, b"balance", b"two").unwrap();
        // Chain 1 with key "\0\0\0\0\0\0\0\x02balance" must not alias chain 2's "balance".
        store
            .put_state(0, b"\0\0\0\0\0\0\0\x02balance", b"zero")
            .unwrap();

        let mut b = store.batch();
        b.index_block(&BlockIndex {
            height: 7,
            hash: h(7),
            log_offset: 4096,
            txs: &[(h(70), 3, 0)],
        });
        b.put_state(3, b"k", b"v").unwrap();
        b.delete_state(1, b"balance").unwrap();
        b.put_meta(b"head", b"user value");
        assert_eq!(b.len(), 7);
        // Nothing is visible before commit.
        assert_eq!(store.get_state(3, b"k").unwrap(), None);
        assert_eq!(store.height_of(&h(7)).unwrap(), None);
        b.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_state(1, b"balance").unwrap(), None);
    assert_eq!(
        store.get_state(2, b"balance").unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        store
            .get_state(0, b"\0\0\0\0\0\0\0\x02balance")
            .unwrap()
            .as_deref(),
        Some(&b"zero"[..])
    );
    assert_eq!(
        store.get_state(3, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(store.height_of(&h(7)).unwrap(), Some(7));
    // A user meta key named "head" does not clobber the indexed head.
    assert_eq!(
        store.get_meta(b"head").unwrap().as_deref(),
        Some(&b"user value"[..])
    );
    assert_eq!(store.head().unwrap().map(|h| h.height), Some(7));
    let long = vec![0u8; kaon::storage::store::MAX_STATE_KEY_LEN + 1];
    assert!(matches!(
        store.get_state(1, &long),
        Err(StoreError::KeyTooLarge { .. })
    ));
}

#[test]
fn corrupt_store_is_an_error_naming_the_path_and_is_not_reset() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        store.put_state(1, b"k", b"v").unwrap();
    }
    std::fs::write(path.join("CURRENT"), b"MANIFEST-999999\n").unwrap();
    // Data files (RocksDB rotates its text LOG on every open attempt; that is not data).
    let data_files = || {
        let mut v: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("LOG"))
            .collect();
        v.sort();
        v
    };
    let before = data_files();
    match Store::open(&path) {
        Err(e @ StoreError::Open { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}")
        }
        other => panic!("expected Open error, got {other:?}"),
    }
    assert_eq!(before, data_files());
    assert_eq!(
        std::fs::read(path.join("CURRENT")).unwrap(),
        b"MANIFEST-999999\n"
    );
}
