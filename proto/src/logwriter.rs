//! A batched, non-spinning log writer: request threads append lines to a bounded in-memory
//! queue, one background thread writes them out with one `write(2)` per batch.
//!
//! Why not `tracing-appender`: its worker blocks in a crossbeam-channel `recv`, which spins and
//! then calls `sched_yield` several times before it parks; with about one log line per request
//! that cost each process ~4 `sched_yield`s per request. Here the queue is a `Mutex` + `Condvar`
//! (futex sleeps only, no spinning, no yields):
//!
//! * a line is one [`std::io::Write::write`] call on a [`LogHandle`] (tracing-subscriber's fmt
//!   layer formats each event into a buffer and hands it over in one `write_all`, which is one
//!   `write` here because every `write` takes all the bytes); the bytes are appended to the
//!   shared batch buffer under the lock, so lines keep their order;
//! * the writer thread is woken only when the queue goes from empty to non-empty (or fills past
//!   a high-water mark); it then lingers for [`LogWriterBuilder::linger`] to let more lines
//!   arrive, takes the whole batch by swapping buffers and writes it with one `write_all` and
//!   one `flush`. An idle process has no periodic wake-ups;
//! * the request path never blocks on I/O: when the queue holds
//!   [`LogWriterBuilder::max_queued_bytes`] the line is dropped and counted
//!   ([`LogWriter::dropped`]; [`LogWriter::drop_counter`] hands a metrics endpoint a reader);
//! * dropping the [`LogWriter`] guard writes what is queued and stops the thread.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Reads how many lines one [`LogWriter`] dropped because its queue was full (for a metrics
/// endpoint). The default reader belongs to no writer and always reads 0.
#[derive(Debug, Clone, Default)]
pub struct DroppedLines(Arc<AtomicU64>);

impl DroppedLines {
    /// Lines dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Default bound on queued bytes (about 16k lines of 250 bytes).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 4 << 20;
/// Default time the writer waits after a wake-up for more lines before writing the batch.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(10);

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogWriterError {
    /// The operating system refused to start the writer thread.
    #[error("cannot start the log writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The queue shared by the handles and the writer thread.
#[derive(Debug)]
struct Queue {
    /// Lines waiting to be written, back to back.
    buf: Vec<u8>,
    /// The writer thread is parked waiting for the first line of a batch.
    idle: bool,
    /// The queue passed the high-water mark; the writer should stop lingering.
    urgent: bool,
    /// The guard was dropped: write what is left and exit.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    max_bytes: usize,
    high_water: usize,
    dropped: DroppedLines,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue inconsistent (appends and
        // swaps only), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one line; never blocks on I/O. Returns false when it was dropped.
    fn push(&self, line: &[u8]) -> bool {
        let mut q = self.lock();
        if q.closed || q.buf.len().saturating_add(line.len()) > self.max_bytes {
            drop(q);
            self.dropped.0.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.buf.extend_from_slice(line);
        let wake = if q.idle {
            q.idle = false;
            true
        } else if !q.urgent && q.buf.len() >= self.high_water {
            q.urgent = true;
            true
        } else {
            false
        };
        drop(q);
        if wake {
            self.wake.notify_one();
        }
        true
    }
}

/// Configures a [`LogWriter`].
#[derive(Debug, Clone)]
pub struct LogWriterBuilder {
    max_queued_bytes: usize,
    linger: Duration,
    thread_name: String,
}

impl Default for LogWriterBuilder {
    fn default() -> Self {
        LogWriterBuilder {
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            linger: DEFAULT_LINGER,
            thread_name: "log-writer".to_owned(),
        }
    }
}

impl LogWriterBuilder {
    /// Bytes the queue may hold before lines are dropped (at least one byte).
    #[must_use]
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes.max(1);
        self
    }

    /// How long the writer waits, once woken by a first line, for more lines to batch.
    /// Zero writes every wake-up's lines at once.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The writer thread's name.
    #[must_use]
    pub fn thread_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.thread_name);
        self
    }

    /// Starts the writer thread over `sink`. Keep the returned guard alive until exit.
    pub fn spawn<W: Write + Send + 'static>(self, sink: W) -> Result<LogWriter, LogWriterError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                buf: Vec::with_capacity(64 * 1024),
                idle: false,
                urgent: false,
                closed: false,
            }),
            wake: Condvar::new(),
            max_bytes: self.max_queued_bytes,
            high_water: (self.max_queued_bytes / 2).max(1),
            dropped: DroppedLines::default(),
        });
        let worker = shared.clone();
        let linger = self.linger;
        let thread = std::thread::Builder::new()
            .name(self.thread_name)
            .spawn(move || run(&worker, linger, sink))
            .map_err(LogWriterError::Spawn)?;
        Ok(LogWriter {
            shared,
            thread: Some(thread),
        })
    }
}

/// The writer thread: park until a line arrives, linger, swap the batch out, write it.
fn run<W: Write>(shared: &Shared, linger: Duration, mut sink: W) {
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let mut q = shared.lock();
        while q.buf.is_empty() && !q.closed {
            q.idle = true;
            q = shared.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        q.idle = false;
        if !linger.is_zero() && !q.closed && !q.urgent {
            q = shared
                .wake
                .wait_timeout_while(q, linger, |q| !q.closed && !q.urgent)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut q.buf, &mut spare);
        q.urgent = false;
        let closed = q.closed;
        drop(q);
        if !spare.is_empty() {
            // A log sink that fails (disk full, closed pipe) cannot be reported anywhere
            // better than the log itself; the batch is discarded and the next one retried.
            let _ = sink.write_all(&spare).and_then(|()| sink.flush());
            spare.clear();
            // Do not keep a huge buffer after a burst.
            if spare.capacity() > 1 << 20 {
                spare = Vec::with_capacity(64 * 1024);
            }
        }
        if closed {
            let _ = sink.flush();
            return;
        }
    }
}

/// The guard of a running writer: hands out [`LogHandle`]s, and on drop writes everything
/// queued and joins the writer thread.
#[derive(Debug)]
pub struct LogWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// A writer with the default settings over `sink`.
    pub fn spawn<W: Write + Send + 'static>(sink: W) -> Result<LogWriter, LogWriterError> {
        LogWriterBuilder::default().spawn(sink)
    }

    /// A builder for other settings.
    pub fn builder() -> LogWriterBuilder {
        LogWriterBuilder::default()
    }

    /// A cheap, cloneable `io::Write` that queues lines for this writer. For tracing-subscriber:
    /// `.with_writer(move || handle.clone())`.
    pub fn handle(&self) -> LogHandle {
        LogHandle {
            shared: self.shared.clone(),
        }
    }

    /// Lines this writer dropped because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// A reader of [`LogWriter::dropped`] that outlives no one: give it to the metrics.
    pub fn drop_counter(&self) -> DroppedLines {
        self.shared.dropped.clone()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Queues lines for a [`LogWriter`]; each `write` call is one line (or several whole lines)
/// and is appended atomically. Writes never block on I/O and never fail: a line that does not
/// fit in the queue is dropped and counted.
#[derive(Debug, Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

impl Write for LogHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            self.shared.push(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A sink recording each `write` call separately.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        /// When set, the sink blocks each write until the flag is cleared.
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Recorder {
        fn joined(&self) -> Vec<u8> {
            self.writes.lock().unwrap().concat()
        }
        fn write_count(&self) -> usize {
            self.writes.lock().unwrap().len()
        }
        fn close_gate(&self) {
            *self.gate.0.lock().unwrap() = true;
        }
        fn open_gate(&self) {
            *self.gate.0.lock().unwrap() = false;
            self.gate.1.notify_all();
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.gate;
            let mut closed = lock.lock().unwrap();
            while *closed {
                closed = cv.wait(closed).unwrap();
            }
            drop(closed);
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn lines_arrive_in_order_from_several_threads() {
        let sink = Recorder::default();
        let w = LogWriter::spawn(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut h = w.handle();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        h.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(w);
        let text = String::from_utf8(sink.joined()).unwrap();
        assert_eq!(text.lines().count(), 2000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..500).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, expected, "thread {t}'s lines out of order or torn");
        }
    }

    #[test]
    fn lines_queued_together_are_written_in_one_batch() {
        let sink = Recorder::default();
        // A long linger: everything written now lands in the first batch.
        let w = LogWriter::builder()
            .linger(Duration::from_secs(30))
            .spawn(sink.clone())
            .unwrap();
        let mut h = w.handle();
        for i in 0..100 {
            writeln!(h, "line {i}").unwrap();
        }
        assert_eq!(sink.write_count(), 0, "written before the batch closed");
        drop(w); // shutdown cuts the linger short
        assert_eq!(sink.write_count(), 1, "one write for the whole batch");
        let text = String::from_utf8(sink.joined()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_lone_line_is_written_without_shutdown() {
        let sink = Recorder::default();
        let w = LogWriter::builder()
            .linger(Duration::from_millis(1))
            .spawn(sink.clone())
            .unwrap();
        writeln!(w.handle(), "hello").unwrap();
        wait_for("the line", || sink.joined() == b"hello\n");
        writeln!(w.handle(), "again").unwrap();
        wait_for("the second line", || sink.joined() == b"hello\nagain\n");
        assert_eq!(w.dropped(), 0);
    }

    #[test]
    fn overflow_drops_and_counts_lines_without_blocking() {
        let sink = Recorder::default();
        sink.close_gate(); // the sink is stuck: nothing leaves the queue after the first batch
        let w = LogWriter::builder()
            .max_queued_bytes(100)
            .linger(Duration::ZERO)
            .spawn(sink.clone())
            .unwrap();
        let mut h = w.handle();
        let counter = w.drop_counter();
        // The first line is taken by the writer (which then blocks in the sink) ...
        h.write_all(b"0123456789\n").unwrap();
        wait_for("the writer to take the first batch", || {
            w.shared.lock().buf.is_empty()
        });
        // ... then 9 lines of 11 bytes fit in 100 bytes, the 10th and later do not.
        for _ in 0..20 {
            h.write_all(b"abcdefghij\n").unwrap();
        }
        assert_eq!(w.dropped(), 11);
        assert_eq!(counter.get(), 11);
        assert_eq!(DroppedLines::default().get(), 0, "a reader of no writer");
        assert_eq!(w.shared.lock().buf.len(), 99);
        sink.open_gate();
        drop(w);
        let text = String::from_utf8(sink.joined()).unwrap();
        assert_eq!(text.lines().count(), 10);
    }

    #[test]
    fn dropping_the_guard_flushes_everything_queued() {
        let sink = Recorder::default();
        let w = LogWriter::builder()
            .linger(Duration::from_secs(60))
            .spawn(sink.clone())
            .unwrap();
        let mut h = w.handle();
        h.write_all(b"last words\n").unwrap();
        drop(w);
        assert_eq!(sink.joined(), b"last words\n");
        // A handle that outlives the guard drops (and counts) instead of blocking or failing.
        h.write_all(b"too late\n").unwrap();
        assert_eq!(h.shared.dropped.get(), 1);
    }

    #[test]
    fn a_full_queue_wakes_the_writer_before_its_linger_ends() {
        let sink = Recorder::default();
        let w = LogWriter::builder()
            .max_queued_bytes(1000)
            .linger(Duration::from_secs(60))
            .spawn(sink.clone())
            .unwrap();
        let mut h = w.handle();
        // Past half of the bound: the writer stops lingering and writes.
        for _ in 0..60 {
            h.write_all(b"0123456789\n").unwrap();
        }
        wait_for("the early batch", || sink.write_count() >= 1);
        assert_eq!(w.dropped(), 0);
        drop(w);
        assert_eq!(sink.joined().len(), 660);
    }
}
