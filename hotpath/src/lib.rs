//! playpod's frame pipeline: plain threads, no async, no allocation and no locks per frame.
//!
//! ```text
//! framebuffer (in place) -> BGRX->I420 -> H.264 -> broadcast ring -> viewers
//! ```
//!
//! The stages are written as plain values driven from outside (the frame clock takes the time
//! as an argument, the ring's cursors are values), so tests drive them without an X server.
#![forbid(unsafe_code)]

pub mod audio;
pub mod capture;
pub mod clock;
pub mod convert;
pub mod damage;
pub mod encode;
pub mod gpu;
pub mod h264;
pub mod input;
pub mod pipeline;
pub mod rate;
pub mod rendition;
pub mod ring;
pub mod stats;
pub mod xwd;
