//! Reads every readable mapping of a live process (/proc/PID/maps + /proc/PID/mem) and counts
//! where known byte strings occur in it.
//!
//! Reading another process's memory needs ptrace access to it: the same uid for a dumpable
//! process, CAP_SYS_PTRACE for one that set `PR_SET_DUMPABLE=0` (vhsmd does). The tests run as
//! root with that capability.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};

/// One mapping line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    /// The file or pseudo name (`[heap]`, `[stack]`); empty for anonymous memory.
    pub name: String,
}

impl Mapping {
    /// Whether the process can write it (runtime data lives only in such mappings, or in
    /// ones that were writable once).
    pub fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }
}

/// Parses /proc/PID/maps.
pub fn mappings(pid: u32) -> Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("read /proc/{pid}/maps"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        // offset, device, inode, then the optional name.
        let name = parts.nth(3).unwrap_or("").to_string();
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        out.push(Mapping {
            start: u64::from_str_radix(a, 16)?,
            end: u64::from_str_radix(b, 16)?,
            perms: perms.to_string(),
            name,
        });
    }
    Ok(out)
}

/// A needle and where it was found.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Which needle (its label).
    pub label: String,
    /// Number of occurrences.
    pub count: usize,
    /// Up to 8 occurrences, as `(address, mapping)`, for the report.
    pub at: Vec<(u64, Mapping)>,
}

/// What one scan read and found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Bytes read and searched.
    pub bytes: u64,
    /// Mappings read.
    pub regions: usize,
    /// Readable mappings that could not be read (e.g. `[vvar]`), and their total size.
    pub unreadable: usize,
    pub unreadable_bytes: u64,
    pub hits: Vec<Hit>,
}

impl Scan {
    /// Occurrences of the needle labelled `label`.
    pub fn count(&self, label: &str) -> usize {
        self.hits
            .iter()
            .find(|h| h.label == label)
            .map_or(0, |h| h.count)
    }

    /// One line per needle, for the test's output.
    pub fn report(&self, what: &str) -> String {
        let mut s = format!(
            "{what}: searched {} bytes in {} mappings ({} unreadable mappings, {} bytes)\n",
            self.bytes, self.regions, self.unreadable, self.unreadable_bytes
        );
        for h in &self.hits {
            s.push_str(&format!("  {:<28} {:>6} hits", h.label, h.count));
            for (addr, m) in &h.at {
                s.push_str(&format!(
                    "\n      {addr:#x} in {:#x}-{:#x} {} ({} KiB) {}",
                    m.start,
                    m.end,
                    m.perms,
                    (m.end - m.start) / 1024,
                    if m.name.is_empty() {
                        "anonymous"
                    } else {
                        &m.name
                    }
                ));
            }
            s.push('\n');
        }
        s
    }
}

/// Chunk size of one read from /proc/PID/mem.
const CHUNK: usize = 4 << 20;

/// Reads every readable mapping of `pid` and counts each `(label, needle)` in it (needles
/// spanning two chunks of one mapping are found too; mappings are not joined).
pub fn scan(pid: u32, needles: &[(&str, &[u8])]) -> Result<Scan> {
    let mem = File::open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("open /proc/{pid}/mem (needs ptrace access)"))?;
    let finders: Vec<memchr::memmem::Finder<'_>> = needles
        .iter()
        .map(|(_, n)| memchr::memmem::Finder::new(n))
        .collect();
    let overlap = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(1) - 1;
    let mut out = Scan {
        hits: needles
            .iter()
            .map(|(l, _)| Hit {
                label: (*l).to_string(),
                count: 0,
                at: Vec::new(),
            })
            .collect(),
        ..Scan::default()
    };
    let mut buf = vec![0u8; CHUNK + overlap];
    for m in mappings(pid)? {
        if !m.perms.starts_with('r') || m.name == "[vsyscall]" {
            continue;
        }
        let mut addr = m.start;
        // Bytes of the previous chunk kept at the front of `buf` (so a needle across two
        // chunks is seen once).
        let mut carried = 0usize;
        let mut ok = true;
        while addr < m.end {
            let want = usize::try_from((m.end - addr).min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = match mem.read_at(&mut buf[carried..carried + want], addr) {
                Ok(0) | Err(_) => {
                    ok = false;
                    break;
                }
                Ok(n) => n,
            };
            let hay = &buf[..carried + n];
            for (f, hit) in finders.iter().zip(out.hits.iter_mut()) {
                for pos in f.find_iter(hay) {
                    // A match wholly inside the carried bytes was counted last time.
                    if pos + f.needle().len() <= carried {
                        continue;
                    }
                    hit.count += 1;
                    if hit.at.len() < 8 {
                        hit.at.push((addr - carried as u64 + pos as u64, m.clone()));
                    }
                }
            }
            out.bytes += n as u64;
            addr += n as u64;
            let keep = overlap.min(carried + n);
            buf.copy_within(carried + n - keep..carried + n, 0);
            carried = keep;
        }
        if ok {
            out.regions += 1;
        } else {
            out.unreadable += 1;
            out.unreadable_bytes += m.end - addr;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_marker_in_this_process_once_per_copy() {
        let mut marker = [0u8; 32];
        getrandom::fill(&mut marker).unwrap();
        // Two copies on the heap, far apart; the needle itself is a third copy.
        let mut heap = vec![0u8; 3 * CHUNK];
        heap[10..42].copy_from_slice(&marker);
        // Straddles a chunk boundary if the allocation happens to be chunk aligned; in any
        // case it must be counted exactly once.
        heap[CHUNK - 7..CHUNK + 25].copy_from_slice(&marker);
        let needle = marker.to_vec();
        let s = scan(std::process::id(), &[("marker", &needle)]).unwrap();
        assert!(s.bytes > heap.len() as u64, "{}", s.report("self"));
        // Copies: heap (2), needle (1), `marker` on the stack (1, unless optimized into the
        // others): at least the three we made.
        assert!(s.count("marker") >= 3, "{}", s.report("self"));
        std::hint::black_box(&heap);
    }
}
