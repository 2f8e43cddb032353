//! What the kernel counts for us: CPU time per process and bytes over the loopback interface.

/// Clock ticks per second, the unit of `utime` and `stime` in `/proc/PID/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User plus system CPU time of process `pid` so far, in milliseconds; `None` once it is gone.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 * 1000.0 / ticks_per_second())
}

/// utime + stime from a `/proc/PID/stat` line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of process `pid` in kibibytes (`VmRSS`); `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss_kib(&status)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes sent over the loopback interface so far (every loopback byte is sent once and
/// received once; counting one side counts each once).
pub fn loopback_tx_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/dev").ok()?;
    parse_lo_tx(&text)
}

fn parse_lo_tx(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    let fields: Vec<&str> = line.split_once(':')?.1.split_whitespace().collect();
    // 8 receive columns, then transmit bytes.
    fields.get(8)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_from_a_stat_line_with_a_tricky_name() {
        let stat =
            "1234 (rain tree) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(42));
    }

    #[test]
    fn own_process_has_cpu_time() {
        // Burn a little CPU so the tick counter has moved past zero.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_ms(std::process::id()).unwrap() > 0.0);
    }

    #[test]
    fn rss_from_a_status_file() {
        let status = "Name:\traintree\nVmPeak:\t  20000 kB\nVmRSS:\t   8312 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(8312));
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn loopback_transmit_column() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n  \
eth0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        assert_eq!(parse_lo_tx(text), Some(2000));
    }
}
