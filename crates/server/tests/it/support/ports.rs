//! Ports for the servers the tests start (`redis-server`, `nats-server`).
//!
//! They are picked below the kernel's ephemeral range (32768–60999 here):
//! a port taken from `127.0.0.1:0` and released can be handed to another
//! test's outgoing connection before the child process binds it, which is
//! how a Redis Cluster node once failed to start in CI. Below the range,
//! only another listener can hold a port, and `bindable` checks that.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

/// The lowest port handed out, above the well-known and registered
/// services a test machine is likely to run.
const FIRST: u16 = 20_000;
/// One past the highest port handed out plus its offset partner: the start
/// of Linux's default ephemeral range.
const EPHEMERAL_START: u16 = 32_768;

fn random_below(bound: u16) -> u16 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    (hasher.finish() % u64::from(bound)) as u16
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port `p` such that `p + partner_offset` is free too (a Redis
/// Cluster node also listens on its port + 10000 for the cluster bus).
pub fn free_port_with_partner(partner_offset: u16) -> u16 {
    let span = EPHEMERAL_START - FIRST - partner_offset;
    for _ in 0..1_000 {
        let port = FIRST + random_below(span);
        if bindable(port) && (partner_offset == 0 || bindable(port + partner_offset)) {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range after 1000 tries");
}

/// A free port below the ephemeral range.
pub fn free_port() -> u16 {
    free_port_with_partner(0)
}
