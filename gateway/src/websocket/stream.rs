//! A client connection's two halves, over plain TCP or TLS.
//!
//! Plain TCP splits into tokio's owned halves, which need no lock between
//! reader and writer; a TLS stream is one rustls state machine, so its halves
//! share it through `tokio::io::split`. The enums keep that choice in one
//! place: the reader, the writer and everything above them see one type.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use shell::tls::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The read half of a client connection.
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a client connection.
pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// Splits an accepted connection.
pub fn split(stream: Stream) -> (ReadHalf, WriteHalf) {
    match stream {
        Stream::Plain(tcp) => {
            let (rd, wr) = tcp.into_split();
            (ReadHalf::Tcp(rd), WriteHalf::Tcp(wr))
        }
        Stream::Tls(tls) => {
            let (rd, wr) = tokio::io::split(*tls);
            (ReadHalf::Tls(rd), WriteHalf::Tls(wr))
        }
    }
}

impl ReadHalf {
    /// Reads and drops input until the client closes its side (or fails).
    pub async fn discard_until_eof(&mut self) {
        let mut scratch = [0u8; 4096];
        match self {
            // Readiness first: no buffer is touched while the client is idle.
            ReadHalf::Tcp(io) => loop {
                if io.readable().await.is_err() {
                    return;
                }
                match io.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            },
            ReadHalf::Tls(io) => {
                use tokio::io::AsyncReadExt;
                while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
            }
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            ReadHalf::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            WriteHalf::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(io) => io.is_write_vectored(),
            WriteHalf::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(io) => Pin::new(io).poll_flush(cx),
            WriteHalf::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            WriteHalf::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
