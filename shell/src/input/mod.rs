//! Players' input, the server side: `WS /play/TOKEN/input/1` and `/input/2` (and optionally a
//! port per player), one controller per player slot, and one pinned OS thread per player that
//! reads its WebSocket with blocking tungstenite and sends the key changes into the game's
//! display through XTEST ([`playpod_hotpath::input`]).
//!
//! ```text
//! tokio: HTTP upgrade (101) --TCP stream--> slot --> player thread: read -> parse -> XTEST -> flush
//! --input-port-N thread: handshake ---------^
//! ```
//!
//! Players 1 and 2 run on their own threads and X connections, so they never wait on each
//! other or on the video path. Every key a connection held is released when it ends, errs or
//! is taken over, before the slot serves anyone else.

mod port;
mod rate;
mod slot;
mod stats;
mod stream;
mod thread;
mod upgrade;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Args;
use playpod_hotpath::input::Keymap;

pub use self::port::{PortListener, path_matches};
pub use self::rate::TokenBucket;
pub use self::slot::Refusal;
use self::slot::{Handed, Slot};
pub use self::stats::{ErrorKind, INPUT_LATENCY_BUCKETS_US, InputStats, LatencyHistogram};
pub use self::stream::{Incoming, MAX_READ_MESSAGE, PlayerStream, close_code};
pub use self::thread::PlayerConfig;
pub use self::upgrade::{check_handshake, input_socket, parse_player, wants_takeover};
use crate::server::Health;

/// Messages per second per player allowed by default: far above what hands, a gamepad's stick
/// or a touch screen send, far below a flood.
pub const DEFAULT_RATE: u32 = 250;

/// Seconds of silence after which a player's connection is taken as gone, by default: a
/// browser answers pings at once, so this only ends connections whose network is gone.
pub const DEFAULT_INPUT_TIMEOUT_S: u64 = 15;

/// The players' input flags.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Player 1's X keys: comma-separated KEY=KEYSYM overrides of the defaults, KEY one of
    /// up down left right a b start select, KEYSYM an X keysym name or hex value, e.g.
    /// `up=w,down=s,a=Return,b=0xff0d`. Defaults: W S A D, F G, Return, Tab (what the
    /// built-in game reads).
    #[arg(long = "keymap-1", value_name = "SPEC", value_parser = parse_keymap_1)]
    pub keymap_1: Option<Keymap>,
    /// Player 2's X keys, as --keymap-1. Defaults: the arrows, K L, P, O.
    #[arg(long = "keymap-2", value_name = "SPEC", value_parser = parse_keymap_2)]
    pub keymap_2: Option<Keymap>,
    /// Input messages per second allowed per player (bursts of up to one second's worth);
    /// messages over it are dropped and answered {"error":"rate limit: ..."}.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub input_rate: u32,
    /// A player's connection from which nothing came for this many seconds, not even the
    /// answer to the pings the pod sends when it is quiet (every third of this), is taken as
    /// gone (a dropped Wi-Fi, a sleeping laptop): its keys are released and its slot freed.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_INPUT_TIMEOUT_S,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub input_timeout: u64,
    /// Also serve player 1's input WebSocket on this port of the --listen address
    /// (ws://HOST:PORT/play/TOKEN/input/1), with its own accepting thread.
    #[arg(long = "input-port-1", value_name = "PORT")]
    pub input_port_1: Option<u16>,
    /// Also serve player 2's input WebSocket on this port (ws://HOST:PORT/play/TOKEN/input/2).
    #[arg(long = "input-port-2", value_name = "PORT")]
    pub input_port_2: Option<u16>,
}

fn parse_keymap(player: u8, spec: &str) -> Result<Keymap, String> {
    Keymap::default_for(player)
        .with_overrides(spec)
        .map_err(|err| format!("player {player}'s keymap: {err}"))
}

fn parse_keymap_1(spec: &str) -> Result<Keymap, String> {
    parse_keymap(1, spec)
}

fn parse_keymap_2(spec: &str) -> Result<Keymap, String> {
    parse_keymap(2, spec)
}

impl InputArgs {
    /// Binds the players' own input ports (`--input-port-N`) on `ip`, as (player, listener).
    pub fn bind_ports(&self, ip: IpAddr) -> anyhow::Result<Vec<(u8, TcpListener)>> {
        let mut listeners = Vec::new();
        for (player, port) in [(1u8, self.input_port_1), (2, self.input_port_2)] {
            if let Some(port) = port {
                let addr = SocketAddr::new(ip, port);
                let listener = crate::listen::bind(addr).with_context(|| {
                    format!("cannot listen for player {player}'s input on {addr} (--input-port-{player})")
                })?;
                listeners.push((player, listener));
            }
        }
        Ok(listeners)
    }

    /// The keymap of `player` (1 or 2): the flag's, else the default.
    pub fn keymap(&self, player: u8) -> Keymap {
        let flag = if player == 2 {
            self.keymap_2
        } else {
            self.keymap_1
        };
        flag.unwrap_or_else(|| Keymap::default_for(player))
    }
}

/// The two player slots, shared by the accepting side (HTTP upgrades, port threads) and the
/// player threads.
#[derive(Debug)]
pub struct Players {
    slots: [Arc<Slot>; 2],
    stats: Arc<InputStats>,
    /// Player threads run (the session has a display to send keys to).
    serving: AtomicBool,
}

impl Default for Players {
    fn default() -> Self {
        Self::new(Arc::new(InputStats::default()))
    }
}

impl Players {
    pub fn new(stats: Arc<InputStats>) -> Self {
        Self {
            slots: [Arc::new(Slot::new(1)), Arc::new(Slot::new(2))],
            stats,
            serving: AtomicBool::new(false),
        }
    }

    pub fn stats(&self) -> &Arc<InputStats> {
        &self.stats
    }

    /// Whether player threads serve the slots.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Whether `seat` is the one `player`'s current connection was given: the page showing it
    /// holds that player's controls.
    pub fn seated(&self, player: u8, seat: &str) -> bool {
        self.slots
            .get(usize::from(player.wrapping_sub(1)))
            .is_some_and(|slot| slot.seated(seat))
    }

    /// Gives an accepted connection to `player`'s slot (1 or 2); a refused or displaced
    /// connection is closed here with its reason (blocking: a close frame and its answer).
    pub fn hand_off(&self, player: u8, incoming: Incoming) {
        let Some(slot) = self.slots.get(usize::from(player.wrapping_sub(1))) else {
            incoming.close(close_code::GOING_AWAY, "no such player");
            return;
        };
        match slot.hand_off(incoming) {
            Handed::Queued => {}
            Handed::Displaced(displaced) => displaced.close(
                close_code::TAKEN_OVER,
                &format!("player {player} was taken over by another connection"),
            ),
            Handed::Refused(incoming, Refusal::Taken) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(player, "refused a second controller");
                incoming.close(
                    close_code::SLOT_TAKEN,
                    &format!(
                        "player {player} is already connected; reconnect with ?takeover=1 to take over"
                    ),
                );
            }
            Handed::Refused(incoming, Refusal::Stopping) => {
                incoming.close(close_code::GOING_AWAY, "the session is ending");
            }
        }
    }
}

/// What the player threads need to start.
#[derive(Debug, Clone)]
pub struct InputSetup {
    /// The X display keys go to.
    pub display: String,
    pub args: InputArgs,
    /// The cores of players 1 and 2 (see [`crate::cores::Placement`]).
    pub cores: [Option<usize>; 2],
    /// The IP of `--listen`, for `--input-port-N`.
    pub listen_ip: IpAddr,
    pub token: String,
    /// TLS for `--input-port-N` when the session serves HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The running player threads and port listeners; dropping it closes every input connection
/// (keys released) and joins the threads.
#[derive(Debug)]
pub struct PlayerThreads {
    players: Arc<Players>,
    threads: Vec<std::thread::JoinHandle<()>>,
    ports: Vec<PortListener>,
}

impl PlayerThreads {
    /// Starts a thread per player over `players`, and the port listeners the flags ask for.
    pub fn start(
        players: Arc<Players>,
        setup: &InputSetup,
        health: Arc<Health>,
    ) -> anyhow::Result<Self> {
        // Bind the ports first: a taken port fails before any thread starts.
        let listeners = setup.args.bind_ports(setup.listen_ip)?;
        let cores = setup.cores;
        let mut running = Self {
            players: players.clone(),
            threads: Vec::new(),
            ports: Vec::new(),
        };
        for (slot, core) in players.slots.iter().zip(cores) {
            let config = PlayerConfig {
                display: setup.display.clone(),
                keymap: setup.args.keymap(slot.player),
                rate: setup.args.input_rate,
                silence_limit: std::time::Duration::from_secs(setup.args.input_timeout),
                core,
            };
            tracing::info!(
                player = slot.player,
                display = %config.display,
                keymap = %config.keymap,
                rate = config.rate,
                core = ?core,
                "player input ready"
            );
            let handle = thread::spawn(slot.clone(), config, players.stats.clone(), health.clone())
                .context("cannot start a player thread")?;
            running.threads.push(handle);
        }
        for (player, listener) in listeners {
            running.ports.push(
                PortListener::spawn(
                    listener,
                    player,
                    setup.token.clone(),
                    players.clone(),
                    setup.tls.clone(),
                )
                .context("cannot start an input port thread")?,
            );
        }
        players.serving.store(true, Ordering::Release);
        Ok(running)
    }

    /// The addresses of the `--input-port-N` listeners, as (player, address).
    pub fn port_addrs(&self) -> Vec<SocketAddr> {
        self.ports.iter().map(PortListener::addr).collect()
    }
}

impl Drop for PlayerThreads {
    fn drop(&mut self) {
        self.players.serving.store(false, Ordering::Release);
        self.ports.clear();
        let waiting: Vec<Incoming> = self.players.slots.iter().filter_map(|s| s.stop()).collect();
        for incoming in waiting {
            incoming.close(close_code::GOING_AWAY, "the session is ending");
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a player thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        input: InputArgs,
    }

    #[test]
    fn keymap_flags() {
        let cli = Cli::try_parse_from(["x", "--keymap-1", "up=i,a=Return,start=0xff8d"]).unwrap();
        let map = cli.input.keymap(1);
        assert_eq!(map.keysyms[0], u32::from(b'i'));
        assert_eq!(map.keysyms[4], 0xff0d);
        assert_eq!(map.keysyms[6], 0xff8d);
        assert_eq!(
            map.keysyms[1],
            u32::from(b's'),
            "the rest keeps its defaults"
        );
        assert_eq!(cli.input.keymap(2), Keymap::default_for(2));
        assert_eq!(cli.input.input_rate, DEFAULT_RATE);
        for bad in ["up", "jump=w", "up=nosuchkey", "up=w,up=i"] {
            let err = Cli::try_parse_from(["x", "--keymap-2", bad]).unwrap_err();
            assert!(err.to_string().contains("player 2"), "{bad}: {err}");
        }
        assert!(Cli::try_parse_from(["x", "--input-rate", "0"]).is_err());
    }
}
