#![no_main]
// kepler_rs::fuzzing::counters holds what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kepler_rs::fuzzing::counters(data));
