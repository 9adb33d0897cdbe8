//! The one error type of xks-front's configuration files (the main config and keystores.toml),
//! and the TOML parsing both use, with the line of the problem.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// A configuration file that failed to load: names the file, line or field at fault, and never
/// contains a secret (the TOML parser's source snippet is left out).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML for the schema (unknown field, wrong type, missing field, …).
    #[error("invalid TOML in {file} (line {line}): {message}")]
    Toml {
        /// The file (or what the text is, when it was not read from a file).
        file: String,
        /// 1-based line of the problem, 0 when unknown.
        line: usize,
        /// The parser's message, without the source snippet.
        message: String,
    },
    /// A value failed validation.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Path of the bad field, e.g. `vhsm.deadline_ms` or `keystore[0].credential[1].access_key_id`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// A validation failure of `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Reads `path` as text.
pub fn read(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses `text` (from `file`) into `T`; a schema error carries the line it is on.
pub fn parse_toml<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Toml {
        file: file.to_owned(),
        line: e.span().map_or(0, |s| line_of(text, s.start)),
        message: e.message().to_owned(),
    })
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Small {
        a: u32,
    }

    #[test]
    fn a_schema_error_names_the_file_and_line_without_the_value() {
        let e = parse_toml::<Small>("a = 1\nsecret = \"do-not-echo-me\"\n", "x.toml").unwrap_err();
        match &e {
            ConfigError::Toml {
                file,
                line,
                message,
            } => {
                assert_eq!((file.as_str(), *line), ("x.toml", 2));
                assert!(message.contains("secret"), "{message}");
            }
            other => panic!("{other}"),
        }
        let shown = e.to_string();
        assert!(
            shown.starts_with("invalid TOML in x.toml (line 2): "),
            "{shown}"
        );
        assert!(!shown.contains("do-not-echo-me"), "{shown}");
        assert_eq!(parse_toml::<Small>("a = 7\n", "x.toml").unwrap().a, 7);
    }

    #[test]
    fn lines_count_from_one_and_stop_at_the_end() {
        assert_eq!(line_of("", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\n", 99), 3);
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = read(std::path::Path::new("/nonexistent/k.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/k.toml: "),
            "{e}"
        );
    }
}
