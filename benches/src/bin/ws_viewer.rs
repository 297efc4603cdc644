//! A minimal viewer for benchmarks: connects to a session's video WebSocket, reads for N seconds,
//! prints `{"frames":..,"bytes":..,"keyframes":..}`.
//!
//! `ws-viewer ws://127.0.0.1:8080/play/TOKEN/video 20`

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: ws-viewer URL SECONDS");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    let (mut frames, mut bytes, mut keyframes) = (0u64, 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Binary(b) = msg {
            frames += 1;
            bytes += b.len() as u64;
            keyframes += u64::from(b.get(1).is_some_and(|f| f & 1 == 1));
        }
    }
    println!(
        "{}",
        serde_json::json!({"frames": frames, "bytes": bytes, "keyframes": keyframes})
    );
}
