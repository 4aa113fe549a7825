//! `pagoda-tests`: end-to-end tests that run the real `pagoda` binary.
//!
//! Tests live in `tests/tests/*.rs`; each starts what it needs (the binary, a
//! server on `127.0.0.1:0` with a temporary data directory) and drives it the
//! way a user or a client would. This library holds no code of its own yet.
#![forbid(unsafe_code)]
