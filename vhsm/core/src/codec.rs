//! A tiny length-prefixed binary codec for the core's own formats (header, shares, records, backup).
//!
//! The writer can target a zeroizing buffer so that encodings holding key material are wiped.

use zeroize::Zeroizing;

/// Appends big-endian fields to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Zeroizing<Vec<u8>>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes, no length prefix (fixed-size fields).
    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// `u32be(len) || bytes`.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // INVARIANT: every field the core encodes is far below 4 GiB (inputs are capped at
        // 64 KiB and backups at the store size); saturating would only corrupt an impossible case.
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.raw(v)
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// The encoding so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The encoding, in a zeroizing buffer.
    #[cfg(test)]
    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }

    /// The encoding as a plain vector (only for data that is not secret).
    pub(crate) fn finish_public(self) -> Vec<u8> {
        self.buf.to_vec()
    }
}

/// Why decoding failed (no data is echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

/// Reads big-endian fields from a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated)?;
        let out = self.data.get(self.pos..end).ok_or(Truncated)?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.raw(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Truncated> {
        let len = usize::try_from(self.u32()?).map_err(|_| Truncated)?;
        self.raw(len)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, Truncated> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Truncated)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), Truncated> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(Truncated)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// Seeded xorshift64* generator for reproducible fuzz-style tests (not for secrets).
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform-ish value in `0..n` (`n > 0`).
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Interesting values written over 4-byte windows (length fields, counts, costs).
    const U32_EDGES: [u32; 8] = [0, 1, 2, 0x7f, 0xffff, 0x7fff_ffff, 0xffff_fffe, u32::MAX];

    /// Structured mutations of a valid encoding: every truncation, every single-bit flip,
    /// plus `random` seeded cases mixing multi-byte flips, insertions, deletions, extensions,
    /// u32 length-field corruption and fully random bodies. None equals `valid` by design
    /// except possibly a u32 overwrite with its own value (callers compare bytes).
    pub(crate) fn mutants(valid: &[u8], rng: &mut Rng, random: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for cut in 0..valid.len() {
            out.push(valid[..cut].to_vec());
        }
        for i in 0..valid.len() {
            for bit in 0..8 {
                let mut m = valid.to_vec();
                m[i] ^= 1 << bit;
                out.push(m);
            }
        }
        for _ in 0..random {
            let mut m = valid.to_vec();
            match rng.below(7) {
                0 => {
                    for _ in 0..=rng.below(8) {
                        let i = rng.below(m.len().max(1));
                        if let Some(b) = m.get_mut(i) {
                            *b ^= (rng.next() as u8) | 1;
                        }
                    }
                }
                1 => {
                    let at = rng.below(m.len() + 1);
                    let n = 1 + rng.below(16);
                    let extra = rng.bytes(n);
                    m.splice(at..at, extra);
                }
                2 if !m.is_empty() => {
                    let at = rng.below(m.len());
                    let n = 1 + rng.below((m.len() - at).min(16));
                    m.drain(at..at + n);
                }
                3 => {
                    let n = 1 + rng.below(64);
                    m.extend(rng.bytes(n));
                }
                4 if m.len() >= 4 => {
                    let at = rng.below(m.len() - 3);
                    let v = U32_EDGES[rng.below(U32_EDGES.len())];
                    m[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
                5 => {
                    let keep = rng.below(m.len().min(24) + 1);
                    m.truncate(keep);
                    let n = rng.below(2 * valid.len() + 1);
                    m.extend(rng.bytes(n));
                }
                _ => {
                    let n = rng.below(2 * valid.len() + 1);
                    m = rng.bytes(n);
                }
            }
            out.push(m);
        }
        out
    }

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.u8(7)
            .u32(0x0102_0304)
            .u64(u64::MAX)
            .raw(b"ab")
            .bytes(b"xyz")
            .str("hé");
        let enc = w.finish();
        let mut r = Reader::new(&enc);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0x0102_0304);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.raw(2).unwrap(), b"ab");
        assert_eq!(r.bytes().unwrap(), b"xyz");
        assert_eq!(r.str().unwrap(), "hé");
        r.finish().unwrap();
    }

    #[test]
    fn truncation_and_trailing_bytes_detected() {
        let mut w = Writer::new();
        w.bytes(b"hello");
        let enc = w.finish_public();
        for cut in 0..enc.len() {
            assert_eq!(Reader::new(&enc[..cut]).bytes(), Err(Truncated));
        }
        let mut long = enc.clone();
        long.push(0);
        let mut r = Reader::new(&long);
        r.bytes().unwrap();
        assert_eq!(r.finish(), Err(Truncated));
        // A length prefix far beyond the data must not panic or allocate.
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]).bytes(),
            Err(Truncated)
        );
        assert_eq!(Reader::new(&[0, 0, 0, 2, 0xff, 0xfe]).str(), Err(Truncated));
    }

    #[test]
    fn reader_never_panics_on_random_input_and_ops() {
        let mut rng = Rng::new(0x00c0_dec0);
        for _ in 0..3000 {
            let n = rng.below(48);
            let data = rng.bytes(n);
            let mut r = Reader::new(&data);
            for _ in 0..8 {
                let before = r.pos;
                let _ = match rng.below(7) {
                    0 => r.u8().is_ok(),
                    1 => r.u32().is_ok(),
                    2 => r.u64().is_ok(),
                    3 => {
                        let n = rng.below(20);
                        r.raw(n).is_ok()
                    }
                    4 => {
                        let n = usize::MAX - rng.below(4);
                        r.raw(n).is_ok()
                    }
                    5 => r.bytes().is_ok(),
                    _ => r.str().is_ok(),
                };
                // A failed read may still have consumed a length prefix, never beyond the end.
                assert!(r.pos >= before && r.pos <= data.len());
            }
            assert_eq!(r.finish().is_ok(), r.pos == data.len());
        }
    }

    #[test]
    fn mutated_length_prefixed_fields_never_read_out_of_bounds() {
        let mut w = Writer::new();
        w.u8(3).bytes(b"first field").str("second").u64(42);
        let valid = w.finish_public();
        let mut rng = Rng::new(0x5eed_0001);
        for m in mutants(&valid, &mut rng, 3000) {
            let mut r = Reader::new(&m);
            let decoded = (|| {
                let a = r.u8()?;
                let b = r.bytes()?.to_vec();
                let c = r.str()?.to_string();
                let d = r.u64()?;
                r.finish()?;
                Ok::<_, Truncated>((a, b, c, d))
            })();
            if let Ok((a, b, c, d)) = decoded {
                // Whatever decodes re-encodes to exactly the input (the format is canonical).
                let mut w = Writer::new();
                w.u8(a).bytes(&b).str(&c).u64(d);
                assert_eq!(w.finish_public(), m);
            }
        }
    }
}
