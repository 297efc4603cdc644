//! Asks a session's streamer how long nobody has been connected (`GET /readyz` on the pod's IP).
//! A trait, so that tests can answer for the pods.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::error::{Error, Result};

/// The part of the streamer's `/readyz` answer the control plane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ready: bool,
    /// Seconds since a player or viewer was last connected (0 while someone is).
    pub idle_seconds: u64,
}

/// Reads a session pod's readiness.
pub trait ReadyProbe: Send + Sync + 'static {
    /// Probes the streamer at `pod_ip`.
    fn probe<'a>(&'a self, pod_ip: &'a str) -> BoxFuture<'a, Result<Readiness>>;
}

/// The real probe: plain HTTP to `http://<pod IP>:<port>/readyz`, with a timeout.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
    port: u16,
    timeout: Duration,
}

/// Largest /readyz body read.
const MAX_BODY: usize = 64 * 1024;

impl HttpProbe {
    pub fn new(port: u16, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            // No connection is kept for the next pass: with thousands of sessions that would be
            // thousands of idle connections (and descriptors), here and in the streamers.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            port,
            timeout,
        }
    }

    async fn get(&self, pod_ip: &str) -> Result<Readiness> {
        let target = if pod_ip.contains(':') {
            format!("[{pod_ip}]:{}", self.port)
        } else {
            format!("{pod_ip}:{}", self.port)
        };
        let fail = |reason: String| Error::Probe {
            target: target.clone(),
            reason,
        };
        let uri: axum::http::Uri = format!("http://{target}/readyz")
            .parse()
            .map_err(|e| fail(format!("bad address: {e}")))?;
        let response = tokio::time::timeout(self.timeout, self.client.get(uri))
            .await
            .map_err(|_| fail("timed out".to_owned()))?
            .map_err(|e| fail(e.to_string()))?;
        // 503 (not ready) still carries the JSON with idleSeconds.
        let status = response.status();
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(response.into_body(), MAX_BODY).collect(),
        )
        .await
        .map_err(|_| fail("timed out reading the body".to_owned()))?
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
        serde_json::from_slice(&body)
            .map_err(|e| fail(format!("HTTP {status}: not the /readyz JSON: {e}")))
    }
}

impl ReadyProbe for HttpProbe {
    fn probe<'a>(&'a self, pod_ip: &'a str) -> BoxFuture<'a, Result<Readiness>> {
        Box::pin(self.get(pod_ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    #[tokio::test]
    async fn reads_readyz_including_503() {
        let app = Router::new().route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"ready":false,"display":"ok","encoder":"openh264","audio":"off","viewers":0,"players":0,"idleSeconds":42}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let probe = HttpProbe::new(port, Duration::from_secs(2));
        let r = probe.probe("127.0.0.1").await.unwrap();
        assert_eq!(
            r,
            Readiness {
                ready: false,
                idle_seconds: 42
            }
        );
    }

    /// The reaper asks every streamer on each pass: a connection kept open per streamer between
    /// passes would make thousands of sessions thousands of descriptors held for ever.
    #[tokio::test]
    async fn no_connection_stays_open_after_a_probe() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the probe hung up before asking");
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"ready":true,"idleSeconds":0}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
            // The probe is done: its side of the connection must close.
            tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .map(Result::unwrap)
        });
        let probe = HttpProbe::new(port, Duration::from_secs(2));
        let r = probe.probe("127.0.0.1").await.unwrap();
        assert_eq!(r.idle_seconds, 0);
        let closed = server.await.unwrap();
        assert_eq!(closed, Ok(0), "the connection stayed open after the probe");
    }

    #[tokio::test]
    async fn garbage_and_silence_are_errors() {
        let app = Router::new().route("/readyz", get(|| async { "not json" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let probe = HttpProbe::new(port, Duration::from_secs(2));
        let err = probe.probe("127.0.0.1").await.unwrap_err();
        assert_eq!(err.metric_label(), "probe");
        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let probe = HttpProbe::new(closed_port, Duration::from_secs(2));
        assert!(probe.probe("127.0.0.1").await.is_err());
    }
}
