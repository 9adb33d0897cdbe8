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
mod tests {
    use super::*;

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
}
