//! A TCP relay in front of one node's advertised address, so a test can cut the traffic the
//! other members send to it (a one-way partition) while xks-front still reaches the node.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

/// Relays every connection made to [`PeerProxy::addr`] to a target, until cut.
#[derive(Debug)]
pub struct PeerProxy {
    addr: SocketAddr,
    state: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    target: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
}

impl PeerProxy {
    /// Listens on a free loopback port; connections are refused until [`PeerProxy::relay_to`].
    pub fn start() -> Result<PeerProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Shared {
            target: Mutex::new(None),
            cut: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || accept_loop(&listener, &shared));
        Ok(PeerProxy { addr, state })
    }

    /// The address to advertise.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where accepted connections go.
    pub fn relay_to(&self, target: SocketAddr) {
        if let Ok(mut t) = self.state.target.lock() {
            *t = Some(target);
        }
    }

    /// Closes every relayed connection and refuses new ones (the node stops hearing from its
    /// peers).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        if let Ok(mut open) = self.state.open.lock() {
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Relays again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inbound, _)) => {
                let target = shared.target.lock().ok().and_then(|t| *t);
                match target {
                    Some(t) if !shared.cut.load(Ordering::SeqCst) => relay(inbound, t, shared),
                    _ => drop(inbound),
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn relay(inbound: TcpStream, target: SocketAddr, shared: &Arc<Shared>) {
    let Ok(outbound) = TcpStream::connect(target) else {
        return;
    };
    let _ = inbound.set_nonblocking(false);
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else {
        return;
    };
    if let Ok(mut open) = shared.open.lock() {
        for s in [&inbound, &outbound] {
            if let Ok(c) = s.try_clone() {
                open.push(c);
            }
        }
    }
    std::thread::spawn(move || pump(inbound, outbound));
    std::thread::spawn(move || pump(out2, in2));
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
