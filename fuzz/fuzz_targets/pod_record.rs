#![no_main]
// kepler_rs::fuzzing::pod_record holds what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kepler_rs::fuzzing::pod_record(data));
