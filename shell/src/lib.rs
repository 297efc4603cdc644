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
pub mod metrics;
pub mod pod;
pub mod server;
pub mod session;
pub mod tls;
pub mod token;
