//! Starting and stopping the real vhsmd and xks-front processes with generated configs.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::admin::Admin;
use crate::peer_proxy::PeerProxy;

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (./deploy/test.sh does)",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "process exited with {status} before listening on {addr}; log:\n{}",
                read_log(log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "nothing listening on {addr} after 30 s; log:\n{}",
        read_log(log)
    )
}

/// Waits until vhsmd's Unix socket accepts connections (or the process exits).
fn wait_for_socket(path: &Path, child: &mut Child, log: &Path) -> Result<()> {
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "process exited ({status}) before listening on {}:\n{}",
                path.display(),
                read_log(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "timed out waiting for {}:\n{}",
        path.display(),
        read_log(log)
    )
}

/// The text of a process log (for failure messages).
pub fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn spawn_logged(bin: &str, args: &[&str], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Command::new(bin_path(bin))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {bin}"))
}

/// Sends SIGTERM (graceful shutdown) and waits for the process to exit.
fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running vhsmd.
#[derive(Debug)]
pub struct VhsmdProc {
    pub node_id: String,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The `[unix]` socket (crypto role for this process's uid), if enabled.
    pub unix_socket: Option<PathBuf>,
    /// The plain-HTTP Prometheus endpoint (`[metrics]`).
    pub metrics_addr: SocketAddr,
    child: Option<Child>,
}

impl VhsmdProc {
    /// Writes a config for `node_id` under `dir` (data in `dir/<node_id>`) and starts vhsmd.
    pub fn start(dir: &Path, pki: &Path, node_id: &str) -> Result<Self> {
        Self::start_with(dir, pki, node_id, false)
    }

    /// As [`VhsmdProc::start`]; with `unix`, vhsmd also listens on `dir/<node_id>.sock`
    /// (`[unix]`), granting the crypto role to this process's uid.
    pub fn start_with(dir: &Path, pki: &Path, node_id: &str, unix: bool) -> Result<Self> {
        Self::start_member(dir, pki, node_id, unix, true)
    }

    /// As [`VhsmdProc::start_with`]; `bootstrap = false` starts a node that waits to be added
    /// to a cluster (`vhsm-admin cluster add-node`).
    pub fn start_member(
        dir: &Path,
        pki: &Path,
        node_id: &str,
        unix: bool,
        bootstrap: bool,
    ) -> Result<Self> {
        Self::start_member_with(dir, pki, node_id, unix, bootstrap, "", None)
    }

    /// As [`VhsmdProc::start_member`], with `keys_toml` appended to the `[keys]` section and
    /// `advertise` (default: the listener) as the address the other members call.
    pub fn start_member_with(
        dir: &Path,
        pki: &Path,
        node_id: &str,
        unix: bool,
        bootstrap: bool,
        keys_toml: &str,
        advertise: Option<SocketAddr>,
    ) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let port = free_port();
        let advertise = advertise.unwrap_or(SocketAddr::from(([127, 0, 0, 1], port)));
        let metrics_port = free_port();
        let unix_socket = unix.then(|| dir.join(format!("{node_id}.sock")));
        let unix_toml = match &unix_socket {
            // The temp dir is ours: its owner is this process's uid.
            Some(path) => format!(
                "\n[unix]\npath = \"{}\"\ncrypto_uids = [{}]\n",
                path.display(),
                std::fs::metadata(dir)?.uid()
            ),
            None => String::new(),
        };
        let data_dir = dir.join(node_id);
        let config = dir.join(format!("{node_id}.toml"));
        let text = format!(
            r#"node_id = "{node_id}"
data_dir = "{data}"

[listen]
addr = "127.0.0.1:{port}"

[tls]
cert = "{pki}/vhsmd.crt"
key = "{pki}/vhsmd.key"
client_ca = "{pki}/ca.crt"

[roles]
crypto = ["xks-front"]
admin = ["admin"]
auditor = ["auditor"]
peer = ["vhsm-peer"]

[keys]
min_deletion_waiting_days = 7
{keys_toml}

[cluster]
advertise = "https://{advertise}"
bootstrap = {bootstrap}
peer_cert = "{pki}/peer.crt"
peer_key = "{pki}/peer.key"
# Small, so that every cluster test also builds, sends and installs snapshots.
snapshot_every_entries = 100

[metrics]
addr = "127.0.0.1:{metrics_port}"

[log]
format = "json"
level = "info"
{unix_toml}"#,
            data = data_dir.display(),
            pki = pki.display()
        );
        std::fs::write(&config, text)?;
        let mut p = VhsmdProc {
            node_id: node_id.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            config,
            data_dir,
            log: dir.join(format!("{node_id}.log")),
            unix_socket,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            child: None,
        };
        p.restart()?;
        Ok(p)
    }

    /// Starts (again) with the same config and data.
    pub fn restart(&mut self) -> Result<()> {
        let config = self.config.to_string_lossy().to_string();
        let mut child = spawn_logged("vhsmd", &["--config", &config], &self.log)?;
        wait_for_port(self.addr, &mut child, &self.log)?;
        if let Some(sock) = &self.unix_socket {
            wait_for_socket(sock, &mut child, &self.log)?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Graceful stop (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The endpoint xks-front uses: `unix:<socket>` when the `[unix]` listener is enabled,
    /// else [`VhsmdProc::endpoint`].
    pub fn xks_endpoint(&self) -> String {
        match &self.unix_socket {
            Some(p) => format!("unix:{}", p.display()),
            None => self.endpoint(),
        }
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for VhsmdProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One key store of an xks-front config.
#[derive(Debug, Clone)]
pub struct KeyStoreSpec {
    pub name: String,
    pub path_prefix: String,
    pub keys: Vec<String>,
    pub credentials: Vec<(String, String)>,
    pub rate_limit_per_sec: u32,
    pub burst: u32,
    /// Raw TOML appended inside this key store (e.g. `[[keystore.rule]]` tables).
    pub extra_toml: String,
}

/// A running xks-front.
#[derive(Debug)]
pub struct XksFrontProc {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub config: PathBuf,
    pub keystores_file: PathBuf,
    pub log: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl XksFrontProc {
    /// Writes configs under `dir` and starts xks-front in front of `nodes`.
    pub fn start(
        dir: &Path,
        pki: &Path,
        nodes: &[&VhsmdProc],
        stores: &[KeyStoreSpec],
        health_cache_secs: u32,
    ) -> Result<Self> {
        let port = free_port();
        let metrics_port = free_port();
        let keystores_file = dir.join("keystores.toml");
        let config = dir.join("xks-front.toml");
        let mut nodes_toml = String::new();
        for n in nodes {
            nodes_toml.push_str(&format!(
                "\n[[vhsm.nodes]]\nid = \"{}\"\nendpoint = \"{}\"\nserver_name = \"vhsmd\"\n",
                n.node_id,
                n.xks_endpoint()
            ));
        }
        let text = format!(
            r#"keystores_file = "{ks}"
fleet_size = 1
region = "us-east-1"

[listen]
addr = "127.0.0.1:{port}"

[tls]
cert = "{pki}/xks-front.crt"
key = "{pki}/xks-front.key"

[metrics]
addr = "127.0.0.1:{metrics_port}"

[vhsm]
ca = "{pki}/ca.crt"
client_cert = "{pki}/crypto.crt"
client_key = "{pki}/crypto.key"
deadline_ms = 240
health_key_id = "xks-health"
health_cache_secs = {health_cache_secs}
{nodes_toml}
[limits]
max_concurrency = 256
"#,
            ks = keystores_file.display(),
            pki = pki.display(),
        );
        std::fs::write(&config, text)?;
        let mut p = XksFrontProc {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            config,
            keystores_file,
            log: dir.join("xks-front.log"),
            dir: dir.to_path_buf(),
            child: None,
        };
        p.write_keystores(stores)?;
        let cfg = p.config.to_string_lossy().to_string();
        let mut child = spawn_logged("xks-front", &["--config", &cfg], &p.log)?;
        wait_for_port(p.addr, &mut child, &p.log)?;
        p.child = Some(child);
        Ok(p)
    }

    /// (Re)writes keystores.toml and the secret files it names.
    pub fn write_keystores(&self, stores: &[KeyStoreSpec]) -> Result<()> {
        let secrets = self.dir.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        let mut text = String::new();
        for s in stores {
            let keys: Vec<String> = s.keys.iter().map(|k| format!("\"{k}\"")).collect();
            text.push_str(&format!(
                "[[keystore]]\nname = \"{}\"\npath_prefix = \"{}\"\nkeys = [{}]\nrate_limit_per_sec = {}\nburst = {}\n",
                s.name,
                s.path_prefix,
                keys.join(", "),
                s.rate_limit_per_sec,
                s.burst
            ));
            for (akid, secret) in &s.credentials {
                let file = secrets.join(format!("{}-{akid}", s.name));
                write_private(&file, secret.as_bytes())?;
                text.push_str(&format!(
                    "\n[[keystore.credential]]\naccess_key_id = \"{akid}\"\nsecret_file = \"{}\"\n",
                    file.display()
                ));
            }
            text.push_str(&s.extra_toml);
            text.push('\n');
        }
        std::fs::write(&self.keystores_file, text)?;
        Ok(())
    }

    /// SIGHUP: reload keystores.toml.
    pub fn reload(&self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat, in microseconds.
pub fn cpu_time_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = 100; // USER_HZ on Linux
    Some((utime + stime) * 1_000_000 / ticks)
}

impl Drop for XksFrontProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}

/// What to set up in [`Appliance::start`].
#[derive(Debug, Clone)]
pub struct ApplianceOptions {
    pub nodes: usize,
    pub passphrase: String,
    pub key_ids: Vec<String>,
    /// Start vhsmd with a `[unix]` listener; xks-front then reaches it over the socket.
    pub unix: bool,
    /// Appended to every node's `[keys]` section.
    pub keys_toml: String,
    /// Each node advertises a [`PeerProxy`] in front of its listener, so a test can cut what
    /// the other members send it.
    pub peer_proxies: bool,
}

impl Default for ApplianceOptions {
    fn default() -> Self {
        ApplianceOptions {
            nodes: 1,
            passphrase: "correct horse battery staple".to_string(),
            key_ids: vec!["demo-key".to_string()],
            unix: false,
            keys_toml: String::new(),
            peer_proxies: false,
        }
    }
}

/// A temp dir with a PKI, running vhsmd nodes and an admin client.
#[derive(Debug)]
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub nodes: Vec<VhsmdProc>,
    /// One per node with [`ApplianceOptions::peer_proxies`], else empty.
    pub proxies: Vec<PeerProxy>,
}

impl Appliance {
    /// PKI + `nodes` vhsmd processes forming one cluster: the first initialized (passphrase
    /// mode) and unsealed with `key_ids` and the health key `xks-health`, the others added
    /// with `cluster add-node` and unsealed.
    pub fn start(opts: &ApplianceOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = dir.path().join("pki");
        let out = Command::new(bin_path("vhsm-admin"))
            .args(["pki", "init", "--dir"])
            .arg(&pki)
            .output()?;
        if !out.status.success() {
            bail!("pki init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut nodes = Vec::new();
        let mut proxies = Vec::new();
        for i in 0..opts.nodes.max(1) {
            let proxy = opts.peer_proxies.then(PeerProxy::start).transpose()?;
            let node = VhsmdProc::start_member_with(
                dir.path(),
                &pki,
                &format!("vhsm-{}", i + 1),
                opts.unix,
                i == 0,
                &opts.keys_toml,
                proxy.as_ref().map(PeerProxy::addr),
            )?;
            if let Some(p) = proxy {
                p.relay_to(node.addr);
                proxies.push(p);
            }
            nodes.push(node);
        }
        let app = Appliance {
            dir,
            pki,
            nodes,
            proxies,
        };
        let admin = app.admin(0);
        let pass = format!("{}\n{}\n", opts.passphrase, opts.passphrase);
        admin.ok(&["init", "--passphrase"], &pass)?;
        admin.ok(&["unseal"], &format!("{}\n", opts.passphrase))?;
        for id in &opts.key_ids {
            admin.ok(&["key", "create", id, "--usage", "encrypt,decrypt"], "")?;
        }
        admin.ok(
            &[
                "key",
                "create",
                "xks-health",
                "--usage",
                "encrypt,decrypt",
                "--label",
                "purpose=health",
            ],
            "",
        )?;
        for i in 1..app.nodes.len() {
            let target = app.peer_endpoint(i);
            admin.ok(&["cluster", "add-node", "--address", &target], "")?;
            app.admin(i)
                .ok(&["unseal"], &format!("{}\n", opts.passphrase))?;
        }
        Ok(app)
    }

    /// The address the other members call node `i` at (its proxy's, if it has one).
    pub fn peer_endpoint(&self, i: usize) -> String {
        match self.proxies.get(i) {
            Some(p) => format!("https://{}", p.addr()),
            None => self.nodes[i].endpoint(),
        }
    }

    /// An admin client for node `i`.
    pub fn admin(&self, i: usize) -> Admin {
        Admin::new(&self.nodes[i].endpoint(), &self.pki)
    }
}
