//! Storage benchmarks: block log group commit against the disk's own limits, and RocksDB
//! write batches against RocksDB with default options, all measured in the same run.
//!
//! References (measured here, not assumed):
//! - `fsync_per_record/*`: one 4 KiB record per fdatasync, the rate group commit must beat 10×;
//! - `disk_best/*`: 4 KiB records written straight to a preallocated file with O_DIRECT io_uring
//!   in batches of 32 or 256, one data sync per batch, no framing or checksums — the ceiling
//!   (three ways of submitting; the best of them is the reference).
//!
//! `KAON_STORAGE_PAIRED=2000 cargo bench --bench storage` runs a paired comparison instead (see
//! `paired`), for machines whose disk is shared and whose rate drifts between benchmarks.
//!
//! Files go under /var/tmp (a real disk; /tmp may be tmpfs). Each timed run gets a fresh file so
//! that every write lands in newly preallocated (unwritten) extents, as in production.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use io_uring::{opcode, squeue, types, IoUring};
use kaon::storage::blocklog::{Backend, BlockLog, BlockLogOptions};
use kaon::storage::store::{BlockIndex, Store, StoreOptions};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RECORD: usize = 4096;

fn bench_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kaon-bench-storage-")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::tempdir())
        .expect("bench directory")
}

fn payload(i: u64) -> Vec<u8> {
    (0..RECORD as u64)
        .map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(0x9e37_79b9)) as u8)
        .collect()
}

/// A 4 KiB-aligned, zeroed buffer of `len` bytes carved out of a Vec (no unsafe needed).
struct Aligned {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let v = vec![0u8; len + 4096];
        let off = v.as_ptr().align_offset(4096);
        Aligned { v, off, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// A fresh file preallocated to `bytes` (fallocate, so extents are unwritten as in the log).
fn prealloc_file(dir: &Path, name: &str, bytes: u64, direct: bool) -> (File, PathBuf) {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o.open(&path).expect("create bench file");
    // SAFETY: fallocate only reads its integer arguments; the fd is open for writing.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    f.sync_all().expect("sync preallocation");
    (f, path)
}

fn reap(ring: &mut IoUring, n: usize) {
    let mut seen = 0;
    while seen < n {
        ring.submit_and_wait(n - seen).expect("io_uring_enter");
        for cqe in ring.completion() {
            assert!(cqe.result() >= 0, "io_uring op failed: {}", cqe.result());
            seen += 1;
        }
    }
}

/// How the raw reference submits a batch.
#[derive(Clone, Copy)]
enum Raw {
    /// The batch as one write linked to an fdatasync.
    OneWrite,
    /// One write per record, then a drained fdatasync.
    WritePerRecord,
    /// The batch as one write with RWF_DSYNC (no separate sync operation).
    DsyncWrite,
}

/// The disk's best: `batch` 4 KiB records per sync, O_DIRECT, preallocated, io_uring.
fn disk_best(dir: &Path, iters: u64, batch: usize, how: Raw) -> Duration {
    let bytes = iters * (batch * RECORD) as u64;
    let (f, path) = prealloc_file(dir, "raw-uring", bytes.max(RECORD as u64), true);
    let mut ring = IoUring::new(2 * batch as u32 + 2).expect("io_uring");
    let mut buf = raw_batch_buffer(batch);
    let start = Instant::now();
    for it in 0..iters {
        raw_batch(&mut ring, &f, &mut buf, it * (batch * RECORD) as u64, how);
    }
    let t = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(path);
    t
}

fn raw_batch_buffer(batch: usize) -> Aligned {
    let mut buf = Aligned::new(batch * RECORD);
    for (i, chunk) in buf.bytes().chunks_mut(RECORD).enumerate() {
        chunk.copy_from_slice(&payload(i as u64));
    }
    buf
}

/// Writes the records of `buf` at `base` of `f` and makes them durable, the raw way.
fn raw_batch(ring: &mut IoUring, f: &File, buf: &mut Aligned, base: u64, how: Raw) {
    let fd = types::Fd(f.as_raw_fd());
    let data = buf.bytes();
    let sync = opcode::Fsync::new(fd)
        .flags(types::FsyncFlags::DATASYNC)
        .build();
    let mut sq_entries = Vec::with_capacity(data.len() / RECORD + 1);
    match how {
        Raw::OneWrite => {
            let w = opcode::Write::new(fd, data.as_ptr(), data.len() as u32)
                .offset(base)
                .build()
                .flags(squeue::Flags::IO_LINK);
            sq_entries.push(w);
            sq_entries.push(sync);
        }
        Raw::WritePerRecord => {
            for (i, chunk) in data.chunks(RECORD).enumerate() {
                let w = opcode::Write::new(fd, chunk.as_ptr(), RECORD as u32)
                    .offset(base + (i * RECORD) as u64)
                    .build();
                sq_entries.push(w);
            }
            sq_entries.push(sync.flags(squeue::Flags::IO_DRAIN));
        }
        Raw::DsyncWrite => {
            let w = opcode::Write::new(fd, data.as_ptr(), data.len() as u32)
                .offset(base)
                .rw_flags(libc::RWF_DSYNC)
                .build();
            sq_entries.push(w);
        }
    }
    // SAFETY: `buf` outlives the operations: `reap` waits for every completion below.
    unsafe {
        ring.submission()
            .push_multiple(&sq_entries)
            .expect("submission queue has room");
    }
    reap(ring, sq_entries.len());
}

/// One 4 KiB pwrite + fdatasync per record into a preallocated, buffered file.
fn raw_fsync_per_record(dir: &Path, iters: u64) -> Duration {
    let (f, path) = prealloc_file(dir, "raw-pwrite", (iters * RECORD as u64).max(4096), false);
    let data = payload(7);
    let start = Instant::now();
    for it in 0..iters {
        f.write_all_at(&data, it * RECORD as u64).expect("pwrite");
        f.sync_data().expect("fdatasync");
    }
    let t = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(path);
    t
}

/// `iters` group commits of `batch` 4 KiB records through the block log.
fn blocklog(dir: &Path, iters: u64, batch: usize, backend: Backend, direct_io: bool) -> Duration {
    let path = dir.join("blocks.log");
    let _ = std::fs::remove_file(&path);
    let opts = BlockLogOptions {
        backend,
        direct_io,
        ..BlockLogOptions::default()
    };
    let (mut log, _) = BlockLog::open(&path, opts).expect("open block log");
    assert_eq!(log.backend(), backend, "requested backend");
    let records: Vec<Vec<u8>> = (0..batch as u64).map(payload).collect();
    let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
    let start = Instant::now();
    for _ in 0..iters {
        log.append_batch(&refs).expect("append");
    }
    let t = start.elapsed();
    assert_eq!(log.record_count(), iters * batch as u64, "nothing lost");
    drop(log);
    let _ = std::fs::remove_file(path);
    t
}

fn block_log_benches(c: &mut Criterion) {
    let dir = bench_dir();
    let uring_ok = IoUring::new(4).is_ok();
    let mut g = c.benchmark_group("blocklog_4k");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    g.throughput(Throughput::Elements(1));
    g.bench_function("fsync_per_record/raw_pwrite", |b| {
        b.iter_custom(|iters| raw_fsync_per_record(dir.path(), iters))
    });
    g.bench_function("fsync_per_record/blocklog_pwrite", |b| {
        b.iter_custom(|iters| blocklog(dir.path(), iters, 1, Backend::Pwrite, true))
    });

    for batch in [32usize, 256] {
        g.throughput(Throughput::Elements(batch as u64));
        if uring_ok {
            for (name, how) in [
                ("disk_best/uring_odirect_one_write", Raw::OneWrite),
                ("disk_best/uring_odirect_dsync_write", Raw::DsyncWrite),
                (
                    "disk_best/uring_odirect_write_per_record",
                    Raw::WritePerRecord,
                ),
            ] {
                g.bench_function(BenchmarkId::new(name, batch), |b| {
                    b.iter_custom(|iters| disk_best(dir.path(), iters, batch, how))
                });
            }
            g.bench_function(BenchmarkId::new("group_commit/uring_odirect", batch), |b| {
                b.iter_custom(|iters| blocklog(dir.path(), iters, batch, Backend::IoUring, true))
            });
        }
        g.bench_function(
            BenchmarkId::new("group_commit/pwrite_odirect", batch),
            |b| b.iter_custom(|iters| blocklog(dir.path(), iters, batch, Backend::Pwrite, true)),
        );
        if batch == 32 {
            g.bench_function(
                BenchmarkId::new("group_commit/pwrite_buffered", batch),
                |b| {
                    b.iter_custom(|iters| {
                        blocklog(dir.path(), iters, batch, Backend::Pwrite, false)
                    })
                },
            );
        }
    }
    g.finish();
}

fn rocksdb_benches(c: &mut Criterion) {
    const PUTS: u64 = 1000;
    let dir = bench_dir();
    let mut g = c.benchmark_group("rocksdb");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(PUTS));

    let key = |n: u64| {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        k[8..16].copy_from_slice(&n.to_le_bytes());
        k
    };
    let value = [7u8; 100];

    // Reference: RocksDB with default options, WAL on, no sync.
    {
        let db = rocksdb::DB::open_default(dir.path().join("raw")).expect("open raw rocksdb");
        let mut n = 0u64;
        g.bench_function("write_batch_1000/raw_default_options", |b| {
            b.iter(|| {
                let mut batch = rocksdb::WriteBatch::default();
                for _ in 0..PUTS {
                    batch.put(key(n), value);
                    n += 1;
                }
                db.write(batch).expect("write");
            })
        });
    }
    for sync in [false, true] {
        let store = Store::open_with(
            dir.path().join(format!("store-sync-{sync}")),
            StoreOptions {
                sync_writes: sync,
                ..StoreOptions::default()
            },
        )
        .expect("open store");
        let mut n = 0u64;
        let name = if sync {
            "store_state_sync"
        } else {
            "store_state"
        };
        g.bench_function(format!("write_batch_1000/{name}"), |b| {
            b.iter(|| {
                let mut batch = store.batch();
                for _ in 0..PUTS {
                    batch.put_state(1, &key(n), &value).expect("put");
                    n += 1;
                }
                batch.commit().expect("commit");
            })
        });
    }

    // Index lookups after a flush: through the block cache and bloom filters.
    let store = Store::open(dir.path().join("index")).expect("open store");
    for height in 0..20_000u64 {
        let txs: Vec<([u8; 32], u32, u32)> =
            (0..5).map(|i| (key(height * 5 + i), 1, i as u32)).collect();
        store
            .index_block(&BlockIndex {
                height,
                hash: key(1 << 40 | height),
                log_offset: height * 8192,
                txs: &txs,
            })
            .expect("index");
    }
    store.flush().expect("flush");
    let mut n = 0u64;
    g.bench_function("tx_location_1000/hit", |b| {
        b.iter(|| {
            for _ in 0..PUTS {
                n = (n + 7919) % 100_000;
                assert!(store.tx_location(&key(n)).expect("get").is_some());
            }
        })
    });
    g.bench_function("tx_location_1000/miss", |b| {
        b.iter(|| {
            for _ in 0..PUTS {
                n += 1;
                assert!(store.tx_location(&key(1 << 50 | n)).expect("get").is_none());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, block_log_benches, rocksdb_benches);

/// `KAON_STORAGE_PAIRED=<rounds> cargo bench --bench storage`: instead of criterion, a paired
/// comparison for noisy machines. Each round runs one batch of every contender in rotating
/// order, so slow minutes of a shared disk hit all of them alike; prints median and mean
/// records/s and each contender's ratio to the best raw reference.
fn paired(rounds: u64) {
    let dir = bench_dir();
    for batch in [32usize, 256] {
        let raws = [
            ("raw linked write+fdatasync", Raw::OneWrite),
            ("raw RWF_DSYNC write", Raw::DsyncWrite),
        ];
        let files: Vec<File> = (0..raws.len())
            .map(|i| {
                prealloc_file(
                    dir.path(),
                    &format!("paired-{i}"),
                    rounds * (batch * RECORD) as u64,
                    true,
                )
                .0
            })
            .collect();
        let mut ring = IoUring::new(8).expect("io_uring");
        let mut buf = raw_batch_buffer(batch);
        let records: Vec<Vec<u8>> = (0..batch as u64).map(payload).collect();
        let refs: Vec<&[u8]> = records.iter().map(|r| r.as_slice()).collect();
        let mut logs: Vec<(&str, BlockLog)> = [
            ("log io_uring", Backend::IoUring),
            ("log pwrite", Backend::Pwrite),
        ]
        .into_iter()
        .map(|(name, backend)| {
            let opts = BlockLogOptions {
                backend,
                ..BlockLogOptions::default()
            };
            (
                name,
                BlockLog::open(dir.path().join(format!("paired-{name}")), opts)
                    .expect("open log")
                    .0,
            )
        })
        .collect();
        let n = raws.len() + logs.len();
        let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds as usize); n];
        for r in 0..rounds {
            for k in 0..n {
                let m = (k + r as usize) % n;
                let start = Instant::now();
                if m < raws.len() {
                    raw_batch(
                        &mut ring,
                        &files[m],
                        &mut buf,
                        r * (batch * RECORD) as u64,
                        raws[m].1,
                    );
                } else {
                    logs[m - raws.len()].1.append_batch(&refs).expect("append");
                }
                times[m].push(start.elapsed().as_secs_f64());
            }
        }
        let rate = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (batch as f64 / v[v.len() / 2], batch as f64 / mean)
        };
        let rates: Vec<(f64, f64)> = times.iter_mut().map(rate).collect();
        let best = rates[..raws.len()]
            .iter()
            .fold((0f64, 0f64), |a, r| (a.0.max(r.0), a.1.max(r.1)));
        let names = raws.iter().map(|r| r.0).chain(logs.iter().map(|l| l.0));
        println!("batch {batch}, {rounds} rounds");
        for (name, (med, mean)) in names.zip(rates) {
            println!(
                "  {name:28} median {med:9.0}/s ({:5.1} % of best raw)  mean {mean:9.0}/s ({:5.1} %)",
                100.0 * med / best.0,
                100.0 * mean / best.1
            );
        }
    }
}

fn main() {
    if let Some(rounds) = std::env::var("KAON_STORAGE_PAIRED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        paired(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
