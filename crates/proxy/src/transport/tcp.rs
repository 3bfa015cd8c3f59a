//! TCP: accepted and outgoing connections, messages framed by
//! Content-Length (RFC 3261 18.3), one writer task per connection so sends
//! never interleave, connections found again by peer address so replies and
//! in-dialog requests reuse them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kemibox_kemi::Transport;
use kemibox_sip::{MAX_MESSAGE_SIZE, stream_frame_len};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Inbound, SendOptions, Transports};

/// Most connections open at once; more are refused (accept) or fail (send).
const MAX_CONNECTIONS: usize = 4096;
/// A connection with nothing received for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued for one connection's writer before sends fail.
const WRITE_QUEUE: usize = 1024;

/// What a connection's writer is given: bytes to write, and whether to
/// close the connection once they are written (`KSR.set_*_close`).
struct Frame {
    bytes: Vec<u8>,
    close: bool,
}

/// Open connections by peer address.
#[derive(Default)]
pub struct Connections {
    by_peer: Mutex<HashMap<SocketAddr, mpsc::Sender<Frame>>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Frame>>> {
        self.by_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send over the connection to `to`, connecting first if there is none
    /// (unless `options.no_connect`: then that is an error, as Kamailio's
    /// `set_forward_no_connect` / `set_reply_no_connect`); with
    /// `options.close` the connection is closed once the bytes are written.
    pub(crate) async fn send(
        &self,
        transports: &Arc<Transports>,
        to: SocketAddr,
        bytes: Vec<u8>,
        options: SendOptions,
    ) -> io::Result<()> {
        let existing = self.lock().get(&to).cloned();
        let sender = match existing {
            Some(s) if !s.is_closed() => s,
            _ if options.no_connect => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("no open connection to {to}, and the script asked not to connect"),
                ));
            }
            _ => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("connecting to {to} timed out"),
                        )
                    })??;
                let local = stream.local_addr()?;
                self.register(transports, stream, local, to)?
            }
        };
        let close = options.close;
        if close {
            // Later sends open a new connection.
            self.lock().remove(&to);
        }
        sender
            .try_send(Frame { bytes, close })
            .map_err(|e| io::Error::other(format!("connection to {to}: {e}")))
    }

    /// Forget the connection to `peer` when it is still `connection`
    /// (closing its writer once the last sender is gone).
    fn forget(&self, peer: SocketAddr, connection: &mpsc::Sender<Frame>) {
        let mut map = self.lock();
        if map.get(&peer).is_some_and(|s| s.same_channel(connection)) {
            map.remove(&peer);
        }
    }

    /// Track a new connection and start its reader and writer.
    fn register(
        &self,
        transports: &Arc<Transports>,
        stream: TcpStream,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> io::Result<mpsc::Sender<Frame>> {
        let mut map = self.lock();
        map.retain(|_, s| !s.is_closed());
        if map.len() >= MAX_CONNECTIONS {
            return Err(io::Error::other(format!(
                "too many TCP connections ({MAX_CONNECTIONS})"
            )));
        }
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        map.insert(peer, tx.clone());
        drop(map);
        tokio::spawn(writer(write, rx, peer));
        let connection = tx.clone();
        let transports = transports.clone();
        tokio::spawn(async move {
            reader(transports.clone(), read, local, peer).await;
            // The connection is done: later sends to the peer open a new
            // one (RFC 3261 18.2.2), or fail when the script asked not to.
            transports.connections().forget(peer, &connection);
        });
        Ok(tx)
    }
}

/// Accept connections on `listener`.
pub async fn accept_loop(transports: Arc<Transports>, listener: TcpListener) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, "listening on tcp");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%local, error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = transports
            .connections()
            .register(&transports, stream, local, peer)
        {
            tracing::warn!(%peer, error = %e, "refusing tcp connection");
        }
    }
}

async fn writer(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>, peer: SocketAddr) {
    while let Some(Frame { bytes, close }) = rx.recv().await {
        if let Err(e) = write.write_all(&bytes).await {
            tracing::info!(%peer, error = %e, "tcp write failed; closing");
            break;
        }
        if close {
            tracing::debug!(%peer, "closing the tcp connection after sending, as the script asked");
            let _ = write.shutdown().await;
            break;
        }
    }
}

/// Read messages off a connection until it closes, errs, idles out or
/// sends something that cannot be framed.
async fn reader(
    transports: Arc<Transports>,
    mut read: OwnedReadHalf,
    local: SocketAddr,
    peer: SocketAddr,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        loop {
            // Keep-alives between messages (RFC 5626 3.5.1): a double CRLF
            // ping gets a single CRLF pong.
            let blank = buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if blank > 0 {
                if buf.starts_with(b"\r\n\r\n") {
                    let _ = transports
                        .send(
                            Transport::Tcp,
                            local,
                            peer,
                            b"\r\n".to_vec(),
                            SendOptions::default(),
                        )
                        .await;
                }
                buf.drain(..blank);
            }
            match stream_frame_len(&buf) {
                Ok(Some(len)) if len <= buf.len() => {
                    let data: Vec<u8> = buf.drain(..len).collect();
                    let inbound = Inbound {
                        transport: Transport::Tcp,
                        local,
                        source: peer,
                        data,
                    };
                    transports.deliver(inbound);
                }
                Ok(_) if buf.len() > MAX_MESSAGE_SIZE => {
                    tracing::info!(%peer, "tcp message over {MAX_MESSAGE_SIZE} bytes; closing");
                    return;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::info!(%peer, reason = e.reason(), "unframeable tcp stream; closing");
                    return;
                }
            }
        }
        match tokio::time::timeout(IDLE_TIMEOUT, read.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tcp read failed");
                return;
            }
        }
    }
}
