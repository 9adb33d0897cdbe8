//! Test-only helpers for the seeded, fuzz-style parser tests: a reproducible PRNG and mutations.

/// Seeded xorshift64* generator so every fuzz case reproduces (not for secrets).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One to four mutations of `valid`: a bit flip, a byte replaced or inserted from `alphabet`, a
/// byte removed, a truncation, or a duplicated slice of at most `max_dup` bytes.
pub(crate) fn mutate(valid: &[u8], alphabet: &[u8], rng: &mut Rng, max_dup: usize) -> Vec<u8> {
    let mut m = valid.to_vec();
    for _ in 0..=rng.below(3) {
        let pick = alphabet[rng.below(alphabet.len())];
        match rng.below(6) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = pick;
            }
            2 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, pick);
            }
            3 if !m.is_empty() => {
                let i = rng.below(m.len());
                m.remove(i);
            }
            4 => {
                let cut = rng.below(m.len() + 1);
                m.truncate(cut);
            }
            _ => {
                let a = rng.below(m.len() + 1);
                let b = a + rng.below((m.len() - a).min(max_dup) + 1);
                let dup = m[a..b].to_vec();
                let at = rng.below(m.len() + 1);
                m.splice(at..at, dup);
            }
        }
    }
    m
}
