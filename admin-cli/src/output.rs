//! Prints results as a readable table (default) or as JSON for scripts (`--output json`).

use serde::Serialize;

use crate::errors::{CliError, CliResult};

/// The output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned, human-readable text.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
}

/// Renders key/value rows, keys left-aligned in one column.
pub fn render_kv(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let line = format!("{k:<width$}  {v}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders a table with a header row; every column as wide as its widest cell.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&format!("{c:<w$}"));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Serializes `value` as pretty JSON.
pub fn to_json(value: &impl Serialize) -> CliResult<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::usage(format!("cannot format JSON output: {e}")))
}

/// Prints `value` as JSON or the `table` text, per `format`.
pub fn emit(
    format: OutputFormat,
    value: &impl Serialize,
    table: impl FnOnce() -> String,
) -> CliResult<()> {
    match format {
        OutputFormat::Json => println!("{}", to_json(value)?),
        OutputFormat::Table => print!("{}", table()),
    }
    Ok(())
}

/// Asks on the terminal for `expected` to be typed (a destructive command's confirmation).
/// Without a terminal it refuses: `what` names the action in "refusing to {what} without
/// confirmation"; `not_done` is the message when the answer differs.
pub fn confirm_typed(what: &str, prompt: &str, expected: &str, not_done: &str) -> CliResult<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(format!(
            "refusing to {what} without confirmation: pass --yes (no terminal to ask on)"
        )));
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::usage(format!("cannot read the confirmation: {e}")))?;
    if line.trim() != expected {
        return Err(CliError::usage(not_done.to_owned()));
    }
    Ok(())
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds (empty for 0).
pub fn time_ms(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    let nanos = i128::from(ms) * 1_000_000;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn kv_aligns_keys() {
        let s = render_kv(&[
            ("a", "1".into()),
            ("long key", "2".into()),
            ("empty", "".into()),
        ]);
        assert_eq!(s, "a         1\nlong key  2\nempty\n");
    }

    #[test]
    fn table_aligns_columns_and_trims() {
        let s = render_table(
            &["ID", "STATE"],
            &[
                vec!["k".into(), "ENABLED".into()],
                vec!["longer-id".into(), "".into()],
            ],
        );
        assert_eq!(s, "ID         STATE\nk          ENABLED\nlonger-id\n");
    }

    #[test]
    fn time_formats_rfc3339() {
        assert_eq!(time_ms(0), "");
        assert_eq!(time_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time_ms(1_700_000_000_900), "2023-11-14T22:13:20.900Z");
    }

    #[test]
    fn json_is_valid() {
        let v = serde_json::json!({"a": 1});
        let s = to_json(&v).unwrap();
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }
}
