//! Integration tests, one crate so the whole graph links once: the store through the library, and
//! the real `cxnode` binary end to end.

mod architecture;
mod common;
mod deploy;
mod evaluate;
mod federation;
mod feed;
mod feeders;
mod netns;
mod operators;
mod process;
mod security;
mod store;
