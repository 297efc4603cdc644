//! The `playpod` binary's library: the tokio shell around the frame pipeline.
#![forbid(unsafe_code)]

pub mod assets;
pub mod audio;
pub mod cli;
pub mod control;
pub mod cores;
pub mod demo;
pub mod display;
pub mod game;
pub mod input;
pub mod listen;
pub mod metrics;
pub mod pod;
pub mod server;
pub mod session;
pub mod tls;
pub mod token;

/// An error and its causes on one line, each said once. Many error types already put their
/// cause in their own message (`cannot open framebuffer file F: No such file or directory`), and
/// `{:#}` would repeat it after them.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open {path}: {source}")]
    struct Open {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(Open {
            path: "/x",
            source: io(),
        })
        .context("the frame pipeline stopped");
        assert_eq!(
            error_text(&err),
            format!("the frame pipeline stopped: cannot open /x: {}", io())
        );
        // Causes not in the message above them are kept, in order.
        let err = anyhow::Error::new(io()).context("reading the config");
        assert_eq!(error_text(&err), format!("reading the config: {}", io()));
        assert_eq!(format!("{err:#}"), error_text(&err));
    }
}
