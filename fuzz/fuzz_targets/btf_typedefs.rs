#![no_main]
// kepler_rs::fuzzing::btf_typedefs holds what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kepler_rs::fuzzing::btf_typedefs(data));
