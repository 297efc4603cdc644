//! Helpers shared by the integration tests: real Xvfb and friends, started and cleaned up.
