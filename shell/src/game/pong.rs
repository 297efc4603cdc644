//! Two-player Pong as a pure state machine: no clock, no X, no floating point. The game advances
//! by [`Pong::step`], one fixed step of 1/60 s, from the players' keys; what happened comes back as
//! [`Events`] (sound hooks onto them). The same seed and inputs always give the same states.
//!
//! Positions and speeds are integers in sub-pixel units ([`ONE`] per pixel).

use super::keys::{Key, PlayerKeys};

/// Logic steps per second of game time.
pub const STEPS_PER_SECOND: u32 = 60;
/// Steps the ball waits at the centre before a serve (~1 s).
pub const SERVE_DELAY_STEPS: u32 = STEPS_PER_SECOND;
/// Steps the final score stays up before a new game (3 s).
pub const GAME_OVER_STEPS: u32 = 3 * STEPS_PER_SECOND;
/// Points that win a game.
pub const WINNING_SCORE: u8 = 11;
/// Sub-pixel units per pixel.
pub const ONE: i32 = 256;

/// A side of the court: player 1 plays the left paddle, player 2 the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Left = 0,
    Right = 1,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Left, Side::Right];

    pub const fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }

    /// The player index (0 for player 1, 1 for player 2).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What happened during one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    /// The ball bounced off this side's paddle.
    pub paddle_hit: Option<Side>,
    /// The ball bounced off the top or bottom wall.
    pub wall_bounce: bool,
    /// This side scored a point.
    pub point: Option<Side>,
    /// The ball was served towards this side.
    pub serve: Option<Side>,
    /// This side won the game (the scores reset after [`GAME_OVER_STEPS`]).
    pub game_over: Option<Side>,
}

/// The state of play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The ball waits at the centre; it is served towards `toward` when `wait` reaches zero or
    /// when that player presses start.
    Serve { toward: Side, wait: u32 },
    /// The ball is in play.
    Rally,
    /// `winner` won; a new game starts when `wait` reaches zero.
    GameOver { winner: Side, wait: u32 },
}

/// Sizes in whole pixels, derived from the field size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: i32,
    pub height: i32,
    pub paddle_width: i32,
    pub paddle_height: i32,
    /// Distance from the side edge of the field to the outer side of a paddle.
    pub paddle_inset: i32,
    /// The ball is a square of this side.
    pub ball: i32,
}

impl Geometry {
    fn new(width: u16, height: u16) -> Geometry {
        let width = i32::from(width).max(16);
        let height = i32::from(height).max(16);
        Geometry {
            width,
            height,
            paddle_width: (width / 48).max(2),
            paddle_height: (height / 6).max(4),
            paddle_inset: (width / 24).max(1),
            ball: (width / 64).clamp(2, (height / 4).max(2)),
        }
    }

    /// Left edge of `side`'s paddle, in pixels.
    pub fn paddle_x(&self, side: Side) -> i32 {
        match side {
            Side::Left => self.paddle_inset,
            Side::Right => self.width - self.paddle_inset - self.paddle_width,
        }
    }
}

/// A rectangle in whole pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

/// The whole game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    geo: Geometry,
    /// Top edge of each paddle, sub-pixels, within `0..=max_paddle_y()`.
    paddle_y: [i32; 2],
    /// A paddle is played by the AI until its player presses any key.
    human: [bool; 2],
    /// Where on its paddle each AI tries to meet the ball (sub-pixels from the centre).
    ai_aim: [i32; 2],
    /// Top-left corner of the ball, sub-pixels.
    ball: [i32; 2],
    /// Ball velocity, sub-pixels per step.
    velocity: [i32; 2],
    score: [u8; 2],
    phase: Phase,
    rng: SplitMix64,
    steps: u64,
}

impl Pong {
    /// A new game on a field of `width` x `height` pixels; the first serve, after
    /// [`SERVE_DELAY_STEPS`], goes to a side chosen by `seed`.
    pub fn new(seed: u64, width: u16, height: u16) -> Pong {
        let geo = Geometry::new(width, height);
        let mut rng = SplitMix64(seed);
        let toward = if rng.next() & 1 == 0 {
            Side::Left
        } else {
            Side::Right
        };
        let centre = (geo.height - geo.paddle_height) / 2 * ONE;
        let mut pong = Pong {
            geo,
            paddle_y: [centre; 2],
            human: [false; 2],
            ai_aim: [0; 2],
            ball: [0; 2],
            velocity: [0; 2],
            score: [0; 2],
            phase: Phase::Serve {
                toward,
                wait: SERVE_DELAY_STEPS,
            },
            rng,
            steps: 0,
        };
        pong.centre_ball();
        pong
    }

    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Points of player 1 (left) and player 2 (right).
    pub fn score(&self) -> [u8; 2] {
        self.score
    }

    /// Steps taken since the start.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether a person plays `side` (else the AI does).
    pub fn is_human(&self, side: Side) -> bool {
        self.human[side.index()]
    }

    /// `side`'s paddle, in pixels.
    pub fn paddle(&self, side: Side) -> Rect {
        Rect {
            x: self.geo.paddle_x(side),
            y: self.paddle_y[side.index()].div_euclid(ONE),
            width: self.geo.paddle_width,
            height: self.geo.paddle_height,
        }
    }

    /// The ball, in pixels; `None` while the final score is shown.
    pub fn ball(&self) -> Option<Rect> {
        match self.phase {
            Phase::GameOver { .. } => None,
            _ => Some(Rect {
                x: self.ball[0].div_euclid(ONE),
                y: self.ball[1].div_euclid(ONE),
                width: self.geo.ball,
                height: self.geo.ball,
            }),
        }
    }

    /// Advances the game by one step (1/60 s) with the keys each player holds.
    pub fn step(&mut self, input: [PlayerKeys; 2]) -> Events {
        let mut events = Events::default();
        self.steps += 1;
        for side in Side::BOTH {
            self.move_paddle(side, input[side.index()]);
        }
        match self.phase {
            Phase::Serve { toward, wait } => {
                if wait == 0 || input[toward.index()].contains(Key::Start) {
                    self.serve(toward);
                    events.serve = Some(toward);
                } else {
                    self.phase = Phase::Serve {
                        toward,
                        wait: wait - 1,
                    };
                }
            }
            Phase::Rally => self.move_ball(&mut events),
            Phase::GameOver { winner, wait } => {
                if wait == 0 {
                    self.score = [0; 2];
                    self.phase = Phase::Serve {
                        toward: winner.other(),
                        wait: SERVE_DELAY_STEPS,
                    };
                } else {
                    self.phase = Phase::GameOver {
                        winner,
                        wait: wait - 1,
                    };
                }
            }
        }
        events
    }

    fn max_paddle_y(&self) -> i32 {
        (self.geo.height - self.geo.paddle_height) * ONE
    }

    fn human_speed(&self) -> i32 {
        (self.geo.height * ONE / 80).max(1)
    }

    fn ai_speed(&self) -> i32 {
        (self.geo.height * ONE / 128).max(1)
    }

    fn serve_speed(&self) -> i32 {
        (self.geo.width * ONE / 100).max(1)
    }

    fn max_speed(&self) -> i32 {
        // Below the paddle width per step, so the ball never jumps over a paddle's face.
        (self.geo.width * ONE / 40)
            .min(self.geo.paddle_width * ONE)
            .max(self.serve_speed())
    }

    fn move_paddle(&mut self, side: Side, keys: PlayerKeys) {
        let i = side.index();
        if !keys.is_empty() {
            self.human[i] = true;
        }
        let dy = if self.human[i] {
            match (keys.contains(Key::Up), keys.contains(Key::Down)) {
                (true, false) => -self.human_speed(),
                (false, true) => self.human_speed(),
                _ => 0,
            }
        } else {
            self.ai_move(side)
        };
        self.paddle_y[i] = (self.paddle_y[i] + dy).clamp(0, self.max_paddle_y());
    }

    /// The AI follows the ball when it comes towards its paddle (aiming to meet it off-centre,
    /// and no faster than a slow human), and drifts back to the middle otherwise.
    fn ai_move(&self, side: Side) -> i32 {
        let i = side.index();
        let half_paddle = self.geo.paddle_height * ONE / 2;
        let centre = self.paddle_y[i] + half_paddle;
        let approaching =
            self.phase == Phase::Rally && (self.velocity[0] < 0) == (side == Side::Left);
        let target = if approaching {
            self.ball[1] + self.geo.ball * ONE / 2 + self.ai_aim[i]
        } else {
            self.geo.height * ONE / 2
        };
        let speed = self.ai_speed();
        let diff = target - centre;
        if diff.abs() <= speed / 2 {
            0
        } else {
            diff.clamp(-speed, speed)
        }
    }

    fn centre_ball(&mut self) {
        self.ball = [
            (self.geo.width - self.geo.ball) / 2 * ONE,
            (self.geo.height - self.geo.ball) / 2 * ONE,
        ];
        self.velocity = [0; 2];
    }

    fn serve(&mut self, toward: Side) {
        self.centre_ball();
        let speed = self.serve_speed();
        let spread = speed * 3 / 5;
        self.velocity = [
            if toward == Side::Left { -speed } else { speed },
            self.rng.range(-spread, spread),
        ];
        self.aim_ai(toward);
        self.phase = Phase::Rally;
    }

    /// Picks where `side`'s AI will try to meet the ball on its paddle.
    fn aim_ai(&mut self, side: Side) {
        let reach = self.geo.paddle_height * ONE * 3 / 8;
        self.ai_aim[side.index()] = self.rng.range(-reach, reach);
    }

    fn move_ball(&mut self, events: &mut Events) {
        let ball = self.geo.ball * ONE;
        let previous_x = self.ball[0];
        let mut x = self.ball[0] + self.velocity[0];
        let mut y = self.ball[1] + self.velocity[1];

        let max_y = (self.geo.height * ONE - ball).max(0);
        if y < 0 {
            y = -y;
            self.velocity[1] = -self.velocity[1];
            events.wall_bounce = true;
        } else if y > max_y {
            y = 2 * max_y - y;
            self.velocity[1] = -self.velocity[1];
            events.wall_bounce = true;
        }
        let y = y.clamp(0, max_y);

        if self.velocity[0] < 0 {
            let face = (self.geo.paddle_x(Side::Left) + self.geo.paddle_width) * ONE;
            if previous_x >= face && x < face && self.meets(Side::Left, y) {
                x = 2 * face - x;
                self.bounce(Side::Left, y);
                events.paddle_hit = Some(Side::Left);
            }
        } else if self.velocity[0] > 0 {
            let face = self.geo.paddle_x(Side::Right) * ONE - ball;
            if previous_x <= face && x > face && self.meets(Side::Right, y) {
                x = 2 * face - x;
                self.bounce(Side::Right, y);
                events.paddle_hit = Some(Side::Right);
            }
        }
        self.ball = [x, y];

        let scorer = if x + ball < 0 {
            Some(Side::Right)
        } else if x > self.geo.width * ONE {
            Some(Side::Left)
        } else {
            None
        };
        if let Some(scorer) = scorer {
            self.point(scorer, events);
        }
    }

    /// Whether the ball, with its top at `y`, overlaps `side`'s paddle vertically.
    fn meets(&self, side: Side, y: i32) -> bool {
        let top = self.paddle_y[side.index()];
        y + self.geo.ball * ONE > top && y < top + self.geo.paddle_height * ONE
    }

    /// Sends the ball back from `side`'s paddle, a little faster, at an angle that grows with the
    /// distance of the hit from the paddle's centre.
    fn bounce(&mut self, side: Side, y: i32) {
        let half = (self.geo.paddle_height + self.geo.ball) * ONE / 2;
        let paddle_centre = self.paddle_y[side.index()] + self.geo.paddle_height * ONE / 2;
        let offset = (y + self.geo.ball * ONE / 2 - paddle_centre).clamp(-half, half);
        let speed = self.velocity[0].abs();
        let speed = (speed + (speed / 16).max(1)).min(self.max_speed());
        let max_vy = i64::from(speed) * 3 / 4;
        let vy = i64::from(offset) * max_vy / i64::from(half.max(1));
        self.velocity = [
            if side == Side::Left { speed } else { -speed },
            i32::try_from(vy).unwrap_or(0),
        ];
        self.aim_ai(side.other());
    }

    fn point(&mut self, scorer: Side, events: &mut Events) {
        let i = scorer.index();
        self.score[i] = self.score[i].saturating_add(1);
        events.point = Some(scorer);
        self.centre_ball();
        if self.score[i] >= WINNING_SCORE {
            events.game_over = Some(scorer);
            self.phase = Phase::GameOver {
                winner: scorer,
                wait: GAME_OVER_STEPS,
            };
        } else {
            self.phase = Phase::Serve {
                toward: scorer.other(),
                wait: SERVE_DELAY_STEPS,
            };
        }
    }
}

/// SplitMix64: a tiny, well-mixed, deterministic generator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (`lo <= hi`).
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (i64::from(hi) - i64::from(lo) + 1).max(1) as u64;
        let pick = (self.next() % span) as i64;
        i32::try_from(i64::from(lo) + pick).unwrap_or(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [PlayerKeys; 2] = [PlayerKeys::NONE; 2];

    fn keys(p1: &[Key], p2: &[Key]) -> [PlayerKeys; 2] {
        [PlayerKeys::of(p1), PlayerKeys::of(p2)]
    }

    /// A game in play with the ball at `ball` (pixels) moving at `velocity` (sub-pixels/step).
    fn rally(ball: [i32; 2], velocity: [i32; 2]) -> Pong {
        let mut pong = Pong::new(7, 768, 768);
        pong.phase = Phase::Rally;
        pong.ball = [ball[0] * ONE, ball[1] * ONE];
        pong.velocity = velocity;
        pong
    }

    #[test]
    fn geometry_at_the_default_size() {
        let pong = Pong::new(1, 768, 768);
        let g = pong.geometry();
        assert_eq!(
            (g.paddle_width, g.paddle_height, g.paddle_inset, g.ball),
            (16, 128, 32, 12)
        );
        assert_eq!(
            pong.paddle(Side::Left),
            Rect {
                x: 32,
                y: 320,
                width: 16,
                height: 128
            }
        );
        assert_eq!(pong.paddle(Side::Right).x, 768 - 32 - 16);
        assert_eq!(
            pong.ball(),
            Some(Rect {
                x: 378,
                y: 378,
                width: 12,
                height: 12
            })
        );
        assert_eq!(pong.score(), [0, 0]);
    }

    #[test]
    fn serves_after_a_second() {
        let mut pong = Pong::new(3, 768, 768);
        let Phase::Serve { toward, .. } = pong.phase() else {
            panic!("a new game starts with a serve");
        };
        for _ in 0..SERVE_DELAY_STEPS {
            assert_eq!(pong.step(NONE), Events::default());
            assert!(matches!(pong.phase(), Phase::Serve { .. }));
        }
        let events = pong.step(NONE);
        assert_eq!(events.serve, Some(toward));
        assert_eq!(pong.phase(), Phase::Rally);
        let goes_left = pong.velocity[0] < 0;
        assert_eq!(goes_left, toward == Side::Left);
        assert_eq!(pong.velocity[0].abs(), pong.serve_speed());
        assert!(pong.velocity[1].abs() <= pong.serve_speed() * 3 / 5);
    }

    #[test]
    fn the_receiver_serves_early_with_start() {
        let mut pong = Pong::new(3, 768, 768);
        pong.phase = Phase::Serve {
            toward: Side::Right,
            wait: SERVE_DELAY_STEPS,
        };
        // The other player's start does nothing.
        assert_eq!(pong.step(keys(&[Key::Start], &[])).serve, None);
        assert_eq!(pong.step(keys(&[], &[Key::Start])).serve, Some(Side::Right));
        assert!(pong.velocity[0] > 0);
    }

    #[test]
    fn bounces_off_the_walls() {
        let mut pong = rally([300, 1], [3 * ONE, -4 * ONE]);
        let events = pong.step(NONE);
        assert!(events.wall_bounce);
        assert_eq!(pong.ball[1], 3 * ONE);
        assert_eq!(pong.velocity, [3 * ONE, 4 * ONE]);

        let bottom = 768 - 12;
        let mut pong = rally([300, bottom - 1], [3 * ONE, 4 * ONE]);
        assert!(pong.step(NONE).wall_bounce);
        assert_eq!(pong.ball[1], (bottom - 3) * ONE);
        assert!(pong.velocity[1] < 0);

        let mut pong = rally([300, 300], [3 * ONE, 4 * ONE]);
        assert!(!pong.step(NONE).wall_bounce);
    }

    #[test]
    fn bounces_off_a_paddle_faster_and_angled() {
        // The left paddle's face is at x = 48; its centre at y = 384 (top 320).
        let speed = 8 * ONE;
        let mut pong = rally([50, 384 - 6], [-speed, 0]);
        let events = pong.step(NONE);
        assert_eq!(events.paddle_hit, Some(Side::Left));
        assert!(pong.velocity[0] > speed, "speeds up: {:?}", pong.velocity);
        assert_eq!(pong.velocity[1], 0, "a centre hit goes straight");
        assert!(pong.ball[0] >= 48 * ONE);

        // Near the bottom end of the right paddle (face at x = 720): goes back down-left.
        let mut pong = rally([705, 440], [speed, 0]);
        pong.human = [true; 2];
        assert_eq!(pong.step(NONE).paddle_hit, Some(Side::Right));
        assert!(pong.velocity[0] < 0);
        assert!(pong.velocity[1] > 0);
        assert!(pong.velocity[1] <= pong.velocity[0].abs() * 3 / 4);
    }

    #[test]
    fn the_ball_speed_is_capped() {
        let mut pong = rally([50, 378], [-pong_max_speed(), 0]);
        pong.step(NONE);
        assert_eq!(pong.velocity[0], pong_max_speed());
    }

    fn pong_max_speed() -> i32 {
        Pong::new(1, 768, 768).max_speed()
    }

    #[test]
    fn a_missed_ball_scores_for_the_other_side() {
        let mut pong = rally([20, 10], [-8 * ONE, 0]);
        pong.human = [true; 2];
        let mut scored = None;
        for _ in 0..10 {
            let events = pong.step(NONE);
            assert_eq!(events.paddle_hit, None);
            if events.point.is_some() {
                scored = events.point;
                break;
            }
        }
        assert_eq!(scored, Some(Side::Right));
        assert_eq!(pong.score(), [0, 1]);
        assert_eq!(
            pong.phase(),
            Phase::Serve {
                toward: Side::Left,
                wait: SERVE_DELAY_STEPS
            }
        );
        assert_eq!(
            pong.ball(),
            Pong::new(1, 768, 768).ball(),
            "back in the centre"
        );
        for _ in 0..SERVE_DELAY_STEPS {
            assert_eq!(pong.step(NONE).serve, None);
        }
        assert_eq!(
            pong.step(NONE).serve,
            Some(Side::Left),
            "served to the loser"
        );
        assert!(pong.velocity[0] < 0);
    }

    #[test]
    fn eleven_points_win_and_a_new_game_follows() {
        let mut pong = rally([760, 10], [8 * ONE, 0]);
        pong.human = [true; 2];
        pong.score = [10, 4];
        let events = (0..10).map(|_| pong.step(NONE)).find(|e| e.point.is_some());
        let events = events.expect("the ball leaves on the right");
        assert_eq!(events.point, Some(Side::Left));
        assert_eq!(events.game_over, Some(Side::Left));
        assert_eq!(pong.score(), [11, 4]);
        assert_eq!(pong.ball(), None);
        for _ in 0..=GAME_OVER_STEPS {
            pong.step(NONE);
        }
        assert_eq!(pong.score(), [0, 0]);
        assert!(matches!(
            pong.phase(),
            Phase::Serve {
                toward: Side::Right,
                ..
            }
        ));
    }

    #[test]
    fn paddles_move_and_stay_on_the_field() {
        let mut pong = Pong::new(1, 768, 768);
        let start = pong.paddle(Side::Left).y;
        pong.step(keys(&[Key::Down], &[Key::Up]));
        assert_eq!(pong.paddle(Side::Left).y, start + 9);
        assert!(pong.paddle(Side::Right).y < start);
        for _ in 0..200 {
            pong.step(keys(&[Key::Down], &[Key::Up]));
        }
        assert_eq!(pong.paddle(Side::Left).y, 768 - 128);
        assert_eq!(pong.paddle(Side::Right).y, 0);
        // Both directions at once: no move.
        pong.step(keys(&[Key::Up, Key::Down], &[Key::Up, Key::Down]));
        assert_eq!(pong.paddle(Side::Left).y, 768 - 128);
        assert_eq!(pong.paddle(Side::Right).y, 0);
    }

    #[test]
    fn the_ai_plays_until_its_player_presses_a_key() {
        // Ball coming to the left paddle, low on the field: the left AI goes down to meet it;
        // the right AI stays in the middle.
        let mut pong = rally([400, 600], [-4 * ONE, 0]);
        pong.ai_aim = [0; 2];
        let before = pong.paddle(Side::Left).y;
        for _ in 0..20 {
            pong.step(NONE);
        }
        let after = pong.paddle(Side::Left).y;
        assert_eq!(after - before, 20 * 6, "the AI moves at its own speed");
        assert_eq!(pong.paddle(Side::Right).y, before);
        assert!(!pong.is_human(Side::Left));

        // Any key hands the paddle to its player; then no key means no move.
        pong.step(keys(&[Key::A], &[]));
        assert!(pong.is_human(Side::Left));
        assert!(!pong.is_human(Side::Right));
        let held = pong.paddle(Side::Left).y;
        for _ in 0..10 {
            pong.step(NONE);
        }
        assert_eq!(pong.paddle(Side::Left).y, held);

        // Ball going away: the left AI drifts back to the middle (before the ball comes back).
        let mut pong = rally([400, 600], [4 * ONE, 0]);
        pong.paddle_y[0] = 0;
        for _ in 0..60 {
            pong.step(NONE);
        }
        let centre = pong.paddle(Side::Left).y + 64;
        assert!((centre - 384).abs() <= 6, "centre {centre}");
    }

    #[test]
    fn the_ai_returns_the_ball() {
        let mut pong = rally([400, 300], [-6 * ONE, 2 * ONE]);
        let mut hit = false;
        for _ in 0..120 {
            let events = pong.step(NONE);
            assert_eq!(events.point, None);
            hit |= events.paddle_hit == Some(Side::Left);
            if hit {
                break;
            }
        }
        assert!(hit);
    }

    #[test]
    fn ai_against_ai_plays_whole_games_within_the_field() {
        let mut pong = Pong::new(42, 768, 768);
        let mut points = [0u32; 2];
        let (mut hits, mut walls, mut serves, mut games) = (0, 0, 0, 0);
        for _ in 0..STEPS_PER_SECOND * 60 * 20 {
            let e = pong.step(NONE);
            if let Some(side) = e.point {
                points[side.index()] += 1;
            }
            hits += u32::from(e.paddle_hit.is_some());
            walls += u32::from(e.wall_bounce);
            serves += u32::from(e.serve.is_some());
            games += u32::from(e.game_over.is_some());
            for side in Side::BOTH {
                let p = pong.paddle(side);
                assert!(p.y >= 0 && p.y + p.height <= 768);
            }
            if let Some(b) = pong.ball() {
                assert!(b.y >= 0 && b.y + b.height <= 768);
            }
        }
        assert!(points[0] > 0 && points[1] > 0, "{points:?}");
        assert!(hits > 2 * (points[0] + points[1]), "rallies: {hits} hits");
        assert!(walls > 0 && serves > 0 && games > 0);
    }

    #[test]
    fn the_same_seed_and_inputs_give_the_same_game() {
        let script = |step: u32| -> [PlayerKeys; 2] {
            let x = step.wrapping_mul(2_654_435_761) >> 24;
            if step < 600 {
                NONE
            } else {
                [PlayerKeys((x & 3) as u8), PlayerKeys(((x >> 2) & 3) as u8)]
            }
        };
        let run = |seed: u64| {
            let mut pong = Pong::new(seed, 768, 768);
            let mut log = Vec::new();
            for step in 0..10_000 {
                let events = pong.step(script(step));
                log.push((
                    events,
                    pong.paddle(Side::Left),
                    pong.paddle(Side::Right),
                    pong.ball(),
                ));
            }
            (pong, log)
        };
        let (a, log_a) = run(9);
        let (b, log_b) = run(9);
        assert_eq!(a, b);
        assert_eq!(log_a, log_b);
        let (c, _) = run(10);
        assert_ne!(a, c, "another seed plays another game");
    }

    #[test]
    fn tiny_fields_do_not_panic() {
        for (w, h) in [(16, 16), (16, 4096), (4096, 16), (0, 0)] {
            let mut pong = Pong::new(5, w, h);
            for step in 0..5_000u32 {
                let k = PlayerKeys((step % 7) as u8 & 3);
                pong.step([k, PlayerKeys::NONE]);
            }
        }
    }
}
