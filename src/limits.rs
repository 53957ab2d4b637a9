//! The memory cap: the most bytes cnnc lets one compiled program, one data
//! set or one input array take, checked before any of it is allocated.
//!
//! The cap is `CNNC_MAX_MEMORY` when it is set (bytes, or a number with a
//! binary suffix: `512M`, `8G`, `1.5GiB`), otherwise the machine's physical
//! memory: `MemTotal` in `/proc/meminfo`, or the memory limit of the
//! process's cgroup when that is lower (a container's limit). Not
//! `MemAvailable`: it moves with the page cache and with every other
//! process, so a check against it would make the same command pass or fail
//! from one minute to the next, while a program larger than physical memory
//! can never run without swapping the arena it touches at every step. The
//! cap is a ceiling, not a promise: a program just under it may still be
//! more than what is free. Where the machine's memory cannot be read (no
//! `/proc`), there is no cap besides the variable.
//!
//! Allocations sized by something a user gives (a batch size, a model's
//! input, a file's header) are checked against [`MemoryCap::current`]: the
//! back end's `generate` for a program's arena, weights, optimizer state
//! and batch buffers, the data loaders for a data set, `cnnc predict` for
//! an input array.

use std::fmt;
use std::sync::OnceLock;

use thiserror::Error;

/// The environment variable that sets the cap.
pub const VARIABLE: &str = "CNNC_MAX_MEMORY";

/// The most memory one program, data set or input array may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCap {
    /// The cap in bytes (`isize::MAX`, the largest allocation, when the
    /// machine's memory is unknown).
    pub bytes: u64,
    /// Where it comes from.
    pub source: CapSource,
}

/// Where a [`MemoryCap`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapSource {
    /// The `CNNC_MAX_MEMORY` variable.
    Variable,
    /// The machine's physical memory (`MemTotal` in `/proc/meminfo`).
    Physical,
    /// The memory limit of the process's cgroup, below physical memory.
    Cgroup,
    /// Neither the variable nor the machine's memory: no cap.
    Unknown,
}

/// `CNNC_MAX_MEMORY` holds something that is not a size.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{VARIABLE}=`{value}` is not a size: give bytes, or a number with K, M, G or T (powers of 1024), e.g. {VARIABLE}=8G")]
pub struct CapError {
    /// The variable's value.
    pub value: String,
}

impl MemoryCap {
    /// The cap now: `CNNC_MAX_MEMORY` when set (read at every call, so that
    /// a test or a wrapper can change it), otherwise the machine's memory
    /// (read once per process).
    pub fn current() -> Result<MemoryCap, CapError> {
        match std::env::var(VARIABLE) {
            Ok(value) if !value.trim().is_empty() => parse_size(&value)
                .map(|bytes| MemoryCap {
                    bytes,
                    source: CapSource::Variable,
                })
                .ok_or(CapError { value }),
            _ => Ok(*machine()),
        }
    }

    /// Whether `bytes` fit under the cap.
    pub fn allows(&self, bytes: u64) -> bool {
        bytes <= self.bytes
    }

    /// How to raise the cap, for the end of an error message.
    pub fn help(&self) -> String {
        match self.source {
            CapSource::Variable => format!("raise {VARIABLE} if the machine has the memory"),
            CapSource::Physical | CapSource::Cgroup | CapSource::Unknown => {
                format!("set {VARIABLE}=SIZE to allow more, if swap can hold it")
            }
        }
    }
}

impl fmt::Display for MemoryCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = bytes(self.bytes);
        match self.source {
            CapSource::Variable => write!(f, "the cap of {size} set by {VARIABLE}"),
            CapSource::Physical => write!(f, "the machine's {size} of physical memory"),
            CapSource::Cgroup => write!(f, "the {size} memory limit of this process's cgroup"),
            CapSource::Unknown => write!(f, "the largest allocation ({size})"),
        }
    }
}

/// A size as `CNNC_MAX_MEMORY` gives it: a whole or decimal number of
/// bytes, optionally followed by `K`, `M`, `G` or `T` (powers of 1024, as
/// `ulimit` and Docker's `--memory` count; `KB`, `KiB` and lower case
/// mean the same). `None` when it is not one, or does not fit in 64 bits.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    // 2^64 itself is not representable; `as` would saturate it silently.
    (bytes.is_finite() && bytes < 18_446_744_073_709_551_616.0).then_some(bytes as u64)
}

/// Bytes in binary units (as `cnnc summary` prints them), up to PiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    let digits = if unit >= 2 { 2 } else { 1 };
    format!("{x:.digits$} {}", UNITS[unit])
}

/// The machine's cap, read once: the smaller of physical memory and the
/// cgroup's limit.
fn machine() -> &'static MemoryCap {
    static MACHINE: OnceLock<MemoryCap> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let physical = read("/proc/meminfo").and_then(|text| mem_total(&text));
        let cgroup = read("/proc/self/cgroup").and_then(|text| {
            cgroup_files(&text)
                .iter()
                .find_map(|file| read(file).and_then(|limit| cgroup_limit(&limit)))
        });
        match (physical, cgroup) {
            (Some(p), Some(c)) if c < p => MemoryCap {
                bytes: c,
                source: CapSource::Cgroup,
            },
            (Some(p), _) => MemoryCap {
                bytes: p,
                source: CapSource::Physical,
            },
            (None, _) => MemoryCap {
                bytes: isize::MAX as u64,
                source: CapSource::Unknown,
            },
        }
    })
}

/// `MemTotal` of `/proc/meminfo`'s text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The files that may hold the memory limit of the cgroups that
/// `/proc/self/cgroup` lists: `memory.max` (cgroup v2, line `0::PATH`) and
/// `memory.limit_in_bytes` (v1, a line naming the `memory` controller),
/// each under the process's path and at the mount's root (where a
/// container sees its own cgroup).
fn cgroup_files(proc_cgroup: &str) -> Vec<String> {
    let mut files = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.max"));
            files.push("/sys/fs/cgroup/memory.max".to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
            files.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string());
        }
    }
    files
}

/// A cgroup memory limit file's bytes; `None` for `max` (no limit).
fn cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_anything_else() {
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size(" 512mib "), Some(512 << 20));
        assert_eq!(parse_size("1.5GB"), Some(3 << 29));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("8X"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("16777216T"), None, "2^64 does not fit");
    }

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(bytes(1000), "1000 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 << 30), "8.00 GiB");
        assert_eq!(bytes(3_136_000_000_000_000), "2.79 PiB");
    }

    #[test]
    fn the_machine_s_memory_is_mem_total_or_a_lower_cgroup_limit() {
        let meminfo = "MemTotal:       24683584 kB\nMemFree:  1 kB\nMemAvailable: 2 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_683_584 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        let v2 = cgroup_files("0::/user.slice/session-1.scope\n");
        assert_eq!(
            v2,
            [
                "/sys/fs/cgroup/user.slice/session-1.scope/memory.max",
                "/sys/fs/cgroup/memory.max"
            ]
        );
        let v1 = cgroup_files("5:cpu,cpuacct:/\n4:memory:/docker/abc\n");
        assert_eq!(
            v1,
            [
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes"
            ]
        );
        assert_eq!(cgroup_limit("4294967296\n"), Some(4 << 30));
        assert_eq!(cgroup_limit("max\n"), None);
    }

    #[test]
    fn caps_say_where_they_come_from() {
        let cap = |source| MemoryCap {
            bytes: 8 << 30,
            source,
        };
        assert_eq!(
            cap(CapSource::Variable).to_string(),
            "the cap of 8.00 GiB set by CNNC_MAX_MEMORY"
        );
        assert_eq!(
            cap(CapSource::Physical).to_string(),
            "the machine's 8.00 GiB of physical memory"
        );
        assert!(cap(CapSource::Physical).allows(8 << 30));
        assert!(!cap(CapSource::Physical).allows((8 << 30) + 1));
    }
}
