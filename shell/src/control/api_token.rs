//! The API's bearer token, and its reload from a file (`--api-token-file`) while the control
//! plane runs.
//!
//! A Kubernetes Secret mounted as a volume is updated in place by the kubelet: it writes the new
//! files into a fresh directory and swaps the `..data` symlink to it atomically, so the token's
//! path keeps resolving while the file behind it (its inode, size and times) changes. A task
//! checks the file's metadata every [`POLL_INTERVAL`]; when it changed, the file is read again
//! and a valid token replaces the running one. The replaced token stays valid for
//! [`ROTATION_GRACE`], so that clients still holding it have time to read the new one. A file
//! that goes missing or holds no valid token is logged once (per change) and the last good token
//! is kept.
//!
//! Requests take a read lock and compare in constant time; only a reload writes.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::metrics::Metrics;

/// How long the token replaced by a reload is still accepted.
pub const ROTATION_GRACE: Duration = Duration::from_secs(60);

/// How often the token file's metadata is checked for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The most a token file may hold (a token is at most 128 characters; the rest is whitespace).
const MAX_FILE_BYTES: u64 = 4096;

/// The token(s) the API accepts: the current one, and for a while after a reload the one it
/// replaced.
#[derive(Debug)]
pub struct ApiToken {
    state: RwLock<State>,
    grace: Duration,
}

#[derive(Debug)]
struct State {
    current: Arc<str>,
    /// The token replaced last, and until when it is accepted.
    previous: Option<(Arc<str>, Instant)>,
}

impl ApiToken {
    /// A token that accepts the one it replaces for [`ROTATION_GRACE`].
    pub fn new(token: &str) -> Self {
        Self::with_grace(token, ROTATION_GRACE)
    }

    /// A token that accepts the one it replaces for `grace`.
    pub fn with_grace(token: &str, grace: Duration) -> Self {
        Self {
            state: RwLock::new(State {
                current: Arc::from(token),
                previous: None,
            }),
            grace,
        }
    }

    /// Whether `presented` is the current token, or the replaced one within its grace period.
    pub fn matches(&self, presented: &str) -> bool {
        self.matches_at(presented, Instant::now())
    }

    /// [`Self::matches`] at the time `now`.
    pub fn matches_at(&self, presented: &str, now: Instant) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let current = crate::token::token_matches(&state.current, presented);
        let previous = state.previous.as_ref().is_some_and(|(token, until)| {
            now < *until && crate::token::token_matches(token, presented)
        });
        current | previous
    }

    /// Makes `token` the current token; the one it replaces is accepted for the grace period.
    /// Returns false (and changes nothing) when `token` is the current one already.
    pub fn replace(&self, token: &str) -> bool {
        self.replace_at(token, Instant::now())
    }

    /// [`Self::replace`] at the time `now`.
    pub fn replace_at(&self, token: &str, now: Instant) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if &*state.current == token {
            return false;
        }
        let replaced = std::mem::replace(&mut state.current, Arc::from(token));
        state.previous = Some((replaced, now + self.grace));
        true
    }

    /// How long a replaced token is still accepted.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// What tells a changed file: the identity of the file the path resolves to, its size and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The stamp of the file `path` resolves to (following symlinks), or None when there is none.
fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

/// Reads and validates the token in `path`: surrounding whitespace is ignored, the rest must
/// pass [`crate::token::parse_token`]. The error says what is wrong, not the file's content.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "it is larger than {MAX_FILE_BYTES} bytes, too large to hold a token"
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("it is empty".to_owned());
    }
    crate::token::parse_token(token)
}

/// The token file's first read, at start: the token and the stamp to watch from.
pub fn load(path: &Path) -> anyhow::Result<(String, Option<Stamp>)> {
    // The stamp first: a change while reading is then seen by the first poll.
    let before = stamp(path);
    let token = read_token_file(path)
        .map_err(|e| anyhow::anyhow!("API token file {}: {e}", path.display()))?;
    Ok((token, before))
}

/// Reloads an [`ApiToken`] from its file when the file changes.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    token: Arc<ApiToken>,
    metrics: Arc<Metrics>,
    stamp: Option<Stamp>,
    /// Whether the last read failed (the token in use is then older than the file).
    failing: bool,
}

/// What one check of the file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// The file has not changed since the last check.
    Unchanged,
    /// It changed and holds a new token, now in use.
    Reloaded,
    /// It changed and holds the token in use already.
    Same,
    /// It changed and is missing or holds no valid token: the last good token is kept.
    Invalid,
}

impl Watcher {
    /// Watches `path`, whose content `token` was read from when it had `stamp` (see [`load`]).
    pub fn new(
        path: PathBuf,
        token: Arc<ApiToken>,
        metrics: Arc<Metrics>,
        stamp: Option<Stamp>,
    ) -> Self {
        Self {
            path,
            token,
            metrics,
            stamp,
            failing: false,
        }
    }

    /// Checks the file every `every`, forever.
    pub async fn run(mut self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is now: the file was just read
        loop {
            ticks.tick().await;
            // Blocking file system calls: a stat and, on a change, a read of a few bytes.
            self = match tokio::task::spawn_blocking(move || {
                self.poll();
                self
            })
            .await
            {
                Ok(watcher) => watcher,
                Err(err) => {
                    tracing::error!(%err, "the API token file's watch ended");
                    return;
                }
            };
        }
    }

    /// Checks the file once, now.
    pub fn poll(&mut self) -> Poll {
        let now = stamp(&self.path);
        if now == self.stamp {
            return Poll::Unchanged;
        }
        let read = now.map(|_| read_token_file(&self.path));
        self.apply(now, read)
    }

    /// Acts on the file's changed stamp and, when it exists, what reading it gave. A read made
    /// during a change still goes unseen until the stamp changes again, which it does once the
    /// change is complete: the stamp is always taken before the read.
    fn apply(&mut self, now: Option<Stamp>, read: Option<Result<String, String>>) -> Poll {
        self.stamp = now;
        let path = self.path.display();
        let result = match read {
            None => Err("it is missing".to_owned()),
            Some(read) => read,
        };
        match result {
            Ok(token) => {
                self.metrics.token_reload("ok");
                let was_failing = std::mem::replace(&mut self.failing, false);
                if self.token.replace(&token) {
                    tracing::info!(
                        file = %path,
                        previous_accepted_for_seconds = self.token.grace().as_secs(),
                        "API token reloaded"
                    );
                    Poll::Reloaded
                } else {
                    if was_failing {
                        tracing::info!(file = %path, "API token file is valid again; the token is unchanged");
                    }
                    Poll::Same
                }
            }
            Err(why) => {
                self.metrics.token_reload("invalid");
                self.failing = true;
                tracing::warn!(
                    file = %path,
                    "API token file changed but {why}: the last good token stays in use"
                );
                Poll::Invalid
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "token-a-0123456789";
    const B: &str = "token-b-0123456789";
    const C: &str = "token-c-0123456789";

    #[test]
    fn the_replaced_token_is_accepted_for_the_grace_period_only() {
        let t0 = Instant::now();
        let token = ApiToken::with_grace(A, Duration::from_secs(60));
        assert!(token.matches_at(A, t0));
        assert!(!token.matches_at(B, t0));

        assert!(token.replace_at(B, t0));
        assert!(token.matches_at(B, t0));
        assert!(token.matches_at(A, t0));
        assert!(token.matches_at(A, t0 + Duration::from_millis(59_999)));
        assert!(!token.matches_at(A, t0 + Duration::from_secs(60)));
        assert!(token.matches_at(B, t0 + Duration::from_secs(3600)));
        // A prefix or a near miss of either is no match.
        assert!(!token.matches_at("token-a-012345678", t0));
        assert!(!token.matches_at("", t0));

        // The same token again changes nothing (the grace is not restarted).
        assert!(!token.replace_at(B, t0 + Duration::from_secs(30)));
        assert!(!token.matches_at(A, t0 + Duration::from_secs(61)));

        // Two rotations: only the token replaced last keeps its grace.
        let t1 = t0 + Duration::from_secs(10);
        let token = ApiToken::with_grace(A, Duration::from_secs(60));
        token.replace_at(B, t0);
        token.replace_at(C, t1);
        assert!(token.matches_at(C, t1));
        assert!(token.matches_at(B, t1));
        assert!(!token.matches_at(A, t1));
        assert!(!token.matches_at(B, t1 + Duration::from_secs(60)));

        // No grace: the old token is refused at once.
        let token = ApiToken::with_grace(A, Duration::ZERO);
        token.replace_at(B, t0);
        assert!(!token.matches_at(A, t0));
        assert!(token.matches_at(B, t0));
    }

    #[test]
    fn token_files_are_trimmed_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("  {A}\n")).unwrap();
        assert_eq!(read_token_file(&file), Ok(A.to_owned()));
        for (content, needle) in [
            ("", "empty"),
            (" \n\n", "empty"),
            ("short\n", "16 to 128"),
            ("token with spaces inside", "A-Z a-z 0-9"),
        ] {
            std::fs::write(&file, content).unwrap();
            let err = read_token_file(&file).unwrap_err();
            assert!(err.contains(needle), "{content:?}: {err}");
        }
        std::fs::write(&file, [0xff; 20]).unwrap();
        assert!(read_token_file(&file).unwrap_err().contains("UTF-8"));
        std::fs::write(&file, "a".repeat(5000)).unwrap();
        assert!(read_token_file(&file).unwrap_err().contains("too large"));
        let err = read_token_file(&dir.path().join("absent")).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");

        let err = load(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(
            err.contains("absent") && err.contains("API token file"),
            "{err}"
        );
    }

    /// The kubelet's layout of a Secret volume: `token -> ..data/token`, `..data -> ..<stamp>`.
    fn kubelet_write(dir: &Path, generation: u32, token: &str) {
        let data = dir.join(format!("..gen_{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("token"), format!("{token}\n")).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        if generation == 0 {
            std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
        } else {
            std::fs::remove_dir_all(dir.join(format!("..gen_{}", generation - 1))).unwrap();
        }
    }

    #[test]
    fn the_watcher_follows_the_file_and_keeps_the_last_good_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        kubelet_write(dir.path(), 0, A);
        let (first, stamp) = load(&path).unwrap();
        assert_eq!(first, A);
        let token = Arc::new(ApiToken::with_grace(&first, Duration::ZERO));
        let metrics = Arc::new(Metrics::new());
        let mut watcher = Watcher::new(path.clone(), token.clone(), metrics.clone(), stamp);
        assert_eq!(watcher.poll(), Poll::Unchanged);

        // The kubelet's atomic swap of `..data`.
        kubelet_write(dir.path(), 1, B);
        assert_eq!(watcher.poll(), Poll::Reloaded);
        assert!(token.matches(B) && !token.matches(A));
        assert_eq!(watcher.poll(), Poll::Unchanged);

        // A rewrite in place (through the symlink), and a new file renamed over the path.
        std::fs::write(&path, C).unwrap();
        assert_eq!(watcher.poll(), Poll::Reloaded);
        assert!(token.matches(C));
        let new = dir.path().join("token.new");
        std::fs::write(&new, format!("{A}\n")).unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(watcher.poll(), Poll::Reloaded);
        assert!(token.matches(A) && !token.matches(C));

        // Invalid, then missing: the last good token stays; each change is seen once.
        std::fs::write(&path, "short").unwrap();
        assert_eq!(watcher.poll(), Poll::Invalid);
        assert_eq!(watcher.poll(), Poll::Unchanged);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(watcher.poll(), Poll::Invalid);
        assert_eq!(watcher.poll(), Poll::Unchanged);
        assert!(token.matches(A));
        // Valid again with the same token, then a new one.
        std::fs::write(&path, A).unwrap();
        assert_eq!(watcher.poll(), Poll::Same);
        std::fs::write(&path, format!("\n{B}\n\n")).unwrap();
        assert_eq!(watcher.poll(), Poll::Reloaded);
        assert!(token.matches(B) && !token.matches(A));

        let text = metrics.encode();
        for needle in [
            "playpod_control_api_token_reloads_total{result=\"ok\"} 5",
            "playpod_control_api_token_reloads_total{result=\"invalid\"} 2",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[tokio::test]
    async fn the_watch_task_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, A).unwrap();
        let (first, stamp) = load(&path).unwrap();
        let token = Arc::new(ApiToken::with_grace(&first, Duration::ZERO));
        let watcher = Watcher::new(path.clone(), token.clone(), Arc::new(Metrics::new()), stamp);
        let task = tokio::spawn(watcher.run(Duration::from_millis(20)));
        let new = dir.path().join("token.new");
        std::fs::write(&new, B).unwrap();
        std::fs::rename(&new, &path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !token.matches(B) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert!(token.matches(B), "the new token was not taken");
        assert!(!token.matches(A));
    }
}
