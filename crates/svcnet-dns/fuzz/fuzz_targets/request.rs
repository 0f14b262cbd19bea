//! Fuzzes the DNS request path: decode, answer from a snapshot of a small cluster, encode.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use svcnet_dns::{Snapshot, fuzzing};

static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(fuzzing::snapshot);

fuzz_target!(|data: &[u8]| fuzzing::request(&SNAPSHOT, data));
