//! Reads passphrases: from the terminal without echo, or one per line from `--passphrase-fd N`.
//!
//! Passphrases never come from the command line or the environment. They are held in
//! `SecretString` (zeroized on drop, redacted `Debug`) from the moment they are read.

use std::fs::File;
use std::io::{BufRead, Read};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::errors::{CliError, CliResult};
use crate::wipe_reader::WipeOnDropReader;

/// Minimum length (characters) of a NEW passphrase (init, rekey).
pub const MIN_NEW_PASSPHRASE_CHARS: usize = 12;
/// Longest accepted passphrase line (bytes); longer input is refused.
const MAX_PASSPHRASE_BYTES: usize = 1024;

/// Where passphrases come from.
pub struct PassphraseReader {
    source: Source,
}

enum Source {
    /// The controlling terminal (rpassword, no echo).
    Terminal,
    /// One passphrase per line (from `--passphrase-fd`, or a test reader).
    Lines(Box<dyn BufRead>),
}

impl std::fmt::Debug for PassphraseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let src = match self.source {
            Source::Terminal => "terminal",
            Source::Lines(_) => "lines",
        };
        f.debug_struct("PassphraseReader")
            .field("source", &src)
            .finish()
    }
}

impl PassphraseReader {
    /// Terminal input when `fd` is `None`; otherwise reads lines from file descriptor `fd`
    /// (`0` = stdin), opened through `/proc/self/fd/N`.
    pub fn open(fd: Option<u32>) -> CliResult<Self> {
        match fd {
            None => Ok(PassphraseReader {
                source: Source::Terminal,
            }),
            Some(n) => {
                let path = format!("/proc/self/fd/{n}");
                let file = File::open(&path).map_err(|e| {
                    CliError::usage(format!("cannot read --passphrase-fd {n}: {e}"))
                })?;
                // Not `BufReader`: its buffer (holding every line read) is freed unzeroized.
                Ok(Self::from_reader(Box::new(WipeOnDropReader::new(file))))
            }
        }
    }

    /// Reads passphrases line by line from `reader` (used by `open` and by tests).
    pub fn from_reader(reader: Box<dyn BufRead>) -> Self {
        PassphraseReader {
            source: Source::Lines(reader),
        }
    }

    /// Whether passphrases are typed interactively.
    pub fn is_terminal(&self) -> bool {
        matches!(self.source, Source::Terminal)
    }

    /// Reads an existing passphrase (unseal, rekey authorization). `prompt` names whose.
    pub fn existing(&mut self, prompt: &str) -> CliResult<SecretString> {
        let p = self.read_one(prompt)?;
        if p.is_empty() {
            return Err(CliError::usage("empty passphrase"));
        }
        Ok(SecretString::from(p.to_string()))
    }

    /// Reads the NEW appliance passphrase (passphrase mode): at least 12 characters, entered
    /// twice and both entries must match, on the terminal and from `--passphrase-fd` alike
    /// (two lines).
    pub fn new_passphrase(&mut self, who: &str) -> CliResult<SecretString> {
        self.new_checked(who, true)
    }

    /// Reads a NEW custodian passphrase (quorum mode): at least 12 characters; asked twice on
    /// the terminal, read once (one line per custodian) from `--passphrase-fd`.
    pub fn new_custodian_passphrase(&mut self, who: &str) -> CliResult<SecretString> {
        let confirm = self.is_terminal();
        self.new_checked(who, confirm)
    }

    fn new_checked(&mut self, who: &str, confirm: bool) -> CliResult<SecretString> {
        let first = self.read_one(&format!("New passphrase for {who}: "))?;
        check_new_passphrase(&first)?;
        if confirm {
            let second = self.read_one(&format!("Repeat the new passphrase for {who}: "))?;
            if first.as_bytes() != second.as_bytes() {
                return Err(CliError::usage(format!(
                    "the two passphrases for {who} do not match"
                )));
            }
        }
        Ok(SecretString::from(first.to_string()))
    }

    fn read_one(&mut self, prompt: &str) -> CliResult<Zeroizing<String>> {
        match &mut self.source {
            Source::Terminal => {
                let p = Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
                    CliError::usage(format!(
                        "cannot read the passphrase from the terminal ({e}); use --passphrase-fd N"
                    ))
                })?);
                if p.len() > MAX_PASSPHRASE_BYTES {
                    return Err(CliError::usage("passphrase too long (max 1024 bytes)"));
                }
                Ok(p)
            }
            Source::Lines(r) => read_line(r.as_mut()),
        }
    }
}

/// Reads one line (without its `\n` / `\r\n`) into a zeroizing buffer.
fn read_line(r: &mut dyn BufRead) -> CliResult<Zeroizing<String>> {
    // Reserve up front so the buffer holding the secret is not reallocated (copied) while read.
    // Reads at most one byte past the longest accepted line, so an over-long (or endless) line
    // is refused without growing the buffer (each growth would leave an unzeroized copy).
    let mut line = Zeroizing::new(String::with_capacity(MAX_PASSPHRASE_BYTES + 3));
    let limit = (MAX_PASSPHRASE_BYTES + 3) as u64;
    let n = Read::take(r, limit)
        .read_line(&mut line)
        .map_err(|e| CliError::usage(format!("cannot read a passphrase line: {e}")))?;
    if n == 0 {
        return Err(CliError::usage(
            "passphrase input ended early: --passphrase-fd needs one passphrase per line",
        ));
    }
    if line.len() > MAX_PASSPHRASE_BYTES + 2 {
        return Err(CliError::usage("passphrase too long (max 1024 bytes)"));
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    // Checked again without the line ending: the bound above allows for "\r\n" but does not
    // know whether the last bytes were one.
    if line.len() > MAX_PASSPHRASE_BYTES {
        return Err(CliError::usage("passphrase too long (max 1024 bytes)"));
    }
    Ok(line)
}

/// Checks the policy for new passphrases (length only; the server derives keys with Argon2id).
pub fn check_new_passphrase(p: &str) -> CliResult<()> {
    if p.chars().count() < MIN_NEW_PASSPHRASE_CHARS {
        return Err(CliError::usage(format!(
            "a new passphrase needs at least {MIN_NEW_PASSPHRASE_CHARS} characters"
        )));
    }
    Ok(())
}

/// Copies a secret into the request field the gRPC message needs.
pub fn to_wire(p: &SecretString) -> String {
    p.expose_secret().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::io::Write;

    fn reader(text: &str) -> PassphraseReader {
        PassphraseReader::from_reader(Box::new(Cursor::new(text.as_bytes().to_vec())))
    }

    #[test]
    fn reads_one_passphrase_per_line() {
        let mut r = reader("first passphrase\r\nsecond one here\nthird\n");
        assert_eq!(r.existing("a").unwrap().expose_secret(), "first passphrase");
        assert_eq!(
            r.new_custodian_passphrase("custodian 2")
                .unwrap()
                .expose_secret(),
            "second one here"
        );
        assert_eq!(r.existing("c").unwrap().expose_secret(), "third");
        let err = r.existing("d").unwrap_err();
        assert!(err.to_string().contains("ended early"), "{err}");
    }

    #[test]
    fn an_endless_line_is_refused_after_a_bounded_read() {
        let mut src = Cursor::new(vec![b'a'; 1 << 20]);
        let err = read_line(&mut src).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        assert!(
            src.position() <= (MAX_PASSPHRASE_BYTES + 3) as u64,
            "{}",
            src.position()
        );
        // The longest accepted line still reads, with either line ending.
        // Exactly one byte too long, whatever the line ending (or none at the end of input).
        for end in ["", "\n", "\r\n"] {
            let long = format!("{}{end}", "c".repeat(MAX_PASSPHRASE_BYTES + 1));
            let mut src = std::io::Cursor::new(long.into_bytes());
            assert!(
                read_line(&mut src).is_err(),
                "accepted 1025 bytes ending {end:?}"
            );
        }
        let ok = format!("{}\r\n", "b".repeat(MAX_PASSPHRASE_BYTES));
        let mut src = Cursor::new(ok.into_bytes());
        assert_eq!(read_line(&mut src).unwrap().len(), MAX_PASSPHRASE_BYTES);
    }

    #[test]
    fn last_line_without_newline_is_read() {
        let mut r = reader("no newline at end");
        assert_eq!(
            r.existing("a").unwrap().expose_secret(),
            "no newline at end"
        );
    }

    #[test]
    fn new_appliance_passphrase_needs_a_matching_confirmation_line() {
        let mut r = reader("a long passphrase\na long passphrase\n");
        assert_eq!(
            r.new_passphrase("the appliance").unwrap().expose_secret(),
            "a long passphrase"
        );
        let mut r = reader("a long passphrase\na different one!\n");
        let e = r.new_passphrase("the appliance").unwrap_err();
        assert!(e.to_string().contains("do not match"), "{e}");
        let mut r = reader("a long passphrase\n");
        assert!(r.new_passphrase("the appliance").is_err());
    }

    #[test]
    fn new_passphrase_must_be_long_enough() {
        let mut r = reader("short\nshort\n");
        let err = r.new_passphrase("the appliance").unwrap_err();
        assert!(err.to_string().contains("at least 12"), "{err}");
        let mut r = reader("short\n");
        let err = r.new_custodian_passphrase("custodian 1").unwrap_err();
        assert!(err.to_string().contains("at least 12"), "{err}");
        assert!(check_new_passphrase("exactly12chr").is_ok());
        assert!(check_new_passphrase("elevenchars").is_err());
    }

    #[test]
    fn empty_existing_passphrase_is_refused() {
        let mut r = reader("\n");
        assert!(r.existing("a").is_err());
    }

    #[test]
    fn overlong_line_is_refused() {
        let long = "x".repeat(2000) + "\n";
        let mut r = reader(&long);
        assert!(r
            .existing("a")
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }

    #[test]
    fn reads_from_a_file_descriptor_path() {
        // A real descriptor: open a temp file and read it through /proc/self/fd/N of our own
        // process by opening it via PassphraseReader::open on the descriptor of a File we hold.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "fd passphrase one").unwrap();
        writeln!(f, "fd passphrase two").unwrap();
        f.flush().unwrap();
        let held = File::open(f.path()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
        let mut r = PassphraseReader::open(Some(u32::try_from(fd).unwrap())).unwrap();
        assert!(!r.is_terminal());
        assert_eq!(
            r.existing("a").unwrap().expose_secret(),
            "fd passphrase one"
        );
        assert_eq!(
            r.existing("b").unwrap().expose_secret(),
            "fd passphrase two"
        );
    }

    #[test]
    fn closed_descriptor_is_a_usage_error() {
        let err = PassphraseReader::open(Some(987_654)).unwrap_err();
        assert_eq!(err.kind().code(), 1);
        assert!(err.to_string().contains("--passphrase-fd 987654"));
    }

    #[test]
    fn debug_does_not_show_content() {
        let r = reader("secret-material-xyz\n");
        assert!(!format!("{r:?}").contains("secret-material"));
    }

    /// Seeded xorshift64* generator so every fuzz case reproduces (not for secrets).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Line endings, NULs, invalid and valid UTF-8 pieces, and ordinary text.
    const ALPHABET: &[u8] = b"aZ9 \n\r\x00\t\xff\xfe\x80\xc3\xa9\xe2\x82\xac";

    /// Reads lines from random bytes until an error, checking each outcome against a model of
    /// the documented behaviour: a line is the bytes up to the first newline (trailing CR/LF
    /// removed), read through a bounded window; empty input ends early; invalid UTF-8 and
    /// over-long lines (more than 1024 bytes without the line ending) are usage errors whose
    /// messages never echo the input.
    #[test]
    fn random_passphrase_fd_bytes_give_a_line_or_a_usage_error() {
        let mut rng = Rng(0xad31_0001);
        let window = MAX_PASSPHRASE_BYTES + 3;
        let (mut lines, mut errors) = (0, 0);
        for case in 0..3000 {
            let mut input: Vec<u8> = Vec::new();
            if case % 10 == 0 {
                // Around the length limit.
                let n = MAX_PASSPHRASE_BYTES - 4 + rng.below(10);
                input.extend(std::iter::repeat_n(b'p', n));
            }
            let n = rng.below(40);
            input.extend((0..n).map(|_| ALPHABET[rng.below(ALPHABET.len())]));
            let mut src = Cursor::new(input.clone());
            let mut rest = &input[..];
            for _ in 0..6 {
                let window_bytes = &rest[..rest.len().min(window)];
                let raw = match window_bytes.iter().position(|&b| b == b'\n') {
                    Some(i) => &window_bytes[..=i],
                    None => window_bytes,
                };
                match read_line(&mut src) {
                    Ok(line) => {
                        lines += 1;
                        let mut want = std::str::from_utf8(raw).unwrap();
                        want = want.trim_end_matches(['\r', '\n']);
                        assert_eq!(line.as_str(), want);
                        assert!(line.len() <= MAX_PASSPHRASE_BYTES);
                        rest = &rest[raw.len()..];
                    }
                    Err(e) => {
                        errors += 1;
                        assert_eq!(e.kind().code(), 1);
                        let msg = e.to_string();
                        if raw.is_empty() {
                            assert!(msg.contains("ended early"), "{msg}");
                        } else if std::str::from_utf8(raw).is_err() {
                            assert!(msg.starts_with("cannot read a passphrase line"), "{msg}");
                        } else {
                            let trimmed = std::str::from_utf8(raw)
                                .unwrap()
                                .trim_end_matches(['\r', '\n']);
                            assert!(
                                raw.len() > MAX_PASSPHRASE_BYTES + 2
                                    || trimmed.len() > MAX_PASSPHRASE_BYTES,
                                "{msg}"
                            );
                            assert!(msg.contains("too long"), "{msg}");
                        }
                        // Fixed messages only: no input bytes are echoed.
                        assert!(!msg.contains("ppp"), "{msg}");
                        break;
                    }
                }
            }
        }
        assert!(lines > 300 && errors > 1000, "{lines} {errors}");
    }
}
