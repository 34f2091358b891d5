//! `WRING_PLAN` as a stranger sets it (`PlanAs::parse`, what `Context::new` reads from the environment): a
//! known name or the typed `UnknownPlan` carrying the value as given, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wring_runtime::{Error, PlanAs};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match PlanAs::parse(value) {
        // A parsed plan is explicit: it never sends `resolve` back to the environment.
        Ok(plan) => assert_ne!(plan, PlanAs::Auto),
        Err(Error::UnknownPlan(v)) => assert_eq!(v, value),
        Err(e) => panic!("not the plan error: {e}"),
    }
});
