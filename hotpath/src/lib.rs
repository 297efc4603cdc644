//! playpod's frame pipeline.
#![forbid(unsafe_code)]
