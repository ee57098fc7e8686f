//! What a client can cost: every accepted connection first waits, holding no slot, until its first
//! request head is complete (the waiting room); only then does it take one of the bounded slots that
//! the HTTP engine serves. Each connection has a phase and the time it entered it. The registry bounds
//! both, makes room by closing the connections that hold no request (idle or slow ones, oldest
//! first) and closes those past their phase's timeout. No I/O of its own: the server reports phases,
//! the registry decides.

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
    /// Accepted connections without a slot (first request head not complete, or waiting for a
    /// slot); `waiting_room_for(max_connections)` unless a test sets it.
    pub(crate) max_waiting: usize,
    /// From accept (TLS handshake included) or from the first byte of a later request to its last
    /// header byte.
    pub(crate) header_read_timeout: Duration,
    /// A kept-alive connection with no request in progress.
    pub(crate) idle_timeout: Duration,
    /// Writing one response (a client that stops reading).
    pub(crate) write_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    /// A connection that has sent part of a request head is not evicted before this: time for the
    /// rest of the head to arrive.
    pub(crate) eviction_grace: Duration,
    /// A connection that has sent nothing yet is not evicted before this: a client busy elsewhere
    /// (a loaded scraper) may take a while to write its first request.
    pub(crate) silent_grace: Duration,
}

impl Limits {
    /// The waiting room for `max_connections` slots: sixteen per slot, between 256 and 65,536. A
    /// waiting connection costs a socket, a small task and the bytes it has sent.
    pub(crate) fn waiting_room_for(max_connections: usize) -> usize {
        max_connections.saturating_mul(16).clamp(256, 65_536)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_waiting: Limits::waiting_room_for(64),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            eviction_grace: Duration::from_millis(50),
            silent_grace: Duration::from_secs(1),
        }
    }
}

/// Where a connection is. `Queued` and `Busy` connections are never closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; nothing received yet.
    Opening = 0,
    /// Bytes of a request (or of the TLS handshake) arrived; the request head is not complete.
    Reading = 1,
    /// A request is being answered (handler or response body in flight).
    Busy = 2,
    /// Kept alive between requests.
    Idle = 3,
    /// The first request head (or the TLS ClientHello) is complete: waiting for a slot, or handed to
    /// the HTTP engine and not answered yet.
    Queued = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Opening,
            1 => Phase::Reading,
            2 => Phase::Busy,
            4 => Phase::Queued,
            _ => Phase::Idle,
        }
    }
}

crate::issue::labelled! {
    /// Why the server closed a connection.
    pub(crate) enum CloseReason {
        /// Made room for a new connection at the limit.
        Evicted => "evicted",
        HeaderTimeout => "header_timeout",
        IdleTimeout => "idle_timeout",
        WriteTimeout => "write_timeout",
        /// Answered 503: the waiting room was full, or a complete request found no slot within the
        /// header-read timeout.
        Overloaded => "overloaded",
    }
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 5] = [
        CloseReason::Evicted,
        CloseReason::HeaderTimeout,
        CloseReason::IdleTimeout,
        CloseReason::WriteTimeout,
        CloseReason::Overloaded,
    ];
}

/// One connection's state, shared by its task, its I/O wrapper and the registry.
#[derive(Debug)]
pub(crate) struct Conn {
    epoch: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    kill: Notify,
    /// The socket, to ask the kernel whether bytes wait unread (-1: unknown).
    fd: AtomicI32,
    /// The registry's signal to connections waiting for a slot.
    room: Arc<Notify>,
}

impl Conn {
    fn new(epoch: Instant, now: Instant, room: Arc<Notify>) -> Conn {
        Conn {
            epoch,
            phase: AtomicU8::new(Phase::Opening as u8),
            since_ms: AtomicU64::new(ms(epoch, now)),
            kill: Notify::new(),
            fd: AtomicI32::new(-1),
            room,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub(crate) fn set_phase(&self, phase: Phase, now: Instant) {
        self.since_ms.store(ms(self.epoch, now), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
        if phase == Phase::Idle {
            // An idle connection can make room: wake one connection waiting for a slot.
            self.room.notify_one();
        }
    }

    /// The first bytes of a fresh connection arrived: `Opening` becomes `Reading`, keeping the time
    /// of accept (the header timeout counts from there).
    pub(crate) fn received(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Opening as u8,
            Phase::Reading as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Remember the connection's socket (the registry asks it about unread bytes before evicting).
    pub(crate) fn set_fd(&self, fd: i32) {
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
    pub(crate) async fn killed(&self) {
        self.kill.notified().await
    }
}

fn ms(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Counters of the server's own work, for `kepler_exporter_http_*`.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    closed: [AtomicU64; 5],
}

impl ConnStats {
    pub(crate) fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    /// Connections holding a slot: served by the HTTP engine.
    open: HashMap<u64, Arc<Conn>>,
    /// Accepted connections without a slot: their first request head is not complete yet, or it is
    /// and they wait for a slot.
    waiting: HashMap<u64, Arc<Conn>>,
    /// Most connections (open and waiting) at once since the last memory trim.
    high_water: usize,
}

impl Slots {
    /// The oldest connection of `map` in the first `(phase, min_age)` of `tries` that has one: in
    /// that phase for at least `min_age`, with no bytes waiting unread in the kernel (a client with
    /// unread bytes waits on us).
    fn victim(
        map: &HashMap<u64, Arc<Conn>>,
        now: Duration,
        tries: [(Phase, Duration); 2],
    ) -> Option<u64> {
        tries.into_iter().find_map(|(wanted, min_age)| {
            let mut candidates: Vec<(Duration, u64, &Arc<Conn>)> = map
                .iter()
                .filter(|(_, c)| c.phase() == wanted)
                .map(|(id, c)| (c.since(), *id, c))
                .filter(|(since, _, _)| now.saturating_sub(*since) >= min_age)
                .collect();
            candidates.sort_unstable_by_key(|(since, id, _)| (*since, *id));
            // Oldest first; the kernel is asked about unread bytes only until one qualifies.
            candidates
                .into_iter()
                .find(|(_, _, c)| !c.has_unread_bytes())
                .map(|(_, id, _)| id)
        })
    }
}

/// The open connections of one server.
#[derive(Debug)]
pub(crate) struct Registry {
    limits: Limits,
    epoch: Instant,
    slots: Mutex<Slots>,
    /// Signalled (one waiter at a time) when a slot is freed or a connection goes idle.
    freed: Arc<Notify>,
    pub(crate) stats: ConnStats,
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    registry: Arc<Registry>,
    id: u64,
    #[cfg(test)]
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
        self.registry.freed.notify_one();
    }
}

/// An accepted connection in the waiting room; dropping it (or turning it into a `Slot`) leaves.
#[derive(Debug)]
pub(crate) struct Waiting {
    registry: Arc<Registry>,
    id: u64,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.registry.lock().waiting.remove(&self.id);
    }
}

impl Waiting {
    /// The connection's request head is complete (or its TLS ClientHello): from now on it is never
    /// closed to make room, and it competes for a slot.
    pub(crate) fn queued(&self, now: Instant) {
        self.conn.set_phase(Phase::Queued, now);
    }

    /// A slot, if one is free or can be made free by closing a connection that holds no request:
    /// the longest idle kept-alive one (its client reconnects and sends again, as HTTP clients do for
    /// a closed idle connection), else the one that has waited longest (beyond `eviction_grace`) with
    /// part of a later request head and nothing more pending. `Err(self)` when every slot is
    /// answering a request or within its grace: wait with `Registry::freed`, then try again.
    pub(crate) fn take_slot(self, now: Instant) -> Result<Slot, Waiting> {
        let registry = self.registry.clone();
        let mut slots = registry.lock();
        if !slots.waiting.contains_key(&self.id) {
            // Closed while it waited (timeout): its task sees the kill.
            drop(slots);
            return Err(self);
        }
        if slots.open.len() >= registry.limits.max_connections {
            let tries = [
                (Phase::Idle, Duration::ZERO),
                (Phase::Reading, registry.limits.eviction_grace),
            ];
            let Some(id) = Slots::victim(&slots.open, registry.since_epoch(now), tries) else {
                drop(slots);
                return Err(self);
            };
            registry.close(&mut slots, id, CloseReason::Evicted);
        }
        if let Some(conn) = slots.waiting.remove(&self.id) {
            slots.open.insert(self.id, conn);
        }
        drop(slots);
        // Dropping `self` removes nothing now: the entry moved to `open`, which the slot owns.
        Ok(Slot {
            registry,
            id: self.id,
            #[cfg(test)]
            conn: self.conn.clone(),
        })
    }
}

impl Registry {
    pub(crate) fn new(limits: Limits, epoch: Instant) -> Arc<Registry> {
        Arc::new(Registry {
            limits,
            epoch,
            slots: Mutex::new(Slots::default()),
            freed: Arc::new(Notify::new()),
            stats: ConnStats::default(),
        })
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// `now` as the registry's clock reads it (milliseconds since its epoch).
    fn since_epoch(&self, now: Instant) -> Duration {
        Duration::from_millis(ms(self.epoch, now))
    }

    fn close(&self, slots: &mut Slots, id: u64, reason: CloseReason) {
        let conn = slots.open.remove(&id);
        if let Some(conn) = conn.or_else(|| slots.waiting.remove(&id)) {
            conn.kill.notify_one();
            self.stats.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A place in the waiting room for a connection accepted at `now`. When the room is full, the
    /// connection that has waited longest (beyond `eviction_grace`) with part of a request head and
    /// nothing more pending leaves (a slow client), else one that has sent nothing for `silent_grace`.
    /// Never one with a complete request head. `None` when none can go: answer 503.
    pub(crate) fn arrive(self: &Arc<Self>, now: Instant) -> Option<Waiting> {
        let mut slots = self.lock();
        if slots.waiting.len() >= self.limits.max_waiting {
            let tries = [
                (Phase::Reading, self.limits.eviction_grace),
                (Phase::Opening, self.limits.silent_grace),
            ];
            let id = Slots::victim(&slots.waiting, self.since_epoch(now), tries)?;
            self.close(&mut slots, id, CloseReason::Evicted);
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let conn = Arc::new(Conn::new(self.epoch, now, self.freed.clone()));
        slots.waiting.insert(id, conn.clone());
        slots.high_water = slots.high_water.max(slots.open.len() + slots.waiting.len());
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Waiting {
            registry: self.clone(),
            id,
            conn,
        })
    }

    /// Count a connection answered 503 and closed (the waiting room was full, or no slot came).
    pub(crate) fn overloaded(&self) {
        self.stats.closed[CloseReason::Overloaded as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections in the waiting room (no slot yet).
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Resolves after a slot is freed or a connection went idle (or after `max_wait`, to re-check:
    /// a slow connection becomes evictable with time alone).
    pub(crate) async fn freed(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.freed.notified()).await;
    }

    /// Close the connections past their phase's timeout. Returns how many were closed, and whether
    /// the registry just emptied after a crowd (then the allocator may give memory back). A complete
    /// request that found no slot within the header-read timeout is closed as `Overloaded` (its task
    /// answers 503).
    pub(crate) fn reap(&self, now: Instant) -> (usize, bool) {
        let mut slots = self.lock();
        let now = self.since_epoch(now);
        let limits = &self.limits;
        let expired_in = |map: &HashMap<u64, Arc<Conn>>, waiting: bool| {
            map.iter()
                .filter_map(|(id, c)| {
                    let age = now.saturating_sub(c.since());
                    let (limit, reason) = match c.phase() {
                        Phase::Opening | Phase::Reading => {
                            (limits.header_read_timeout, CloseReason::HeaderTimeout)
                        }
                        Phase::Queued if waiting => {
                            (limits.header_read_timeout, CloseReason::Overloaded)
                        }
                        Phase::Queued => (limits.header_read_timeout, CloseReason::HeaderTimeout),
                        Phase::Idle => (limits.idle_timeout, CloseReason::IdleTimeout),
                        Phase::Busy => (limits.write_timeout, CloseReason::WriteTimeout),
                    };
                    (age > limit).then_some((*id, reason))
                })
                .collect::<Vec<_>>()
        };
        let mut expired = expired_in(&slots.open, false);
        expired.extend(expired_in(&slots.waiting, true));
        for (id, reason) in &expired {
            self.close(&mut slots, *id, *reason);
        }
        let empty = slots.open.is_empty() && slots.waiting.is_empty();
        let crowd_left = empty && slots.high_water >= 16;
        if empty {
            slots.high_water = 0;
        }
        (expired.len(), crowd_left)
    }
}

/// A stream that first gives back the bytes read while the connection waited (`prefix`), then
/// moves its connection from `Idle` to `Reading` when bytes of a new request arrive, so a client that
/// dribbles a request head on a kept-alive connection meets the header timeout.
pub(crate) struct Tracked<S> {
    prefix: bytes::Bytes,
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(prefix: bytes::Bytes, inner: S, conn: Arc<Conn>) -> Tracked<S> {
        Tracked {
            prefix,
            inner,
            conn,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            match self.conn.phase() {
                Phase::Idle => self.conn.set_phase(Phase::Reading, Instant::now()),
                Phase::Opening => self.conn.received(),
                Phase::Reading | Phase::Busy | Phase::Queued => {}
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

    /// A connection accepted at `now` whose request head is complete at once, given a slot if one
    /// can be had.
    fn admit(r: &Arc<Registry>, now: Instant) -> Option<Slot> {
        let waiting = r.arrive(now)?;
        waiting.queued(now);
        waiting.take_slot(now).ok()
    }

    /// Whether the registry closed this slot's connection.
    fn killed(slot: &Slot) -> bool {
        !slot.registry.lock().open.contains_key(&slot.id)
    }

    fn killed_waiting(w: &Waiting) -> bool {
        !w.registry.lock().waiting.contains_key(&w.id)
    }

    #[test]
    fn at_the_limit_an_idle_then_a_slow_connection_makes_room() {
        let (r, t0) = registry(3);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let a = admit(&r, at(0)).unwrap();
        let b = admit(&r, at(10)).unwrap();
        let c = admit(&r, at(20)).unwrap();
        a.conn.set_phase(Phase::Busy, at(30)); // answering: never evicted
        b.conn.set_phase(Phase::Idle, at(30)); // kept alive between requests
        c.conn.set_phase(Phase::Reading, at(30)); // part of a later request head
                                                  // The idle b goes first: its client reconnects; c may still be about to send.
        let d = admit(&r, at(60)).unwrap();
        assert_eq!(r.stats.closed(CloseReason::Evicted), 1);
        assert!(killed(&b) && !killed(&c));
        assert_eq!(r.open(), 3);
        drop(b); // its task ends after the kill; the slot is already gone
        assert_eq!(r.open(), 3);
        // No idle one left: c has dribbled for 120 ms (past the grace) and goes; d, whose request
        // is complete, is never closed to make room.
        let _e = admit(&r, at(150)).unwrap();
        assert_eq!(r.stats.closed(CloseReason::Evicted), 2);
        assert!(killed(&c) && !killed(&d));
        drop((a, c, d));
    }

    #[test]
    fn complete_requests_keep_their_slot_idle_ones_do_not() {
        let (r, t0) = registry(2);
        let a = admit(&r, t0).unwrap();
        let b = admit(&r, t0).unwrap();
        // Both hold a complete request: the newcomer waits, holding its place.
        let c = r.arrive(t0).unwrap();
        c.queued(t0);
        let c = c.take_slot(t0 + Duration::from_secs(5)).unwrap_err();
        // An idle one may go at once.
        b.conn
            .set_phase(Phase::Idle, t0 + Duration::from_millis(20));
        let c = c.take_slot(t0 + Duration::from_millis(21)).unwrap();
        assert_eq!(r.stats.closed(CloseReason::Evicted), 1);
        assert!(killed(&b) && !killed(&a) && !killed(&c));
        assert_eq!((r.open(), r.waiting()), (2, 0));
        drop((a, b, c));
        assert_eq!(r.open(), 0);
    }

    #[test]
    fn slow_connections_wait_without_a_slot() {
        let (r, t0) = registry(2);
        // Many clients that never finish a head hold no slot, so a complete request finds one.
        let slow: Vec<Waiting> = (0..100).map(|_| r.arrive(t0).unwrap()).collect();
        for w in &slow {
            w.conn.received();
        }
        let scrape = admit(&r, t0 + Duration::from_millis(1)).unwrap();
        assert_eq!((r.open(), r.waiting()), (1, 100));
        assert_eq!(r.stats.closed(CloseReason::Evicted), 0);
        drop((slow, scrape));
        assert_eq!((r.open(), r.waiting()), (0, 0));
    }

    #[test]
    fn a_full_waiting_room_sends_slow_then_silent_ones_away_never_complete_ones() {
        let epoch = Instant::now();
        let limits = Limits {
            max_connections: 1,
            max_waiting: 3,
            ..Limits::default()
        };
        let r = Registry::new(limits, epoch);
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        let silent = r.arrive(at(0)).unwrap();
        let slow = r.arrive(at(0)).unwrap();
        slow.conn.received();
        let complete = r.arrive(at(0)).unwrap();
        complete.queued(at(0));
        // Within the grace nobody leaves: the newcomer is refused (503).
        assert!(r.arrive(at(10)).is_none());
        // At 100 ms the slow one (part of a head, nothing pending) goes; the silent one stays.
        let third = r.arrive(at(100)).unwrap();
        assert!(killed_waiting(&slow) && !killed_waiting(&silent));
        third.queued(at(100));
        // Within its second the silent one is spared.
        assert!(r.arrive(at(900)).is_none());
        // After a second without a byte it makes room; the complete ones never do.
        let fourth = r.arrive(at(1001)).unwrap();
        fourth.queued(at(1001));
        assert!(killed_waiting(&silent));
        assert!(r.arrive(at(5000)).is_none());
        assert!(!killed_waiting(&complete) && !killed_waiting(&third));
        assert_eq!(r.stats.closed(CloseReason::Evicted), 2);
        drop((silent, slow, complete, third, fourth));
    }

    #[test]
    fn all_busy_means_no_room_until_one_ends() {
        let (r, t0) = registry(2);
        let a = admit(&r, t0).unwrap();
        let b = admit(&r, t0).unwrap();
        a.conn.set_phase(Phase::Busy, t0);
        b.conn.set_phase(Phase::Busy, t0);
        assert!(admit(&r, t0).is_none());
        drop(b);
        assert!(admit(&r, t0).is_some());
        assert_eq!(r.stats.closed(CloseReason::Evicted), 0);
        drop(a);
    }

    #[test]
    fn reaper_closes_by_phase_timeout() {
        let (r, t0) = registry(2);
        let l = *r.limits();
        let opening = r.arrive(t0).unwrap();
        let idle = admit(&r, t0).unwrap();
        idle.conn.set_phase(Phase::Idle, t0);
        let busy = admit(&r, t0).unwrap();
        busy.conn.set_phase(Phase::Busy, t0);
        // A complete request that finds no slot.
        let queued = r.arrive(t0).unwrap();
        queued.queued(t0);
        assert_eq!(r.reap(t0 + l.header_read_timeout).0, 0);
        assert_eq!(
            r.reap(t0 + l.header_read_timeout + Duration::from_millis(5))
                .0,
            2
        );
        assert_eq!(r.stats.closed(CloseReason::HeaderTimeout), 1);
        assert_eq!(r.stats.closed(CloseReason::Overloaded), 1);
        assert_eq!(r.reap(t0 + l.write_timeout + Duration::from_millis(5)).0, 1);
        assert_eq!(r.stats.closed(CloseReason::WriteTimeout), 1);
        assert_eq!(r.reap(t0 + l.idle_timeout + Duration::from_millis(5)).0, 1);
        assert_eq!(r.stats.closed(CloseReason::IdleTimeout), 1);
        assert_eq!((r.open(), r.waiting()), (0, 0));
        // A connection closed while it waited gets no slot.
        assert!(queued.take_slot(t0).is_err());
        drop((opening, idle, busy));
    }

    #[tokio::test]
    async fn a_kill_before_the_task_waits_is_not_lost() {
        let (r, t0) = registry(1);
        let a = admit(&r, t0).unwrap();
        a.conn.set_phase(Phase::Reading, t0);
        let _b = admit(&r, t0 + Duration::from_millis(60)).unwrap(); // evicts a before anyone awaits its kill
        tokio::time::timeout(Duration::from_secs(1), a.conn.killed())
            .await
            .expect("the eviction reached the connection");
    }

    #[tokio::test]
    async fn the_prefix_is_read_before_the_socket() {
        use tokio::io::AsyncReadExt;
        let (r, t0) = registry(1);
        let slot = admit(&r, t0).unwrap();
        let rest: &[u8] = b" world";
        let mut s = Tracked::new(bytes::Bytes::from_static(b"hello"), rest, slot.conn.clone());
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
