//! The `playpod` binary's library: the tokio shell around the frame pipeline.
#![forbid(unsafe_code)]

pub mod cli;
pub mod control;
pub mod game;
pub mod token;
