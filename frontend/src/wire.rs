//! Answers given before routing. hyper itself refuses a request it cannot parse — `400`
//! for garbage, `414` for a too-long URI, `431` for too-large headers — with an empty body,
//! before any handler or middleware runs. Clients of jobq expect `{"error": "..."}` on every
//! error, so connections are wrapped: a response head that hyper wrote for such a refusal
//! (one of those three statuses with `content-length: 0`, which no route of jobq produces) is
//! rewritten with the JSON body and its content type. Nothing else is touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections answer pre-routing refusals in JSON.
#[derive(Debug)]
pub struct JsonErrorListener(pub TcpListener);

impl Listener for JsonErrorListener {
    type Io = JsonErrorStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        (
            JsonErrorStream {
                inner: stream,
                pending: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.0)
    }
}

/// A connection of [`JsonErrorListener`].
#[derive(Debug)]
pub struct JsonErrorStream {
    inner: TcpStream,
    /// A rewritten refusal being written: the bytes, how many are out, and the length of the
    /// original buffer to report once all are.
    pending: Option<(Vec<u8>, usize, usize)>,
}

/// The refusal with a JSON body, if `head` is one of hyper's empty pre-routing refusals.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let message = [
        ("HTTP/1.1 400 ", "the request could not be parsed as HTTP"),
        ("HTTP/1.1 414 ", "the request URI is too long"),
        ("HTTP/1.1 431 ", "the request headers are too large"),
    ]
    .iter()
    .find(|(status, _)| text.starts_with(status))?
    .1;
    if !text.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("\r\ncontent-type:") {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let at = lower.find("\r\ncontent-length: 0\r\n")?;
    let rest = &text[at + "\r\ncontent-length: 0".len()..];
    Some(
        format!(
            "{}\r\ncontent-type: application/json\r\ncontent-length: {}{rest}{body}",
            &text[..at],
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for JsonErrorStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrorStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match rewrite(buf) {
                Some(bytes) => this.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let (bytes, written, reported) = this.pending.as_mut().expect("pending refusal");
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let reported = *reported;
        this.pending = None;
        Poll::Ready(Ok(reported))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands every response head over in one buffer of its own,
    // which is what `rewrite` looks at.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_refusals_get_the_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 09:46:17 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "the request headers are too large");
    }

    #[test]
    fn other_responses_are_left_alone() {
        for head in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{\"x\":1}",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(rewrite(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    /// hyper's own refusals, from a real server, arrive with the JSON body.
    #[tokio::test]
    async fn a_served_router_answers_unparseable_requests_in_json() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(JsonErrorListener(listener), app).await });
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..500)
                .map(|i| format!("X-{i}: {}\r\n", "v".repeat(1000)))
                .collect::<String>()
        );
        for (request, status) in [
            ("\x00\x01garbage\r\n\r\n".to_string(), "400"),
            (long_uri, "414"),
            (many_headers, "431"),
        ] {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = socket.write_all(request.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = socket.read_to_end(&mut answer).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{answer}"
            );
            let body = answer.split_once("\r\n\r\n").unwrap().1;
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(json["error"].is_string(), "{answer}");
        }
        // Ordinary requests are untouched.
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).ends_with("\r\n\r\nok"));
    }
}
