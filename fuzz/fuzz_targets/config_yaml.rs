#![no_main]
// kepler_rs::fuzzing::config_yaml holds what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kepler_rs::fuzzing::config_yaml(data));
