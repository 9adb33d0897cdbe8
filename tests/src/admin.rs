//! Runs the real vhsm-admin binary against a node, feeding passphrases on stdin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Result};

use crate::procs::bin_path;

/// vhsm-admin bound to one node's endpoint and the admin certificate of a PKI directory.
#[derive(Debug, Clone)]
pub struct Admin {
    endpoint: String,
    pki: PathBuf,
}

/// Exit code and output of one vhsm-admin run.
#[derive(Debug)]
pub struct AdminRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Admin {
    pub fn new(endpoint: &str, pki: &Path) -> Self {
        Admin {
            endpoint: endpoint.to_string(),
            pki: pki.to_path_buf(),
        }
    }

    /// Runs `vhsm-admin --endpoint .. --pki-dir .. ARGS --passphrase-fd 0` (when stdin is given).
    pub fn run(&self, args: &[&str], stdin: &str) -> Result<AdminRun> {
        let mut cmd = Command::new(bin_path("vhsm-admin"));
        cmd.arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--pki-dir")
            .arg(&self.pki)
            .args(args);
        if !stdin.is_empty() {
            cmd.args(["--passphrase-fd", "0"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes())?;
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output()?;
        Ok(AdminRun {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Runs and requires exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: &str) -> Result<String> {
        let r = self.run(args, stdin)?;
        if r.code != 0 {
            bail!(
                "vhsm-admin {:?} exited {}:\nstdout: {}\nstderr: {}",
                args,
                r.code,
                r.stdout,
                r.stderr
            );
        }
        Ok(r.stdout)
    }

    /// Runs with `--output json` and parses stdout.
    pub fn json(&self, args: &[&str], stdin: &str) -> Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.ok(&all, stdin)?;
        Ok(serde_json::from_str(out.trim())?)
    }
}
