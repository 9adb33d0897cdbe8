//! A buffered reader whose buffer is zeroized when it is dropped, for passphrase input.
//!
//! `std::io::BufReader` frees its 8 KiB buffer as it is: every passphrase line read through
//! `--passphrase-fd` would stay in the freed heap of the CLI until the allocator reuses it.

use std::io::{BufRead, Read};

use zeroize::Zeroizing;

/// Buffer size: passphrase lines are at most about 1 KiB.
const CAPACITY: usize = 4096;

/// `BufRead` over `R` with a fixed, zeroizing buffer (never reallocated).
pub struct WipeOnDropReader<R> {
    inner: R,
    buf: Zeroizing<Box<[u8]>>,
    pos: usize,
    filled: usize,
}

impl<R> std::fmt::Debug for WipeOnDropReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WipeOnDropReader")
            .field("buffered", &(self.filled - self.pos))
            .finish_non_exhaustive()
    }
}

impl<R: Read> WipeOnDropReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        WipeOnDropReader {
            inner,
            buf: Zeroizing::new(vec![0u8; CAPACITY].into_boxed_slice()),
            pos: 0,
            filled: 0,
        }
    }
}

impl<R: Read> Read for WipeOnDropReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for WipeOnDropReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.filled {
            self.pos = 0;
            self.filled = self.inner.read(&mut self.buf)?;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Hands out at most 3 bytes per read, so lines span several refills.
    struct Trickle(std::io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(3);
            self.0.read(&mut out[..n])
        }
    }

    #[test]
    fn reads_lines_across_refills_and_to_the_end() {
        let text = format!("first line\nsecond\n{}\nlast", "x".repeat(CAPACITY + 10));
        let mut r = WipeOnDropReader::new(Trickle(std::io::Cursor::new(text.clone().into())));
        let mut lines = Vec::new();
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        assert_eq!(lines.concat(), text);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1], "second\n");
        let mut r = WipeOnDropReader::new(std::io::Cursor::new(text.clone().into_bytes()));
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, text.as_bytes());
    }
}
