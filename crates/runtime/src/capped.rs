//! An in-memory output pipe for wasm guests that keeps at most `cap` bytes.
//! Past the cap it either fails the write (stdout: the output limit is an
//! error) or drops the bytes and remembers it did (stderr: logs are
//! truncated, never fatal).

use bytes::{Bytes, BytesMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

#[derive(Clone)]
pub(crate) struct CappedPipe {
    inner: Arc<Mutex<Inner>>,
    cap: usize,
    fail_on_overflow: bool,
}

struct Inner {
    buf: BytesMut,
    overflowed: bool,
}

impl CappedPipe {
    pub fn new(cap: usize, fail_on_overflow: bool) -> Self {
        CappedPipe {
            inner: Arc::new(Mutex::new(Inner { buf: BytesMut::new(), overflowed: false })),
            cap,
            fail_on_overflow,
        }
    }

    /// The bytes kept, and whether anything was refused or dropped.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut inner = self.inner.lock().unwrap();
        let buf = std::mem::take(&mut inner.buf);
        (buf.to_vec(), inner.overflowed)
    }

    fn push(&self, data: &[u8]) -> Result<(), ()> {
        let mut inner = self.inner.lock().unwrap();
        let room = self.cap.saturating_sub(inner.buf.len());
        if data.len() > room {
            inner.overflowed = true;
            if self.fail_on_overflow {
                return Err(());
            }
            inner.buf.extend_from_slice(&data[..room]);
        } else {
            inner.buf.extend_from_slice(data);
        }
        Ok(())
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes).map_err(|()| StreamError::Trap(wasmtime::format_err!("{OUTPUT_LIMIT_MSG}")))
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

pub(crate) const OUTPUT_LIMIT_MSG: &str = "stratus: output limit exceeded";

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.push(buf).map(|()| buf.len()).map_err(|()| std::io::Error::other(OUTPUT_LIMIT_MSG)))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
