//! The cgroup CPU-time counter formats: v1 `cpuacct.usage` (nanoseconds) and v2 `cpu.stat`'s
//! `usage_usec` (microseconds). Pure parsing: no I/O.

use crate::units::CpuNanos;

/// Which counter file a hierarchy has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterFile {
    /// cgroup v1 `cpuacct.usage`: nanoseconds.
    CpuacctUsage,
    /// cgroup v2 `cpu.stat`, line `usage_usec`: microseconds.
    CpuStat,
}

impl CounterFile {
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            CounterFile::CpuacctUsage => "cpuacct.usage",
            CounterFile::CpuStat => "cpu.stat",
        }
    }

    /// Parses the counter file's content into CPU time.
    pub(crate) fn parse(self, content: &str) -> Result<CpuNanos, &'static str> {
        match self {
            CounterFile::CpuacctUsage => match content.trim() {
                "" => Err("empty file"),
                text => text.parse().map(CpuNanos).map_err(|_| "not a number"),
            },
            CounterFile::CpuStat => {
                let value = content
                    .lines()
                    .find_map(|line| line.strip_prefix("usage_usec "))
                    .ok_or("no usage_usec line")?;
                value
                    .trim()
                    .parse::<u64>()
                    .map(CpuNanos::from_micros)
                    .map_err(|_| "usage_usec is not a number")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_counters_are_errors() {
        assert_eq!(
            CounterFile::CpuStat.parse("user_usec 5\n"),
            Err("no usage_usec line")
        );
        assert!(CounterFile::CpuStat.parse("usage_usec x\n").is_err());
        assert!(CounterFile::CpuStat.parse("").is_err());
        assert_eq!(
            CounterFile::CpuStat.parse("usage_usec 12\n"),
            Ok(CpuNanos(12_000))
        );
        assert_eq!(CounterFile::CpuacctUsage.parse("42\n"), Ok(CpuNanos(42)));
        assert_eq!(CounterFile::CpuacctUsage.parse(" \n"), Err("empty file"));
        assert!(CounterFile::CpuacctUsage.parse("-1").is_err());
        assert!(CounterFile::CpuacctUsage
            .parse("18446744073709551616")
            .is_err());
    }
}
