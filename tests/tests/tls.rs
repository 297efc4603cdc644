//! HTTPS with a certificate made at start, so a browser on the LAN gets a secure context.

use std::process::Command;

use playpod_tests::{Served, have};

#[test]
fn self_signed_https_serves_the_player() {
    assert!(have("curl"), "curl is needed for this test");
    let served = Served::start(&["demo", "--tls-self-signed", "--scene", "pong"]);
    assert!(
        served.url.starts_with("https://127.0.0.1:"),
        "{}",
        served.url
    );
    let out = Command::new("curl")
        .args([
            "-sSk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{ssl_verify_result}",
            &served.url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("200 "),
        "HTTPS GET of the player page: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        text.trim_end(),
        "200 0",
        "the certificate is self-signed, so not verifiable"
    );
    // Plain HTTP on the same port is not served.
    let plain = served.url.replacen("https://", "http://", 1);
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &plain])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn missing_certificate_files_are_a_clear_error() {
    let err = playpod_tests::playpod_fails(&[
        "pod",
        "--display",
        ":0",
        "--framebuffer",
        "/dev/null",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(
        err.contains("/nonexistent/cert.pem"),
        "the error names the file: {err}"
    );
}
