//! CPU time used by a process (Linux /proc), to report CPU per request of this tool and of
//! server processes on the same host.

/// Clock ticks per second of /proc's utime and stime (USER_HZ: 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// User + system CPU time of `pid` (`None` = this process) so far, in microseconds.
pub fn cpu_time_us(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime from a /proc/PID/stat line, in microseconds.
fn parse_stat(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // After the name: state (field 3) ... utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * (1_000_000 / USER_HZ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_past_a_name_with_spaces() {
        let line = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        assert_eq!(parse_stat(line), Some(3_000_000));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time_us(None).is_some());
    }
}
