//! Harness for the end-to-end tests: locates the built binaries, runs them on loopback, talks to them.
#![forbid(unsafe_code)]
