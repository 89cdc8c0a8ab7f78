//! Corked connections: the responses that finish in the same pass of the
//! scheduler leave in one `writev`, not one each.
//!
//! Why: under load the server reads many requests per `read`, but hyper's
//! HTTP/2 connection task is woken by the first response that completes and
//! (tokio runs a just-woken task next) flushes it alone, so every response
//! paid for its own system call and its own trip through the kernel's
//! loopback TCP. Profiling `GetScore` at 64 calls in flight showed one
//! `writev` per call and 42% of the server's CPU inside them (BENCHMARKS.md).
//!
//! [`Corked`] accepts small writes into a buffer (large ones, such as a
//! stream's DATA frames, go straight through). On the first flush of a batch it
//! yields once (`tokio::task::yield_now`: the task runs again only after
//! the tasks already runnable on this worker, i.e. the other calls that are
//! about to finish), then writes everything buffered in one call. No timer
//! is involved, so a lone call waits one scheduler pass, not a Nagle delay.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes above which a write first sends what is buffered.
const LIMIT: usize = 64 * 1024;

/// Writes this large go straight through (after what is buffered): a
/// stream's 16 KiB DATA frames gain nothing from waiting and would only be
/// copied (measured: `StreamTargets` of 1M rows lost about 15% when they
/// were buffered too).
const BYPASS: usize = 8 * 1024;

/// The largest buffer an idle connection keeps (a batch of small responses
/// fits).
const KEEP: usize = 16 * 1024;

type Yield = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

pub struct Corked<T> {
    io: T,
    /// Bytes accepted but not yet written; `pending[written..]` is left.
    pending: Vec<u8>,
    written: usize,
    /// The flush of a batch waiting out its scheduler pass, and whether it
    /// has (a finished `yield_now` must not be polled again).
    yielding: Option<Yield>,
    yielded: bool,
}

impl<T> Corked<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: Vec::new(),
            written: 0,
            yielding: None,
            yielded: false,
        }
    }

    fn buffered(&self) -> usize {
        self.pending.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Corked<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.pending.capacity() > KEEP {
            // A burst of large writes: do not keep its buffer for the life
            // of an idle connection.
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `incoming` more bytes; `true` when they should
    /// bypass the buffer (see [`BYPASS`]).
    fn poll_room(&mut self, cx: &mut Context<'_>, incoming: usize) -> Poll<io::Result<bool>> {
        let bypass = incoming >= BYPASS;
        if bypass || self.buffered() + incoming > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(bypass))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Corked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, total))? {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered() > 0 {
            if !this.yielded {
                let yielding = this
                    .yielding
                    .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
                ready!(yielding.as_mut().poll(cx));
                this.yielding = None;
                this.yielded = true;
            }
            ready!(this.poll_drain(cx))?;
            this.yielded = false;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Corked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Corked<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// What [`connector`] connects: a corked TCP stream, for hyper.
pub type CorkedTcp = hyper_util::rt::TokioIo<Corked<tokio::net::TcpStream>>;

/// A connector for [`tonic::transport::Endpoint::connect_with_connector`]:
/// plain TCP with Nagle off, corked, so a client with many calls in flight
/// on one connection sends the requests that are ready together. TLS, when
/// the endpoint has it, goes on top.
pub fn connector() -> impl tower::Service<
    http::Uri,
    Response = CorkedTcp,
    Error = io::Error,
    Future = impl Future<Output = io::Result<CorkedTcp>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|uri: http::Uri| async move {
        let invalid =
            |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        // An IPv6 literal keeps its brackets in the URI.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(hyper_util::rt::TokioIo::new(Corked::new(stream)))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Records every write the corked stream makes, taking at most `max`
    /// bytes per write (a socket with a small buffer).
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        flushes: Arc<Mutex<usize>>,
        shut: Arc<Mutex<bool>>,
        max: Option<usize>,
    }

    impl Recorder {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.writes.lock().unwrap().clone()
        }

        fn bytes(&self) -> Vec<u8> {
            self.writes().concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.max.map_or(data.len(), |m| m.min(data.len()));
            self.writes.lock().unwrap().push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.flushes.lock().unwrap() += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.shut.lock().unwrap() = true;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_leave_in_one_write() {
        let inner = Recorder::default();
        let mut corked = Corked::new(inner.clone());
        corked.write_all(b"headers").await.unwrap();
        let slices = [io::IoSlice::new(b"-data"), io::IoSlice::new(b"-trailers")];
        assert_eq!(corked.write_vectored(&slices).await.unwrap(), 14);
        assert!(
            inner.writes().is_empty(),
            "nothing is written before a flush"
        );
        corked.flush().await.unwrap();
        assert_eq!(inner.writes(), vec![b"headers-data-trailers".to_vec()]);
        assert_eq!(*inner.flushes.lock().unwrap(), 1);
        // Nothing buffered: a flush goes straight through.
        corked.flush().await.unwrap();
        assert_eq!(inner.writes().len(), 1);
        assert_eq!(*inner.flushes.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_flush_first_lets_the_other_runnable_tasks_add_their_writes() {
        let inner = Recorder::default();
        let mut corked = Corked::new(inner.clone());
        corked.write_all(b"one").await.unwrap();
        let first =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut corked).poll_flush(cx))).await;
        assert!(first.is_pending(), "the first flush of a batch yields");
        assert!(inner.writes().is_empty());
        corked.write_all(b"two").await.unwrap();
        corked.flush().await.unwrap();
        assert_eq!(inner.writes(), vec![b"onetwo".to_vec()]);
        // The next batch yields again.
        corked.write_all(b"three").await.unwrap();
        let again =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut corked).poll_flush(cx))).await;
        assert!(again.is_pending());
        corked.flush().await.unwrap();
        assert_eq!(inner.bytes(), b"onetwothree");
    }

    #[tokio::test]
    async fn large_and_partial_writes_keep_every_byte_in_order() {
        let inner = Recorder {
            max: Some(10_000),
            ..Recorder::default()
        };
        let mut corked = Corked::new(inner.clone());
        let small: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let large: Vec<u8> = (0..BYPASS as u32 + 25_000)
            .map(|i| (i % 251) as u8)
            .collect();
        corked.write_all(&small).await.unwrap();
        // What is buffered goes first, then the large write bypasses the
        // buffer, without waiting for a flush (all of it but a tail smaller
        // than BYPASS: `write_all` passes what the socket did not take as
        // a new, smaller write).
        corked.write_all(&large).await.unwrap();
        assert!(inner.bytes().len() > small.len() + large.len() - BYPASS);
        corked.write_all(&small).await.unwrap();
        // Many small writes over the limit: the buffer is sent on the way.
        let mut expected_tail = small.clone();
        for i in 0..(LIMIT / 1_000 + 5) {
            let chunk = vec![i as u8; 1_000];
            corked.write_all(&chunk).await.unwrap();
            expected_tail.extend(&chunk);
        }
        assert!(inner.bytes().len() > small.len() + large.len());
        corked.flush().await.unwrap();
        let mut expected = small.clone();
        expected.extend(&large);
        expected.extend(&expected_tail);
        assert_eq!(inner.bytes(), expected);
        assert!(inner.writes().iter().all(|w| w.len() <= 10_000));
    }

    #[tokio::test]
    async fn an_idle_connection_does_not_keep_a_bursts_buffer() {
        let inner = Recorder::default();
        let mut corked = Corked::new(inner.clone());
        for _ in 0..5 {
            corked.write_all(&[7u8; 6_000]).await.unwrap();
        }
        assert!(corked.pending.capacity() > KEEP);
        corked.flush().await.unwrap();
        assert_eq!(
            inner.writes().len(),
            1,
            "five writes under the limit leave together"
        );
        assert_eq!(corked.pending.capacity(), 0);
        corked.write_all(b"small").await.unwrap();
        corked.flush().await.unwrap();
        assert!(corked.pending.capacity() <= KEEP);
    }

    #[tokio::test]
    async fn shutdown_writes_out_what_is_buffered_first() {
        let inner = Recorder::default();
        let mut corked = Corked::new(inner.clone());
        corked.write_all(b"goaway").await.unwrap();
        corked.shutdown().await.unwrap();
        assert_eq!(inner.bytes(), b"goaway");
        assert!(*inner.shut.lock().unwrap());
    }
}
