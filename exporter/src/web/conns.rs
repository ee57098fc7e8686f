//! What a client can cost: every open connection has a slot with its phase and the time it entered
//! it. The registry bounds the number of slots, evicts the connections that have not sent a request
//! (slow or idle ones, oldest first) to make room, and closes those past their phase's timeout.
//! No I/O of its own: the server reports phases, the registry decides.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Bounds on what clients may hold (flags `--web.max-connections`, `--web.header-read-timeout`,
/// `--web.idle-timeout`, `--web.max-header-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// From accept (TLS handshake included) or from the first byte of a later request to its last
    /// header byte.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in progress.
    pub idle_timeout: Duration,
    /// Writing one response (a client that stops reading).
    pub write_timeout: Duration,
    pub max_header_bytes: usize,
    /// A connection that has sent part of a request head is not evicted before this: time for the
    /// rest of the head to arrive.
    pub eviction_grace: Duration,
    /// A connection that has sent nothing yet is not evicted before this: a client busy elsewhere
    /// (a loaded scraper) may take a while to write its first request.
    pub silent_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            eviction_grace: Duration::from_millis(50),
            silent_grace: Duration::from_secs(1),
        }
    }
}

/// Where a connection is. Only `Busy` connections are never evicted to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; nothing received yet.
    Opening = 0,
    /// Bytes of a request (or of the TLS handshake) arrived; the request head is not complete.
    Reading = 1,
    /// A request is being answered (handler or response body in flight).
    Busy = 2,
    /// Kept alive between requests.
    Idle = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Opening,
            1 => Phase::Reading,
            2 => Phase::Busy,
            _ => Phase::Idle,
        }
    }
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Made room for a new connection at the limit.
    Evicted,
    HeaderTimeout,
    IdleTimeout,
    WriteTimeout,
}

impl CloseReason {
    pub const ALL: [CloseReason; 4] = [
        CloseReason::Evicted,
        CloseReason::HeaderTimeout,
        CloseReason::IdleTimeout,
        CloseReason::WriteTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Evicted => "evicted",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::WriteTimeout => "write_timeout",
        }
    }
}

/// One connection's state, shared by its task, its I/O wrapper and the registry.
#[derive(Debug)]
pub struct Conn {
    epoch: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    kill: Notify,
    /// The socket, to ask the kernel whether bytes wait unread (-1: unknown).
    fd: AtomicI32,
}

impl Conn {
    fn new(epoch: Instant, now: Instant) -> Conn {
        Conn {
            epoch,
            phase: AtomicU8::new(Phase::Opening as u8),
            since_ms: AtomicU64::new(ms(epoch, now)),
            kill: Notify::new(),
            fd: AtomicI32::new(-1),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase, now: Instant) {
        self.since_ms.store(ms(self.epoch, now), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The first bytes of a fresh connection arrived: `Opening` becomes `Reading`, keeping the time
    /// of accept (the header timeout counts from there).
    fn received(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Opening as u8,
            Phase::Reading as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Remember the connection's socket (the registry asks it about unread bytes before evicting).
    pub fn set_fd(&self, fd: i32) {
        self.fd.store(fd, Ordering::Relaxed);
    }

    /// Bytes the client sent that the server has not read yet: the client is waiting on us, not
    /// the other way round, so this connection is not a slow one.
    fn has_unread_bytes(&self) -> bool {
        let fd = self.fd.load(Ordering::Relaxed);
        if fd < 0 {
            return false;
        }
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through a valid pointer; a stale or closed fd only makes
        // the call fail (or describe another socket, which only changes which connection is evicted).
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) };
        rc == 0 && pending > 0
    }

    fn since(&self) -> Duration {
        Duration::from_millis(self.since_ms.load(Ordering::Relaxed))
    }

    /// Resolves when the registry closes this connection (also if that happened before the call).
    pub async fn killed(&self) {
        self.kill.notified().await
    }
}

fn ms(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Counters of the server's own work, for `kepler_exporter_http_*`.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub accepted: AtomicU64,
    pub accept_errors: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    closed: [AtomicU64; 4],
}

impl ConnStats {
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    /// Most connections open at once since the last memory trim.
    high_water: usize,
}

/// The open connections of one server.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    epoch: Instant,
    slots: Mutex<Slots>,
    freed: Notify,
    pub stats: ConnStats,
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    pub conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
        self.registry.freed.notify_waiters();
    }
}

impl Registry {
    pub fn new(limits: Limits, epoch: Instant) -> Arc<Registry> {
        Arc::new(Registry {
            limits,
            epoch,
            slots: Mutex::new(Slots::default()),
            freed: Notify::new(),
            stats: ConnStats::default(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn close(&self, slots: &mut Slots, id: u64, reason: CloseReason) {
        if let Some(conn) = slots.open.remove(&id) {
            conn.kill.notify_one();
            self.stats.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A slot for a connection accepted at `now`. At the limit, the longest idle kept-alive
    /// connection is closed to make room (its client reconnects and sends again, as HTTP clients do
    /// for a closed idle connection); else the one that has waited longest (beyond `eviction_grace`)
    /// with part of a request head and nothing more pending (a slow client); else one that has sent
    /// nothing for `silent_grace`. Never one with bytes waiting unread in the kernel (its client waits
    /// on us). `None` when every connection is answering a request or within its grace: wait with
    /// `freed`, then try again (the newcomer waits, nobody fails).
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Slot> {
        let mut slots = self.lock();
        if slots.open.len() >= self.limits.max_connections {
            let now_ms = Duration::from_millis(ms(self.epoch, now));
            let victim = |wanted: &[Phase], min_age: Duration| {
                slots
                    .open
                    .iter()
                    .filter(|(_, c)| wanted.contains(&c.phase()))
                    .filter(|(_, c)| now_ms.saturating_sub(c.since()) >= min_age)
                    .filter(|(_, c)| !c.has_unread_bytes())
                    .min_by_key(|(id, c)| (c.since(), **id))
                    .map(|(id, _)| *id)
            };
            let id = victim(&[Phase::Idle], Duration::ZERO)
                .or_else(|| victim(&[Phase::Reading], self.limits.eviction_grace))
                .or_else(|| victim(&[Phase::Opening], self.limits.silent_grace))?;
            self.close(&mut slots, id, CloseReason::Evicted);
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let conn = Arc::new(Conn::new(self.epoch, now));
        slots.open.insert(id, conn.clone());
        slots.high_water = slots.high_water.max(slots.open.len());
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            registry: self.clone(),
            id,
            conn,
        })
    }

    /// Resolves after some slot is freed (or after `max_wait`, to re-check).
    pub async fn freed(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.freed.notified()).await;
    }

    /// Close the connections past their phase's timeout. Returns how many were closed, and whether
    /// the registry just emptied after a crowd (then the allocator may give memory back).
    pub fn reap(&self, now: Instant) -> (usize, bool) {
        let mut slots = self.lock();
        let now = Duration::from_millis(ms(self.epoch, now));
        let expired: Vec<(u64, CloseReason)> = slots
            .open
            .iter()
            .filter_map(|(id, c)| {
                let age = now.saturating_sub(c.since());
                let (limit, reason) = match c.phase() {
                    Phase::Opening | Phase::Reading => {
                        (self.limits.header_read_timeout, CloseReason::HeaderTimeout)
                    }
                    Phase::Idle => (self.limits.idle_timeout, CloseReason::IdleTimeout),
                    Phase::Busy => (self.limits.write_timeout, CloseReason::WriteTimeout),
                };
                (age > limit).then_some((*id, reason))
            })
            .collect();
        for (id, reason) in &expired {
            self.close(&mut slots, *id, *reason);
        }
        let crowd_left = slots.open.is_empty() && slots.high_water >= 16;
        if slots.open.is_empty() {
            slots.high_water = 0;
        }
        (expired.len(), crowd_left)
    }
}

/// A stream that moves its connection from `Idle` to `Reading` when bytes of a new request arrive,
/// so a client that dribbles a request head on a kept-alive connection meets the header timeout.
pub struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, conn: Arc<Conn>) -> Tracked<S> {
        Tracked { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            match self.conn.phase() {
                Phase::Idle => self.conn.set_phase(Phase::Reading, Instant::now()),
                Phase::Opening => self.conn.received(),
                Phase::Reading | Phase::Busy => {}
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> (Arc<Registry>, Instant) {
        let epoch = Instant::now();
        let limits = Limits {
            max_connections: max,
            ..Limits::default()
        };
        (Registry::new(limits, epoch), epoch)
    }

    #[test]
    fn at_the_limit_the_oldest_slow_connection_makes_room() {
        let (r, t0) = registry(3);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let a = r.admit(at(0)).unwrap();
        let b = r.admit(at(10)).unwrap();
        let c = r.admit(at(20)).unwrap();
        a.conn.set_phase(Phase::Busy, at(30)); // answering: never evicted
        b.conn.set_phase(Phase::Idle, at(30)); // kept alive between requests
        c.conn.received(); // part of a request head arrived
                           // The idle b goes first: its client reconnects; c may still be about to send.
        let d = r.admit(at(140)).unwrap();
        assert_eq!(r.stats.closed(CloseReason::Evicted), 1);
        assert!(tokio_test_killed(&b));
        assert!(!tokio_test_killed(&c));
        assert_eq!(r.open(), 3);
        drop(b); // its task ends after the kill; the slot is already gone
        assert_eq!(r.open(), 3);
        // No idle one left: c sent no request head for 130 ms (past the grace) and goes; d, 10 ms
        // old, is spared.
        let _e = r.admit(at(150)).unwrap();
        assert_eq!(r.stats.closed(CloseReason::Evicted), 2);
        assert!(tokio_test_killed(&c));
        assert!(!tokio_test_killed(&d));
        drop((a, c, d));
    }

    /// Whether the registry closed this slot's connection.
    fn tokio_test_killed(slot: &Slot) -> bool {
        let registry = slot.registry.lock();
        !registry.open.contains_key(&slot.id)
    }

    #[test]
    fn young_connections_are_not_evicted_idle_ones_are() {
        let (r, t0) = registry(2);
        let a = r.admit(t0).unwrap();
        let b = r.admit(t0).unwrap();
        // Both still opening and younger than the grace: the newcomer waits.
        assert!(r.admit(t0 + Duration::from_millis(10)).is_none());
        // An idle one may go at once.
        b.conn
            .set_phase(Phase::Idle, t0 + Duration::from_millis(20));
        assert!(r.admit(t0 + Duration::from_millis(21)).is_some());
        assert_eq!(r.stats.closed(CloseReason::Evicted), 1);
        drop((a, b));
    }

    #[test]
    fn a_silent_connection_gets_longer_than_a_slow_one() {
        let (r, t0) = registry(2);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let silent = r.admit(at(0)).unwrap();
        let slow = r.admit(at(0)).unwrap();
        slow.conn.received();
        // At 100 ms the slow one (part of a head, nothing pending) goes; the silent one stays.
        let third = r.admit(at(100)).unwrap();
        assert!(tokio_test_killed(&slow) && !tokio_test_killed(&silent));
        third.conn.set_phase(Phase::Busy, at(100));
        // Within its second the silent one is spared: the newcomer waits.
        assert!(r.admit(at(900)).is_none());
        // After a second without a byte it makes room.
        assert!(r.admit(at(1001)).is_some());
        assert!(tokio_test_killed(&silent));
        drop((silent, slow, third));
    }

    #[test]
    fn all_busy_means_no_room_until_one_ends() {
        let (r, t0) = registry(2);
        let a = r.admit(t0).unwrap();
        let b = r.admit(t0).unwrap();
        a.conn.set_phase(Phase::Busy, t0);
        b.conn.set_phase(Phase::Busy, t0);
        assert!(r.admit(t0).is_none());
        drop(b);
        assert!(r.admit(t0).is_some());
        assert_eq!(r.stats.closed(CloseReason::Evicted), 0);
        drop(a);
    }

    #[test]
    fn reaper_closes_by_phase_timeout() {
        let (r, t0) = registry(10);
        let l = *r.limits();
        let opening = r.admit(t0).unwrap();
        let idle = r.admit(t0).unwrap();
        idle.conn.set_phase(Phase::Idle, t0);
        let busy = r.admit(t0).unwrap();
        busy.conn.set_phase(Phase::Busy, t0);
        assert_eq!(r.reap(t0 + l.header_read_timeout).0, 0);
        assert_eq!(
            r.reap(t0 + l.header_read_timeout + Duration::from_millis(5))
                .0,
            1
        );
        assert_eq!(r.stats.closed(CloseReason::HeaderTimeout), 1);
        assert_eq!(r.reap(t0 + l.write_timeout + Duration::from_millis(5)).0, 1);
        assert_eq!(r.stats.closed(CloseReason::WriteTimeout), 1);
        assert_eq!(r.reap(t0 + l.idle_timeout + Duration::from_millis(5)).0, 1);
        assert_eq!(r.stats.closed(CloseReason::IdleTimeout), 1);
        assert_eq!(r.open(), 0);
        drop((opening, idle, busy));
    }

    #[tokio::test]
    async fn a_kill_before_the_task_waits_is_not_lost() {
        let (r, t0) = registry(1);
        let a = r.admit(t0).unwrap();
        a.conn.received();
        let _b = r.admit(t0 + Duration::from_millis(60)).unwrap(); // evicts a before anyone awaits its kill
        tokio::time::timeout(Duration::from_secs(1), a.conn.killed())
            .await
            .expect("the eviction reached the connection");
    }
}
