//! The socket seam: the transport's TCP listener and streams, on tokio's real network or on
//! turmoil's simulated one.
//!
//! A transport picks one with [`TransportConfig::net`](crate::transport::TransportConfig).
//! With the `turmoil` feature both exist in one build, so the same node (transport, driver,
//! engine) runs on real sockets or inside a deterministic turmoil simulation, where latency,
//! loss, partitions and crashes are scripted and time is simulated.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(feature = "turmoil")]
use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which network the transport's sockets live on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Net {
    /// The operating system's TCP through tokio.
    #[default]
    Tokio,
    /// turmoil's simulated TCP; only valid inside a turmoil host or client.
    #[cfg(feature = "turmoil")]
    Turmoil,
}

/// A bound listener.
pub(crate) enum Listener {
    Tokio(tokio::net::TcpListener),
    #[cfg(feature = "turmoil")]
    Turmoil(turmoil::net::TcpListener),
}

impl Listener {
    /// Binds `addr` on `net`.
    pub async fn bind(net: Net, addr: SocketAddr) -> io::Result<Self> {
        Ok(match net {
            Net::Tokio => Self::Tokio(tokio::net::TcpListener::bind(addr).await?),
            #[cfg(feature = "turmoil")]
            Net::Turmoil => Self::Turmoil(turmoil::net::TcpListener::bind(addr).await?),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Tokio(l) => l.local_addr(),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(l) => l.local_addr(),
        }
    }

    /// The next inbound connection and its remote address.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Self::Tokio(l) => l.accept().await.map(|(s, a)| (Stream::Tokio(s), a)),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(l) => l.accept().await.map(|(s, a)| (Stream::Turmoil(s), a)),
        }
    }
}

/// A connected TCP stream.
pub(crate) enum Stream {
    Tokio(tokio::net::TcpStream),
    #[cfg(feature = "turmoil")]
    Turmoil(turmoil::net::TcpStream),
}

impl Stream {
    /// Connects to `addr` on `net`.
    pub async fn connect(net: Net, addr: SocketAddr) -> io::Result<Self> {
        Ok(match net {
            Net::Tokio => Self::Tokio(tokio::net::TcpStream::connect(addr).await?),
            #[cfg(feature = "turmoil")]
            Net::Turmoil => Self::Turmoil(turmoil::net::TcpStream::connect(addr).await?),
        })
    }

    /// Disables Nagle's algorithm (frames are batched by the writer already).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Self::Tokio(s) => s.set_nodelay(on),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(s) => s.set_nodelay(on),
        }
    }

    /// Splits into halves that a reader and a writer task own separately.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Tokio(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tokio(r), WriteHalf::Tokio(w))
            }
            #[cfg(feature = "turmoil")]
            Self::Turmoil(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Turmoil(r), WriteHalf::Turmoil(w, None))
            }
        }
    }
}

/// The read half of a [`Stream`].
pub(crate) enum ReadHalf {
    Tokio(tokio::net::tcp::OwnedReadHalf),
    #[cfg(feature = "turmoil")]
    Turmoil(turmoil::net::tcp::OwnedReadHalf),
}

/// The write half of a [`Stream`].
pub(crate) enum WriteHalf {
    Tokio(tokio::net::tcp::OwnedWriteHalf),
    /// With the retransmission wait in progress, if the last write was "lost".
    #[cfg(feature = "turmoil")]
    Turmoil(
        turmoil::net::tcp::OwnedWriteHalf,
        Option<Pin<Box<tokio::time::Sleep>>>,
    ),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tokio(r) => Pin::new(r).poll_read(cx, buf),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tokio(w) => Pin::new(w).poll_write(cx, buf),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(w, retransmit) => {
                if retransmit.is_none() {
                    *retransmit = sim::lose().map(|rto| Box::pin(tokio::time::sleep(rto)));
                }
                if let Some(wait) = retransmit {
                    std::task::ready!(wait.as_mut().poll(cx));
                    *retransmit = None;
                }
                Pin::new(w).poll_write(cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tokio(w) => Pin::new(w).poll_flush(cx),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(w, _) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tokio(w) => Pin::new(w).poll_shutdown(cx),
            #[cfg(feature = "turmoil")]
            Self::Turmoil(w, _) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Settings of the simulated network that turmoil does not model.
#[cfg(feature = "turmoil")]
pub mod sim {
    use std::cell::RefCell;
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    struct Loss {
        probability: f64,
        rto: Duration,
        rng: StdRng,
    }

    thread_local! {
        static LOSS: RefCell<Option<Loss>> = const { RefCell::new(None) };
    }

    /// Segment loss as TCP lives it: turmoil's TCP has no retransmission (a dropped segment
    /// stalls its stream for good), so loss is modelled where the transport writes instead.
    /// Each socket write on this thread's simulated connections is "lost" with probability
    /// `percent / 100` and goes out only after `rto` (one retransmission timeout), holding up
    /// everything behind it on that connection, as TCP's in-order delivery does. Seeded, so a
    /// simulation replays; `percent == 0` turns it off.
    pub fn set_loss(percent: f64, rto: Duration, seed: u64) {
        let loss = (percent > 0.0).then(|| Loss {
            probability: (percent / 100.0).min(1.0),
            rto,
            rng: StdRng::seed_from_u64(seed),
        });
        LOSS.with(|l| *l.borrow_mut() = loss);
    }

    /// The retransmission wait of the next write, if it is lost.
    pub(crate) fn lose() -> Option<Duration> {
        LOSS.with(|l| {
            let mut l = l.borrow_mut();
            let loss = l.as_mut()?;
            loss.rng.gen_bool(loss.probability).then_some(loss.rto)
        })
    }
}
