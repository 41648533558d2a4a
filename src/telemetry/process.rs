//! What every metrics endpoint reports about the process itself, under the names Prometheus'
//! own clients use (`process_*`), and which build is running (`kaon_build_info`). Read from
//! `/proc/self` on each scrape; elsewhere than Linux the `process_*` families are left out.

use super::Metrics;

/// The version this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Adds `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds` (each
/// only when `/proc/self` can be read) and `kaon_build_info`.
pub fn process_metrics(m: &mut Metrics) {
    if let Some(cpu) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| cpu_seconds(&stat, clock_ticks_per_second()))
    {
        m.counter_f64(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds",
            &[],
            cpu,
        );
    }
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| resident_bytes(&status))
    {
        m.gauge(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes",
            &[],
            rss as f64,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        m.gauge(
            "process_open_fds",
            "Open file descriptors",
            &[],
            fds.count() as f64,
        );
    }
    m.gauge(
        "kaon_build_info",
        "Always 1; the labels name the running build",
        &[("version", VERSION)],
        1.0,
    );
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its closing `)`.
fn cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Fields 3.. of proc(5): state is 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime) as f64 / ticks_per_second)
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The kernel's `USER_HZ`, the unit of the times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes no pointers and only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is USER_HZ on every mainstream Linux; sysconf fails only on exotic systems.
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (kaon (cn) x) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 8 0 100";
        assert_eq!(cpu_seconds(stat, 100.0), Some(4.0));
        assert_eq!(cpu_seconds("4242 (kaon) S 1 2", 100.0), None);
        assert_eq!(cpu_seconds("no name here", 100.0), None);
    }

    #[test]
    fn resident_memory_is_vmrss_in_bytes() {
        let status = "Name:\tkaon\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t8\n";
        assert_eq!(resident_bytes(status), Some(2 << 20));
        assert_eq!(resident_bytes("Name:\tkaon\n"), None);
    }

    #[test]
    fn this_process_reports_its_own_numbers() {
        let mut m = Metrics::default();
        process_metrics(&mut m);
        let text = m.render();
        let samples = super::super::exposition::tests::parse_exposition(&text).unwrap();
        assert_eq!(
            samples[&format!("kaon_build_info{{version=\"{VERSION}\"}}")],
            1.0
        );
        if cfg!(target_os = "linux") {
            assert!(samples["process_resident_memory_bytes"] > 0.0, "{text}");
            // stdin, stdout and stderr at least, and the directory being read.
            assert!(samples["process_open_fds"] >= 3.0, "{text}");
            assert!(samples["process_cpu_seconds_total"] >= 0.0, "{text}");
            assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        }
    }
}
