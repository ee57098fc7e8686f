#![no_main]
// kepler_rs::fuzzing::web_config holds what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kepler_rs::fuzzing::web_config(data));
